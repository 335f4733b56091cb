//! The snapshot-free backup of a lake with a hierarchical namespace: no snapshot and no index
//! tag ever reaches the lake, each copy is pinned to the version listed, and a file rewritten
//! while it is copied is never backed up with another version's bytes.

use std::collections::BTreeMap;

use lakebackup::core::naming::parse_backup_blob_name;

use super::hns_lake;
use crate::support::{
    self,
    proxy::{hns::HnsLake, OpClass, ProxiedAzurite},
    Azurite, Lake,
};

/// The lake (`lake`, on the stand-in) with the Function App's settings through the proxies,
/// and `extra`.
pub(super) async fn lake_on_stand_in(extra: &[(&str, &str)]) -> (Lake, ProxiedAzurite) {
    let azurite = Azurite::start();
    let proxied = hns_lake(&azurite);
    let settings = proxied.settings();
    let mut all: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    all.extend_from_slice(extra);
    let lake = Lake::on(azurite, &["lake"], &all).await;
    (lake, proxied)
}

/// Every backup in `lakebak`: (source name, ETag it is named after) → bytes.
async fn backups(lake: &Lake) -> BTreeMap<(String, String), Vec<u8>> {
    support::contents(&lake.vault("lake"))
        .await
        .into_iter()
        .filter_map(|(name, bytes)| {
            let parsed = parse_backup_blob_name(&name).ok()?;
            Some(((parsed.source_name, parsed.etag), bytes))
        })
        .collect()
}

/// The bytes a file is rewritten with, one rewrite per read.
type Rewrites = Vec<Vec<u8>>;

