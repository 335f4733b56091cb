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

use std::collections::{BTreeMap, HashMap};

use azure_core::{credentials::SecretBytes, http::RequestContent};
use azure_storage_blob::{
    models::{
        AppendBlobClientCreateOptions, BlobClientGetPropertiesResultHeaders,
        BlobClientUploadOptions, BlockBlobClientCommitBlockListOptions, BlockLookupList, HttpRange,
        PageBlobClientCreateOptions,
    },
    BlobContainerClient,
};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use futures::TryStreamExt;
use lakebackup::{
    core::naming,
    functions::producer::ProduceRequest,
    storage::sas::{account_sas, AccountSasGrant},
};
use md5::{Digest, Md5};
use support::{
    azurite::{BACKUP_KEY, SOURCE_KEY},
    worker, Azurite,
};

const MIB: usize = 1 << 20;

/// A connection string with the account's SAS and no key, as a deployment gives a SAS setting.
fn sas_connection(azurite: &Azurite, account: &str, key: &str) -> String {
    let sas = account_sas(
        account,
        &SecretBytes::new(BASE64.decode(key).unwrap()),
        AccountSasGrant {
            services: "bq",
            resource_types: "sco",
            permissions: "rwdlacupt",
            expiry: time::OffsetDateTime::now_utc() + time::Duration::hours(2),
        },
    );
    format!(
        "BlobEndpoint={};QueueEndpoint={};SharedAccessSignature={}",
        azurite.blob_endpoint(account),
        azurite.queue_endpoint(account),
        sas.secret()
    )
}

