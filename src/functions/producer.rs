//! `HttpSnapshotIncBackupContainerProducer`: starts a sharded job over one container, or over
//! one directory tree of it (`prefix`), and waits up to `PRODUCER_WAIT_SECONDS` for it. A job
//! that finishes in time is answered with its totals; one that does not is answered "running",
//! with the job id whose status any instance can read from the job's ledger. The shards
//! (`QueueSnapshotBackupShard`) do the work: every version without a snapshot gets one, every
//! version without a complete backup is copied (direct engine) or requested (ADF engine).

use std::time::{Duration, Instant};

use thiserror::Error;
use tracing::{info, Instrument};

use futures::TryStreamExt;

use super::shard::{run_job_here, LocalJob, ShardError};
use crate::{
    app::App,
    core::{
        job::JobState,
        naming::{self, NamingError},
        shard::{directory_prefix, new_job_id, Shard},
    },
    job_ledger::{self, JobKind, JobStatus},
    storage::{blobs::blob_state, listing::list_directory_names, StorageError, StorageResultExt},
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
    #[error(
        "nothing in container {container:?} under prefix {prefix:?}: no blob has that name and no \
         directory starts with it"
    )]
    NothingUnderPrefix { container: String, prefix: String },
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
    /// A directory (`raw/2026/11/` or `raw/2026/11`), or the name of one blob; empty for the
    /// whole container.
    pub prefix: String,
}

impl ProduceRequest {
    /// The job's root shards, after checking the names against the lake: the container; or the
    /// directory the prefix names; or, for a prefix without a trailing `/` that names a blob,
    /// that blob (and the directory of the same name too, when the lake has both). A prefix
    /// under which the lake holds nothing is an error that names it: an ingestion pipeline must
    /// never be told that data it mistyped is safe.
    async fn roots(&self, app: &App, job: &str) -> Result<Vec<Shard>, ProducerError> {
        naming::validate_container_name(&self.container)
            .map_err(ProducerError::InvalidContainer)?;
        check_container(app, &self.container).await?;
        let given = self.prefix.trim_start_matches('/');
        if given.is_empty() {
            return Ok(vec![Shard::root(job, &self.container, "")]);
        }
        let directory = directory_prefix(given);
        naming::validate_blob_name(&directory).map_err(ProducerError::InvalidPrefix)?;
        let mut roots = Vec::new();
        if lists_anything(app, &self.container, &directory).await? {
            roots.push(Shard::root(job, &self.container, &directory));
        }
        if !given.ends_with('/') && blob_exists(app, &self.container, given).await? {
            roots.push(Shard::one_blob(job, &self.container, given));
        }
        if roots.is_empty() {
            return Err(ProducerError::NothingUnderPrefix {
                container: self.container.clone(),
                prefix: self.prefix.clone(),
            });
        }
        Ok(roots)
    }
}

/// Whether the lake lists anything under `directory`.
async fn lists_anything(app: &App, container: &str, directory: &str) -> Result<bool, StorageError> {
    let client = app.source.container(container)?;
    let pages = list_directory_names(&client, container, Some(directory))?;
    futures::pin_mut!(pages);
    while let Some(page) = pages.try_next().await? {
        if !page.entries.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn blob_exists(app: &App, container: &str, name: &str) -> Result<bool, StorageError> {
    let client = app.source.container(container)?.blob_client(name);
    Ok(blob_state(&client, &format!("{container}/{name}"))
        .await?
        .is_some())
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
        let roots = request.roots(app, &job).await?;
        job_ledger::start_job(app, JobKind::Producer, &roots).await?;
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
/// every shard, how many ran, and what could not be protected.
pub async fn produce_here(app: &App, request: &ProduceRequest) -> Result<LocalJob, ProducerError> {
    let roots = request.roots(app, &new_job_id()).await?;
    let mut job = LocalJob::default();
    for root in roots {
        job.add(run_job_here(app, root, LOCAL_SHARDS_AT_ONCE).await);
    }
    Ok(job)
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
