//! Running shards: one part of one shard ([`run_part`], whatever its kind), a shard delivered by
//! the queue with its ledger kept ([`run_delivered`]), or a whole job in this process
//! ([`run_here`]), retrying a failed shard as the host would.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use futures::{stream::FuturesUnordered, StreamExt};
use serde::Serialize;
use tracing::{info, warn, Instrument};

use super::{backup, ledger, prune, restore, verify, JobError};
use crate::{
    app::App,
    core::{
        job::{count_names, not_done, BlobNote, Counts, Notes},
        shard::{Shard, WorkKind},
    },
    storage::StorageError,
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
    /// One JSON object per blob acted on (a restore's actions): kept in the job's ledger, or
    /// printed by a job run here.
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

/// Runs one part of one shard, of whatever kind of work.
pub async fn run_part(
    app: &App,
    shard: &Shard,
    fanout: &Fanout<'_>,
) -> Result<PartReport, JobError> {
    run_part_reporting(app, shard, fanout, None).await
}

/// [`run_part`], handing each per-blob line to `sink` as it is done instead of collecting them
/// in the report.
pub(super) async fn run_part_reporting(
    app: &App,
    shard: &Shard,
    fanout: &Fanout<'_>,
    sink: Option<LineSink<'_>>,
) -> Result<PartReport, JobError> {
    let span = tracing::info_span!(
        "shard",
        job = %shard.job,
        work = shard.kind.as_str(),
        container = %shard.container,
        prefix = %shard.prefix,
        part = shard.part,
    );
    async {
        let started = Instant::now();
        let done = match shard.kind {
            WorkKind::Backup => backup::run_part(app, shard, fanout).await?,
            WorkKind::Restore => restore::run_part(app, shard, fanout, sink).await?,
            WorkKind::Verify => verify::run_part(app, shard, fanout, sink).await?,
            WorkKind::Prune => prune::run_part(app, shard, fanout, sink).await?,
        };
        let mut report = PartReport {
            job: shard.job.clone(),
            container: shard.container.clone(),
            prefix: shard.prefix.clone(),
            counts: done.counts,
            notes: done.notes,
            continued: false,
            duration_ms: 0,
            lines: done.lines,
        };
        if let Some(next) = done.continuation {
            fanout.push(app, next).await?;
            report.continued = true;
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        // The report without its per-blob lines (a restore's may be thousands).
        let lines = std::mem::take(&mut report.lines);
        info!(report = ?report, lines = lines.len(), "shard finished");
        report.lines = lines;
        Ok(report)
    }
    .instrument(span)
    .await
}

/// The options a shard of a kind other than backup carries (checked when its message is read).
pub fn options_of<'a, T>(shard: &Shard, options: Option<&'a T>) -> Result<&'a T, JobError> {
    options.ok_or_else(|| {
        StorageError::other(
            format!("{} of {}", shard.kind.as_str(), shard.container),
            format!("the shard carries no {} options", shard.kind.as_str()),
        )
        .into()
    })
}

/// What a kind's part hands back to the runner.
pub struct PartDone {
    pub counts: Counts,
    pub notes: Notes,
    /// Where the rest of the directory goes on, when this part did not finish it.
    pub continuation: Option<Shard>,
    /// One JSON object per blob acted on, for kinds that report them.
    pub lines: Vec<String>,
}

/// Where a part's per-blob lines go when a job runs in this process: handed over as each is done
/// (the commands print them). Without one they are kept for the job's ledger.
pub type LineSink<'a> = &'a (dyn Fn(String) + Send + Sync);

impl PartDone {
    /// Nothing done yet; each of `counts` at zero.
    pub fn new(counts: &[&str]) -> Self {
        Self {
            counts: Counts::zero(counts),
            notes: Notes::default(),
            continuation: None,
            lines: Vec::new(),
        }
    }

    /// Adds one to count `name`.
    pub fn count(&mut self, name: &str, by: u64) {
        self.counts.set(name, self.counts.get(name) + by);
    }

    /// One blob's line: to `sink`, or kept for the ledger.
    pub fn line(&mut self, sink: Option<LineSink<'_>>, line: &impl Serialize) {
        let line = serde_json::to_string(line).unwrap_or_default();
        match sink {
            Some(sink) => sink(line),
            None => self.lines.push(line),
        }
    }
}

/// Runs `act` on each of `items` in their order, up to `concurrency` at once, handing each
/// outcome to `done` in that order; none is started after `deadline` but the first, so every part
/// makes progress. Whether every item was started (else the part continues after the last one
/// done).
pub async fn each_within_budget<T, O, F>(
    items: Vec<T>,
    deadline: Instant,
    concurrency: usize,
    act: impl FnMut(T) -> F,
    mut done: impl FnMut(O),
) -> bool
where
    F: std::future::Future<Output = O>,
{
    let total = items.len();
    let started = AtomicUsize::new(0);
    let within_budget = |_: &T| {
        let go = started.load(Ordering::Relaxed) == 0 || Instant::now() < deadline;
        if go {
            started.fetch_add(1, Ordering::Relaxed);
        }
        std::future::ready(go)
    };
    let mut outcomes = futures::stream::iter(items)
        .take_while(within_budget)
        .map(act)
        .buffered(concurrency.max(1));
    while let Some(outcome) = outcomes.next().await {
        done(outcome);
    }
    drop(outcomes);
    started.load(Ordering::Relaxed) == total
}

