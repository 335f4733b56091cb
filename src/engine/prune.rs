//! `lakebackup prune`: deletes the backup versions and snapshots the retention policy
//! (`RETENTION_*`, see [`crate::core::retention`]) no longer keeps, directory by directory.
//!
//! A prune is a job on the job engine, of the prune kind (`jobs::prune`): one shard per
//! directory level of `{c}bak`. This module is its front end: per container, the request
//! checked and made a job, run here (each deletion reported as it is made, the summary from the
//! job's counts) or queued (`--distributed`).

use std::time::Instant;

use serde::Serialize;
use time::OffsetDateTime;
use tracing::{info, Instrument};

use super::reconcile::containers_in_scope;
pub use crate::engine::retention::{PruneAction, PruneCounts};
use crate::{
    app::App,
    core::{counts::KindCounts, naming},
    engine::jobs::{
        self,
        prune::{PruneKind, PruneOptions},
        JobOrigin, LineSink, NewJob, Queued, Root, LOCAL_SHARDS_AT_ONCE,
    },
    storage::StorageError,
};

#[derive(Debug, Clone)]
pub struct PruneRequest {
    pub container: String,
    pub prefix: Option<String>,
    /// Report what would be deleted; delete nothing.
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneSummary {
    pub status: &'static str,
    pub container: String,
    pub dry_run: bool,
    #[serde(flatten)]
    pub counts: PruneCounts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// A prune over several containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneRun {
    pub status: &'static str,
    pub dry_run: bool,
    pub total: PruneCounts,
    pub containers: Vec<PruneSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Prunes every container in `scope` (every container of the lake when `None`), one after the
/// other.
pub async fn prune_all(
    app: &App,
    scope: Option<&[String]>,
    prefix: Option<String>,
    dry_run: bool,
    report: LineSink<'_, PruneAction>,
) -> PruneRun {
    let mut run = PruneRun {
        status: "ok",
        dry_run,
        total: PruneCounts::default(),
        containers: Vec::new(),
        error: None,
    };
    let containers = match containers_in_scope(app, scope).await {
        Ok(containers) => containers,
        Err(e) => {
            run.status = "failed";
            run.error = Some(e.to_string());
            return run;
        }
    };
    for container in containers {
        let request = PruneRequest {
            container,
            prefix: prefix.clone(),
            dry_run,
        };
        let summary = prune(app, &request, report).await;
        run.total.add(&summary.counts);
        if summary.status != "ok" {
            run.status = "failed";
        }
        run.containers.push(summary);
    }
    run
}

/// Prunes `request`'s container (or directory tree) by the app's policy in this process, up to
/// four directory levels at once, handing each deletion's JSON line to `report` as it is made.
pub async fn prune(
    app: &App,
    request: &PruneRequest,
    report: LineSink<'_, PruneAction>,
) -> PruneSummary {
    let span =
        tracing::info_span!("prune", container = %request.container, dry_run = request.dry_run);
    async {
        let started = Instant::now();
        let mut summary = PruneSummary {
            status: "ok",
            container: request.container.clone(),
            dry_run: request.dry_run,
            counts: PruneCounts::default(),
            error: None,
            duration_ms: 0,
        };
        let new = match prepare(app, request) {
            Ok(Some(new)) => new,
            Ok(None) => {
                info!("no RETENTION_* setting: nothing is pruned");
                return summary;
            }
            Err(e) => {
                summary.status = "failed";
                summary.error = Some(e.to_string());
                return summary;
            }
        };
        let job = jobs::run_here_reporting(app, new, LOCAL_SHARDS_AT_ONCE, report).await;
        summary.counts = job.totals;
        if job.shards_failed > 0 {
            summary.error = job.shard_failure();
        }
        if !job.succeeded() {
            summary.status = "failed";
        }
        summary.duration_ms = started.elapsed().as_millis() as u64;
        info!(counts = ?summary.counts, status = summary.status, "pruning finished");
        summary
    }
    .instrument(span)
    .await
}

/// Starts `request` as a queued job (`--distributed`); `None` when the policy prunes nothing.
pub async fn start(app: &App, request: &PruneRequest) -> Result<Option<Queued>, StorageError> {
    match prepare(app, request)? {
        Some(new) => Ok(Some(jobs::queue(app, new).await?)),
        None => Ok(None),
    }
}

/// The request checked and made a prune job, judged at this instant; `None` when no
/// `RETENTION_*` setting prunes anything.
fn prepare(app: &App, request: &PruneRequest) -> Result<Option<NewJob<PruneKind>>, StorageError> {
    let invalid =
        |e: crate::core::naming::NamingError| StorageError::other("pruning", e.to_string());
    naming::validate_container_name(&request.container).map_err(invalid)?;
    let filter = request.prefix.clone().unwrap_or_default();
    if !filter.is_empty() {
        naming::validate_blob_name(&filter).map_err(invalid)?;
    }
    let policy = &app.config.retention;
    if !policy.prunes_backups() && !policy.prunes_snapshots() {
        return Ok(None);
    }
    Ok(Some(NewJob {
        origin: JobOrigin::Prune,
        container: request.container.clone(),
        roots: vec![Root::directory(naming::directory_of(&filter).unwrap_or(""))],
        options: PruneOptions {
            filter,
            dry_run: request.dry_run,
            judged_at: OffsetDateTime::now_utc().unix_timestamp(),
            policy: policy.clone(),
        },
    }))
}
