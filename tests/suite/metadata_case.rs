//! Metadata names keep their case through backup, restore and verify (issue 29, defect 6).
//!
//! Azure keeps a metadata name's case as it was written (names match case-insensitively, but are
//! stored and listed as written). Every HTTP stack in this process — the SDK's header names,
//! the `http` crate, hyper — lowercases header names, so a name read from `x-ms-meta-*`
//! response headers comes back lowercased, and a name written through them goes out lowercased.
//! The lake's blobs are therefore written here by raw HTTP/1.1 requests whose header names are
//! sent exactly as given (as .NET, Python or the portal send them), and every check reads
//! metadata from a listing, whose XML keeps the case.
//!
//! Blobs of every type and both sides of `COPY_THROUGH_WORKER_MAX_BYTES` (set to 1 KiB here):
//! small block blobs copied through the worker (Put Blob, and Put Block List for one without an
//! MD5), a larger block blob by Copy Blob From URL, append and page blobs by Copy Blob. Backed up
//! by the shards (a produce) and by the queue consumer's engine (`back_up`, which reads the
//! blob's properties first), restored in place, to another container, and from snapshots; and a
//! deep verify that records an MD5 on a backup must leave its metadata names as they were.
//!
//! The transport that writes them keeps its connections as the shared client does: writes in a
//! row share one (counted by the proxy), and one that gets no answer says where it went.

use std::collections::{BTreeMap, HashMap};

use futures::TryStreamExt;
use lakebackup::{
    app::App,
    core::{message::BackupRequest, restore_plan::RestoreFrom},
    engine::{
        backup::{self, BackupOutcome},
        restore::restore,
        verify::{verify, VerifyRequest},
    },
    settings::Settings,
    storage::{listing::list_with_metadata, StorageAccount},
};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{
    self,
    azurite::SOURCE_KEY,
    proxy::{OpClass, ProxiedAzurite, ProxyConfig},
    Azurite, Lake,
};

/// What every lake blob here carries: names in mixed case, one in the product's bookkeeping
/// namespace (`lakebackup_`, kept escaped on the backup), and a lowercase one.
const METADATA: [(&str, &str); 4] = [
    ("Owner", "alice"),
    ("CamelCaseKey", "Value1"),
    ("LakeBackup_Label", "mine"),
    ("lower", "x"),
];

/// The same, as a backup holds it besides the stamp.
const BACKUP_USER_METADATA: [(&str, &str); 4] = [
    ("Owner", "alice"),
    ("CamelCaseKey", "Value1"),
    ("lakebackup_user_LakeBackup_Label", "mine"),
    ("lower", "x"),
];

/// Blocks up to this size are copied through the worker, larger ones server-side.
const THROUGH_WORKER_MAX: usize = 1024;

fn expected(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The lake's blobs: (name, bytes) by kind.
struct LakeBlob {
    name: &'static str,
    kind: Kind,
    bytes: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Put Blob (an MD5 computed): through the worker when small, else Copy Blob From URL.
    Block,
    /// A block list without an MD5: through the worker by Put Block List.
    BlockList,
    Append,
    Page,
}

fn lake_blobs() -> Vec<LakeBlob> {
    let bytes = |len: usize, seed: u8| -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    };
    vec![
        LakeBlob {
            name: "small.csv",
            kind: Kind::Block,
            bytes: bytes(200, 1),
        },
        LakeBlob {
            name: "dir/nomd5.csv",
            kind: Kind::BlockList,
            bytes: bytes(300, 2),
        },
        LakeBlob {
            name: "large.csv",
            kind: Kind::Block,
            bytes: bytes(4 * THROUGH_WORKER_MAX, 3),
        },
        LakeBlob {
            name: "log.txt",
            kind: Kind::Append,
            bytes: bytes(700, 4),
        },
        LakeBlob {
            name: "dir/disk.vhd",
            kind: Kind::Page,
            bytes: bytes(1024, 5),
        },
    ]
}