fn hns(proxied: &ProxiedAzurite) -> std::sync::Arc<HnsLake> {
    proxied.blob.hns().expect("the stand-in")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_backup_of_an_hns_lake_takes_no_snapshot_and_no_tag_and_keeps_every_file() {
    // Files above 1 KiB are copied server-side (Copy Blob From URL), the rest through the worker.
    let (lake, proxied) = lake_on_stand_in(&[("COPY_THROUGH_WORKER_MAX_BYTES", "1024")]).await;
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("🦀/a.csv", b"crab".to_vec()),
        ("日本/東京/b.txt", "東京".as_bytes().to_vec()),
        ("x｡y.csv", b"halfwidth stop".to_vec()),
        ("🦀/日本/big.bin", support::noise(4096, 7)),
    ];
    for (name, bytes) in &files {
        support::upload(&lake.lake("lake"), name, bytes).await;
    }
    hns(&proxied).reset_counts();
    proxied.reset_stats();

    let job = support::produce(&lake.app, "lake").await;
    assert!(job.succeeded(), "{:?}", job.notes);
    assert_eq!(job.notes.failures, Vec::new());

    let counts = hns(&proxied).counts();
    assert_eq!(counts.snapshots, 0, "snapshot requests reached the lake");
    assert_eq!(counts.tag_requests, 0, "tag requests reached the lake");
    assert_eq!(proxied.stats().requests_of(OpClass::Snapshot), 0);
    assert_eq!(job.totals.snapshots_created, 0);
    assert_eq!(job.totals.backups_copied, files.len() as u64);
    let backed_up = backups(&lake).await;
    for (name, bytes) in &files {
        let found: Vec<&Vec<u8>> = backed_up
            .iter()
            .filter(|((source, _), _)| source == name)
            .map(|(_, b)| b)
            .collect();
        assert_eq!(found, vec![bytes], "{name}");
    }
    // Beside the files, each directory they made is a version of its own (empty, with its
    // access control: `hns::directories`), and so is the root directory (`""`: `hns::root`).
    let mut sources: Vec<&str> = backed_up.keys().map(|(s, _)| s.as_str()).collect();
    sources.sort_unstable();
    let mut expected = vec!["", "🦀", "🦀/日本", "日本", "日本/東京"];
    expected.extend(files.iter().map(|(name, _)| *name));
    expected.sort_unstable();
    assert_eq!(sources, expected);

    // A second pass finds everything backed up and copies nothing.
    let again = support::produce(&lake.app, "lake").await;
    assert!(again.succeeded(), "{:?}", again.notes);
    assert_eq!(again.totals.backups_copied, 0);
    assert_eq!(hns(&proxied).counts().snapshots, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_rewritten_while_it_is_copied_is_never_backed_up_with_other_bytes() {
    let (lake, proxied) = lake_on_stand_in(&[("COPY_THROUGH_WORKER_MAX_BYTES", "1024")]).await;
    let container = lake.lake("lake");
    // (name, first bytes, rewrites on read): through the worker and server-side, rewritten
    // once (the newer version is backed up in the same pass) or twice (left to the next).
    let cases: Vec<(&str, Vec<u8>, Rewrites)> = vec![
        (
            "🦀/small.csv",
            b"v1 small".to_vec(),
            vec![b"v2 small!".to_vec()],
        ),
        (
            "日本/big.bin",
            support::noise(4096, 1),
            vec![support::noise(4096, 2)],
        ),
        (
            "x｡y/twice.csv",
            b"v1 twice".to_vec(),
            vec![b"v2 twice".to_vec(), b"v3 twice".to_vec()],
        ),
    ];
    // Bytes of every version, by ETag: the backup named after a version must hold its bytes.
    let mut versions: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (name, bytes, rewrites) in &cases {
        let uploaded = container.blob(name).upload(bytes.clone()).await.unwrap();
        versions.insert(uploaded.etag, bytes.clone());
        for rewrite in rewrites {
            hns(&proxied).rewrite_when_read("source", "lake", name, rewrite.clone());
        }
    }

    let job = support::produce(&lake.app, "lake").await;
    assert_eq!(hns(&proxied).counts().rewrites, 4);
    assert_eq!(hns(&proxied).counts().snapshots, 0);
    assert_eq!(job.totals.snapshots_created, 0);
    // Whatever the pass backed up holds exactly the version its name says.
    let after_first = backups(&lake).await;
    let now: BTreeMap<String, (String, Vec<u8>)> = {
        let mut now = BTreeMap::new();
        for (name, _, _) in &cases {
            let state = container.blob(name).state().await.unwrap().unwrap();
            now.insert(
                name.to_string(),
                (
                    state.version.etag.clone(),
                    support::download(&container, name).await,
                ),
            );
        }
        now
    };
    for ((source, etag), bytes) in &after_first {
        if !cases.iter().any(|(name, _, _)| name == source) {
            // A directory the files made: a version of its own (`hns::directories`).
            assert!(bytes.is_empty(), "{source}");
            continue;
        }
        let expected = versions
            .get(etag)
            .or_else(|| now.get(source).filter(|(e, _)| e == etag).map(|(_, b)| b))
            .unwrap_or_else(|| panic!("{source} backed up as {etag}, a version never written"));
        assert_eq!(
            bytes, expected,
            "{source} backed up as {etag} with other bytes"
        );
    }
    // Rewritten once: its version now is backed up in the same pass.
    for name in ["🦀/small.csv", "日本/big.bin"] {
        let (etag, bytes) = &now[name];
        assert_eq!(
            after_first.get(&(name.to_string(), etag.clone())),
            Some(bytes),
            "{name}"
        );
    }
    // Rewritten again while its newer version was copied: reported, left to the next pass.
    let twice = &now["x｡y/twice.csv"];
    assert_eq!(twice.1, b"v3 twice");
    assert!(
        job.notes.warnings.iter().any(|n| n.blob == "x｡y/twice.csv"),
        "{:?}",
        job.notes
    );
    // Every backup records its file's access control, read at the version it holds, so the
    // next pass copies only what was left to it.
    let vault = lake.vault("lake");
    for (backup, _) in support::contents(&vault).await {
        let state = vault.blob(&backup).state().await.unwrap().unwrap();
        assert!(
            recorded(state.metadata()).is_some(),
            "{backup} records no ACL"
        );
    }
    let next = support::produce(&lake.app, "lake").await;
    assert!(next.succeeded(), "{:?}", next.notes);
    assert_eq!(next.totals.backups_copied, 1, "{:?}", next.totals);
    assert_eq!(
        backups(&lake)
            .await
            .get(&("x｡y/twice.csv".to_string(), twice.0.clone())),
        Some(&twice.1)
    );
}

/// The access control a backup records, as the stand-in's strings.
fn recorded(
    metadata: &std::collections::HashMap<String, String>,
) -> Option<(String, String, String, String)> {
    let access = lakebackup::core::stamp::stamped_access(metadata)?;
    Some((access.owner, access.group, access.permissions, access.acl))
}

#[tokio::test(flavor = "multi_thread")]
async fn each_backup_keeps_its_files_acl_and_an_acl_only_change_is_backed_up() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    let default_acl = "user::rwx,group::r-x,other::---,default:user::rwx,default:user:5d0e-u1:r-x,\
                       default:group::r-x,default:mask::r-x,default:other::---";
    let made = super::dfs(
        &proxied,
        "PUT",
        "lake/🦀",
        "resource=directory",
        &[("x-ms-acl", default_acl)],
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let container = lake.lake("lake");
    for name in ["🦀/a.csv", "🦀/日本/b.csv", "x｡y.csv"] {
        support::upload(&container, name, name.as_bytes()).await;
    }
    let set = super::dfs(
        &proxied,
        "PATCH",
        "lake/x｡y.csv",
        "action=setAccessControl",
        &[
            ("x-ms-owner", "o-1"),
            ("x-ms-group", "g-1"),
            ("x-ms-permissions", "rw-r--r--"),
        ],
    )
    .await;
    assert_eq!(set.status, 200);

    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    assert_eq!(first.totals.backups_copied, 3);
    let vault = lake.vault("lake");
    let stand_in = hns(&proxied);
    let expected = |name: &str| {
        let access = stand_in.access_control("source", "lake", name).unwrap();
        Some((
            access.owner.clone(),
            access.group.clone(),
            access.permissions(),
            access.acl(),
        ))
    };
    for (backup, _) in support::contents(&vault).await {
        let source = parse_backup_blob_name(&backup).unwrap().source_name;
        let state = vault.blob(&backup).state().await.unwrap().unwrap();
        assert_eq!(recorded(state.metadata()), expected(&source), "{backup}");
    }
    assert_eq!(
        expected("🦀/日本/b.csv").unwrap().3,
        "user::rw-,user:5d0e-u1:r-x,group::r-x,mask::r--,other::---",
        "inherited from the directory's default ACL"
    );

    // An ACL-only change keeps the ETag, and is a version to back up.
    let etag = container
        .blob("🦀/a.csv")
        .state()
        .await
        .unwrap()
        .unwrap()
        .version
        .etag;
    support::next_second().await;
    let changed = super::dfs(
        &proxied,
        "PATCH",
        "lake/🦀/a.csv",
        "action=setAccessControl",
        &[(
            "x-ms-acl",
            "user::rw-,user:5d0e-u2:rw-,group::r--,mask::rw-,other::---",
        )],
    )
    .await;
    assert_eq!(changed.status, 200);
    assert_eq!(
        container
            .blob("🦀/a.csv")
            .state()
            .await
            .unwrap()
            .unwrap()
            .version
            .etag,
        etag
    );
    let second = support::produce(&lake.app, "lake").await;
    assert!(second.succeeded(), "{:?}", second.notes);
    assert_eq!(second.totals.backups_copied, 1);
    let mut of_a = Vec::new();
    for (backup, bytes) in support::contents(&vault).await {
        let parsed = parse_backup_blob_name(&backup).unwrap();
        if parsed.source_name == "🦀/a.csv" {
            assert_eq!(parsed.etag, etag);
            assert_eq!(bytes, b"\xf0\x9f\xa6\x80/a.csv");
            let state = vault.blob(&backup).state().await.unwrap().unwrap();
            of_a.push(recorded(state.metadata()).unwrap().3);
        }
    }
    of_a.sort();
    assert_eq!(
        of_a,
        [
            "user::rw-,user:5d0e-u1:r-x,group::r-x,mask::r--,other::---",
            "user::rw-,user:5d0e-u2:rw-,group::r--,mask::rw-,other::---",
        ]
    );
    let third = support::produce(&lake.app, "lake").await;
    assert_eq!(third.totals.backups_copied, 0, "{:?}", third.totals);
}

/// Blob requests per file of a first backup of `files` files in 4 directories, through `proxied`
/// (the lake's and the backup account's requests together, the ledger's left out).
async fn first_backup_requests_per_file(
    lake: &Lake,
    proxied: &ProxiedAzurite,
    files: usize,
) -> f64 {
    let container = lake.lake("lake");
    for i in 0..files {
        support::upload(
            &container,
            &format!("d{}/f{i}.csv", i % 4),
            format!("{i}").as_bytes(),
        )
        .await;
    }
    proxied.reset_stats();
    let job = support::produce(&lake.app, "lake").await;
    assert!(job.succeeded(), "{:?}", job.notes);
    assert_eq!(job.totals.backups_copied, files as u64);
    // Container requests are the jobs' ledger (and container checks): not per file, and
    // timing-dependent.
    let stats = proxied.blob.stats();
    let data = stats.total_requests() - stats.requests_of(OpClass::Container);
    eprintln!(
        "requests of a first backup of {files} files: {:?}",
        stats.requests
    );
    data as f64 / files as f64
}

#[tokio::test(flavor = "multi_thread")]
async fn an_hns_first_backup_costs_fewer_requests_per_file_than_a_flat_one() {
    const FILES: usize = 40;
    let (hns_lake, hns_proxied) = lake_on_stand_in(&[]).await;
    let hns_cost = first_backup_requests_per_file(&hns_lake, &hns_proxied, FILES).await;
    let azurite = Azurite::start();
    let flat_proxied =
        ProxiedAzurite::start(&azurite, crate::support::proxy::ProxyConfig::azurite()).unwrap();
    let settings = flat_proxied.settings();
    let extra: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let flat_lake = Lake::on(azurite, &["lake"], &extra).await;
    let flat_cost = first_backup_requests_per_file(&flat_lake, &flat_proxied, FILES).await;
    eprintln!("blob requests per file of a first backup: HNS {hns_cost:.2}, flat {flat_cost:.2}");
    // The flat lake's one snapshot per file is what the HNS lake never asks for; the HNS lake
    // backs up its 4 directories besides (one create-only Put each).
    let directories = 4.0 / FILES as f64;
    assert!(
        hns_cost - directories + 0.9 < flat_cost,
        "HNS {hns_cost}, flat {flat_cost}"
    );
    assert_eq!(hns_proxied.blob.stats().requests_of(OpClass::Snapshot), 0);
    assert_eq!(
        flat_proxied.blob.stats().requests_of(OpClass::Snapshot),
        FILES as u64
    );
}
