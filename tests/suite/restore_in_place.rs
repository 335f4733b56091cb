//! A restore never destroys a version. In place, a blob whose current version was written at or
//! before the instant *is* the version of the instant and stays, with no write, backed up or
//! not; one that must be overwritten has its current version backed up first, through the
//! backup engine with its usual stamp, so a later restore as of just before this one brings it
//! back. Without `--as-of`, the newest version of every blob is the lake's own: nothing that
//! exists is reverted, and deleted blobs come back.

use crate::support;

use std::collections::BTreeMap;

use lakebackup::{
    app::App,
    core::{message::BackupRequest, restore_plan::RestoreFrom},
    engine::{
        backup,
        jobs::{self, ledger},
        restore::{self},
    },
};
use serde_json::Value;
use support::{worker, Azurite};

/// `lakebackup restore --container lake ARGS`: the actions by blob, and the summary.
fn restore(azurite: &Azurite, args: &[&str]) -> (BTreeMap<String, String>, Value) {
    let mut full = vec!["restore", "--container", "lake"];
    full.extend(args);
    let (code, lines, summary) = worker::run_lines(&worker::settings(azurite), &full);
    assert_eq!(code, 0, "{summary}");
    let actions = lines
        .iter()
        .map(|a| {
            (
                a["blob"].as_str().unwrap().to_owned(),
                a["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (actions, summary)
}

/// The source versions the backup container holds complete, stamped backups of: (name, ETag).
async fn backed_up_versions(app: &App) -> Vec<(String, String)> {
    let backup = app.backup.container("lakebak").unwrap();
    let mut versions = Vec::new();
    for (name, _) in support::list_all(&backup).await {
        if let Ok(parsed) = lakebackup::core::naming::parse_backup_blob_name(&name) {
            let (_, _, metadata) = support::properties(&backup, &name).await;
            if metadata.get("lakebackup_etag") == Some(&parsed.etag) {
                versions.push((parsed.source_name, parsed.etag));
            }
        }
    }
    versions
}

#[tokio::test]
async fn in_place_a_version_of_the_instant_stays_and_one_overwritten_is_backed_up_first() {
    let fixture = support::Lake::start(&["lake"]).await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    let lake = app.source.container("lake").unwrap();
    for name in ["early.csv", "late.csv"] {
        support::upload(&lake, name, format!("{name} v1").as_bytes()).await;
    }
    support::produce(app, "lake").await;
    // After the last backup pass, before the instant: early.csv's v2 is the instant's version,
    // which no backup has caught up with.
    support::next_second().await;
    support::upload(&lake, "early.csv", b"early.csv v2").await;
    let (early_etag, _, _) = support::properties(&lake, "early.csv").await;
    support::next_second().await;
    let instant = support::now_rfc3339();
    support::next_second().await;
    // After the instant, also not backed up: late.csv's v2 is overwritten by the restore.
    support::upload(&lake, "late.csv", b"late.csv v2").await;
    let (late_etag, _, _) = support::properties(&lake, "late.csv").await;
    support::next_second().await;
    let before_restore = support::now_rfc3339();
    support::next_second().await;

    let (actions, summary) = restore(azurite, &["--from", "backup", "--as-of", &instant]);
    assert_eq!(summary["restored"], 1, "{summary}");
    assert_eq!(actions.get("late.csv").map(String::as_str), Some("restore"));
    assert!(!actions.contains_key("early.csv"), "{actions:?}");
    assert_eq!(support::download(&lake, "early.csv").await, b"early.csv v2");
    assert_eq!(
        support::properties(&lake, "early.csv").await.0,
        early_etag,
        "the version of the instant is not written"
    );
    assert_eq!(support::download(&lake, "late.csv").await, b"late.csv v1");
    // The version the restore overwrote is in the backup, stamped as any backup.
    assert!(
        backed_up_versions(app)
            .await
            .contains(&("late.csv".to_owned(), late_etag.clone())),
        "late.csv v2 was backed up before it was overwritten"
    );

    // A later restore as of just before the first one brings that version back.
    let (actions, summary) = restore(azurite, &["--from", "backup", "--as-of", &before_restore]);
    assert_eq!(
        actions.get("late.csv").map(String::as_str),
        Some("restore"),
        "{summary}"
    );
    assert_eq!(support::download(&lake, "late.csv").await, b"late.csv v2");
    assert_eq!(support::download(&lake, "early.csv").await, b"early.csv v2");
}

#[tokio::test]
async fn in_place_without_an_instant_nothing_is_reverted_and_deleted_blobs_come_back() {
    let fixture = support::Lake::start(&["lake"]).await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    let lake = app.source.container("lake").unwrap();
    for name in ["changed.csv", "deleted.csv", "same.csv"] {
        support::upload(&lake, name, format!("{name} v1").as_bytes()).await;
    }
    support::produce(app, "lake").await;
    support::next_second().await;
    // Changed since the last pass, not backed up yet.
    support::upload(&lake, "changed.csv", b"changed.csv v2").await;
    support::delete_with_snapshots(&lake, "deleted.csv").await;

    let (actions, summary) = restore(azurite, &["--from", "backup"]);
    assert_eq!(
        actions.get("deleted.csv").map(String::as_str),
        Some("restore"),
        "{summary}"
    );
    assert_eq!(summary["restored"], 1, "{summary}");
    assert_eq!(
        support::download(&lake, "deleted.csv").await,
        b"deleted.csv v1"
    );
    assert_eq!(
        support::download(&lake, "changed.csv").await,
        b"changed.csv v2",
        "the newest version of changed.csv is the lake's own"
    );
    assert_eq!(support::download(&lake, "same.csv").await, b"same.csv v1");
}

#[tokio::test]
async fn in_place_from_snapshots_an_overwritten_version_is_backed_up_first() {
    let fixture = support::Lake::start(&["lake"]).await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    let lake = app.source.container("lake").unwrap();
    support::upload(&lake, "s.csv", b"s.csv v1").await;
    support::produce(app, "lake").await;
    support::next_second().await;
    let instant = support::now_rfc3339();
    support::next_second().await;
    support::upload(&lake, "s.csv", b"s.csv v2").await;
    let (v2, _, _) = support::properties(&lake, "s.csv").await;

    let (actions, summary) = restore(azurite, &["--from", "snapshots", "--as-of", &instant]);
    assert_eq!(
        actions.get("s.csv").map(String::as_str),
        Some("restore"),
        "{summary}"
    );
    assert_eq!(support::download(&lake, "s.csv").await, b"s.csv v1");
    assert!(
        backed_up_versions(app)
            .await
            .contains(&("s.csv".to_owned(), v2)),
        "s.csv v2 was backed up before it was overwritten"
    );
}

/// A blob ingestion writes (and a pass backs up) after a distributed in-place restore started is
/// no blob the restore wrote: not counted restored.
#[tokio::test]
async fn a_lake_version_written_after_the_job_started_is_not_counted_restored_by_it() {
    let fixture = support::Lake::start(&["lake"]).await;
    let (_azurite, app) = (&fixture.azurite, &fixture.app);
    let lake = app.source.container("lake").unwrap();
    support::upload(&lake, "old.txt", b"old").await;
    let (etag, _, _) = support::properties(&lake, "old.txt").await;
    backup::back_up(app, &BackupRequest::new("lake", "old.txt", &etag))
        .await
        .unwrap();
    let queued = restore::start(
        app,
        &support::restore_request("lake", RestoreFrom::Backup, None, None),
    )
    .await
    .unwrap();
    // After the job started, ingestion writes a blob, and the events function backs it up.
    support::next_second().await;
    support::upload(&lake, "new.txt", b"new").await;
    let (etag, _, _) = support::properties(&lake, "new.txt").await;
    backup::back_up(app, &BackupRequest::new("lake", "new.txt", &etag))
        .await
        .unwrap();
    let (etag_before, _, _) = support::properties(&lake, "new.txt").await;
    support::deliver_all_shards(app).await;
    let (etag_after, _, _) = support::properties(&lake, "new.txt").await;
    assert_eq!(
        etag_before, etag_after,
        "the restore wrote nothing to new.txt"
    );
    let status = jobs::status(app, &queued.job).await.unwrap().unwrap();
    let report = ledger::job_report(app, &queued.job).await.unwrap().unwrap();
    assert_eq!(
        status.progress.totals.get("restored"),
        0,
        "nothing was restored, yet the job says: {:?}; lines {report:?}",
        status.progress.totals
    );
}