/// One raw HTTP/1.1 request to the source account, signed with its key, every header name sent
/// exactly as given; the response's status.
async fn raw_request(
    azurite: &Azurite,
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> u16 {
    let url = url::Url::parse(&format!(
        "http://127.0.0.1:{}{path_and_query}",
        azurite.blob_port
    ))
    .unwrap();
    let mut all: Vec<(String, String)> = vec![
        (
            "x-ms-date".into(),
            lakebackup::storage::testing::http_date(OffsetDateTime::now_utc()),
        ),
        ("x-ms-version".into(), "2021-10-04".into()),
        ("Content-Length".into(), body.len().to_string()),
    ];
    all.extend(headers.iter().cloned());
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode(SOURCE_KEY)
        .unwrap();
    let authorization = lakebackup::storage::shared_key::authorization(
        "source",
        &key,
        method,
        &url,
        all.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    all.push(("Authorization".into(), authorization));
    let mut request = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n",
        azurite.blob_port
    );
    for (name, value) in &all {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", azurite.blob_port))
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path_and_query}: no status in {text}"))
}

/// `text` percent-encoded for a query value.
fn url_encoded(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `x-ms-meta-{Name}` for each of [`METADATA`]: the name's case as written.
fn metadata_headers() -> Vec<(String, String)> {
    METADATA
        .iter()
        .map(|(k, v)| (format!("x-ms-meta-{k}"), (*v).to_owned()))
        .collect()
}

/// Writes `blob` into `container` of the source account with [`METADATA`], its names' case
/// sent as written.
async fn write_lake_blob(azurite: &Azurite, app: &App, container: &str, blob: &LakeBlob) {
    let path = format!("/source/{container}/{}", blob.name);
    let client = app.source.container(container).unwrap().blob(blob.name);
    let mut headers = metadata_headers();
    let status = match blob.kind {
        Kind::Block => {
            headers.push(("x-ms-blob-type".into(), "BlockBlob".into()));
            raw_request(azurite, "PUT", &path, &headers, &blob.bytes).await
        }
        Kind::BlockList => {
            let id = b"block-0".to_vec();
            use base64::Engine as _;
            let encoded = base64::engine::general_purpose::STANDARD.encode(&id);
            let stage = format!("{path}?comp=block&blockid={}", url_encoded(&encoded));
            let staged = raw_request(azurite, "PUT", &stage, &[], &blob.bytes).await;
            assert_eq!(staged, 201, "staging a block of {container}/{}", blob.name);
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList><Latest>{encoded}</Latest></BlockList>"
            );
            let path = format!("{path}?comp=blocklist");
            raw_request(azurite, "PUT", &path, &headers, body.as_bytes()).await
        }
        Kind::Append => {
            headers.push(("x-ms-blob-type".into(), "AppendBlob".into()));
            raw_request(azurite, "PUT", &path, &headers, &[]).await
        }
        Kind::Page => {
            headers.push(("x-ms-blob-type".into(), "PageBlob".into()));
            headers.push((
                "x-ms-blob-content-length".into(),
                blob.bytes.len().to_string(),
            ));
            raw_request(azurite, "PUT", &path, &headers, &[]).await
        }
    };
    assert_eq!(status, 201, "writing {container}/{}", blob.name);
    match blob.kind {
        Kind::Append => client.append(&blob.bytes).await.unwrap(),
        Kind::Page => client.put_pages(0, &blob.bytes).await.unwrap(),
        Kind::Block | Kind::BlockList => {}
    }
}

/// Every blob of `container` with its metadata, as a listing shows it.
async fn listed(account: &StorageAccount, container: &str) -> BTreeMap<String, Listed> {
    let container = account.container(container).unwrap();
    let pages = list_with_metadata(&container, "").unwrap();
    futures::pin_mut!(pages);
    let mut listed = BTreeMap::new();
    while let Some(page) = pages.try_next().await.unwrap() {
        for version in page {
            listed.insert(
                version.name.clone(),
                Listed {
                    etag: version.etag.clone(),
                    metadata: version.metadata_or_empty().into_iter().collect(),
                },
            );
        }
    }
    listed
}

#[derive(Debug, Clone)]
struct Listed {
    etag: String,
    metadata: BTreeMap<String, String>,
}

/// The user's part of a backup's metadata (the stamp's own keys left out; a user's escaped key
/// kept as the backup holds it).
fn backup_user_part(metadata: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    metadata
        .iter()
        .filter(|(k, _)| !k.starts_with("lakebackup_") || k.starts_with("lakebackup_user_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The stamped backup of each source name, by source name.
async fn backups_by_source(app: &App, vault: &str) -> BTreeMap<String, Listed> {
    listed(&app.backup, vault)
        .await
        .into_iter()
        .filter_map(|(name, listed)| {
            let parsed = lakebackup::core::naming::parse_backup_blob_name(&name).ok()?;
            listed
                .metadata
                .contains_key("lakebackup_etag")
                .then_some((parsed.source_name, listed))
        })
        .collect()
}

async fn lake_with_small_through_worker(containers: &[&str]) -> Lake {
    let max = THROUGH_WORKER_MAX.to_string();
    Lake::start_with(containers, &[("COPY_THROUGH_WORKER_MAX_BYTES", &max)]).await
}

async fn produce(app: &App, container: &str) {
    let job = support::produce(app, container).await;
    assert!(job.succeeded(), "produce {container}: {:?}", job.notes);
}

async fn restore_into(app: &App, container: &str, from: RestoreFrom, to: Option<&str>) {
    restore_as_of(app, container, from, to, None).await
}

/// As [`restore_into`], to the lake of `as_of` (the newest versions when `None`).
async fn restore_as_of(
    app: &App,
    container: &str,
    from: RestoreFrom,
    to: Option<&str>,
    as_of: Option<time::OffsetDateTime>,
) {
    let summary = restore(
        app,
        &support::restore_request(container, from, to, as_of),
        &mut |_| {},
    )
    .await;
    assert_eq!(summary.errors, 0, "restore of {container}: {summary:?}");
    assert_eq!(summary.status, "ok", "restore of {container}: {summary:?}");
}

/// Every lake blob's metadata, as listed, is exactly [`METADATA`].
fn assert_lake_metadata(what: &str, listed: &BTreeMap<String, Listed>) {
    for blob in lake_blobs() {
        let got = listed
            .get(blob.name)
            .unwrap_or_else(|| panic!("{what}: {} is missing", blob.name));
        assert_eq!(
            got.metadata,
            expected(&METADATA),
            "{what}: the metadata names of {} as listed",
            blob.name
        );
    }
}

/// Every lake blob's backup holds exactly [`BACKUP_USER_METADATA`] besides the stamp.
fn assert_backup_metadata(what: &str, backups: &BTreeMap<String, Listed>) {
    for blob in lake_blobs() {
        let backup = backups
            .get(blob.name)
            .unwrap_or_else(|| panic!("{what}: no stamped backup of {}", blob.name));
        assert_eq!(
            backup_user_part(&backup.metadata),
            expected(&BACKUP_USER_METADATA),
            "{what}: the user metadata names of the backup of {} ({:?} blob)",
            blob.name,
            blob.kind
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_names_keep_their_case_through_backup_and_restore() {
    let fixture = lake_with_small_through_worker(&["lake", "inbox"]).await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    for container in ["lake", "inbox"] {
        for blob in lake_blobs() {
            write_lake_blob(azurite, app, container, &blob).await;
        }
        // The listing keeps the case the blobs were written with (so the checks below can
        // trust it).
        assert_lake_metadata(container, &listed(&app.source, container).await);
    }

    // The shards: a produce lists the lake (metadata from the listing) and copies each version.
    produce(app, "lake").await;
    assert_backup_metadata("shards", &backups_by_source(app, "lakebak").await);

    // The queue consumer's engine: one request per version, decided from the blob's properties.
    for (name, lake) in listed(&app.source, "inbox").await {
        let outcome = backup::back_up(app, &BackupRequest::new("inbox", &name, &lake.etag))
            .await
            .unwrap_or_else(|e| panic!("back up inbox/{name}: {e}"));
        assert!(
            matches!(outcome, BackupOutcome::BackedUp { .. }),
            "inbox/{name}: {outcome:?}"
        );
    }
    assert_backup_metadata("queue consumer", &backups_by_source(app, "inboxbak").await);
    // Versions are told apart by Last-Modified, which has one-second resolution.
    support::next_second().await;

    // To another container, from the backups and from the lake's snapshots.
    restore_into(app, "lake", RestoreFrom::Backup, Some("lakecopy")).await;
    assert_lake_metadata(
        "restored to lakecopy",
        &listed(&app.source, "lakecopy").await,
    );
    restore_into(app, "inbox", RestoreFrom::Backup, Some("inboxcopy")).await;
    assert_lake_metadata(
        "restored to inboxcopy",
        &listed(&app.source, "inboxcopy").await,
    );
    restore_into(app, "lake", RestoreFrom::Snapshots, Some("fromsnapshots")).await;
    assert_lake_metadata(
        "restored from snapshots",
        &listed(&app.source, "fromsnapshots").await,
    );

    // In place: two blobs deleted, one overwritten with other bytes and no metadata, one given
    // other metadata over the same bytes; all come back exactly, names as written, as of an
    // instant before (the lake's own versions written since are the newest).
    support::next_second().await;
    let instant = time::OffsetDateTime::now_utc();
    support::next_second().await;
    let lake = fixture.lake("lake");
    support::delete_with_snapshots(&lake, "small.csv").await;
    support::delete_with_snapshots(&lake, "log.txt").await;
    support::upload(&lake, "large.csv", b"someone else's bytes").await;
    lake.blob("dir/nomd5.csv")
        .replace_metadata(&HashMap::from([("owner".into(), "mallory".into())]))
        .await
        .unwrap();
    restore_as_of(app, "lake", RestoreFrom::Backup, None, Some(instant)).await;
    assert_lake_metadata("restored in place", &listed(&app.source, "lake").await);
    for blob in lake_blobs() {
        assert_eq!(
            support::download(&lake, blob.name).await,
            blob.bytes,
            "{} restored in place",
            blob.name
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deep_verify_leaves_a_backups_metadata_names_as_they_were() {
    let fixture = lake_with_small_through_worker(&["lake"]).await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    for blob in lake_blobs() {
        write_lake_blob(azurite, app, "lake", &blob).await;
    }
    produce(app, "lake").await;
    let before = backups_by_source(app, "lakebak").await;
    assert_backup_metadata("backed up", &before);
    // Copied server-side, without an MD5 in the lake: nothing recorded an MD5 of these
    // backups' bytes, so the deep check reads the source and records one on the backup.
    for name in ["log.txt", "dir/disk.vhd"] {
        assert!(
            !before[name].metadata.contains_key("lakebackup_md5"),
            "{name} has an MD5 recorded before the check"
        );
    }

    let summary = verify(
        app,
        &VerifyRequest {
            container: "lake".into(),
            prefix: None,
            deep: true,
        },
        &|_| {},
    )
    .await;
    assert_eq!(summary.status, "ok", "{summary:?}");
    assert_eq!(summary.mismatched, 0, "{summary:?}");

    let after = backups_by_source(app, "lakebak").await;
    for name in ["log.txt", "dir/disk.vhd"] {
        let mut recorded = after[name].metadata.clone();
        assert!(
            recorded.remove("lakebackup_md5").is_some(),
            "the deep check recorded the MD5 of {name}'s backup"
        );
        assert_eq!(
            recorded, before[name].metadata,
            "the deep check changed nothing of {name}'s backup but the MD5 it recorded"
        );
    }
    assert_backup_metadata("verified", &after);
}

/// Writes whose names keep their case go over a connection of the worker's own
/// (`storage::metadata_case`); in a row they share one, as the shared client's writes do, rather
/// than opening (over HTTPS, handshaking) one each, which under load on Functions exhausts
/// outbound (SNAT) ports.
#[tokio::test(flavor = "multi_thread")]
async fn writes_in_a_row_that_keep_names_case_share_one_connection() {
    let azurite = Azurite::start();
    let proxied = ProxiedAzurite::start(&azurite, ProxyConfig::azurite()).unwrap();
    let settings = Settings::from_pairs(HashMap::from([(
        "SOURCE_STORAGE".to_owned(),
        proxied.source(),
    )]));
    let source = StorageAccount::connect("SOURCE_STORAGE", &settings).unwrap();
    source.container("lake").unwrap().create().await.unwrap();
    let metadata: HashMap<String, String> = METADATA
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    proxied.blob.reset_stats();
    let lake = source.container("lake").unwrap();
    for i in 0..6u8 {
        let written = lake
            .blob(&format!("w{i}.csv"))
            .create(vec![i; 100], metadata.clone())
            .await
            .unwrap();
        assert!(written);
    }
    let stats = proxied.blob.stats();
    assert_eq!(stats.requests_of(OpClass::Write), 6, "{stats:?}");
    assert_eq!(
        stats.connections_accepted, 1,
        "six writes, one connection: {stats:?}"
    );
    let listed = listed(&source, "lake").await;
    assert_eq!(listed.len(), 6);
    for (name, blob) in listed {
        assert_eq!(
            blob.metadata,
            expected(&METADATA),
            "{name}: names as written"
        );
    }
}

/// A write whose names keep their case, to an endpoint nobody answers, fails in the same one
/// line as any other write: where it went and the root cause, no secret.
#[tokio::test]
async fn a_write_that_keeps_names_case_and_gets_no_answer_names_the_endpoint() {
    let port = support::closed_port();
    let settings = Settings::from_pairs(HashMap::from([(
        "SOURCE_STORAGE".to_owned(),
        format!("AccountName=source;AccountKey={SOURCE_KEY};BlobEndpoint=http://127.0.0.1:{port}/source"),
    )]));
    let source = StorageAccount::connect("SOURCE_STORAGE", &settings).unwrap();
    let blob = source.container("lake").unwrap().blob("a.csv");
    let write = |name: &str| {
        let metadata = HashMap::from([(name.to_owned(), "alice".to_owned())]);
        let blob = &blob;
        async move {
            blob.create(b"a".to_vec(), metadata)
                .await
                .unwrap_err()
                .to_string()
        }
    };
    // Through the worker's own transport, and (all lowercase) through the shared client.
    let (cased, shared) = (write("Owner").await, write("owner").await);
    let prefix = format!("writing lake/a.csv: could not connect to http://127.0.0.1:{port}: ");
    for line in [&cased, &shared] {
        assert!(line.starts_with(&prefix), "{line}");
        assert!(!line.contains('\n') && !line.contains(SOURCE_KEY), "{line}");
    }
    assert_eq!(cased, shared, "one shape whichever transport sent it");
}
