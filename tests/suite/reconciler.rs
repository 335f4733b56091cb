//! The reconciler against Azurite: `lakebackup reconcile` (the admins' command) and the timer
//! invocation, on lakes in every state of disrepair.

use crate::support;

use std::collections::{BTreeMap, HashMap};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use lakebackup::{app::WorkQueue, engine::backup::BackupOutcome};
use serde_json::Value;
use support::{worker, Lake};

/// The common lake, with containers `lake` and `other`.
async fn lake_with_other() -> Lake {
    Lake::start(&["lake", "other"]).await
}

async fn put(lake: &Lake, name: &str, bytes: &[u8]) {
    support::upload(&lake.lake("lake"), name, bytes).await;
}

async fn snapshot(lake: &Lake, name: &str) {
    lake.lake("lake")
        .blob(name)
        .take_snapshot(None)
        .await
        .unwrap();
}

/// Backs up the current version of `name` with the real consumer.
async fn back_up(lake: &Lake, name: &str) {
    let text = support::request_for(&lake.lake("lake"), name).await;
    let outcome = consume(lake, &text).await;
    assert!(
        matches!(outcome, BackupOutcome::BackedUp { .. }),
        "{outcome:?}"
    );
}

async fn consume(lake: &Lake, text: &str) -> BackupOutcome {
    support::deliver_to(&lake.app, WorkQueue::Backups, text, 1)
        .await
        .unwrap()
        .done()
}

