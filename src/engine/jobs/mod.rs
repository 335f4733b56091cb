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
//! The kinds: [`backup`] (snapshot and back up what lacks it, record the lives that ended, and in
//! a reconciliation prune), `restore` (write back each blob's version as of an instant), `verify`
//! (check each current blob's backup and snapshot, and with `deep` its bytes) and `prune` (delete
//! what the retention policy no longer keeps).

pub mod backup;
pub mod ledger;
mod prune;
mod restore;
mod runner;
pub mod scope;
mod target;
mod verify;

use serde::Serialize;
use thiserror::Error;

pub use ledger::JobStatus;
pub use prune::{PruneAction, PruneCounts};
pub use restore::RestoreAction;
pub use runner::{
    run_delivered, run_part, Delivered, Fanout, LineSink, LocalJob, PartReport, RecordedStop,
};
pub use verify::VerifyLine;

use crate::{
    app::App,
    core::{
        job::{count_names, Counts},
        restore_plan::RestoreOptions,
        shard::{new_job_id, PruneOptions, Shard, VerifyOptions, WorkKind},
    },
    engine::backup::BackupError,
    storage::StorageError,
};

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
    /// A directory level (empty: the container's root) and everything under it; `prune`: the
    /// shards also prune what the retention policy no longer keeps (a reconciliation's do).
    Directory { prefix: String, prune: bool },
    /// One blob only.
    Blob(String),
}

impl Root {
    pub fn directory(prefix: &str) -> Self {
        Root::Directory {
            prefix: prefix.to_owned(),
            prune: false,
        }
    }
}

/// The work a job does, with its options.
#[derive(Debug, Clone, Default)]
pub enum Work {
    #[default]
    Backup,
    Restore(RestoreOptions),
    Verify(VerifyOptions),
    Prune(PruneOptions),
}

/// A job to start.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub origin: JobOrigin,
    pub container: String,
    pub roots: Vec<Root>,
    pub work: Work,
}

impl NewJob {
    /// A reconciliation of `container`: the whole container, pruning as it goes.
    pub fn reconciliation(container: &str) -> Self {
        Self {
            origin: JobOrigin::Reconcile,
            container: container.to_owned(),
            roots: vec![Root::Directory {
                prefix: String::new(),
                prune: true,
            }],
            work: Work::Backup,
        }
    }

    /// The kind of work its shards do.
    pub fn kind(&self) -> WorkKind {
        match self.work {
            Work::Backup => WorkKind::Backup,
            Work::Restore(_) => WorkKind::Restore,
            Work::Verify(_) => WorkKind::Verify,
            Work::Prune(_) => WorkKind::Prune,
        }
    }

    fn shards(&self, job: &str) -> Vec<Shard> {
        let container = self.container.as_str();
        self.roots
            .iter()
            .map(|root| {
                // Kinds other than backup narrow a level by their filter: a root is a directory.
                let (Root::Directory { prefix, .. } | Root::Blob(prefix)) = root;
                match (&self.work, root) {
                    (Work::Backup, Root::Directory { prune, .. }) => Shard {
                        prune: *prune,
                        ..Shard::root(job, container, prefix)
                    },
                    (Work::Backup, Root::Blob(name)) => Shard::one_blob(job, container, name),
                    (Work::Restore(options), _) => {
                        Shard::restore_root(job, container, prefix, options.clone())
                    }
                    (Work::Verify(options), _) => {
                        Shard::verify_root(job, container, prefix, options.clone())
                    }
                    (Work::Prune(options), _) => {
                        Shard::prune_root(job, container, prefix, options.clone())
                    }
                }
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
pub async fn queue(app: &App, new: NewJob) -> Result<Queued, StorageError> {
    let job = new_job_id();
    let roots = new.shards(&job);
    ledger::start_job(app, new.origin, &roots).await?;
    Ok(Queued { job, roots })
}

/// Runs a job to its end in this process, up to `shards_at_once` shards at once, with nothing
/// queued or recorded (`lakebackup produce`, `reconcile`, and `restore`, `verify`, `prune`
/// without `--distributed`): the same shards as a queued job.
pub async fn run_here(app: &App, new: NewJob, shards_at_once: usize) -> LocalJob {
    run_here_reporting(app, new, shards_at_once, &|_| {}).await
}

/// [`run_here`], handing each per-blob line (a restore's actions) to `on_line` as it is done.
pub async fn run_here_reporting(
    app: &App,
    new: NewJob,
    shards_at_once: usize,
    on_line: LineSink<'_>,
) -> LocalJob {
    let job = new_job_id();
    let mut local = LocalJob::new(new.kind());
    for root in new.shards(&job) {
        local.add(runner::run_here(app, root, shards_at_once, on_line).await);
    }
    local
}

/// The counts of `kind`, all at zero.
pub fn zero_counts(kind: WorkKind) -> Counts {
    Counts::zero(count_names(kind))
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
