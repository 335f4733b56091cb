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
    storage::{lease::SHORTEST_LEASE_SECONDS, StorageError},
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
    run_part_reporting(app, shard, fanout, None, None).await
}

/// [`run_part`], handing each per-blob line to `sink` as it is done instead of collecting them
/// in the report; `stop`: the continuation a delivery of this shard before chose, where this
/// one stops too (see [`Stop`]).
pub(super) async fn run_part_reporting(
    app: &App,
    shard: &Shard,
    fanout: &Fanout<'_>,
    sink: Option<LineSink<'_>>,
    stop: Option<&RecordedStop>,
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
        let stop = Stop(stop);
        let done = match shard.kind {
            WorkKind::Backup => backup::run_part(app, shard, fanout, stop).await?,
            WorkKind::Restore => restore::run_part(app, shard, fanout, sink, stop).await?,
            WorkKind::Verify => verify::run_part(app, shard, fanout, sink, stop).await?,
            WorkKind::Prune => prune::run_part(app, shard, fanout, sink, stop).await?,
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
        // A recorded stop is queued again whatever this delivery found: the one before may have
        // entered it in the ledger and died before it was on the queue.
        let continuation = match stop.0 {
            Some(recorded) => Some(recorded.next.clone()),
            None => done.continuation,
        };
        if let Some(next) = continuation {
            if stop.0.is_none() && matches!(fanout, Fanout::Queue) {
                let recorded = RecordedStop {
                    next: next.clone(),
                    last_done: done.bounds.last_done,
                };
                ledger::record_continuation(app, shard, &recorded).await?;
            }
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

/// Where a delivery of a shard chose to stop, recorded in its job's ledger before its
/// continuation is queued: the continuation, and for a part that deals with its level in the
/// service's order (backup), the last entry it dealt with — the first it did not is the
/// continuation's `resume_at` — since a page marker is no place a later listing can find again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RecordedStop {
    pub next: Shard,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_done: Option<String>,
}

/// Where a part must stop: where a delivery of the same shard before it chose to (it then died
/// before it finished). Such a part deals with exactly what lies before that stop — the work the
/// delivery before it did, found done — so the ledger counts every unit once and the chain of
/// continuations stays one chain.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stop<'a>(pub Option<&'a RecordedStop>);

impl Stop<'_> {
    /// The deadline of a kind that orders its level itself (restore, verify, prune): its budget
    /// from now, or none while a recorded stop is to be reached — its units up to the stop are
    /// found by order, so it always gets there, and the delivery before did them in a budget.
    pub fn deadline(&self, budget: Duration) -> Instant {
        match self.0 {
            Some(_) => Instant::now() + Duration::from_secs(86_400 * 365),
            None => Instant::now() + budget,
        }
    }

    /// Whether a unit at `position` in the part's own order (a kind that orders its level
    /// itself: restore, verify, prune) lies before the recorded stop, which goes on after its
    /// `after`; every unit does when there is none.
    pub fn admits(&self, position: &str) -> bool {
        match self.0.and_then(|stop| stop.next.after.as_deref()) {
            Some(after) => position <= after,
            None => true,
        }
    }
}

/// The last entry a part dealt with before its cut, in the service's order (see
/// [`RecordedStop`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutBounds {
    pub last_done: Option<String>,
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
    /// Where that cut lies, for a kind that deals with its level in the service's order.
    pub bounds: CutBounds,
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
            bounds: CutBounds::default(),
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

/// Runs a shard the queue delivered, keeping its job's ledger: on its last allowed delivery it
/// says so first, so that a job whose shard is killed there ends failed rather than running for
/// ever; it claims the shard (one delivery at a time; a finished shard is not done again; one
/// redone after a crash stops where the one before chose to); a shard that fails on its last
/// delivery is recorded failed (the host gives it up); one that ends is recorded finished, after
/// its continuation is in the ledger and on the queue. A failure fails the invocation, for a
/// retry; a refusal ([`JobError::Refused`]) is recorded failed at once, whatever the delivery,
/// for no retry can change it (the caller poisons its message).
pub async fn run_delivered(
    app: &App,
    shard: &Shard,
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
            run_part_reporting(app, shard, &Fanout::Queue, None, lock.stop.as_ref()).await?;
        record_ran(app, shard, report).await
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
                    warn!(error = %ledger, "could not record the failed shard in its job's ledger");
                }
            }
            Err(e)
        }
    }
}

/// Records what a part did: its per-blob lines, then its finished entry.
async fn record_ran(app: &App, shard: &Shard, report: PartReport) -> Result<PartReport, JobError> {
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
                let result = run_part_reporting(app, &shard, fanout, Some(on_line), None).await;
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
