//! Directory shards on Azurite: fan-out over nested directories, continuations within a time
//! budget, exactly one snapshot and one stamped backup per version, and several `lakebackup run`
//! processes sharing one job, one of them killed mid-way.

use crate::support;

use std::{collections::BTreeMap, time::Duration};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use lakebackup::{
    app::{App, WorkQueue},
    core::{
        job::{Counts, JobState},
        naming, stamp,
    },
    engine::jobs::{
        ledger, run_delivered, run_part, Delivered, Fanout, JobOrigin, JobStatus, PartReport,
        Shard, Work,
    },
    settings::Settings,
};
use support::{
    worker::{self, Standalone},
    Azurite, Lake,
};

/// Blobs in the lake's widest directory.
const WIDE: usize = 200;

/// A lake of nested directories: `(name, bytes)`.
fn lake_layout() -> Vec<(String, Vec<u8>)> {
    let mut blobs = vec![
        ("top.csv".to_owned(), b"top".to_vec()),
        ("a/one.csv".to_owned(), b"one".to_vec()),
        ("a/b/c/deep \"q\" #1.parquet".to_owned(), b"deep".to_vec()),
        ("a/b/two.bin".to_owned(), vec![7u8; 3000]),
        ("ünï/数据.json".to_owned(), b"{}".to_vec()),
    ];
    // Enough that a directory outlasts a 1 s budget even on a fast machine.
    for i in 0..WIDE {
        blobs.push((
            format!("wide/part-{i:04}.bin"),
            format!("part {i}").into_bytes(),
        ));
    }
    blobs
}

async fn seed(app: &App) -> Vec<(String, Vec<u8>)> {
    let lake = app.source.container("lake").unwrap();
    let blobs = lake_layout();
    for (name, bytes) in &blobs {
        support::upload(&lake, name, bytes).await;
    }
    blobs
}

/// Checks every blob has exactly one snapshot and exactly one stamped backup holding its bytes.
async fn assert_each_version_once(app: &App, blobs: &[(String, Vec<u8>)]) {
    assert_versions(app, blobs, true).await
}

/// Checks every blob has a snapshot (exactly one when `one_snapshot`) and exactly one stamped
/// backup holding its bytes.
async fn assert_versions(app: &App, blobs: &[(String, Vec<u8>)], one_snapshot: bool) {
    let lake = app.source.container("lake").unwrap();
    let mut snapshots: BTreeMap<String, usize> = BTreeMap::new();
    for (name, snapshot) in support::list_all(&lake).await {
        if snapshot.is_some() {
            *snapshots.entry(name).or_default() += 1;
        }
    }
    let backup = app.backup.container("lakebak").unwrap();
    let mut backups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, _) in support::list_all(&backup).await {
        let parsed = naming::parse_backup_blob_name(&name).unwrap();
        backups.entry(parsed.source_name).or_default().push(name);
    }
    for (name, bytes) in blobs {
        let taken = snapshots.get(name).copied().unwrap_or(0);
        if one_snapshot {
            assert_eq!(taken, 1, "snapshots of {name}");
        } else {
            assert!(taken >= 1, "no snapshot of {name}");
        }
        let names = &backups[name];
        assert_eq!(names.len(), 1, "backups of {name}: {names:?}");
        let (etag, _, _) = support::properties(&lake, name).await;
        let (_, _, metadata) = support::properties(&backup, &names[0]).await;
        assert_eq!(
            stamp::stamped_etag(&metadata),
            Some(etag.as_str()),
            "{name}"
        );
        assert!(
            support::download(&backup, &names[0]).await == *bytes,
            "{name}"
        );
    }
    assert_eq!(backups.len(), blobs.len());
}

/// The worker's `App` on `azurite` with the Function App's settings and `extra`.
fn app_with(azurite: &Azurite, extra: &[(&str, &str)]) -> App {
    let settings = support::with(worker::settings(azurite), extra);
    App::from_settings(&Settings::from_pairs(settings)).unwrap()
}

