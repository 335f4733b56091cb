//! The figure (issue 31), run by `scripts/bench.sh hns` (ignored otherwise): on the dfs
//! stand-in, a lake of 2,000 files in 200 directories (20 of them empty) under 10 parents, ACLs
//! varying per path, default ACLs on 20 directories. A first backup, ACL-only changes, a
//! recursive delete of a subtree, and a restore `--as-of` before the delete: every file's bytes,
//! every directory (the empty ones too) and every path's owner, group, permissions and ACLs come
//! back as they were at the instant, and no snapshot or tag request reaches the lake. Prints
//! the blob requests per file of an HNS first backup and of an HNS restore (into an empty
//! container) beside those of a flat lake. `LAKEBACKUP_HNS_FILES` sets the number of files
//! (directories: a tenth of it).

use std::collections::BTreeMap;

use futures::{stream, StreamExt};

use super::{
    backup::lake_on_stand_in,
    directories::{access_now, make_directory, set_access, DEFAULT_ACL},
};
use crate::support::{
    self,
    proxy::{OpClass, ProxiedAzurite},
    worker, Azurite, Lake,
};

/// Blob requests since the last reset, the ledger's container requests left out.
fn requests(proxied: &ProxiedAzurite) -> u64 {
    let stats = proxied.blob.stats();
    stats.total_requests() - stats.requests_of(OpClass::Container)
}

/// The lake's shape: (directories, of which empty, files, each file's directory).
struct Shape {
    directories: Vec<String>,
    empty: usize,
    files: Vec<(String, Vec<u8>)>,
}

fn shape(files: usize) -> Shape {
    let count = (files / 10).max(10);
    let alphabet = ["🦀", "日本", "x｡y"];
    let directories: Vec<String> = (0..count)
        .map(|i| format!("{}{}/d{i}", alphabet[i % 3], i % 10))
        .collect();
    let empty = count / 10;
    let with_files = &directories[empty..];
    let files = (0..files)
        .map(|j| {
            let name = format!("{}/f{j}-東.csv", with_files[j % with_files.len()]);
            let bytes = format!("{j}:{}", "x".repeat(j % 50)).into_bytes();
            (name, bytes)
        })
        .collect();
    Shape {
        directories,
        empty,
        files,
    }
}

/// Every directory (parents included) and file of `shape`.
fn all_paths(shape: &Shape) -> Vec<String> {
    let mut paths: Vec<String> = shape
        .directories
        .iter()
        .filter_map(|d| d.split_once('/').map(|(parent, _)| parent.to_owned()))
        .collect();
    paths.sort();
    paths.dedup();
    paths.extend(shape.directories.iter().cloned());
    paths.extend(shape.files.iter().map(|(name, _)| name.clone()));
    paths
}

async fn build(lake: &Lake, proxied: &ProxiedAzurite, shape: &Shape) {
    let defaults = shape.directories.len() / 10;
    stream::iter(shape.directories.iter().enumerate())
        .for_each_concurrent(8, |(i, dir)| async move {
            let owner = format!("o-{}", i % 5);
            let headers: Vec<(&str, &str)> =
                match i % defaults.max(1) == 0 && i / defaults.max(1) < 10 {
                    true => vec![("x-ms-acl", DEFAULT_ACL)],
                    false => vec![("x-ms-owner", owner.as_str())],
                };
            make_directory(proxied, dir, &headers).await;
        })
        .await;
    let container = lake.lake("lake");
    stream::iter(shape.files.iter().enumerate())
        .for_each_concurrent(16, |(j, (name, bytes))| {
            let container = &container;
            async move {
                support::upload(container, name, bytes).await;
                let user = format!(
                    "user::rw-,user:u-{}:r--,group::r--,mask::r--,other::---",
                    j % 7
                );
                match j % 3 {
                    0 => set_access(proxied, name, &[("x-ms-acl", user.as_str())]).await,
                    1 => {
                        set_access(proxied, name, &[("x-ms-group", &format!("g-{}", j % 4))]).await
                    }
                    _ => {}
                }
            }
        })
        .await;
}

