//! Continuations count a job exactly. A level too large for one part goes on from its exact
//! position: a continuation's id is that position, and a part redone after a crash stops where
//! the delivery before it chose to and queues the same continuation, so the ledger counts every
//! blob once and no second chain starts. A job reads `done` only when every part it ever started
//! has finished. Proved with workers killed at random points, and in one process.

use crate::support;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use futures::{future::BoxFuture, StreamExt};
use lakebackup::engine::jobs::restore::RestoreStep;
use lakebackup::{
    app::App,
    core::{counts::KindCounts, message::BackupRequest},
    engine::{
        backup,
        jobs::{
            self,
            backup::{BackupCounts, BackupKind},
            ledger, Delivered, JobOrigin, NewJob, RecordedStop, Root, Shard,
        },
        restore::{self, RestoreFrom},
        verify::{self, VerifyRequest},
    },
    settings::Settings,
    storage::StorageAccount,
};
use support::{
    proxy::{FaultKind, Faults, OpClass, ProxiedAzurite, ProxyConfig},
    worker, Lake,
};

/// Blobs of one directory level, written 16 at a time.
async fn seed(app: &App, names: &[String]) {
    let lake = app.source.container("lake").unwrap();
    futures::stream::iter(names)
        .for_each_concurrent(16, |name| {
            let lake = &lake;
            async move { support::upload(lake, name, format!("{name} v1").as_bytes()).await }
        })
        .await;
}

#[tokio::test]
async fn a_level_continued_in_one_process_counts_every_blob_once() {
    // Pages of 7 and a one-second budget: 600 blobs take several parts, and each continuation
    // lists again from a page that now holds the snapshots the part before took, so the last
    // blob done is on a later page than it was.
    let fixture = Lake::start_with(
        &["lake"],
        &[("SHARD_TIME_BUDGET_SECONDS", "1"), ("SHARD_PAGE_SIZE", "7")],
    )
    .await;
    let app = &fixture.app;
    let names: Vec<String> = (0..600).map(|i| format!("wide/f{i:04}.txt")).collect();
    seed(app, &names).await;
    let job = jobs::run_here(
        app,
        NewJob::<BackupKind> {
            origin: JobOrigin::Producer,
            container: "lake".into(),
            roots: vec![Root::directory("")],
            options: Default::default(),
        },
        4,
    )
    .await;
    assert!(job.shards > 3, "the level took several parts: {job:?}");
    for count in ["blobs", "backups_copied", "snapshots_created"] {
        assert_eq!(job.totals.get(count), 600, "{count}: {:?}", job.totals);
    }
    assert_eq!(job.totals.get("backups_present"), 0, "{:?}", job.totals);

    let mut restored = 0;
    let summary = restore::restore(
        app,
        &support::restore_request("lake", RestoreFrom::Backup, Some("copy"), None),
        &mut |action| restored += usize::from(action.action == RestoreStep::Restore),
    )
    .await;
    assert_eq!((summary.restored, restored), (600, 600), "{summary:?}");
}

