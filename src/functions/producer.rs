//! `HttpSnapshotIncBackupContainerProducer`: starts a backup job over one container, or over one
//! directory tree (or blob) of it, and waits up to `PRODUCER_WAIT_SECONDS` for it. A job that
//! finishes in time is answered with its totals; one that does not is answered "running", with
//! the job id whose status any instance can read from the job's ledger. The shards do the work.

use std::time::Instant;

use thiserror::Error;
use tracing::{info, Instrument};

use crate::{
    app::App,
    engine::jobs::{
        self,
        backup::{BackupKind, BackupOptions},
        scope::{self, ScopeError},
        JobOrigin, JobStatus, LocalJob, NewJob, LOCAL_SHARDS_AT_ONCE,
    },
    storage::StorageError,
};

pub const FUNCTION_NAME: &str = "HttpSnapshotIncBackupContainerProducer";

#[derive(Debug, Error)]
pub enum ProducerError {
    #[error(transparent)]
    Scope(#[from] ScopeError),
    #[error("no job {0:?}")]
    UnknownJob(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What a producer call asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    pub container: String,
    /// A directory (`raw/2026/11/` or `raw/2026/11`), or the name of one blob; empty for the
    /// whole container.
    pub prefix: String,
}

/// Starts a job for `request` and waits up to `PRODUCER_WAIT_SECONDS` for it; the status says
/// whether it finished (`done`, `failed`) or is still `running`.
pub async fn produce(app: &App, request: &ProduceRequest) -> Result<JobStatus, ProducerError> {
    let span = tracing::info_span!(
        "producer",
        container = %request.container,
        prefix = %request.prefix,
    );
    async {
        let started = Instant::now();
        let job = jobs::queue(app, new_job(app, request).await?).await?.job;
        let wait = app.config.producer_wait.saturating_sub(started.elapsed());
        let status = jobs::wait_for(app, &job, wait)
            .await?
            .ok_or_else(|| ProducerError::UnknownJob(job.clone()))?;
        info!(job, status = ?status.progress.state, "producer answered");
        Ok(status)
    }
    .instrument(span)
    .await
}

/// `lakebackup produce`: the same job as [`produce`], run to its end in this process.
pub async fn run_here(
    app: &App,
    request: &ProduceRequest,
) -> Result<LocalJob<BackupKind>, ProducerError> {
    let new = new_job(app, request).await?;
    Ok(jobs::run_here(app, new, LOCAL_SHARDS_AT_ONCE).await)
}

/// The job over what `request` names, checked against the lake.
async fn new_job(app: &App, request: &ProduceRequest) -> Result<NewJob<BackupKind>, ProducerError> {
    Ok(NewJob {
        origin: JobOrigin::Producer,
        container: request.container.clone(),
        roots: scope::roots(app, &request.container, &request.prefix).await?,
        options: BackupOptions::default(),
    })
}

/// The status of `job` now.
pub async fn status(app: &App, job: &str) -> Result<JobStatus, ProducerError> {
    jobs::status(app, job)
        .await?
        .ok_or_else(|| ProducerError::UnknownJob(job.to_owned()))
}
