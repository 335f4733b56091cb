//! `HttpSnapshotIncBackupContainerProducer`: starts a sharded job over one container, or over
//! one directory tree of it (`prefix`), and waits up to `PRODUCER_WAIT_SECONDS` for it. A job
//! that finishes in time is answered with its totals; one that does not is answered "running",
//! with the job id whose status any instance can read from the job's ledger. The shards
//! (`QueueSnapshotBackupShard`) do the work: every version without a snapshot gets one, every
//! version without a complete backup is copied (direct engine) or requested (ADF engine).

use std::time::{Duration, Instant};

use thiserror::Error;
use tracing::{info, Instrument};

use super::shard::{run_job_here, ShardError};
use crate::{
    app::App,
    core::{
        job::{JobState, ShardCounts},
        naming::{self, NamingError},
        shard::{directory_prefix, new_job_id, Shard},
    },
    job_ledger::{self, JobKind, JobStatus},
    storage::{StorageError, StorageResultExt},
};

pub const FUNCTION_NAME: &str = "HttpSnapshotIncBackupContainerProducer";

/// Shards `lakebackup produce` runs at once, each with `SNAPSHOT_CONCURRENCY` repairs in flight.
pub const LOCAL_SHARDS_AT_ONCE: usize = 4;

/// The status poll starts fast (a small job is done in well under a second) and slows down to
/// this.
const SLOWEST_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum ProducerError {
    #[error(transparent)]
    InvalidContainer(NamingError),
    #[error("invalid prefix: {0}")]
    InvalidPrefix(NamingError),
    #[error("container {0:?} does not exist in SOURCE_STORAGE")]
    ContainerNotFound(String),
    #[error("no job {0:?}")]
    UnknownJob(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Shard(#[from] ShardError),
}

/// What a producer call asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    pub container: String,
    /// A directory (`raw/2026/11/` or `raw/2026/11`); empty for the whole container.
    pub prefix: String,
}

impl ProduceRequest {
    /// The job's root shard, after checking the names.
    fn root(&self, job: &str) -> Result<Shard, ProducerError> {
        naming::validate_container_name(&self.container)
            .map_err(ProducerError::InvalidContainer)?;
        let prefix = directory_prefix(&self.prefix);
        if !prefix.is_empty() {
            naming::validate_blob_name(&prefix).map_err(ProducerError::InvalidPrefix)?;
        }
        Ok(Shard::root(job, &self.container, &prefix))
    }
}

/// Starts a job for `request` and waits up to `PRODUCER_WAIT_SECONDS` for it; the status says
/// whether it finished (`done`, `failed`) or is still `running`.
pub async fn produce(app: &App, request: &ProduceRequest) -> Result<JobStatus, ProducerError> {
    let job = new_job_id();
    let span = tracing::info_span!(
        "producer",
        function = FUNCTION_NAME,
        container = %request.container,
        prefix = %request.prefix,
        job,
    );
    async {
        let started = Instant::now();
        let root = request.root(&job)?;
        check_container(app, &root.container).await?;
        job_ledger::start_job(app, JobKind::Producer, &root).await?;
        let status = wait_for(
            app,
            &job,
            app.config.producer_wait.saturating_sub(started.elapsed()),
        )
        .await?;
        info!(status = ?status.progress.state, "producer answered");
        Ok(status)
    }
    .instrument(span)
    .await
}

/// The status of `job` now.
pub async fn status(app: &App, job: &str) -> Result<JobStatus, ProducerError> {
    job_ledger::job_status(app, job)
        .await?
        .ok_or_else(|| ProducerError::UnknownJob(job.to_owned()))
}

/// Polls `job` until it is no longer running or `wait` has passed.
pub async fn wait_for(app: &App, job: &str, wait: Duration) -> Result<JobStatus, ProducerError> {
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(50);
    loop {
        let current = status(app, job).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        if current.progress.state != JobState::Running || left.is_zero() {
            return Ok(current);
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(SLOWEST_POLL);
    }
}

/// The whole job in this process (`lakebackup produce`): no queue, no ledger; the totals of
/// every shard, and how many ran.
pub async fn produce_here(
    app: &App,
    request: &ProduceRequest,
) -> Result<(ShardCounts, u64), ProducerError> {
    let root = request.root(&new_job_id())?;
    check_container(app, &root.container).await?;
    Ok(run_job_here(app, root, LOCAL_SHARDS_AT_ONCE).await?)
}

async fn check_container(app: &App, container: &str) -> Result<(), ProducerError> {
    match app.source.container(container)?.get_properties(None).await {
        Ok(_) => Ok(()),
        Err(e) if e.http_status() == Some(azure_core::http::StatusCode::NotFound) => {
            Err(ProducerError::ContainerNotFound(container.to_owned()))
        }
        Err(e) => Err(e).during(|| format!("reading container {container}"))?,
    }
}