#[tokio::test]
async fn workers_killed_at_twenty_random_points_lose_nothing_and_count_each_blob_once() {
    let fixture = Lake::start(&["lake"]).await;
    let app = &fixture.app;
    // One large directory (its parts run out of budget and go on) and nested ones named across
    // Unicode.
    let mut names: Vec<String> = (0..150).map(|i| format!("big/part-{i:03}.csv")).collect();
    for directory in ["日本/", "x｡y/🦀/"] {
        names.extend((0..15).map(|i| format!("{directory}f{i}.txt")));
    }
    seed(app, &names).await;
    let settings = fixture.settings_with(&[
        ("SHARD_TIME_BUDGET_SECONDS", "1"),
        ("SHARD_PAGE_SIZE", "9"),
        ("SNAPSHOT_CONCURRENCY", "2"),
        // A killed worker's messages come back soon.
        ("RUN_VISIBILITY_SECONDS", "2"),
        ("COPY_TIMEOUT_SECONDS", "20"),
    ]);

    // A backup job, killed at 20 points.
    let job = worker::queue_job(&settings, "shard --container lake");
    let backed_up = holds(&settings, "BACKUP_STORAGE", "lakebak", names.len());
    let (status, _) =
        worker::work_off_killing(&settings, &job, 20, 0x9E37_79B9_7F4A_7C15, backed_up).await;
    assert_eq!(status["status"], "done", "{status}");
    assert_eq!(status["shards_failed"], 0, "{status}");
    assert_eq!(
        status["blobs"],
        names.len(),
        "each blob counted once: {status}"
    );
    assert_eq!(
        status["backups_copied"].as_u64().unwrap() + status["backups_present"].as_u64().unwrap(),
        names.len() as u64,
        "{status}"
    );

    // A restore job into another container, killed at 20 other points.
    let command = "restore --container lake --to-container restored --distributed";
    let job = worker::queue_job(&settings, command);
    let restored = holds(&settings, "SOURCE_STORAGE", "restored", names.len());
    let (status, lines) =
        worker::work_off_killing(&settings, &job, 20, 0xD1B5_4A32_D192_ED03, restored).await;
    assert_eq!(status["status"], "done", "{status}");
    assert_eq!(status["shards_failed"], 0, "{status}");
    assert_eq!(
        status["restored"],
        names.len(),
        "each blob counted once: {status}"
    );
    let mut reported: BTreeMap<String, usize> = BTreeMap::new();
    for line in &lines {
        assert_eq!(line["action"], "restore", "{line}");
        *reported
            .entry(line["blob"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(reported.len(), names.len(), "every blob reported");
    assert!(
        reported.values().all(|n| *n == 1),
        "each blob reported once: {reported:?}"
    );
    let target = app.source.container("restored").unwrap();
    for name in &names {
        assert_eq!(
            support::download(&target, name).await,
            format!("{name} v1").into_bytes(),
            "{name}"
        );
    }
}

/// What [`worker::work_off_killing`] checks when the job first reads done: `container` of the
/// account `setting` names holds `expected` blobs.
fn holds(
    settings: &HashMap<String, String>,
    setting: &str,
    container: &str,
    expected: usize,
) -> impl Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static {
    let settings = Settings::from_pairs(settings.clone());
    let account = Arc::new(StorageAccount::connect(setting, &settings).unwrap());
    let container = container.to_owned();
    move || {
        let target = account.container(&container).unwrap();
        Box::pin(async move {
            let present = support::list_all(&target).await.len();
            (present == expected).then_some(()).ok_or(format!(
                "{present} of {expected} blobs in {}",
                target.name()
            ))
        })
    }
}

/// A backup job of `origin` over `prefix` of the lake, queued, and its root shard taken off the
/// queue again, to be delivered by hand: the job's id and its root.
async fn queued_by_hand(app: &App, origin: JobOrigin, prefix: &str) -> (String, Shard) {
    let new = NewJob::<BackupKind> {
        origin,
        container: "lake".into(),
        roots: vec![Root::directory(prefix)],
        options: Default::default(),
    };
    let queued = jobs::queue(app, new).await.unwrap();
    support::drain_queue(&app.jobs.queue("backup-requests-shards").unwrap()).await;
    (queued.job, queued.roots[0].clone())
}

/// A backup part redone after a crash stops where the dead delivery chose to: found by the last
/// blob it dealt with or, that blob deleted since, by the first it did not; each blob counts once.
#[tokio::test]
async fn a_backup_part_redone_stops_before_the_first_blob_not_done_when_the_last_done_is_gone() {
    let fixture = Lake::start(&["lake"]).await;
    let (app, lake) = (&fixture.app, fixture.lake("lake"));
    let names: Vec<String> = (0..30).map(|i| format!("big/f{i:03}.txt")).collect();
    for name in &names {
        support::upload(&lake, name, name.as_bytes()).await;
    }
    let (job, root) = queued_by_hand(app, JobOrigin::Command, "big/").await;
    // The first delivery did f000..f010, recorded its continuation and was killed.
    let next = root
        .continuation(None, Some("big/f010.txt"))
        .resuming_at(Some("big/f011.txt".into()));
    let stop = RecordedStop {
        next,
        last_done: Some("big/f010.txt".into()),
    };
    ledger::record_continuation(app, &root, &stop)
        .await
        .unwrap();
    // Ingestion deletes the last blob it did before the redo comes.
    support::delete_with_snapshots(&lake, "big/f010.txt").await;

    let redo = match jobs::run_delivered(app, &root, false).await.unwrap() {
        Delivered::Ran(report) => report,
        other => panic!("{other:?}"),
    };
    let redo_blobs = redo.counts.get("blobs");
    support::deliver_all_shards(app).await;
    let status = jobs::status(app, &job).await.unwrap().unwrap();
    assert_eq!(
        (redo_blobs, status.progress.totals.get("blobs")),
        (10, 29),
        "the redo should stop where the dead delivery stopped, and each of the 29 blobs count \
         once: {:?}",
        status.progress.totals
    );
}

/// The shard id of the release before issue 29 (no marker, `after` or phase in it).
fn earlier_release_shard_id(shard: &Shard) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for part in [
        shard.container.as_bytes(),
        b"\0",
        shard.prefix.as_bytes(),
        b"\0",
        shard.part.to_string().as_bytes(),
    ] {
        hash.update(part);
    }
    hash.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A job in flight across an upgrade: its continuation, entered by the release before under
/// the id that release gave it, ends its job when this release finishes it.
#[tokio::test]
async fn a_continuation_queued_by_the_release_before_ends_its_job() {
    let fixture = Lake::start(&["lake"]).await;
    let (app, lake) = (&fixture.app, fixture.lake("lake"));
    for i in 0..6 {
        support::upload(&lake, &format!("d/f{i}.txt"), b"x").await;
    }
    let (job, root) = queued_by_hand(app, JobOrigin::Reconcile, "d/").await;
    // The earlier release ran the root part, entered its continuation under the old id and
    // queued it; then the worker was upgraded.
    let next = root.continuation(None, Some("d/f2.txt"));
    let ledger_container = app.jobs.container("backup-requests-jobs").unwrap();
    support::upload(
        &ledger_container,
        &format!("{}/queued/{}", next.job, earlier_release_shard_id(&next)),
        b"",
    )
    .await;
    ledger::record_finished(
        app,
        &root,
        &BackupCounts::default().to_counts(),
        &Default::default(),
    )
    .await
    .unwrap();
    app.enqueue_shard(&next).await.unwrap();
    assert_eq!(
        support::deliver_all_shards(app).await,
        1,
        "the continuation ran"
    );
    let status = jobs::status(app, &job).await.unwrap().unwrap();
    assert_eq!(
        status.progress.state,
        lakebackup::core::job::JobState::Done,
        "{status:?}"
    );
}

/// An in-place restore redone after a crash counts what the dead delivery wrote back as
/// restored (the blob it brought back is now the lake's own newest version).
#[tokio::test]
async fn an_in_place_restore_redone_after_a_crash_counts_what_it_restored() {
    let fixture = Lake::start(&["lake"]).await;
    let (app, lake) = (&fixture.app, fixture.lake("lake"));
    support::upload(&lake, "gone.txt", b"gone").await;
    let (etag, _, _) = support::properties(&lake, "gone.txt").await;
    backup::back_up(app, &BackupRequest::new("lake", "gone.txt", &etag))
        .await
        .unwrap();
    support::delete_with_snapshots(&lake, "gone.txt").await;
    let queued = restore::start(
        app,
        &support::restore_request("lake", RestoreFrom::Backup, None, None),
    )
    .await
    .unwrap();
    let queue = app.jobs.queue("backup-requests-shards").unwrap();
    support::drain_queue(&queue).await;
    let root = queued.roots[0].clone();
    support::next_second().await;
    // The first delivery writes the blob back, and is killed before it records anything.
    let first = jobs::run_part(app, &root, &jobs::Fanout::Queue)
        .await
        .unwrap();
    assert_eq!(first.counts.get("restored"), 1);
    assert_eq!(support::download(&lake, "gone.txt").await, b"gone");
    // The redo.
    let redo = match jobs::run_delivered(app, &root, false).await.unwrap() {
        Delivered::Ran(report) => report,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (redo.counts.get("restored"), redo.counts.get("unchanged")),
        (1, 0),
        "the blob the job brought back is counted restored: {:?}",
        redo.counts
    );
}

/// A verify part's delivery wrote its gaps and died before it finished; the gap was closed
/// before the redo, which finds none. The job's report is the redo's (empty), not the dead
/// delivery's: a report and a status that say different things is a report that lies.
#[tokio::test]
async fn a_verify_part_redone_without_gaps_leaves_no_gap_of_the_dead_delivery_in_the_report() {
    let fixture = Lake::start(&["lake"]).await;
    let (app, lake) = (&fixture.app, fixture.lake("lake"));
    support::upload(&lake, "x｡🦀表.csv", b"v1").await;
    // Snapshotted, as a pass leaves it: its one gap is the backup.
    lake.blob("x｡🦀表.csv").take_snapshot(None).await.unwrap();
    let request = VerifyRequest {
        container: "lake".into(),
        prefix: None,
        deep: false,
    };
    let queued = verify::start(app, &request).await.unwrap();
    support::drain_queue(&app.jobs.queue("backup-requests-shards").unwrap()).await;
    let root = queued.roots[0].clone();
    // The first delivery finds the blob without a backup, writes that, and is killed.
    let first = jobs::run_part(app, &root, &jobs::Fanout::Queue)
        .await
        .unwrap();
    assert!(!first.lines.is_empty(), "{:?}", first.lines);
    ledger::record_report(app, &root, &first.lines)
        .await
        .unwrap();
    // The gap is closed (a backup pass) before the redo comes.
    let (etag, _, _) = support::properties(&lake, "x｡🦀表.csv").await;
    backup::back_up(app, &BackupRequest::new("lake", "x｡🦀表.csv", &etag))
        .await
        .unwrap();
    match jobs::run_delivered(app, &root, false).await.unwrap() {
        Delivered::Ran(redo) => assert!(redo.lines.is_empty(), "{:?}", redo.lines),
        other => panic!("{other:?}"),
    }
    let report = ledger::job_report(app, &queued.job).await.unwrap().unwrap();
    assert!(
        report.is_empty(),
        "the dead delivery's gap is still reported: {report:?}"
    );
}

/// A backup part's delivery failed one blob (its backup missing), recorded its continuation and
/// died before it finished. The redo must reach where that delivery stopped, or say it did not:
/// the recorded continuation goes on past that point, so a redo cut short that ended well would
/// leave the blob between unprotected, and its job `done`. Here the lake's listings are slow
/// (half a second a page of two, through the proxy) and the budget one second: the redo reaches
/// the stop (or fails, for a retry) rather than end short of it.
#[tokio::test]
async fn a_backup_part_redone_reaches_the_recorded_stop_or_fails_rather_than_skip_blobs() {
    let fixture = Lake::start(&["lake"]).await;
    let (app, lake) = (&fixture.app, fixture.lake("lake"));
    let names: Vec<String> = (0..20).map(|i| format!("big/f{i:03}.txt")).collect();
    for name in &names {
        support::upload(&lake, name, name.as_bytes()).await;
        lake.blob(name).take_snapshot(None).await.unwrap();
        if name != "big/f015.txt" {
            let (etag, _, _) = support::properties(&lake, name).await;
            backup::back_up(app, &BackupRequest::new("lake", name, &etag))
                .await
                .unwrap();
        }
    }
    let (_, root) = queued_by_hand(app, JobOrigin::Command, "big/").await;
    // The first delivery went through f017 (f015 failed), recorded its continuation, and died.
    let next = root
        .continuation(None, Some("big/f017.txt"))
        .resuming_at(Some("big/f018.txt".into()));
    let stop = RecordedStop {
        next,
        last_done: Some("big/f017.txt".into()),
    };
    ledger::record_continuation(app, &root, &stop)
        .await
        .unwrap();

    let proxied = ProxiedAzurite::start(
        &fixture.azurite,
        ProxyConfig::azurite().page_size(2).faults(
            Faults::new(5, 1.0)
                .classes([OpClass::List])
                .kinds([FaultKind::Delay])
                .delay(Duration::from_millis(500), Duration::from_millis(600)),
        ),
    )
    .expect("proxies start");
    // Only the lake is slow: the backup level and the ledger answer at once.
    let mut settings = fixture.settings();
    settings.insert(
        "SOURCE_STORAGE".into(),
        proxied.settings()["SOURCE_STORAGE"].clone(),
    );
    settings.insert("SHARD_TIME_BUDGET_SECONDS".into(), "1".into());
    let slow = App::from_settings(&Settings::from_pairs(settings)).unwrap();
    let redone = jobs::run_delivered(&slow, &root, false).await;
    let f015 = support::list_all(&fixture.vault("lake"))
        .await
        .into_iter()
        .any(|(name, _)| name.starts_with("big/f015"));
    assert!(
        redone.is_err() || f015,
        "the redo ended without reaching the recorded stop, f015 unprotected: {redone:?}"
    );
}