/// Starts job `job` at `prefix`, then, as the host would, takes its shards off the queue and
/// hands each to the shard function until none is left; returns each shard's report and the
/// job's status from its ledger.
async fn run_job_in_process(app: &App, job: &str, prefix: &str) -> (Vec<PartReport>, JobStatus) {
    let root = Shard::root(job, "lake", prefix, Work::backup());
    ledger::start_job(app, JobOrigin::Command, &[root], None)
        .await
        .unwrap();
    let queue = app.queue(WorkQueue::Shards).await.unwrap();
    let mut reports = Vec::new();
    loop {
        let status = ledger::job_status(app, job).await.unwrap().unwrap();
        let texts = support::drain_queue(queue).await;
        if texts.is_empty() {
            return (reports, status);
        }
        assert_eq!(status.progress.state, JobState::Running, "{status:?}");
        for text in texts {
            let text = String::from_utf8(BASE64.decode(text).unwrap()).unwrap();
            let shard = Shard::parse(&text).unwrap();
            match run_delivered(app, &shard, false).await.unwrap() {
                Delivered::Ran(report) => reports.push(report),
                // A shard queued twice (a parent that fanned out again) is done once.
                Delivered::AlreadyFinished => {}
                Delivered::Deferred => panic!("one delivery at a time here: none is locked"),
            }
        }
    }
}

fn total(reports: &[PartReport], count: fn(&Counts) -> u64) -> u64 {
    reports.iter().map(|r| count(&r.counts)).sum()
}

#[tokio::test]
async fn a_job_fans_out_over_directories_and_continues_within_its_budget() {
    let lake = Lake::start_with(
        &["lake"],
        &[("SHARD_TIME_BUDGET_SECONDS", "1"), ("SHARD_PAGE_SIZE", "2")],
    )
    .await;
    let app = &lake.app;
    let blobs = seed(app).await;

    let (reports, status) = run_job_in_process(app, "job-1", "").await;
    assert_each_version_once(app, &blobs).await;

    let prefixes: Vec<&str> = reports.iter().map(|r| r.prefix.as_str()).collect();
    for directory in ["", "a/", "a/b/", "a/b/c/", "ünï/", "wide/"] {
        assert!(
            prefixes.contains(&directory),
            "{directory:?} not sharded: {prefixes:?}"
        );
    }
    assert!(reports.iter().all(|r| r.job == "job-1"));
    assert!(
        reports.iter().any(|r| r.continued),
        "{WIDE} blobs two a page in a 1 s budget must continue: {reports:?}"
    );
    // That a part stops at its budget is the continuation above; its time only bounds what a
    // loaded machine may stretch a 1 s budget to (a part that kept on would copy every blob).
    for report in &reports {
        assert!(
            report.duration_ms < 20_000,
            "far over its 1 s budget: {report:?}"
        );
    }
    assert_eq!(
        total(&reports, |c| c.get("backups_copied")),
        blobs.len() as u64
    );
    // The ledger adds up to the same: every shard queued has finished.
    assert_eq!(status.progress.state, JobState::Done, "{status:?}");
    assert_eq!(status.progress.shards_queued, reports.len() as u64);
    assert_eq!(
        status.progress.totals.get("backups_copied"),
        blobs.len() as u64
    );
    assert_eq!(
        status.progress.totals.get("snapshots_created"),
        blobs.len() as u64
    );

    // Again: everything is there; a pass costs listings only. (With default pages: Azurite's
    // listing marker is a blob name, so a page ending between a blob's snapshot and its base
    // skips the rest of that name; Azure's marker is opaque and does not.)
    let app = app_with(&lake.azurite, &[]);
    let (again, _) = run_job_in_process(&app, "job-2", "").await;
    assert!(
        again
            .iter()
            .all(|r| r.counts.get("backups_copied") == 0 && r.counts.get("snapshots_created") == 0),
        "{again:?}"
    );
    assert_eq!(
        total(&again, |c| c.get("backups_present")),
        blobs.len() as u64
    );
    assert_each_version_once(&app, &blobs).await;
}

#[tokio::test]
async fn a_prefix_limits_the_job_to_that_directory_tree() {
    let lake = Lake::start(&["lake"]).await;
    let app = &lake.app;
    seed(app).await;
    let (reports, _) = run_job_in_process(app, "job-a", "a/").await;
    let copied = total(&reports, |c| c.get("backups_copied"));
    assert_eq!(copied, 3, "a/one.csv, a/b/two.bin, a/b/c/deep: {reports:?}");
    let backup = lake.vault("lake");
    let names: Vec<String> = support::list_all(&backup)
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.iter().all(|n| n.starts_with("a/")), "{names:?}");
}