fn restore(
    settings: &std::collections::HashMap<String, String>,
    args: &[&str],
) -> serde_json::Value {
    let mut full = vec!["restore", "--container", "lake", "--from", "backup"];
    full.extend(args);
    let (code, _, summary) = worker::run_lines(settings, &full);
    assert_eq!(code, 0, "{summary}");
    summary
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "the issue's figure: scripts/bench.sh hns"]
async fn figure_an_hns_lake_backed_up_and_restored_exactly_with_requests_per_file() {
    let files: usize = std::env::var("LAKEBACKUP_HNS_FILES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let shape = shape(files);
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    build(&lake, &proxied, &shape).await;
    let stand_in = proxied.blob.hns().unwrap();
    stand_in.reset_counts();

    proxied.reset_stats();
    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    let hns_backup = requests(&proxied) as f64 / files as f64;
    let paths = all_paths(&shape);
    // Its directories, and the root (`hns::root`).
    assert_eq!(
        first.totals.get("directories"),
        (paths.len() - files + 1) as u64
    );
    let at_the_instant: BTreeMap<String, _> = paths
        .iter()
        .map(|p| (p.clone(), access_now(&proxied, p)))
        .collect();
    let instant = support::instant_after_writes().await;

    // ACL-only changes on 50 files and 5 directories, backed up; then a recursive delete of
    // the subtree of one parent, seen by the next pass.
    for (name, _) in shape.files.iter().step_by((files / 50).max(1)) {
        set_access(
            &proxied,
            name,
            &[("x-ms-acl", "user::rwx,group::---,other::---")],
        )
        .await;
    }
    for dir in shape
        .directories
        .iter()
        .skip(shape.empty)
        .step_by(37)
        .take(5)
    {
        set_access(&proxied, dir, &[("x-ms-permissions", "0700")]).await;
    }
    let changed = support::produce(&lake.app, "lake").await;
    assert!(changed.succeeded(), "{:?}", changed.notes);
    let parent = shape.directories[0].split_once('/').unwrap().0.to_owned();
    let deleted = super::dfs(
        &proxied,
        "DELETE",
        &format!("lake/{parent}"),
        "recursive=true",
        &[],
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let seen = support::produce(&lake.app, "lake").await;
    assert!(seen.succeeded(), "{:?}", seen.notes);

    let in_place = restore(&lake.settings(), &["--as-of", &instant]);
    assert_eq!(in_place.get("access_failed"), None, "{in_place}");
    let container = lake.lake("lake");
    let now = support::contents(&container).await;
    for (name, bytes) in &shape.files {
        assert_eq!(now.get(name), Some(bytes), "{name}");
    }
    for (path, was) in &at_the_instant {
        assert_eq!(&access_now(&proxied, path), was, "{path}");
        let directory = stand_in
            .access_control("source", "lake", path)
            .unwrap()
            .directory;
        assert_eq!(directory, !path.ends_with(".csv"), "{path}");
    }
    let counts = stand_in.counts();
    assert_eq!(
        (counts.snapshots, counts.tag_requests),
        (0, 0),
        "{counts:?}"
    );

    // The restore's cost per file: everything into an empty container.
    proxied.reset_stats();
    let whole = restore(&lake.settings(), &["--to-container", "restored"]);
    assert_eq!(whole["restored"], paths.len() as u64, "{whole}");
    let hns_restore = requests(&proxied) as f64 / files as f64;

    // The same files on a flat lake.
    let azurite = Azurite::start();
    let flat_proxied =
        ProxiedAzurite::start(&azurite, support::proxy::ProxyConfig::azurite()).unwrap();
    let settings = flat_proxied.settings();
    let extra: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let flat = Lake::on(azurite, &["lake"], &extra).await;
    let flat_container = flat.lake("lake");
    stream::iter(shape.files.iter())
        .for_each_concurrent(16, |(name, bytes)| {
            support::upload(&flat_container, name, bytes)
        })
        .await;
    flat_proxied.reset_stats();
    let flat_first = support::produce(&flat.app, "lake").await;
    assert!(flat_first.succeeded(), "{:?}", flat_first.notes);
    let flat_backup = requests(&flat_proxied) as f64 / files as f64;
    flat_proxied.reset_stats();
    let flat_whole = restore(&flat.settings(), &["--to-container", "restored"]);
    assert_eq!(flat_whole["restored"], files as u64, "{flat_whole}");
    let flat_restore = requests(&flat_proxied) as f64 / files as f64;

    eprintln!(
        "\n{files} files in {} directories ({} empty), blob requests per file (lake + backup \
         accounts, the ledger's container requests left out):\n\
         | | first backup | restore into an empty container |\n|---|---|---|\n\
         | HNS (dfs stand-in) | {hns_backup:.2} | {hns_restore:.2} |\n\
         | flat | {flat_backup:.2} | {flat_restore:.2} |\n",
        shape.directories.len(),
        shape.empty,
    );
}
