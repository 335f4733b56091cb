//! The job engine: sharded work over a lake container, whatever the kind of work.
//!
//! A job is a set of directory shards ([`Shard`]) that fan out from its roots: each shard does
//! its kind's work on one directory level within `SHARD_TIME_BUDGET_SECONDS`, queues each
//! sub-directory as a new shard and, when its budget is spent, its own continuation. Every job
//! starts through [`queue`] — the producer, the timer, the events function and `lakebackup
//! shard`: the functions take its shards off `{BACKUP_QUEUE_NAME}-shards`, any instance, and the
//! job's [`ledger`] says where it stands — or [`run_here`], the same shards in this process
//! (`lakebackup produce`, `reconcile`).
//!
//! A kind of work is a type implementing [`Kind`] ([`kind`]); the [`registry`] names each kind
//! once; the runner ([`runner`], [`local`], [`budget`]) is generic over it. The kinds: [`backup`]
//! (snapshot and back up what lacks it, record the lives that ended, and in a reconciliation
//! prune), `restore` (write back each blob's version as of an instant), `verify` (check each
//! current blob's backup and snapshot, and with `deep` its bytes) and `prune` (delete what the
//! retention policy no longer keeps). A kind imports the runner, never another kind.

pub mod budget;
pub mod kind;
pub mod ledger;
pub mod local;
pub mod registry;
pub mod runner;
pub mod scope;

// Every kind of job work, one line each (see `registry`): a new kind is its own module and one
// line here.
registry::registry! {
    backup::BackupKind => Backup,
    restore::RestoreKind => Restore,
    verify::VerifyKind => Verify,
    prune::PruneKind => Prune,
}

impl Work {
    /// A backup's work, with no options but the defaults (no pruning).
    pub fn backup() -> Self {
        Work::Backup(Default::default())
    }
}

use serde::Serialize;
use thiserror::Error;
use tracing::Instrument;

pub use budget::{each_within_budget, RecordedStop, Stop};
pub use kind::{Kind, LineSink, Part, PartDone, Registered};
pub use ledger::JobStatus;
pub use local::LocalJob;
pub use runner::{Delivered, Fanout, PartReport};

use crate::{
    app::App, core::shard::new_job_id, engine::backup::BackupError, storage::StorageError,
};

/// The job engine's shard: a directory level and the work of one registered kind there.
pub type Shard = crate::core::shard::Shard<Work>;

/// Shards a job run in this process runs at once, each with `SNAPSHOT_CONCURRENCY` repairs in
/// flight.
pub const LOCAL_SHARDS_AT_ONCE: usize = 4;

/// What started a job (its status says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOrigin {
    /// `HttpSnapshotIncBackupContainerProducer` (or `lakebackup produce`).
    Producer,
    /// The reconciliation timer (or `lakebackup reconcile`).
    Reconcile,
    /// An admin's command (`lakebackup shard`).
    Command,
    /// A blob event (a directory renamed).
    Event,
    /// `lakebackup restore`.
    Restore,
    /// `lakebackup verify`.
    Verify,
    /// `lakebackup prune`.
    Prune,
}

impl JobOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            JobOrigin::Producer => "producer",
            JobOrigin::Reconcile => "reconcile",
            JobOrigin::Command => "command",
            JobOrigin::Event => "event",
            JobOrigin::Restore => "restore",
            JobOrigin::Verify => "verify",
            JobOrigin::Prune => "prune",
        }
    }
}

/// Where a job's first shards start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// A directory level (empty: the container's root) and everything under it.
    Directory(String),
    /// One blob only.
    Blob(String),
}

impl Root {
    pub fn directory(prefix: &str) -> Self {
        Root::Directory(prefix.to_owned())
    }
}

/// A job of kind `K` to start.
#[derive(Debug, Clone)]
pub struct NewJob<K: Kind> {
    pub origin: JobOrigin,
    pub container: String,
    pub roots: Vec<Root>,
    pub options: K::Options,
}

