//! Job summaries (`summaries/{job}` in the ledger): `lakebackup job list` reads an ended job from
//! its summary, and what it shows is always what the full reading of the job's entries says
//! (`lakebackup job JOB`), for done, failed and running jobs, a job without a summary (ended
//! before summaries, or whose worker died before writing it), and a job that ended, ran again
//! and ended otherwise; and the timer writes the summaries and index entries no shard wrote.

use std::collections::HashMap;

use lakebackup::engine::jobs::{
    self,
    backup::{BackupKind, BackupOptions},
    ledger, Delivered, JobOrigin, NewJob, Root,
};
use serde_json::Value;

use crate::support;

/// `job list --json`'s line of each job, by id.
fn job_list(fixture: &support::Lake) -> HashMap<String, Value> {
    let (code, stdout, stderr) = fixture.run(&["job", "list", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let mut lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    lines.pop();
    lines
        .into_iter()
        .map(|l| (l["job"].as_str().unwrap().to_owned(), l))
        .collect()
}

/// The job's status from the full reading of its entries, as `job list` shows it: without
/// the failed blobs' names.
async fn full_reading(app: &lakebackup::app::App, job: &str) -> Value {
    let status = jobs::status(app, job)
        .await
        .unwrap()
        .expect("the job exists");
    let mut value = serde_json::to_value(status).unwrap();
    let object = value.as_object_mut().unwrap();
    object.remove("failures");
    object.remove("warnings");
    value
}

/// `job list`'s line agrees with the full reading, field by field (its `finished` aside).
async fn assert_agrees(app: &lakebackup::app::App, listed: &HashMap<String, Value>, job: &str) {
    let mut line = listed
        .get(job)
        .unwrap_or_else(|| panic!("{job} listed"))
        .clone();
    line.as_object_mut().unwrap().remove("finished");
    assert_eq!(line, full_reading(app, job).await, "job list vs job {job}");
}

/// The job's summary as the ledger holds it: `Some(true)` current, `Some(false)` stale.
async fn summary_of(
    app: &lakebackup::app::App,
    job: &str,
) -> Option<(bool, HashMap<String, String>)> {
    let ledger = app.job_ledger().await.unwrap();
    let state = ledger
        .blob(&format!("summaries/{job}"))
        .probe()
        .await
        .unwrap()?;
    let metadata = state.metadata().clone();
    Some((
        metadata.get("summary").map(String::as_str) == Some("1"),
        metadata,
    ))
}

async fn backup_job(app: &lakebackup::app::App, container: &str) -> jobs::Queued {
    let new = NewJob::<BackupKind> {
        origin: JobOrigin::Command,
        container: container.to_owned(),
        roots: vec![Root::directory("")],
        options: BackupOptions::default(),
    };
    jobs::queue(app, new).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn job_list_reads_ended_jobs_from_their_summaries_and_agrees_with_the_full_reading() {
    let fixture = support::Lake::start(&["lake", "other"]).await;
    let app = &fixture.app;
    for name in ["a.csv", "dir/b.csv", "dir/deeper/c.csv"] {
        support::upload(&fixture.lake("lake"), name, name.as_bytes()).await;
    }
    support::upload(&fixture.lake("other"), "d.csv", b"d").await;

    // Done: run through the shard queue, three shards.
    let done = backup_job(app, "lake").await.job;
    support::deliver_all_shards(app).await;
    // Failed: a verify of a container with no backup finds gaps.
    let (code, stdout, _) = fixture.run(&["verify", "--container", "other", "--distributed"]);
    assert_eq!(code, 0, "{stdout}");
    let failed: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let failed = failed["job"].as_str().unwrap().to_owned();
    support::deliver_all_shards(app).await;
    // Running: queued, not delivered.
    let running = backup_job(app, "other").await;

    let (current, metadata) = summary_of(app, &done).await.expect("a done job's summary");
    assert!(current, "{metadata:?}");
    assert_eq!(metadata["state"], "done");
    assert_eq!(metadata["shards_queued"], "3", "{metadata:?}");
    let (current, metadata) = summary_of(app, &failed)
        .await
        .expect("a failed job's summary");
    assert!(current && metadata["state"] == "failed", "{metadata:?}");
    let (current, metadata) = summary_of(app, &running.job).await.expect("indexed");
    assert!(!current && metadata["summary"] == "running", "{metadata:?}");

    let listed = job_list(&fixture);
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[&done]["status"], "done");
    assert_eq!(listed[&done]["blobs"], 3, "{}", listed[&done]);
    assert!(listed[&done]["finished"].is_string());
    assert_eq!(listed[&failed]["status"], "failed");
    assert_eq!(listed[&running.job]["status"], "running");
    for job in [&done, &failed, &running.job] {
        assert_agrees(app, &listed, job).await;
    }

    // A job without a summary (ended before summaries were written, or its worker died between
    // its last shard's end and the summary): listed from its entries, the same.
    let ledger = app.job_ledger().await.unwrap();
    ledger
        .blob(&format!("summaries/{done}"))
        .delete(None)
        .await
        .unwrap();
    let listed = job_list(&fixture);
    assert_agrees(app, &listed, &done).await;
    assert_eq!(listed[&done]["status"], "done");
    // The host delivers the dead worker's message again: the duplicate finds its shard
    // finished, and writes the summary.
    let root = lakebackup::engine::jobs::Shard::root(&done, "lake", "", jobs::Work::backup());
    let again = jobs::run_delivered(app, &root, false).await.unwrap();
    assert!(matches!(again, Delivered::AlreadyFinished), "{again:?}");
    let (current, metadata) = summary_of(app, &done).await.expect("written again");
    assert!(current && metadata["state"] == "done", "{metadata:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_runs_again_after_its_end_has_its_summary_rewritten_from_its_entries() {
    let fixture = support::Lake::start(&["lake"]).await;
    let app = &fixture.app;
    support::upload(&fixture.lake("lake"), "a.csv", b"a").await;

    // The root shard given up (its last delivery failed): the job ends failed.
    let queued = backup_job(app, "lake").await;
    let root = &queued.roots[0];
    ledger::record_failed(app, root, "the worker was stopped")
        .await
        .unwrap();
    let (current, metadata) = summary_of(app, &queued.job).await.expect("summary");
    assert!(current && metadata["state"] == "failed", "{metadata:?}");
    let listed = job_list(&fixture);
    assert_eq!(listed[&queued.job]["status"], "failed");
    assert_agrees(app, &listed, &queued.job).await;

    // Its message replayed from the poison queue (here: still on the queue) runs and
    // finishes: the job is done, and so is its summary.
    support::deliver_all_shards(app).await;
    let listed = job_list(&fixture);
    assert_eq!(
        listed[&queued.job]["status"], "done",
        "{}",
        listed[&queued.job]
    );
    assert_agrees(app, &listed, &queued.job).await;
    let (current, metadata) = summary_of(app, &queued.job).await.expect("summary");
    assert!(current && metadata["state"] == "done", "{metadata:?}");
    assert_eq!(metadata["count_blobs"], "1", "{metadata:?}");

    // A delivery that claims a shard of an ended job marks its summary stale first: until the
    // job ends again, `job list` reads its entries.
    let lock = match ledger::claim(app, &root.continuation(Some("x"), None))
        .await
        .unwrap()
    {
        ledger::Claim::Held(lock) => lock,
        _ => panic!("a new shard is held"),
    };
    let (current, _) = summary_of(app, &queued.job).await.expect("kept, stale");
    assert!(!current, "marked stale by the claim");
    lock.release().await;
    let listed = job_list(&fixture);
    assert_agrees(app, &listed, &queued.job).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reconciliation_timer_writes_the_summaries_no_shards_end_wrote() {
    let fixture = support::Lake::start(&["lake"]).await;
    let app = &fixture.app;
    support::upload(&fixture.lake("lake"), "a.csv", b"a").await;
    // Two jobs that ended, one done and one failed, whose summaries are not there (jobs from
    // before summaries, or too large for the reading after a shard's end).
    let done = backup_job(app, "lake").await.job;
    support::deliver_all_shards(app).await;
    let failed = backup_job(app, "lake").await;
    ledger::record_failed(app, &failed.roots[0], "given up")
        .await
        .unwrap();
    support::drain_queue(&app.jobs.queue("backup-requests-shards").unwrap()).await;
    let running = backup_job(app, "lake").await.job;
    let ledger = app.job_ledger().await.unwrap();
    for job in [&done, &failed.job, &running] {
        ledger
            .blob(&format!("summaries/{job}"))
            .delete(None)
            .await
            .unwrap();
        assert!(summary_of(app, job).await.is_none());
    }
    // Until the timer has indexed every job, `job list` finds them in the ledger's directories.
    let listed = job_list(&fixture);
    for job in [&done, &failed.job, &running] {
        assert_agrees(app, &listed, job).await;
    }

    let scheduled = lakebackup::engine::reconcile::schedule(app, Some(&[])).await;
    assert_eq!(scheduled.status, "queued", "{scheduled:?}");
    let (current, metadata) = summary_of(app, &done).await.expect("written by the timer");
    assert!(current && metadata["state"] == "done", "{metadata:?}");
    let (current, metadata) = summary_of(app, &failed.job)
        .await
        .expect("written by the timer");
    assert!(current && metadata["state"] == "failed", "{metadata:?}");
    let (current, _) = summary_of(app, &running).await.expect("indexed");
    assert!(
        !current,
        "a running job has no summary, only its index entry"
    );
    // Every job is indexed now: `job list` reads the index, not the ledger's directories.
    let marker = ledger
        .blob("summaries/index-complete")
        .probe()
        .await
        .unwrap();
    assert!(marker.is_some(), "the timer marks the index complete");
    let listed = job_list(&fixture);
    for job in [&done, &failed.job, &running] {
        assert_agrees(app, &listed, job).await;
    }
}