fn settings(azurite: &Azurite) -> HashMap<String, String> {
    let mut settings = worker::settings(azurite);
    settings.insert(
        "SOURCE_STORAGE".into(),
        sas_connection(azurite, "source", SOURCE_KEY),
    );
    settings.insert(
        "BACKUP_STORAGE".into(),
        sas_connection(azurite, "backup", BACKUP_KEY),
    );
    settings
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
async fn held(container: &BlobContainerClient, name: &str) -> (Held, Vec<String>) {
    let blob = container.blob_client(name);
    let properties = blob
        .get_properties(None)
        .await
        .unwrap_or_else(|e| panic!("properties of {name}: {e}"));
    let metadata = properties.metadata().unwrap();
    let mut exposed: Vec<String> = metadata.values().cloned().collect();
    exposed.extend(properties.copy_source().unwrap());
    exposed.extend(properties.copy_status_description().unwrap());
    let blob_type = format!("{:?}", properties.blob_type().unwrap().unwrap());
    let pages = if blob_type.contains("Page") {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        let mut pager = blob.page_blob_client().list_page_ranges(None).unwrap();
        while let Some(page) = pager.try_next().await.unwrap() {
            for range in page.into_model().unwrap().page_ranges {
                let (start, end) = (range.start.unwrap() as u64, range.end.unwrap() as u64 + 1);
                match ranges.last_mut() {
                    Some(last) if last.1 == start => last.1 = end,
                    _ => ranges.push((start, end)),
                }
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
        content_type: properties.content_type().unwrap(),
        cache_control: properties.cache_control().unwrap(),
        content_md5: properties.content_md5().unwrap().filter(|m| !m.is_empty()),
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
async fn seed(lake: &BlobContainerClient) {
    let metadata = |name: &str| HashMap::from([("owner".to_owned(), name.to_owned())]);
    let tags = "project=lake&tier=gold".to_owned();

    let name = "big/blocks.bin";
    let block = lake.blob_client(name).block_blob_client();
    let bytes = pattern(9 * MIB + 123, 1);
    let mut ids = Vec::new();
    for (index, part) in bytes.chunks(3 * MIB).enumerate() {
        let id = format!("seed-{index:04}").into_bytes();
        block
            .stage_block(
                &id,
                part.len() as u64,
                RequestContent::from(part.to_vec()),
                None,
            )
            .await
            .unwrap();
        ids.push(id);
    }
    let list = BlockLookupList {
        latest: Some(ids),
        ..Default::default()
    };
    block
        .commit_block_list(
            list.try_into().unwrap(),
            Some(BlockBlobClientCommitBlockListOptions {
                blob_content_type: Some("application/x-parquet".into()),
                blob_cache_control: Some("no-cache".into()),
                metadata: Some(metadata(name)),
                blob_tags_string: Some(tags.clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap();

    // Small (copied through the worker whatever the connection), and without an MD5.
    support::put_block_list(lake, "small/no-md5.csv", &pattern(3000, 4), None).await;

    let name = "big/put.bin";
    lake.blob_client(name)
        .upload(
            RequestContent::from(pattern(2 * MIB + 5, 2)),
            Some(BlobClientUploadOptions {
                blob_content_type: Some("text/csv".into()),
                metadata: Some(metadata(name)),
                ..Default::default()
            }),
        )
        .await
        .unwrap();

    let name = "logs/app.log";
    let append = lake.blob_client(name).append_blob_client();
    append
        .create(Some(AppendBlobClientCreateOptions {
            blob_content_type: Some("text/plain".into()),
            metadata: Some(metadata(name)),
            blob_tags_string: Some(tags.clone()),
            ..Default::default()
        }))
        .await
        .unwrap();
    for seed in 0..3u8 {
        let part = pattern(2 * MIB + 1000, 10 + seed);
        append
            .append_block(RequestContent::from(part.clone()), part.len() as u64, None)
            .await
            .unwrap();
    }

    let name = "disk/sparse.vhd";
    let pages = lake.blob_client(name).page_blob_client();
    let size = 12 * MIB as u64;
    pages
        .create(
            size,
            Some(PageBlobClientCreateOptions {
                blob_content_type: Some("application/octet-stream".into()),
                metadata: Some(metadata(name)),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    let four = 4 * MIB as u64;
    for (offset, length, seed) in [
        (0, 512, 20u8),
        (four - 1024, 8192, 21),
        (2 * four + 4096, 5 * 512, 22),
        (size - 512, 512, 23),
    ] {
        let part = pattern(length as usize, seed);
        pages
            .upload_pages(
                RequestContent::from(part),
                length,
                HttpRange::new(offset, length),
                None,
            )
            .await
            .unwrap();
    }
}

/// The lake's blobs, each with what it holds.
async fn lake_blobs(lake: &BlobContainerClient) -> BTreeMap<String, Held> {
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
    container: &BlobContainerClient,
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
    let azurite = Azurite::start();
    let settings = settings(&azurite);
    let app = lakebackup::app::App::from_settings(&lakebackup::settings::Settings::from_pairs(
        settings.clone(),
    ))
    .unwrap();
    let lake = app.source.container_client("lake").unwrap();
    lake.create(None).await.unwrap();
    seed(&lake).await;
    let before = lake_blobs(&lake).await;

    // A backup of every version.
    let request = ProduceRequest {
        container: "lake".into(),
        prefix: String::new(),
    };
    let pass = lakebackup::functions::producer::run_here(&app, &request)
        .await
        .unwrap();
    assert!(pass.succeeded(), "{:?} {:?}", pass.totals, pass.notes);
    let vault = app.backup.container_client("lakebak").unwrap();
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
    let (code, out, err) = worker::run_once(
        &settings,
        &[
            "restore",
            "--container",
            "lake",
            "--to-container",
            "restored",
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let restored = app.source.container_client("restored").unwrap();
    let same_names = before.keys().map(|n| (n.clone(), n.clone())).collect();
    assert_copies(&restored, &same_names, &before).await;

    // As of an instant before the changes: the lake's own versions written since are its
    // newest.
    support::next_second().await;
    let instant = support::now_rfc3339();
    support::next_second().await;
    change_every_blob(&lake).await;
    let (code, out, err) = worker::run_once(
        &settings,
        &["restore", "--container", "lake", "--as-of", &instant],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(out.matches("\"action\":\"restore\"").count(), 5, "{out}");
    assert_copies(&lake, &same_names, &before).await;
}

/// A new version of every blob, of the same type (a restore overwrites only its own type).
async fn change_every_blob(lake: &BlobContainerClient) {
    lake.blob_client("small/no-md5.csv")
        .upload(RequestContent::from(b"changed".to_vec()), None)
        .await
        .unwrap();
    lake.blob_client("big/blocks.bin")
        .upload(RequestContent::from(b"overwritten".to_vec()), None)
        .await
        .unwrap();
    lake.blob_client("big/put.bin")
        .upload(RequestContent::from(pattern(3 * MIB, 9)), None)
        .await
        .unwrap();
    let more = b"one more line\n".to_vec();
    lake.blob_client("logs/app.log")
        .append_blob_client()
        .append_block(RequestContent::from(more.clone()), more.len() as u64, None)
        .await
        .unwrap();
    lake.blob_client("disk/sparse.vhd")
        .page_blob_client()
        .upload_pages(
            RequestContent::from(vec![0xEE; 1024]),
            1024,
            HttpRange::new(6 * MIB as u64, 1024),
            None,
        )
        .await
        .unwrap();
}

/// A page blob copied through the worker takes several writes; one cut short leaves a blob of
/// the version's length (and stored MD5) under its backup name, marked incomplete. Nothing but
/// the mark tells it from a complete copy: the backup removes it and copies the version again,
/// rather than stamping zeros as the version.
#[tokio::test]
async fn a_copy_through_the_worker_cut_short_is_never_taken_for_a_backup() {
    let azurite = Azurite::start();
    let settings = settings(&azurite);
    let app =
        lakebackup::app::App::from_settings(&lakebackup::settings::Settings::from_pairs(settings))
            .unwrap();
    let lake = app.source.container_client("lake").unwrap();
    lake.create(None).await.unwrap();
    let name = "disk/a.vhd";
    let pages = lake.blob_client(name).page_blob_client();
    pages.create(MIB as u64, None).await.unwrap();
    pages
        .upload_pages(
            RequestContent::from(pattern(4096, 3)),
            4096,
            HttpRange::new(8192, 4096),
            None,
        )
        .await
        .unwrap();
    let (etag, last_modified, _) = support::properties(&lake, name).await;
    let backup_name = naming::backup_blob_name(name, last_modified, &etag).unwrap();
    let vault = app.backup.container_client("lakebak").unwrap();
    vault.create(None).await.unwrap();
    vault
        .blob_client(&backup_name)
        .page_blob_client()
        .create(
            MIB as u64,
            Some(PageBlobClientCreateOptions {
                metadata: Some(HashMap::from([(
                    "lakebackup_incomplete".to_owned(),
                    "true".to_owned(),
                )])),
                ..Default::default()
            }),
        )
        .await
        .unwrap();

    let outcome = lakebackup::engine::backup::back_up(
        &app,
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