#[tokio::test]
async fn an_unreachable_backup_account_fails_the_shard_and_marks_nothing_done() {
    let unreachable = support::unreachable_connection("backup", support::azurite::BACKUP_KEY);
    let fixture = Lake::start_with(&["lake"], &[("BACKUP_STORAGE", &unreachable)]).await;
    let app = &fixture.app;
    let lake = fixture.lake("lake");
    support::upload(&lake, "x.csv", b"x").await;
    let root = Shard::root("job-x", "lake", "", Work::backup());
    ledger::start_job(app, JobOrigin::Command, std::slice::from_ref(&root), None)
        .await
        .unwrap();
    let deliver = |dequeue_count| {
        let text = root.to_json();
        async move {
            support::deliver_to::<serde_json::Value>(app, WorkQueue::Shards, &text, dequeue_count)
                .await
        }
    };
    let status = || async { ledger::job_status(app, "job-x").await.unwrap().unwrap() };

    // A failed delivery fails the invocation (the host retries it) and marks nothing done.
    let error = deliver(1).await.unwrap_err();
    assert!(error.to_string().contains("lakebak"), "{error}");
    assert!(
        support::list_all(&lake)
            .await
            .iter()
            .all(|(_, s)| s.is_none()),
        "no snapshot without its backup"
    );
    let after_first = status().await;
    assert_eq!(
        after_first.progress.state,
        JobState::Running,
        "{after_first:?}"
    );
    assert_eq!(after_first.progress.shards_finished, 0);

    // The last delivery the host allows (maxDequeueCount, 5) fails too: the job says failed
    // instead of waiting for it forever.
    deliver(5).await.unwrap_err();
    let given_up = status().await;
    assert_eq!(given_up.progress.state, JobState::Failed, "{given_up:?}");
    assert_eq!(given_up.progress.shards_failed, 1);
}

#[tokio::test]
async fn two_run_processes_share_one_job_and_a_killed_one_loses_nothing() {
    let extra = [
        ("SHARD_TIME_BUDGET_SECONDS", "1"),
        // Default pages: a shard taken again after the dead worker's snapshots exist must not
        // meet Azurite's name-based listing marker (see the test above).
        ("RUN_VISIBILITY_SECONDS", "3"),
        ("COPY_TIMEOUT_SECONDS", "20"),
    ];
    let lake = Lake::start_with(&["lake"], &extra).await;
    let app = &lake.app;
    let blobs = seed(app).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("host.json"),
        r#"{"version": "2.0", "functionTimeout": "00:01:00", "extensions": {"queues": {"batchSize": 4, "maxPollingInterval": "00:00:00.2"}}}"#,
    )
    .unwrap();
    let process_settings = lake.settings();

    let (code, out, err) = worker::run_once(&process_settings, &["shard", "--container", "lake"]);
    assert_eq!(code, 0, "{out}{err}");
    let queued: serde_json::Value = serde_json::from_str(&out).unwrap();
    let job = queued["job"].as_str().unwrap().to_owned();
    let first = Standalone::start(&process_settings, dir.path(), &[]);
    let second = Standalone::start(&process_settings, dir.path(), &[]);
    // One worker dies early, mid-job; its shards reappear and the other finishes them. (The
    // kill point, 1.5 s in, is the behaviour under test: no wait for anything.)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.kill();
    // The job's ledger says when it is done: every shard queued, the dead worker's included,
    // has finished.
    let status = support::wait_for(Duration::from_secs(120), "the job's end", || async {
        let status = ledger::job_status(app, &job).await.unwrap().unwrap();
        (status.progress.state != JobState::Running).then_some(status)
    })
    .await;
    assert_eq!(status.progress.state, JobState::Done, "{status:?}");
    // The dead worker may have finished a shard and died before deleting its message: the
    // job is done, and the message comes back when its visibility window ends. The living
    // worker takes it, finds the shard finished, and deletes it: the queue empties, invisible
    // messages included, while the worker still runs.
    let shards = app.queue(WorkQueue::Shards).await.unwrap();
    // (A copy deferred while its shard was locked comes back after the lock's lease, 15 s.)
    support::wait_for(Duration::from_secs(90), "an empty shards queue", || async {
        (shards.depth().await.unwrap() == Some(0)).then_some(())
    })
    .await;
    assert_eq!(second.terminate(), 0);
    // A shard taken again after its worker died may run beside a copy of one of its
    // sub-directories' shards: a backup is still made once (If-None-Match: *), a snapshot may
    // be taken twice.
    assert_versions(app, &blobs, false).await;
    assert!(support::drain_queue(shards).await.is_empty());
    let poison = lake.queue("backup-requests-shards-poison");
    assert!(
        !support::queue_exists(&poison).await || support::drain_queue(&poison).await.is_empty()
    );
}

