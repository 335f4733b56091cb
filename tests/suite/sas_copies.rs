//! Copies from accounts connected by SAS (issue 29, defect 2). A SAS connection has no key to
//! sign a one-blob copy source with, and the service records a server-side copy's source URL,
//! signature included, on the destination (`x-ms-copy-source`) for anyone who can read it: the
//! connection's own SAS (read, write, delete, list... on the whole account) must never be that
//! source. So every copy from such an account goes through the worker, whatever the blob's type
//! and size, and keeps everything the version is.
//!
//! Backups and restores of block blobs above `COPY_THROUGH_WORKER_MAX_BYTES` (one larger than a
//! read chunk, without an MD5), a small one without an MD5, an append blob and a sparse page blob, with SAS connections for
//! the lake and the backup account: no resulting blob's properties or metadata hold a `sig=`;
//! bytes, type, content headers, stored MD5, metadata, tags and (page blobs) the valid page
//! ranges are the lake's.

use crate::support;

use std::collections::BTreeMap;

use lakebackup::{
    core::{naming, properties::ContentHeaders},
    storage::{testing::NewBlob, Container},
};
use md5::{Digest, Md5};
use support::{
    azurite::{BACKUP_KEY, SOURCE_KEY},
    worker, Azurite,
};

const MIB: usize = 1 << 20;

/// A connection string with the account's SAS and no key, as a deployment gives a SAS setting.
fn sas_connection(azurite: &Azurite, account: &str, key: &str) -> String {
    let expiry = time::OffsetDateTime::now_utc() + time::Duration::hours(2);
    support::sas_connection(azurite, account, key, "bq", "rwdlacupt", expiry)
}

/// The lake, with a container `lake`, and a Function App whose lake and backup accounts are
/// connected by SAS.
async fn sas_lake() -> support::Lake {
    let azurite = Azurite::start();
    let source = sas_connection(&azurite, "source", SOURCE_KEY);
    let backup = sas_connection(&azurite, "backup", BACKUP_KEY);
    let extra = [
        ("SOURCE_STORAGE", source.as_str()),
        ("BACKUP_STORAGE", backup.as_str()),
    ];
    support::Lake::on(azurite, &["lake"], &extra).await
}

/// Bytes that differ at every offset of a chunk (a misplaced chunk cannot pass for another).
fn pattern(length: usize, seed: u8) -> Vec<u8> {
    (0..length)
        .map(|i| (i as u64 * 7 + i as u64 / 4093 + seed as u64) as u8)
        .collect()
}

/// Everything a blob is that a copy must keep, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    blob_type: String,
    content_type: Option<String>,
    cache_control: Option<String>,
    content_md5: Option<Vec<u8>>,
    /// User metadata (bookkeeping keys left out).
    metadata: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
    /// Valid page ranges of a page blob, adjacent ones joined.
    pages: Vec<(u64, u64)>,
    bytes_md5: Vec<u8>,
    length: usize,
}

/// What `name` holds, and the credential-bearing properties it must not have: its copy source
/// and every metadata value.
async fn held(container: &Container, name: &str) -> (Held, Vec<String>) {
    let blob = container.blob(name);
    let state = blob
        .probe()
        .await
        .unwrap_or_else(|e| panic!("properties of {name}: {e}"))
        .unwrap_or_else(|| panic!("properties of {name}: no such blob"));
    let version = state.version;
    let metadata = version.metadata.clone().unwrap_or_default();
    let mut exposed: Vec<String> = metadata.values().cloned().collect();
    exposed.extend(state.copy_source);
    exposed.extend(state.copy_status_description);
    let blob_type = format!("{:?}", version.properties.blob_type);
    let pages = if blob_type.contains("Page") {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (start, end) in blob.valid_page_ranges().await.unwrap() {
            match ranges.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => ranges.push((start, end)),
            }
        }
        ranges
    } else {
        Vec::new()
    };
    let bytes = support::download(container, name).await;
    let tags = crate::exactness::common::tags(container, name).await;
    let held = Held {
        blob_type,
        content_type: version.properties.headers.content_type,
        cache_control: version.properties.headers.cache_control,
        content_md5: version.content_md5,
        metadata: metadata
            .into_iter()
            .filter(|(k, _)| !k.to_ascii_lowercase().starts_with("lakebackup_"))
            .collect(),
        tags,
        pages,
        bytes_md5: Md5::digest(&bytes).to_vec(),
        length: bytes.len(),
    };
    (held, exposed)
}