/// Runs a shard the queue delivered, keeping its job's ledger: on its last allowed delivery it
/// says so first, so that a job whose shard is killed there ends failed rather than running for
/// ever; a shard that fails there is recorded failed (the host gives it up); one that ends is
/// recorded finished. A failure fails the invocation, for a retry; a refusal
/// ([`JobError::Refused`]) is recorded failed at once, whatever the delivery, for no retry can
/// change it (the caller poisons its message).
pub async fn run_delivered(
    app: &App,
    shard: &Shard,
    last_attempt: bool,
) -> Result<PartReport, JobError> {
    if last_attempt {
        ledger::record_last_attempt(app, shard).await?;
    }
    let report = match run_part(app, shard, &Fanout::Queue).await {
        Ok(report) => report,
        Err(e @ JobError::Refused(_)) => {
            // Unrecorded, the refusal fails the invocation: the host retries the record.
            ledger::record_failed(app, shard, &e.to_string()).await?;
            return Err(e);
        }
        Err(e) => {
            if last_attempt {
                if let Err(ledger) = ledger::record_failed(app, shard, &e.to_string()).await {
                    warn!(error = %ledger, "could not record the failed shard in its job's ledger");
                }
            }
            return Err(e);
        }
    };
    if !report.lines.is_empty() {
        ledger::record_report(app, shard, &report.lines).await?;
    }
    ledger::record_finished(app, shard, &report.counts, &report.notes).await?;
    Ok(report)
}

/// A whole job run in this process: its totals, the shards that ran, and the notes of the
/// blobs it could not do (and of the shards that failed).
#[derive(Debug)]
pub struct LocalJob {
    pub totals: Counts,
    pub shards: u64,
    pub shards_failed: u64,
    pub notes: Notes,
}

impl LocalJob {
    /// Nothing run yet; every count of `kind` at zero.
    pub fn new(kind: WorkKind) -> Self {
        Self {
            totals: Counts::zero(count_names(kind)),
            shards: 0,
            shards_failed: 0,
            notes: Notes::default(),
        }
    }

    /// Adds another job's run to this one.
    pub fn add(&mut self, other: LocalJob) {
        self.totals.add(&other.totals);
        self.shards += other.shards;
        self.shards_failed += other.shards_failed;
        self.notes.extend(other.notes);
    }

    /// Why the first shard that failed for good failed.
    pub fn shard_failure(&self) -> Option<String> {
        self.notes
            .failures
            .iter()
            .find(|note| note.blob.is_empty())
            .map(|note| note.reason.clone())
    }

    /// Every shard ended and every blob it judged was done.
    pub fn succeeded(&self) -> bool {
        self.shards_failed == 0 && not_done(&self.totals) == 0
    }
}

/// Runs a whole job in this process, starting at `root`, up to `concurrency` shards at once,
/// handing each per-blob line to `on_line` as it is done. A shard that fails is tried again, as
/// the host would, up to `maxDequeueCount` times; then it is named in the notes and the rest of
/// the job goes on.
pub(super) async fn run_here(
    app: &App,
    root: Shard,
    concurrency: usize,
    on_line: LineSink<'_>,
) -> LocalJob {
    let mut job = LocalJob::new(root.kind);
    let pending = Mutex::new(vec![(root, 1u64)]);
    let take = || {
        pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
    };
    let spawned = Mutex::new(Vec::new());
    let fanout = Fanout::Local(&spawned);
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < concurrency.max(1) {
            let Some((shard, attempt)) = take() else {
                break;
            };
            let fanout = &fanout;
            running.push(async move {
                if attempt > 1 {
                    tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
                }
                let result = run_part_reporting(app, &shard, fanout, Some(on_line)).await;
                (shard, attempt, result)
            });
        }
        let Some((shard, attempt, result)) = running.next().await else {
            return job;
        };
        let mut queue = pending.lock().unwrap_or_else(|p| p.into_inner());
        queue.extend(
            spawned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..)
                .map(|s| (s, 1)),
        );
        match result {
            Ok(report) => {
                job.totals.add(&report.counts);
                job.shards += 1;
                job.notes.extend(report.notes);
            }
            Err(error)
                if attempt < app.config.max_dequeue_count
                    && !matches!(error, JobError::Refused(_)) =>
            {
                warn!(%error, attempt, prefix = shard.prefix, "shard failed; trying it again");
                queue.push((shard, attempt + 1));
            }
            Err(error) => {
                warn!(%error, prefix = shard.prefix, "shard failed for good");
                job.shards += 1;
                job.shards_failed += 1;
                job.notes.failures.push(BlobNote {
                    blob: String::new(),
                    reason: format!(
                        "the shard of {:?} (part {}) failed {attempt} times: {error}",
                        shard.prefix, shard.part
                    ),
                });
            }
        }
    }
}
