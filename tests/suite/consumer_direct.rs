//! The consumer with the direct copy engine, end to end: the real `lakebackup serve`, messages
//! delivered as the Functions host delivers them, Azurite for both accounts.

use crate::support;

use std::collections::{BTreeMap, HashMap};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use lakebackup::{
    core::naming,
    storage::{testing::NewBlob, Container},
};
use md5::Digest as _;
use serde_json::{json, Value};
use support::{worker::Worker, Lake};

async fn setup() -> Lake {
    Lake::start(&["lake"]).await
}

fn serve(setup: &Lake) -> Worker {
    setup.serve(&[("COPY_POLL_INTERVAL_MS", "50")])
}

/// Every byte value, then a pattern, so a truncated or re-encoded copy shows.
fn content(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + seed * 7) % 256) as u8)
        .collect()
}

/// Backup name → (bytes, metadata), for every blob of `lakebak`.
async fn backups(setup: &Lake) -> BTreeMap<String, (Vec<u8>, HashMap<String, String>)> {
    let container = setup.vault("lake");
    let mut out = BTreeMap::new();
    if !container.exists().await.unwrap() {
        return out;
    }
    for (name, _) in support::list_all(&container).await {
        let bytes = support::download(&container, &name).await;
        let (_, _, metadata) = support::properties(&container, &name).await;
        out.insert(name, (bytes, metadata));
    }
    out
}

fn outcome(reply: &Value) -> &str {
    reply["ReturnValue"]["outcome"].as_str().unwrap_or("none")
}

#[tokio::test]
async fn backup_is_byte_identical_stamped_and_never_copied_twice() {
    let setup = setup().await;
    let worker = serve(&setup);
    let lake = setup.lake("lake");
    let names = [
        "raw/2026/sales.v2.csv",
        "with space/\"quoted\" #1?.bin",
        "ünïcødé/数据.parquet",
        ".hidden",
    ];
    let mut expected = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        // The first is over COPY_THROUGH_WORKER_MAX_BYTES: a server-side copy. The others are
        // read and written by the worker.
        let bytes = content(i, if i == 0 { (1 << 20) + 1 } else { 300 + i });
        support::upload(&lake, name, &bytes).await;
        let (etag, last_modified, _) = support::properties(&lake, name).await;
        let backup_name = naming::backup_blob_name(name, last_modified, &etag).unwrap();
        expected.insert(backup_name, (name.to_string(), etag, bytes));
    }

    for name in names {
        let request = support::request_for(&lake, name).await;
        let (status, reply) = support::deliver(&worker, &request, "m-1", 1).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(outcome(&reply), "backed_up", "{reply}");
        assert_eq!(reply["ReturnValue"]["backup_container"], "lakebak");
    }
    let landed = backups(&setup).await;
    assert_eq!(
        landed.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (backup_name, (bytes, metadata)) in &landed {
        let (name, etag, source_bytes) = &expected[backup_name];
        assert!(bytes == source_bytes, "{backup_name} is not byte-identical");
        assert_eq!(metadata["lakebackup_container"], "lake");
        let decoded = percent_encoding::percent_decode_str(&metadata["lakebackup_blob"])
            .decode_utf8()
            .unwrap();
        assert_eq!(&decoded, name);
        assert_eq!(&metadata["lakebackup_etag"], etag);
        assert!(metadata["lakebackup_last_modified"].ends_with('Z'));
        // Bytes that passed through the worker were hashed on the way.
        let through_worker = source_bytes.len() <= 1 << 20;
        assert_eq!(
            metadata.get("lakebackup_md5").cloned(),
            through_worker.then(|| BASE64.encode(md5::Md5::digest(source_bytes))),
            "{backup_name}"
        );
    }

    // Again: nothing is copied, the backups keep their ETags.
    let backup_container = setup.vault("lake");
    let before: Vec<String> = {
        let mut etags = Vec::new();
        for name in landed.keys() {
            etags.push(support::properties(&backup_container, name).await.0);
        }
        etags
    };
    for name in names {
        let request = support::request_for(&lake, name).await;
        let (status, reply) = support::deliver(&worker, &request, "m-2", 2).await;
        assert_eq!(
            (status, outcome(&reply)),
            (200, "already_backed_up"),
            "{reply}"
        );
    }
    for (name, etag) in landed.keys().zip(before) {
        assert_eq!(support::properties(&backup_container, name).await.0, etag);
    }
}