/// The lake: block blobs above the worker's copy size (one of several chunks committed without
/// an MD5, one with Put Blob's), an append blob of several chunks and a sparse page blob whose
/// written ranges cross chunk boundaries; with content headers, metadata and tags.
async fn seed(lake: &Container) {
    let described = |name: &str, content_type: &str, tags: &[(&str, &str)]| NewBlob {
        headers: ContentHeaders {
            content_type: Some(content_type.into()),
            ..ContentHeaders::default()
        },
        tags: NewBlob::with_tags(tags.iter().copied()).tags,
        ..NewBlob::with_metadata([("owner", name)])
    };
    let tags = [("project", "lake"), ("tier", "gold")];

    let name = "big/blocks.bin";
    let bytes = pattern(9 * MIB + 123, 1);
    let blocks: Vec<&[u8]> = bytes.chunks(3 * MIB).collect();
    let new = NewBlob {
        headers: ContentHeaders {
            content_type: Some("application/x-parquet".into()),
            cache_control: Some("no-cache".into()),
            ..ContentHeaders::default()
        },
        ..described(name, "", &tags)
    };
    lake.blob(name).put_block_list(&blocks, &new).await.unwrap();

    // Small (copied through the worker whatever the connection), and without an MD5.
    support::put_block_list(lake, "small/no-md5.csv", &pattern(3000, 4), None).await;

    let name = "big/put.bin";
    support::upload_with(
        lake,
        name,
        &pattern(2 * MIB + 5, 2),
        &described(name, "text/csv", &[]),
    )
    .await;

    let name = "logs/app.log";
    let append = lake.blob(name);
    append
        .create_append_blob(&described(name, "text/plain", &tags))
        .await
        .unwrap();
    for seed in 0..3u8 {
        append
            .append(&pattern(2 * MIB + 1000, 10 + seed))
            .await
            .unwrap();
    }

    let name = "disk/sparse.vhd";
    let pages = lake.blob(name);
    let size = 12 * MIB as u64;
    pages
        .create_page_blob(size, &described(name, "application/octet-stream", &[]))
        .await
        .unwrap();
    let four = 4 * MIB as u64;
    for (offset, length, seed) in [
        (0, 512, 20u8),
        (four - 1024, 8192, 21),
        (2 * four + 4096, 5 * 512, 22),
        (size - 512, 512, 23),
    ] {
        pages
            .put_pages(offset, &pattern(length as usize, seed))
            .await
            .unwrap();
    }
}

/// The lake's blobs, each with what it holds.
async fn lake_blobs(lake: &Container) -> BTreeMap<String, Held> {
    let mut blobs = BTreeMap::new();
    for (name, snapshot) in support::list_all(lake).await {
        if snapshot.is_none() {
            blobs.insert(name.clone(), held(lake, &name).await.0);
        }
    }
    blobs
}

