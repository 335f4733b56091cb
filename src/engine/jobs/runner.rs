//! Running one part of a shard of a kind `K` ([`run_part`]): the kind's own work, then its
//! continuation recorded and queued; and a shard delivered by the queue with its ledger kept
//! ([`run_delivered`]): claimed (one delivery at a time), run, recorded. Generic over [`Kind`];
//! no kind is named here.

use std::{sync::Mutex, time::Duration, time::Instant};

use serde::Serialize;
use tracing::{info, Instrument};

use super::{
    budget::{RecordedStop, Stop},
    kind::{Kind, LineSink, Part, PartDone},
    ledger, JobError, Shard,
};
use crate::{
    app::App,
    core::{
        counts::{Counts, KindCounts},
        job::Notes,
        shard::ShardWork,
    },
    storage::{lease::SHORTEST_LEASE_SECONDS, StorageError},
    telemetry,
};

/// What one shard part did; the shard function's return value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PartReport {
    pub job: String,
    pub container: String,
    pub prefix: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// The blobs it could not do its work on, and those it warns about.
    #[serde(skip_serializing_if = "Notes::is_empty")]
    pub notes: Notes,
    /// The budget ran out and the rest of the directory was queued.
    pub continued: bool,
    pub duration_ms: u64,
    /// One JSON object per unit acted on (a restore's actions), for the job's ledger.
    #[serde(skip)]
    pub lines: Vec<String>,
}

/// Where a shard puts the shards it spawns (sub-directories, its continuation).
pub enum Fanout<'a> {
    /// On the shard queue, entered in the job's ledger first (the functions).
    Queue,
    /// On a list in this process (a job run here).
    Local(&'a Mutex<Vec<Shard>>),
}

impl Fanout<'_> {
    pub async fn push(&self, app: &App, shard: Shard) -> Result<(), StorageError> {
        match self {
            Fanout::Queue => ledger::queue_shard(app, &shard).await,
            Fanout::Local(list) => {
                list.lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(shard);
                Ok(())
            }
        }
    }
}

/// One part of a shard run: what the kind did, and whether it queued a continuation.
pub struct PartRun<K: Kind> {
    pub done: PartDone<K>,
    pub continued: bool,
    pub duration_ms: u64,
}

/// Runs one part of a shard of kind `K`, handing each line to `sink` as it is done (or keeping
/// them), then records (queued) and queues its continuation. `stop`: where a delivery of this
/// shard before chose to stop; its continuation is queued again whatever this part found (the
/// one before may have entered it in the ledger and died before it was on the queue).
pub async fn run_part<K: Kind>(
    app: &App,
    shard: &Shard,
    options: &K::Options,
    fanout: &Fanout<'_>,
    sink: Option<LineSink<'_, K::Line>>,
    stop: Option<&RecordedStop>,
) -> Result<PartRun<K>, JobError> {
    let span = tracing::info_span!(
        "shard",
        job = %shard.job,
        work = K::NAME,
        container = %shard.container,
        prefix = %shard.prefix,
        part = shard.part,
    );
    async {
        let started = Instant::now();
        let part = Part {
            app,
            shard,
            options,
            fanout,
            sink,
            stop: Stop(stop),
        };
        let mut done = match K::run_part(part).await {
            Ok(done) => done,
            Err(e) => {
                let reason = match e {
                    JobError::Refused(_) => "refused",
                    _ => "part",
                };
                telemetry::record::failures(K::NAME, reason, 1);
                return Err(e);
            }
        };
        telemetry::record::failures(K::NAME, "unit", K::not_done(&done.counts));
        let continuation = match stop {
            Some(recorded) => Some(recorded.next.clone()),
            None => done.continuation.take(),
        };
        let continued = continuation.is_some();
        if let Some(next) = continuation {
            if stop.is_none() && matches!(fanout, Fanout::Queue) {
                let recorded = RecordedStop {
                    next: next.clone(),
                    last_done: done.last_done.take(),
                };
                ledger::record_continuation(app, shard, &recorded).await?;
            }
            fanout.push(app, next).await?;
        }
        let took = started.elapsed();
        telemetry::record::part_finished(K::NAME, took);
        let duration_ms = took.as_millis() as u64;
        info!(
            report = %format_args!(
                "counts: {:?}, notes: {:?}, lines: {}, continued: {continued}, duration_ms: \
                 {duration_ms}",
                done.counts,
                done.notes,
                done.lines.len(),
            ),
            "shard finished"
        );
        Ok(PartRun {
            done,
            continued,
            duration_ms,
        })
    }
    .instrument(span)
    .await
}