#[tokio::test]
async fn an_archived_blob_is_counted_not_copied() {
    let fixture = Lake::start(&["lake"]).await;
    let lake = fixture.lake("lake");
    support::upload(&lake, "cold/old.bin", b"archived").await;
    support::upload(&lake, "cold/new.bin", b"hot").await;
    lake.blob("cold/old.bin").set_tier("Archive").await.unwrap();
    let report = run_part(
        &fixture.app,
        &Shard::root("job-c", "lake", "cold/", Work::backup()),
        &Fanout::Queue,
    )
    .await
    .unwrap();
    assert_eq!(
        (
            report.counts.get("archived"),
            report.counts.get("backups_copied")
        ),
        (1, 1),
        "{report:?}"
    );
}

/// Blobs in the directory the deletion test drops whole.
const DROPPED: usize = 600;

#[tokio::test]
async fn a_directory_deleted_whole_is_recorded_within_budgets_and_only_once() {
    let azurite =
        Azurite::start_counting(std::path::Path::new(env!("CARGO_MANIFEST_DIR")), &[]).unwrap();
    let fixture = Lake::on(azurite, &["lake"], &[]).await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    let lake = fixture.lake("lake");
    support::upload(&lake, "kept.csv", b"kept").await;
    let names: Vec<String> = (0..DROPPED)
        .map(|i| format!("dropped/part-{i:04}.bin"))
        .collect();
    futures::future::join_all(
        names
            .iter()
            .map(|name| support::upload(&lake, name, name.as_bytes())),
    )
    .await;
    let (first, _) = run_job_in_process(app, "job-1", "").await;
    assert_eq!(
        total(&first, |c| c.get("backups_copied")),
        DROPPED as u64 + 1
    );
    let mut etags = BTreeMap::new();
    for name in &names {
        etags.insert(name.clone(), support::properties(&lake, name).await.0);
        support::delete_with_snapshots(&lake, name).await;
    }

    // One marker at a time in a 1 s budget: the directory's one page of names is cut, and its
    // continuations record the rest.
    let slow = app_with(
        azurite,
        &[
            ("SHARD_TIME_BUDGET_SECONDS", "1"),
            ("SNAPSHOT_CONCURRENCY", "1"),
        ],
    );
    let (second, status) = run_job_in_process(&slow, "job-2", "").await;
    assert_eq!(status.progress.state, JobState::Done, "{status:?}");
    assert_eq!(
        total(&second, |c| c.get("deletions_recorded")),
        DROPPED as u64
    );
    let dropped: Vec<&PartReport> = second.iter().filter(|r| r.prefix == "dropped/").collect();
    assert!(
        dropped.len() > 1 && dropped.iter().any(|r| r.continued),
        "{DROPPED} markers one at a time must outlast a 1 s budget: {dropped:?}"
    );
    for report in &second {
        assert!(
            report.duration_ms < 20_000,
            "far over its budget: {report:?}"
        );
    }
    let vault = fixture.vault("lake");
    let mut recorded = BTreeMap::new();
    for (record, _) in support::life_records(&vault).await {
        assert_eq!(record.change, lakebackup::core::life::Change::Deleted);
        assert!(
            recorded.insert(record.name.clone(), record.life).is_none(),
            "two records for {}",
            record.name
        );
    }
    assert_eq!(
        recorded,
        etags
            .iter()
            .map(|(name, etag)| (name.clone(), lakebackup::core::life::life_of(etag)))
            .collect::<BTreeMap<_, _>>(),
        "one marker per deleted blob, naming its last version"
    );

    // A later pass finds them recorded: it lists them, and writes nothing.
    let before = azurite.requests_served();
    let (third, _) = run_job_in_process(app, "job-3", "").await;
    let served = azurite.requests_served() - before;
    assert_eq!(total(&third, |c| c.get("deletions_recorded")), 0);
    assert!(
        served < DROPPED as u64 / 4,
        "{served} requests for a pass over {DROPPED} recorded deletions"
    );
}
