//! The consumer with the direct copy engine, end to end: the real `lakebackup serve`, messages
//! delivered as the Functions host delivers them, Azurite for both accounts.

mod support;

use std::collections::{BTreeMap, HashMap};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use lakebackup::{core::naming, settings::Settings, storage::StorageAccount};
use serde_json::{json, Value};
use support::{
    worker::{self, Worker},
    Azurite,
};

struct Setup {
    azurite: Azurite,
    source: StorageAccount,
    backup: StorageAccount,
    jobs: StorageAccount,
}

async fn setup() -> Setup {
    let azurite = Azurite::start();
    let settings = Settings::from_pairs(worker::settings(&azurite));
    let source = StorageAccount::connect("SOURCE_STORAGE", &settings).unwrap();
    source
        .container("lake")
        .unwrap()
        .create(None)
        .await
        .unwrap();
    Setup {
        backup: StorageAccount::connect("BACKUP_STORAGE", &settings).unwrap(),
        jobs: StorageAccount::connect("AzureWebJobsStorage", &settings).unwrap(),
        source,
        azurite,
    }
}

fn serve(setup: &Setup) -> Worker {
    let mut settings = worker::settings(&setup.azurite);
    settings.insert("COPY_POLL_INTERVAL_MS".into(), "50".into());
    Worker::serve(&settings)
}

/// Every byte value, then a pattern, so a truncated or re-encoded copy shows.
fn content(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + seed * 7) % 256) as u8)
        .collect()
}

/// Backup name → (bytes, metadata), for every blob of `lakebak`.
async fn backups(setup: &Setup) -> BTreeMap<String, (Vec<u8>, HashMap<String, String>)> {
    let container = setup.backup.container("lakebak").unwrap();
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
    let lake = setup.source.container("lake").unwrap();
    let names = [
        "raw/2026/sales.v2.csv",
        "with space/\"quoted\" #1?.bin",
        "ünïcødé/数据.parquet",
        ".hidden",
    ];
    let mut expected = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let bytes = content(i, if i == 0 { 1 << 20 } else { 300 + i });
        support::upload(&lake, name, &bytes).await;
        let (etag, last_modified, _) = support::properties(&lake, name).await;
        let backup_name = naming::backup_blob_name(name, last_modified, &etag).unwrap();
        expected.insert(backup_name, (name.to_string(), etag, bytes));
    }

    for name in names {
        let request = support::request_for(&lake, "lake", name).await;
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
        assert_eq!(metadata["source_container"], "lake");
        let decoded = percent_encoding::percent_decode_str(&metadata["source_blob"])
            .decode_utf8()
            .unwrap();
        assert_eq!(&decoded, name);
        assert_eq!(&metadata["source_etag"], etag);
        assert!(metadata["source_last_modified"].ends_with('Z'));
    }

    // Again: nothing is copied, the backups keep their ETags.
    let backup_container = setup.backup.container("lakebak").unwrap();
    let before: Vec<String> = {
        let mut etags = Vec::new();
        for name in landed.keys() {
            etags.push(support::properties(&backup_container, name).await.0);
        }
        etags
    };
    for name in names {
        let request = support::request_for(&lake, "lake", name).await;
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
    let lake = setup.source.container("lake").unwrap();
    support::upload(&lake, "changed.csv", b"v1").await;
    let old_request = support::request_for(&lake, "lake", "changed.csv").await;
    support::upload(&lake, "changed.csv", b"v2").await;
    support::upload(&lake, "deleted.csv", b"gone soon").await;
    let deleted_request = support::request_for(&lake, "lake", "deleted.csv").await;
    lake.blob_client("deleted.csv").delete(None).await.unwrap();

    let (status, reply) = support::deliver(&worker, &old_request, "m-old", 1).await;
    assert_eq!((status, outcome(&reply)), (200, "outdated"), "{reply}");
    assert!(reply["ReturnValue"]["reason"]
        .as_str()
        .unwrap()
        .contains("changed"));
    let (status, reply) = support::deliver(&worker, &deleted_request, "m-del", 1).await;
    assert_eq!((status, outcome(&reply)), (200, "outdated"), "{reply}");
    assert!(backups(&setup).await.is_empty());
    let poison = setup.jobs.queue("backup-requests-poison").unwrap();
    assert!(
        !poison.exists().await.unwrap(),
        "outdated requests are not poison"
    );
}

#[tokio::test]
async fn racing_writer_and_parallel_consumers_land_exactly_the_right_versions() {
    let setup = setup().await;
    let worker = serve(&setup);
    let lake = setup.source.container("lake").unwrap();
    support::upload(&lake, "steady.bin", &content(99, 5000)).await;
    let steady = support::request_for(&lake, "lake", "steady.bin").await;

    // A writer makes version after version of hot.bin; each version's request is delivered
    // three times at once while the next version is already being written.
    let (requests_tx, mut requests_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let writer = async {
        let mut versions = HashMap::new();
        for round in 0..8 {
            let bytes = content(round, 2000 + round);
            support::upload(&lake, "hot.bin", &bytes).await;
            let request = support::request_for(&lake, "lake", "hot.bin").await;
            let etag = serde_json::from_str::<Value>(&request).unwrap()["etag"].clone();
            versions.insert(etag.as_str().unwrap().to_owned(), bytes);
            for copy in 0..3 {
                let _ = requests_tx.send((request.clone(), format!("hot-{round}-{copy}")));
            }
            let _ = requests_tx.send((steady.clone(), format!("steady-{round}")));
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
        assert_eq!(&metadata["source_etag"], &parsed.etag);
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
    let lake = setup.source.container("lake").unwrap();
    let long_name = "y".repeat(1020);
    support::upload(&lake, &long_name, b"long").await;
    let backup_too_long = support::request_for(&lake, "lake", &long_name).await;
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
    let poison = setup.jobs.queue("backup-requests-poison").unwrap();
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
    let lake = setup.source.container("lake").unwrap();
    support::upload(&lake, "a.csv", b"a").await;
    let request = support::request_for(&lake, "lake", "a.csv").await;
    let mut settings = worker::settings(&setup.azurite);
    settings.insert(
        "BACKUP_STORAGE".into(),
        support::unreachable_connection("backup", support::azurite::BACKUP_KEY),
    );
    let worker = Worker::serve(&settings);
    let (status, reply) = support::deliver(&worker, &request, "m-retry", 1).await;
    assert_eq!(status, 500, "{reply}");
    let log = reply["Logs"][0].as_str().unwrap();
    assert!(log.contains("m-retry") && log.contains("lakebak"), "{log}");
    assert!(!log.contains(support::azurite::BACKUP_KEY));
    let poison = setup.jobs.queue("backup-requests-poison").unwrap();
    assert!(
        !poison.exists().await.unwrap(),
        "a transient failure is not poison"
    );
}