/// Takes the queued requests off the queue: blob name → etag.
async fn take_requests(lake: &Lake) -> BTreeMap<String, String> {
    let queue = lake.queue("backup-requests");
    if !support::queue_exists(&queue).await {
        return BTreeMap::new();
    }
    support::drain_queue(&queue)
        .await
        .into_iter()
        .map(|t| {
            let v: Value = serde_json::from_slice(&BASE64.decode(t).unwrap()).unwrap();
            (
                v["blob_name"].as_str().unwrap().to_owned(),
                v["etag"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Base name → whether some snapshot carries its current ETag (checked independently of
/// the diff under test: current ETags come from the blobs' own properties).
async fn snapshots_of_current(lake: &Lake, container: &str) -> HashMap<String, bool> {
    let client = lake.lake(container);
    let versions = support::list_versions(&client).await;
    let mut has = HashMap::new();
    for (name, snapshot, _) in &versions {
        if snapshot.is_none() {
            let (etag, _, _) = support::properties(&client, name).await;
            let covered = versions
                .iter()
                .any(|(n, s, e)| n == name && s.is_some() && *e == etag);
            has.insert(name.clone(), covered);
        }
    }
    has
}

fn reconcile(lake: &Lake, args: &[&str], extra: &[(&str, &str)]) -> (i32, Value) {
    let settings = lake.settings_with(extra);
    let mut full = vec!["reconcile"];
    full.extend(args);
    let (code, stdout, stderr) = worker::run_once(&settings, &full);
    let summary = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("summary is JSON ({e}): {stdout}\n{stderr}"));
    (code, summary)
}

fn container<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["container"] == name)
        .unwrap_or_else(|| panic!("no {name} in {summary}"))
}

/// Every state a blob can be in before a reconcile.
async fn lake_in_disrepair() -> Lake {
    let lake = lake_with_other().await;
    put(&lake, "new.csv", b"never seen").await;

    put(&lake, "changed.csv", b"v1").await;
    snapshot(&lake, "changed.csv").await;
    back_up(&lake, "changed.csv").await;
    put(&lake, "changed.csv", b"v2").await;

    put(&lake, "same.csv", b"steady").await;
    snapshot(&lake, "same.csv").await;
    back_up(&lake, "same.csv").await;

    put(&lake, "nobackup.csv", b"snapshotted only").await;
    snapshot(&lake, "nobackup.csv").await;

    put(&lake, "nosnap.csv", b"backed up only").await;
    back_up(&lake, "nosnap.csv").await;

    // Many snapshots around the base: Azurite interleaves them in the listing.
    for round in 0..3 {
        put(
            &lake,
            "interleaved.csv",
            format!("round {round}").as_bytes(),
        )
        .await;
        snapshot(&lake, "interleaved.csv").await;
    }
    snapshot(&lake, "interleaved.csv").await;
    back_up(&lake, "interleaved.csv").await;

    // A backup blob without its stamp is an unfinished copy, not a backup.
    put(&lake, "incomplete.csv", b"half copied").await;
    snapshot(&lake, "incomplete.csv").await;
    let (etag, last_modified, _) = support::properties(&lake.lake("lake"), "incomplete.csv").await;
    let backup_name =
        lakebackup::core::naming::backup_blob_name("incomplete.csv", last_modified, &etag).unwrap();
    support::upload(&lake.vault("lake"), &backup_name, b"half").await;

    support::upload(&lake.lake("other"), "x/y.bin", b"other").await;
    lake
}

#[tokio::test]
async fn one_pass_repairs_everything_and_a_second_finds_nothing() {
    let lake = lake_in_disrepair().await;
    let (code, summary) = reconcile(&lake, &[], &[]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["status"], "ok");
    let report = container(&summary, "lake");
    assert_eq!(report["status"], "ok");
    assert_eq!(report["blobs"], 7, "{report}");
    assert_eq!(
        report["snapshots_created"], 3,
        "new, changed, nosnap: {report}"
    );
    assert_eq!(
        report["backups_copied"], 4,
        "new, changed, nobackup, incomplete: {report}"
    );
    assert_eq!(report["backup_requests"], 0, "copied in place: {report}");
    assert_eq!(
        report["backups_present"], 3,
        "same, nosnap, interleaved: {report}"
    );
    assert_eq!(container(&summary, "other")["backups_copied"], 1);
    assert_eq!(summary["total"]["containers"], 2);
    assert!(
        summary["containers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["container"] != "lakebak"),
        "backup containers are not reconciled: {summary}"
    );

    assert!(
        take_requests(&lake).await.is_empty(),
        "nothing left to a queue"
    );
    assert!(snapshots_of_current(&lake, "lake")
        .await
        .values()
        .all(|&has| has));

    let (code, last) = reconcile(&lake, &[], &[]);
    assert_eq!(code, 0);
    assert_eq!(last["total"]["snapshots_created"], 0, "{last}");
    assert_eq!(last["total"]["backups_copied"], 0, "{last}");
    assert_eq!(last["total"]["backups_present"], 8, "{last}");
    // The versions copied are the current ones, stamped (the index counts only those).
    let (_, dry) = reconcile(&lake, &["--dry-run"], &[]);
    assert_eq!(dry["total"]["backup_requests"], 0, "{dry}");

    // A blob deleted from the lake is recorded as deleted, once.
    support::delete_with_snapshots(&lake.lake("lake"), "same.csv").await;
    let (_, seen) = reconcile(&lake, &["--container", "lake"], &[]);
    assert_eq!(container(&seen, "lake")["deletions_recorded"], 1, "{seen}");
    let (_, again) = reconcile(&lake, &["--container", "lake"], &[]);
    assert_eq!(
        container(&again, "lake")["deletions_recorded"],
        0,
        "{again}"
    );
}

#[tokio::test]
async fn dry_run_reports_and_changes_nothing() {
    let lake = lake_in_disrepair().await;
    let before = support::list_all(&lake.lake("lake")).await;
    let (code, summary) = reconcile(&lake, &["--dry-run", "--container", "lake"], &[]);
    assert_eq!(code, 0);
    assert_eq!(summary["dry_run"], true);
    let report = container(&summary, "lake");
    assert_eq!(report["snapshots_created"], 3, "{report}");
    assert_eq!(report["backup_requests"], 4, "{report}");
    assert_eq!(summary["total"]["containers"], 1);
    assert_eq!(support::list_all(&lake.lake("lake")).await, before);
    assert!(take_requests(&lake).await.is_empty());
}

#[tokio::test]
async fn unknown_containers_are_reported_not_fatal() {
    let lake = lake_with_other().await;
    put(&lake, "a.csv", b"a").await;
    let (code, summary) = reconcile(&lake, &[], &[("RECONCILE_CONTAINERS", "lake, ghost")]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["not_found"], serde_json::json!(["ghost"]));
    assert_eq!(container(&summary, "ghost")["status"], "not_found");
    assert_eq!(container(&summary, "lake")["backups_copied"], 1);
    assert_eq!(summary["total"]["containers"], 2);
}

#[tokio::test]
async fn unreachable_backup_account_fails_loudly_and_writes_nothing() {
    let lake = lake_with_other().await;
    put(&lake, "a.csv", b"a").await;
    put(&lake, "b.csv", b"b").await;
    let unreachable = support::unreachable_connection("backup", support::azurite::BACKUP_KEY);
    let (code, summary) = reconcile(&lake, &[], &[("BACKUP_STORAGE", &unreachable)]);
    assert_eq!(code, 1, "{summary}");
    assert_eq!(summary["status"], "failed");
    let mut failed = summary["failed_containers"].as_array().unwrap().clone();
    failed.sort_by_key(|v| v.to_string());
    assert_eq!(
        failed,
        [serde_json::json!("lake"), serde_json::json!("other")]
    );
    let report = container(&summary, "lake");
    assert_eq!(report["status"], "error");
    assert!(report["error_messages"][0]
        .as_str()
        .unwrap()
        .contains("listing backup container lakebak"));
    // A shard judges nothing without the backup side.
    assert_eq!(report["snapshots_created"], 0, "{report}");
    assert_eq!(report["backups_copied"], 0);
    assert!(!summary.to_string().contains(support::azurite::BACKUP_KEY));
}

#[tokio::test]
async fn blobs_deleted_while_it_runs_are_no_error() {
    let lake = lake_with_other().await;
    let client = lake.lake("lake");
    let names: Vec<String> = (0..240)
        .map(|i| format!("d{}/blob-{i:03}.bin", i % 7))
        .collect();
    futures::future::join_all(names.iter().map(|n| support::upload(&client, n, b"x"))).await;

    let running = {
        let settings = lake.settings();
        std::thread::spawn(move || {
            worker::run_once(&settings, &["reconcile", "--container", "lake"])
        })
    };
    let doomed = names.iter().step_by(2).collect::<Vec<_>>();
    // With its snapshots: the pass may have snapshotted a doomed blob already, and a blob with
    // snapshots is not deleted on its own.
    futures::future::join_all(doomed.iter().map(|n| async {
        support::delete_with_snapshots(&client, n).await;
    }))
    .await;
    let (code, stdout, stderr) = running.join().unwrap();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["status"], "ok");

    // Every survivor was repaired by the one pass; the deleted ones are simply gone.
    let (_, last) = reconcile(&lake, &["--container", "lake"], &[]);
    let report = container(&last, "lake");
    assert_eq!(report["blobs"], 120, "{last}");
    assert_eq!(report["snapshots_created"], 0, "{last}");
    assert_eq!(report["backup_requests"], 0, "{last}");
    assert_eq!(report["backups_present"], 120);
}

#[tokio::test]
async fn the_timer_queues_root_shards_that_the_shard_function_works_off() {
    let lake = lake_with_other().await;
    put(&lake, "a.csv", b"a").await;
    put(&lake, "dir/b.csv", b"b").await;
    let worker = lake.serve(&[]);
    let client = reqwest::Client::new();
    let response = client
        .post(worker.url("/HttpSnapshotIncBackupStorageReconciliation"))
        .json(&serde_json::json!({
            "Data": {"timer": {
                "Schedule": {"AdjustForDST": true},
                "ScheduleStatus": {"Last": "2026-11-24T02:00:00Z", "Next": "2026-11-25T02:00:00Z", "LastUpdated": "2026-11-24T02:00:00Z"},
                "IsPastDue": true
            }},
            "Metadata": {"sys": {"MethodName": "HttpSnapshotIncBackupStorageReconciliation"}}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["ReturnValue"]["status"], "queued", "{reply}");
    assert_eq!(
        reply["ReturnValue"]["containers"],
        serde_json::json!(["lake", "other"])
    );

    // The host delivers each shard to QueueSnapshotBackupShard; sub-directories fan out.
    let shards = lake.queue("backup-requests-shards");
    let mut reports = Vec::new();
    loop {
        let texts = support::drain_queue(&shards).await;
        if texts.is_empty() {
            break;
        }
        for text in texts {
            let decoded = String::from_utf8(BASE64.decode(text).unwrap()).unwrap();
            let response = client
                .post(worker.url("/QueueSnapshotBackupShard"))
                .json(&serde_json::json!({
                    "Data": {"message": decoded},
                    "Metadata": {"Id": "shard-1", "DequeueCount": 1, "sys": {"MethodName": "QueueSnapshotBackupShard"}}
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 200);
            let reply: Value = response.json().await.unwrap();
            assert_eq!(reply["ReturnValue"]["outcome"], "done", "{reply}");
            reports.push(reply["ReturnValue"].clone());
        }
    }
    let mut shards_run: Vec<(&str, &str)> = reports
        .iter()
        .map(|r| {
            (
                r["container"].as_str().unwrap(),
                r["prefix"].as_str().unwrap(),
            )
        })
        .collect();
    shards_run.sort();
    assert_eq!(shards_run, [("lake", ""), ("lake", "dir/"), ("other", "")]);
    let copied: u64 = reports
        .iter()
        .map(|r| r["backups_copied"].as_u64().unwrap())
        .sum();
    let snapshots: u64 = reports
        .iter()
        .map(|r| r["snapshots_created"].as_u64().unwrap())
        .sum();
    assert_eq!((copied, snapshots), (2, 2), "{reports:?}");
    let (_, after) = reconcile(&lake, &["--container", "lake", "--dry-run"], &[]);
    let report = container(&after, "lake");
    assert_eq!(report["backups_present"], 2, "{after}");
    assert_eq!(report["snapshots_created"], 0, "{after}");
}