/// Every blob `name` of `container` holds what `expected` says, and no credential.
async fn assert_copies(
    container: &Container,
    names: &BTreeMap<String, String>,
    expected: &BTreeMap<String, Held>,
) {
    assert_eq!(
        names.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (source, name) in names {
        let (held, exposed) = held(container, name).await;
        assert_eq!(&held, &expected[source], "{name} holds what {source} does");
        for text in exposed {
            assert!(
                !text.to_ascii_lowercase().contains("sig="),
                "{name} exposes a signature: {text}"
            );
        }
    }
}

#[tokio::test]
async fn copies_from_sas_connections_keep_every_version_exactly_and_record_no_signature() {
    let fixture = sas_lake().await;
    let (app, settings) = (&fixture.app, fixture.settings());
    let lake = fixture.lake("lake");
    seed(&lake).await;
    let before = lake_blobs(&lake).await;

    // A backup of every version.
    let pass = support::produce(app, "lake").await;
    assert!(pass.succeeded(), "{:?} {:?}", pass.totals, pass.notes);
    let vault = fixture.vault("lake");
    let backups: BTreeMap<String, String> = support::list_all(&vault)
        .await
        .into_iter()
        .filter_map(|(name, _)| {
            let parsed = naming::parse_backup_blob_name(&name).ok()?;
            Some((parsed.source_name, name))
        })
        .collect();
    assert_copies(&vault, &backups, &before).await;

    // A restore into another container, then one in place over changed blobs (each write an
    // overwrite of the blob the plan saw).
    worker::run_ok(
        &settings,
        "restore --container lake --to-container restored",
    );
    let restored = fixture.lake("restored");
    let same_names = before.keys().map(|n| (n.clone(), n.clone())).collect();
    assert_copies(&restored, &same_names, &before).await;

    // As of an instant before the changes: the lake's own versions written since are its
    // newest.
    support::next_second().await;
    let instant = support::now_rfc3339();
    support::next_second().await;
    change_every_blob(&lake).await;
    let out = worker::run_ok(
        &settings,
        &format!("restore --container lake --as-of {instant}"),
    );
    assert_eq!(out.matches("\"action\":\"restore\"").count(), 5, "{out}");
    assert_copies(&lake, &same_names, &before).await;
}

/// A new version of every blob, of the same type (a restore overwrites only its own type).
async fn change_every_blob(lake: &Container) {
    support::upload(lake, "small/no-md5.csv", b"changed").await;
    support::upload(lake, "big/blocks.bin", b"overwritten").await;
    support::upload(lake, "big/put.bin", &pattern(3 * MIB, 9)).await;
    lake.blob("logs/app.log")
        .append(b"one more line\n")
        .await
        .unwrap();
    lake.blob("disk/sparse.vhd")
        .put_pages(6 * MIB as u64, &[0xEE; 1024])
        .await
        .unwrap();
}

/// A page blob copied through the worker takes several writes; one cut short leaves a blob of
/// the version's length (and stored MD5) under its backup name, marked incomplete. Nothing but
/// the mark tells it from a complete copy: the backup removes it and copies the version again,
/// rather than stamping zeros as the version.
#[tokio::test]
async fn a_copy_through_the_worker_cut_short_is_never_taken_for_a_backup() {
    let fixture = sas_lake().await;
    let app = &fixture.app;
    let lake = fixture.lake("lake");
    let name = "disk/a.vhd";
    let pages = lake.blob(name);
    pages
        .create_page_blob(MIB as u64, &NewBlob::default())
        .await
        .unwrap();
    pages.put_pages(8192, &pattern(4096, 3)).await.unwrap();
    let (etag, last_modified, _) = support::properties(&lake, name).await;
    let backup_name = naming::backup_blob_name(name, last_modified, &etag).unwrap();
    let vault = fixture.vault("lake");
    vault.create().await.unwrap();
    vault
        .blob(&backup_name)
        .create_page_blob(
            MIB as u64,
            &NewBlob::with_metadata([("lakebackup_incomplete", "true")]),
        )
        .await
        .unwrap();

    let outcome = lakebackup::engine::backup::back_up(
        app,
        &lakebackup::core::message::BackupRequest::new("lake", name, &etag),
    )
    .await
    .unwrap();
    assert!(
        matches!(
            outcome,
            lakebackup::engine::backup::BackupOutcome::BackedUp { .. }
        ),
        "{outcome:?}"
    );
    assert_eq!(
        support::download(&vault, &backup_name).await,
        support::download(&lake, name).await
    );
    let (_, _, metadata) = support::properties(&vault, &backup_name).await;
    assert_eq!(metadata.get("lakebackup_etag"), Some(&etag), "{metadata:?}");
    assert!(
        !metadata.contains_key("lakebackup_incomplete"),
        "{metadata:?}"
    );
}