/// [`run_part`] as the shard function reports it: counts by name, lines as JSON.
pub async fn run_part_reported<K: Kind>(
    app: &App,
    shard: &Shard,
    options: &K::Options,
    fanout: &Fanout<'_>,
    stop: Option<&RecordedStop>,
) -> Result<PartReport, JobError> {
    let run = run_part::<K>(app, shard, options, fanout, None, stop).await?;
    Ok(PartReport {
        job: shard.job.clone(),
        container: shard.container.clone(),
        prefix: shard.prefix.clone(),
        counts: run.done.counts.to_counts(),
        notes: run.done.notes,
        continued: run.continued,
        duration_ms: run.duration_ms,
        lines: run
            .done
            .lines
            .iter()
            .filter_map(|line| serde_json::to_string(line).ok())
            .collect(),
    })
}

/// What became of a shard the queue delivered.
#[derive(Debug)]
pub enum Delivered {
    /// This delivery did the shard's part.
    Ran(PartReport),
    /// The shard had finished already: a duplicate message, nothing done.
    AlreadyFinished,
    /// Another delivery is working on the shard: this one was put back on the queue for after
    /// its lock lapses (a new message, so waiting never counts toward poison).
    Deferred,
}

/// How long a delivery that found its shard locked waits before it is tried again: the lock's
/// lease, so a lock whose holder died has lapsed by then.
const LOCKED_SHARD_DELAY: Duration = Duration::from_secs(SHORTEST_LEASE_SECONDS as u64);

/// Runs a shard of kind `K` the queue delivered, keeping its job's ledger: it claims the shard
/// (one delivery at a time; a finished shard is not done again; one redone after a crash stops
/// where the one before chose to); on its last allowed delivery it says so first, so that a job
/// whose shard is killed there ends failed rather than running for ever; a shard that fails on
/// its last delivery is recorded failed (the host gives it up); one that ends is recorded
/// finished, after its continuation is in the ledger and on the queue. A failure fails the
/// invocation, for a retry; a refusal ([`JobError::Refused`]) is recorded failed at once,
/// whatever the delivery, for no retry can change it (the caller poisons its message).
pub async fn run_delivered<K: Kind>(
    app: &App,
    shard: &Shard,
    options: &K::Options,
    last_attempt: bool,
) -> Result<Delivered, JobError> {
    let lock = match ledger::claim(app, shard).await? {
        ledger::Claim::Finished => {
            info!(job = %shard.job, prefix = %shard.prefix, part = shard.part, "the shard has finished already");
            return Ok(Delivered::AlreadyFinished);
        }
        ledger::Claim::Busy => {
            info!(job = %shard.job, prefix = %shard.prefix, part = shard.part, "another delivery is working on the shard: later");
            app.defer_shard(shard, LOCKED_SHARD_DELAY).await?;
            return Ok(Delivered::Deferred);
        }
        ledger::Claim::Held(lock) => lock,
    };
    let lost = lock.lost();
    let ran = async {
        // Recorded only by the delivery that holds the shard: one deferred meanwhile never
        // leaves a deadline behind for a shard another delivery finishes.
        if last_attempt {
            ledger::record_last_attempt(app, shard).await?;
        }
        let report =
            run_part_reported::<K>(app, shard, options, &Fanout::Queue, lock.stop.as_ref()).await?;
        record_ran(app, shard, report, K::REPORTS_LINES).await
    };
    let finished = tokio::select! {
        biased;
        ran = ran => ran,
        // Another delivery may take the shard over: this one must not record it.
        reason = lost => Err(StorageError::other("working on a shard", reason).into()),
    };
    lock.release().await;
    match finished {
        Ok(report) => Ok(Delivered::Ran(report)),
        Err(e @ JobError::Refused(_)) => {
            // Unrecorded, the refusal fails the invocation: the host retries the record.
            ledger::record_failed(app, shard, &e.to_string()).await?;
            Err(e)
        }
        Err(e) => {
            if last_attempt {
                if let Err(ledger) = ledger::record_failed(app, shard, &e.to_string()).await {
                    tracing::warn!(error = %ledger, "could not record the failed shard in its job's ledger");
                }
            }
            Err(e)
        }
    }
}

/// Records what a part did: its per-unit lines, then its finished entry. A part of a kind that
/// reports lines and has none removes any report a delivery before it left (one that died
/// after writing its lines): the report is this part's, whole, as its counts are.
async fn record_ran(
    app: &App,
    shard: &Shard,
    report: PartReport,
    reports_lines: bool,
) -> Result<PartReport, JobError> {
    if !report.lines.is_empty() {
        ledger::record_report(app, shard, &report.lines).await?;
    } else if reports_lines {
        ledger::forget_report(app, shard).await?;
    }
    ledger::record_finished(app, shard, &report.counts, &report.notes).await?;
    if !report.continued {
        ledger::note_end(app, &shard.job).await;
    }
    Ok(report)
}

/// The kind name of a shard's work (for messages and logs).
pub fn kind_of(shard: &Shard) -> &'static str {
    shard.work.kind()
}