impl<K: Registered> NewJob<K> {
    fn shards(&self, job: &str) -> Vec<Shard> {
        let container = self.container.as_str();
        let work = || K::wrap(self.options.clone());
        self.roots
            .iter()
            .map(|root| match root {
                Root::Directory(prefix) => Shard::root(job, container, prefix, work()),
                Root::Blob(name) => Shard::one_blob(job, container, name, work()),
            })
            .collect()
    }
}

/// A job queued: its id, and the shards it starts from.
#[derive(Debug)]
pub struct Queued {
    pub job: String,
    pub roots: Vec<Shard>,
}

/// Why a shard failed as a whole (a listing, the fan-out, its ledger): the host retries it, and
/// what it had done is found done the next time. A blob that could not be done does not fail it.
#[derive(Debug, Error)]
pub enum JobError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// The shard can never succeed on this worker (a restore's target it has no connection
    /// to): no retry changes that, so it is recorded failed in its job's ledger at once and its
    /// message goes to the poison queue, rather than burning every delivery.
    #[error("{0}")]
    Refused(String),
}

/// Starts a job on the queue: its ledger first, then its root shards, which any instance
/// running the shard function (or `lakebackup run`) takes. The producer, the timer, the events
/// function, `lakebackup shard` and `restore`, `verify`, `prune --distributed` start jobs here.
pub async fn queue<K: Registered>(app: &App, new: NewJob<K>) -> Result<Queued, StorageError> {
    let job = new_job_id();
    let roots = new.shards(&job);
    let about = K::about(&new.options, &new.container);
    ledger::start_job(app, new.origin, &roots, about).await?;
    Ok(Queued { job, roots })
}

/// Runs a job to its end in this process, up to `shards_at_once` shards at once, with nothing
/// queued or recorded (`lakebackup produce`, `reconcile`, and `restore`, `verify`, `prune`
/// without `--distributed`): the same shards as a queued job.
pub async fn run_here<K: Registered>(
    app: &App,
    new: NewJob<K>,
    shards_at_once: usize,
) -> LocalJob<K> {
    run_here_reporting(app, new, shards_at_once, &|_| {}).await
}

/// [`run_here`], handing each line (a restore's actions) to `on_line` as it is done.
pub async fn run_here_reporting<K: Registered>(
    app: &App,
    new: NewJob<K>,
    shards_at_once: usize,
    on_line: LineSink<'_, K::Line>,
) -> LocalJob<K> {
    let job = new_job_id();
    // The job's request in Application Insights, when telemetry is on.
    let span = tracing::info_span!(
        "job",
        job = %job,
        kind = K::NAME,
        origin = new.origin.as_str(),
        container = %new.container,
        otel.name = %format_args!("{} job", K::NAME),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let mut local = LocalJob::<K>::default();
    for root in new.shards(&job) {
        let run = local::run_here::<K>(app, root, &new.options, shards_at_once, on_line);
        local.add(run.instrument(span.clone()).await);
    }
    crate::telemetry::record::job_finished(
        K::NAME,
        new.origin.as_str(),
        local.succeeded(),
        started.elapsed(),
    );
    if !local.succeeded() {
        span.record("otel.status_code", "error");
    }
    local
}

/// The status of `job` now; `None` when no such job was started.
pub async fn status(app: &App, job: &str) -> Result<Option<JobStatus>, StorageError> {
    ledger::job_status(app, job).await
}

/// The status of `job` once it is no longer running, or when `wait` has passed; `None` when no
/// such job was started. The poll starts fast (a small job is done in well under a second) and
/// slows down to a second.
pub async fn wait_for(
    app: &App,
    job: &str,
    wait: std::time::Duration,
) -> Result<Option<JobStatus>, StorageError> {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(50);
    loop {
        let Some(current) = status(app, job).await? else {
            return Ok(None);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if current.progress.state != crate::core::job::JobState::Running || left.is_zero() {
            return Ok(Some(current));
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}