#[tokio::test]
async fn outdated_and_deleted_sources_land_nothing() {
    let setup = setup().await;
    let worker = serve(&setup);
    let lake = setup.lake("lake");
    support::upload(&lake, "changed.csv", b"v1").await;
    let old_request = support::request_for(&lake, "changed.csv").await;
    support::upload(&lake, "changed.csv", b"v2").await;
    support::upload(&lake, "deleted.csv", b"gone soon").await;
    let deleted_request = support::request_for(&lake, "deleted.csv").await;
    lake.blob("deleted.csv").delete(None).await.unwrap();

    let (status, reply) = support::deliver(&worker, &old_request, "m-old", 1).await;
    assert_eq!((status, outcome(&reply)), (200, "outdated"), "{reply}");
    assert!(reply["ReturnValue"]["reason"]
        .as_str()
        .unwrap()
        .contains("changed"));
    let (status, reply) = support::deliver(&worker, &deleted_request, "m-del", 1).await;
    assert_eq!((status, outcome(&reply)), (200, "outdated"), "{reply}");
    assert!(backups(&setup).await.is_empty());
    let poison = setup.queue("backup-requests-poison");
    assert!(
        !support::queue_exists(&poison).await,
        "outdated requests are not poison"
    );
}

#[tokio::test]
async fn racing_writer_and_parallel_consumers_land_exactly_the_right_versions() {
    let setup = setup().await;
    let worker = serve(&setup);
    let lake = setup.lake("lake");
    support::upload(&lake, "steady.bin", &content(99, 5000)).await;
    let steady = support::request_for(&lake, "steady.bin").await;

    // A writer makes version after version of hot.bin; each version's request is delivered
    // three times at once while the next version is already being written.
    let (requests_tx, mut requests_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let writer = async {
        let mut versions = HashMap::new();
        for round in 0..8 {
            let bytes = content(round, 2000 + round);
            support::upload(&lake, "hot.bin", &bytes).await;
            let request = support::request_for(&lake, "hot.bin").await;
            let etag = serde_json::from_str::<Value>(&request).unwrap()["etag"].clone();
            versions.insert(etag.as_str().unwrap().to_owned(), bytes);
            for copy in 0..3 {
                let _ = requests_tx.send((request.clone(), format!("hot-{round}-{copy}")));
            }
            let _ = requests_tx.send((steady.clone(), format!("steady-{round}")));
            // The writer's pace: the next version comes while these requests are handled.
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
        drop(requests_tx);
        versions
    };
    let worker = &worker;
    let consumers = async {
        let mut pending = futures::stream::FuturesUnordered::new();
        let mut results = Vec::new();
        loop {
            tokio::select! {
                Some((text, id)) = requests_rx.recv() => pending.push(async move {
                    support::deliver(worker, &text, &id, 1).await
                }),
                Some(result) = futures::StreamExt::next(&mut pending), if !pending.is_empty() => {
                    results.push(result)
                }
                else => break,
            }
        }
        results
    };
    let (versions, results) = tokio::join!(writer, consumers);
    assert_eq!(results.len(), 32);
    for (status, reply) in &results {
        assert_eq!(*status, 200, "{reply}");
        assert!(
            matches!(
                outcome(reply),
                "backed_up" | "already_backed_up" | "outdated"
            ),
            "{reply}"
        );
    }

    let landed = backups(&setup).await;
    let steady_backups: Vec<_> = landed.keys().filter(|n| n.starts_with("steady")).collect();
    assert_eq!(
        steady_backups.len(),
        1,
        "one backup per version: {landed:?}"
    );
    for (backup_name, (bytes, metadata)) in &landed {
        let parsed = naming::parse_backup_blob_name(backup_name).unwrap();
        assert_eq!(&metadata["lakebackup_etag"], &parsed.etag);
        if parsed.source_name == "hot.bin" {
            assert!(
                versions[&parsed.etag] == *bytes,
                "{backup_name} holds other content than its version"
            );
        }
    }
    // The final version is never outdated, so it must be there.
    let (last_etag, _, _) = support::properties(&lake, "hot.bin").await;
    assert!(landed.keys().any(|n| n.contains(&last_etag)), "{landed:?}");
}

#[tokio::test]
async fn bad_messages_go_to_the_poison_queue_unchanged() {
    let setup = setup().await;
    let worker = serve(&setup);
    let too_long = json!({"container": "lake", "blob_name": "x".repeat(1025), "etag": "0x1"});
    // A valid blob whose backup name would pass Azure's 1,024-character limit.
    let lake = setup.lake("lake");
    let long_name = "y".repeat(1020);
    support::upload(&lake, &long_name, b"long").await;
    let backup_too_long = support::request_for(&lake, &long_name).await;
    let bad = [
        "this is not json".to_owned(),
        r#"{"container": "lake", "blob_name": "a.csv"}"#.to_owned(),
        r#"{"container": "Not_Valid", "blob_name": "a.csv", "etag": "0x1"}"#.to_owned(),
        r#"{"container": "lake", "blob_name": "", "etag": "0x1"}"#.to_owned(),
        r#"{"container": "lake", "blob_name": "a.csv", "etag": ""}"#.to_owned(),
        too_long.to_string(),
        "[1, 2]".to_owned(),
        backup_too_long,
    ];
    for (i, text) in bad.iter().enumerate() {
        let (status, reply) = support::deliver(&worker, text, &format!("bad-{i}"), 1).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(outcome(&reply), "poisoned", "{text}: {reply}");
        assert!(reply["Logs"][0]
            .as_str()
            .unwrap()
            .contains(&format!("bad-{i}")));
    }
    let poison = setup.queue("backup-requests-poison");
    let poisoned: Vec<String> = support::drain_queue(&poison)
        .await
        .into_iter()
        .map(|t| String::from_utf8(BASE64.decode(t).unwrap()).unwrap())
        .collect();
    let mut expected = bad.to_vec();
    expected.sort();
    let mut poisoned = poisoned;
    poisoned.sort();
    assert_eq!(poisoned, expected);
}

#[tokio::test]
async fn unreachable_backup_account_fails_the_invocation_for_a_retry() {
    let setup = setup().await;
    let lake = setup.lake("lake");
    support::upload(&lake, "a.csv", b"a").await;
    let request = support::request_for(&lake, "a.csv").await;
    let unreachable = support::unreachable_connection("backup", support::azurite::BACKUP_KEY);
    let worker = setup.serve(&[("BACKUP_STORAGE", &unreachable)]);
    let (status, reply) = support::deliver(&worker, &request, "m-retry", 1).await;
    assert_eq!(status, 500, "{reply}");
    let log = reply["Logs"][0].as_str().unwrap();
    assert!(log.contains("m-retry") && log.contains("lakebak"), "{log}");
    assert!(!log.contains(support::azurite::BACKUP_KEY));
    let poison = setup.queue("backup-requests-poison");
    assert!(
        !support::queue_exists(&poison).await,
        "a transient failure is not poison"
    );
}

async fn upload_with_metadata(
    lake: &Container,
    name: &str,
    bytes: &[u8],
    metadata: &[(&str, &str)],
) {
    support::upload_with(
        lake,
        name,
        bytes,
        &NewBlob::with_metadata(metadata.iter().copied()),
    )
    .await;
}

async fn snapshot(lake: &Container, name: &str) {
    lake.blob(name).take_snapshot(None).await.unwrap();
}

#[tokio::test]
async fn the_stamp_lands_with_the_copy_and_the_sources_own_metadata_is_kept() {
    let setup = setup().await;
    let worker = serve(&setup);
    let lake = setup.lake("lake");
    upload_with_metadata(
        &lake,
        "m.csv",
        b"with metadata",
        &[("owner", "team-a"), ("pii", "false")],
    )
    .await;
    let request = support::request_for(&lake, "m.csv").await;
    let (status, reply) = support::deliver(&worker, &request, "meta", 1).await;
    assert_eq!((status, outcome(&reply)), (200, "backed_up"), "{reply}");
    let landed = backups(&setup).await;
    let (_, metadata) = landed.values().next().unwrap();
    assert_eq!(metadata["owner"], "team-a");
    assert_eq!(metadata["pii"], "false");
    assert!(metadata.contains_key("lakebackup_etag"));
    assert!(
        !metadata.contains_key("source_etag"),
        "no bookkeeping outside the prefix"
    );
}

/// An earlier release copied first and stamped afterwards; a worker that died in between left
/// an unstamped backup, and once the source changed every retry answered "outdated" without
/// looking at it. It is now verified against the version's snapshot and stamped.
#[tokio::test]
async fn an_unstamped_backup_left_by_a_crash_is_settled_after_the_source_moved_on() {
    let setup = setup().await;
    let worker = serve(&setup);
    let lake = setup.lake("lake");
    let v1 = content(1, 4000);
    support::upload(&lake, "crash.bin", &v1).await;
    snapshot(&lake, "crash.bin").await;
    let request = support::request_for(&lake, "crash.bin").await;
    let (etag, last_modified, _) = support::properties(&lake, "crash.bin").await;
    let backup_name = naming::backup_blob_name("crash.bin", last_modified, &etag).unwrap();
    let backup = setup.vault("lake");
    backup.create().await.unwrap();
    support::upload(&backup, &backup_name, &v1).await; // the copy landed; the stamp never did
    support::upload(&lake, "crash.bin", &content(2, 4000)).await;

    let (status, reply) = support::deliver(&worker, &request, "retry", 2).await;
    assert_eq!(
        (status, outcome(&reply)),
        (200, "already_backed_up"),
        "{reply}"
    );
    let landed = backups(&setup).await;
    assert_eq!(landed.len(), 1);
    assert!(landed[&backup_name].0 == v1);
    assert_eq!(landed[&backup_name].1["lakebackup_etag"], etag);
}

#[tokio::test]
async fn a_version_that_lives_on_in_its_snapshot_is_backed_up_from_it() {
    let setup = setup().await;
    let worker = serve(&setup);
    let lake = setup.lake("lake");
    let v1 = content(3, 3000);
    upload_with_metadata(&lake, "fast.bin", &v1, &[("owner", "team-b")]).await;
    snapshot(&lake, "fast.bin").await; // the producer's snapshot
    let request = support::request_for(&lake, "fast.bin").await;
    let (etag, _, _) = support::properties(&lake, "fast.bin").await;
    support::upload(&lake, "fast.bin", &content(4, 3000)).await;

    let (status, reply) = support::deliver(&worker, &request, "late", 1).await;
    assert_eq!((status, outcome(&reply)), (200, "backed_up"), "{reply}");
    assert!(reply["ReturnValue"]["from_snapshot"].is_string(), "{reply}");
    let landed = backups(&setup).await;
    assert_eq!(landed.len(), 1, "{:?}", landed.keys());
    let (bytes, metadata) = landed.values().next().unwrap();
    assert!(*bytes == v1, "the backup holds the requested version");
    assert_eq!(metadata["lakebackup_etag"], etag);
    assert_eq!(metadata["owner"], "team-b");
}

#[tokio::test]
async fn a_copy_of_another_version_under_a_versions_name_is_replaced() {
    let setup = setup().await;
    let worker = serve(&setup);
    let lake = setup.lake("lake");
    let v1 = content(5, 2500);
    support::upload(&lake, "wrong.bin", &v1).await;
    snapshot(&lake, "wrong.bin").await;
    let request = support::request_for(&lake, "wrong.bin").await;
    let (etag, last_modified, _) = support::properties(&lake, "wrong.bin").await;
    let backup_name = naming::backup_blob_name("wrong.bin", last_modified, &etag).unwrap();
    let v2 = content(6, 2500);
    let backup = setup.vault("lake");
    backup.create().await.unwrap();
    support::upload(&backup, &backup_name, &v2).await; // a newer version landed under v1's name
    support::upload(&lake, "wrong.bin", &v2).await;

    let (status, reply) = support::deliver(&worker, &request, "wrong", 1).await;
    assert_eq!((status, outcome(&reply)), (200, "backed_up"), "{reply}");
    let landed = backups(&setup).await;
    assert!(
        landed[&backup_name].0 == v1,
        "the wrong copy was replaced by the version"
    );
    assert_eq!(landed[&backup_name].1["lakebackup_etag"], etag);
}

#[tokio::test]
async fn an_archived_source_is_reported_not_called_outdated() {
    let setup = setup().await;
    let worker = serve(&setup);
    let lake = setup.lake("lake");
    support::upload(&lake, "cold.bin", b"archived").await;
    let request = support::request_for(&lake, "cold.bin").await;
    lake.blob("cold.bin")
        .set_tier("Archive")
        .await
        .expect("Azurite sets the archive tier");
    let (status, reply) = support::deliver(&worker, &request, "cold", 1).await;
    assert_eq!((status, outcome(&reply)), (200, "archived"), "{reply}");
    assert_eq!(reply["ReturnValue"]["tier"], "Archive");
    assert!(backups(&setup).await.is_empty());
}

#[tokio::test]
async fn the_copy_source_url_reads_that_one_blob_and_nothing_else() {
    let setup = setup().await;
    let lake = setup.lake("lake");
    support::upload(&lake, "dir/one file.csv", b"one").await;
    support::upload(&lake, "dir/other.csv", b"other").await;
    let expiry = time::OffsetDateTime::now_utc() + time::Duration::minutes(5);
    let url = setup
        .app
        .source
        .readable_blob_url("lake", "dir/one file.csv", None, expiry)
        .await
        .unwrap();
    let query = url.query().unwrap().to_owned();
    assert!(query.contains("sr=b") && query.contains("sp=r"), "{query}");
    assert!(!query.contains("srt="), "not an account SAS: {query}");
    let read = reqwest::get(url.clone()).await.unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(read.bytes().await.unwrap().as_ref(), b"one");
    let mut other = url.clone();
    other.set_path(&url.path().replace("one%20file.csv", "other.csv"));
    assert_ne!(other.path(), url.path());
    assert_eq!(
        reqwest::get(other).await.unwrap().status(),
        403,
        "another blob"
    );
    let client = reqwest::Client::new();
    let write = client
        .put(url)
        .header("x-ms-blob-type", "BlockBlob")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 403, "a write");
}

/// A version read through the worker in several ranges (the SDK reads 4 MiB at a time) lands
/// whole, with its MD5 recorded.
#[tokio::test]
async fn a_version_read_in_several_ranges_is_copied_whole() {
    let setup = setup().await;
    let worker = setup.serve(&[("COPY_THROUGH_WORKER_MAX_BYTES", &(16 << 20).to_string())]);
    let lake = setup.lake("lake");
    let bytes = content(9, (9 << 20) + 7);
    support::upload(&lake, "big/ranges.bin", &bytes).await;
    let request = support::request_for(&lake, "big/ranges.bin").await;
    let (status, reply) = support::deliver(&worker, &request, "ranges", 1).await;
    assert_eq!((status, outcome(&reply)), (200, "backed_up"), "{reply}");
    let landed = backups(&setup).await;
    let (copied, metadata) = landed.values().next().unwrap();
    assert!(*copied == bytes, "not byte-identical");
    assert_eq!(
        metadata["lakebackup_md5"],
        BASE64.encode(md5::Md5::digest(&bytes))
    );
}
