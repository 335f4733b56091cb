//! Reconciliation: find every blob without a snapshot of its current version and every current
//! version without a backup, and repair both; record the lives that ended; prune.
//!
//! Each container in scope is one backup job (pruning as it goes), started through the job
//! engine: queued by the timer ([`schedule`]), run in this process by `lakebackup reconcile`
//! ([`reconcile`]). Its `--dry-run` is a sweep that writes nothing: the backup container is
//! listed once (with metadata) into a [`BackupIndex`] of compact per-version entries, then the
//! source is swept with its snapshots.

use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tracing::{info, warn, Instrument};

use super::{
    jobs::{self, backup::BackupCounts, NewJob, LOCAL_SHARDS_AT_ONCE},
    sweep::{survey, Repair, SweepCounts, SweepError},
};
use crate::{
    app::{App, WorkQueue},
    core::{
        backup_index::BackupIndex,
        counts::KindCounts,
        job::{Counts, NOTES_PER_STATUS},
        naming,
    },
    storage::{
        listing::{list_backups, list_container_names, until_container_missing},
        StorageError,
    },
    telemetry,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerStatus {
    Ok,
    /// Named in the scope but absent from the account: reported, not fatal.
    NotFound,
    Error,
}

/// One container's result (its job's shard counts summed). In a dry run, `snapshots_created`
/// and `backup_requests` say what would be done (a backup the direct engine would copy counts as
/// a request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerReport {
    pub container: String,
    pub status: ContainerStatus,
    #[serde(flatten)]
    pub counts: Counts,
    pub errors: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error_messages: Vec<String>,
    pub duration_ms: u64,
}

/// Sums over all containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub containers: u64,
    #[serde(flatten)]
    pub counts: Counts,
    pub errors: u64,
}

/// The whole run; the JSON the CLI prints and the timer invocation returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconcileSummary {
    /// `ok`, or `failed` when any container (or the container listing) failed.
    pub status: &'static str,
    pub dry_run: bool,
    pub total: Totals,
    pub containers: Vec<ContainerReport>,
    pub failed_containers: Vec<String>,
    pub not_found: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl ReconcileSummary {
    pub fn succeeded(&self) -> bool {
        self.status == "ok"
    }
}

/// Reconciles `scope` (container names; every container of `SOURCE_STORAGE` when `None`).
pub async fn reconcile(app: &App, scope: Option<&[String]>, dry_run: bool) -> ReconcileSummary {
    let span = tracing::info_span!("reconcile", dry_run);
    async {
        let started = Instant::now();
        let mut summary = ReconcileSummary {
            status: "ok",
            dry_run,
            total: Totals {
                containers: 0,
                counts: BackupCounts::default().to_counts(),
                errors: 0,
            },
            containers: Vec::new(),
            failed_containers: Vec::new(),
            not_found: Vec::new(),
            error: None,
            duration_ms: 0,
        };
        let containers = match containers_in_scope(app, scope).await {
            Ok(containers) => containers,
            Err(error) => {
                warn!(%error, "cannot list the source containers");
                summary.status = "failed";
                summary.error = Some(error.to_string());
                summary.duration_ms = started.elapsed().as_millis() as u64;
                return summary;
            }
        };
        let mut reports: Vec<ContainerReport> = futures::stream::iter(containers)
            .map(|container| async move { reconcile_container(app, &container, dry_run).await })
            .buffer_unordered(app.config.reconcile_container_concurrency)
            .collect()
            .await;
        reports.sort_by(|a, b| a.container.cmp(&b.container));
        for report in &reports {
            let total = &mut summary.total;
            total.containers += 1;
            total.counts.add(&report.counts);
            total.errors += report.errors;
            match report.status {
                ContainerStatus::Ok => {}
                ContainerStatus::NotFound => summary.not_found.push(report.container.clone()),
                ContainerStatus::Error => summary.failed_containers.push(report.container.clone()),
            }
        }
        if !summary.failed_containers.is_empty() {
            summary.status = "failed";
        }
        summary.containers = reports;
        summary.duration_ms = started.elapsed().as_millis() as u64;
        info!(
            status = summary.status,
            total = ?summary.total,
            failed = ?summary.failed_containers,
            not_found = ?summary.not_found,
            duration_ms = summary.duration_ms,
            "reconciliation finished"
        );
        summary
    }
    .instrument(span)
    .await
}

/// What the timer did: the job it started, one root shard per container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduledReconciliation {
    /// `queued`, or `failed` when the containers could not be listed or a shard not queued.
    pub status: &'static str,
    /// Containers whose root shard was queued.
    pub containers: Vec<String>,
    /// Each container's job (its status: [`jobs::status`]), in the same order.
    pub jobs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The timer's reconciliation: queues one root shard per container in scope and returns within
/// seconds; the shards (`QueueSnapshotBackupShard`) do the work, directory by directory, each
/// within its budget, on as many instances as the host runs.
pub async fn schedule(app: &App, scope: Option<&[String]>) -> ScheduledReconciliation {
    let span = tracing::info_span!("reconcile_schedule");
    async {
        let mut scheduled = ScheduledReconciliation {
            status: "queued",
            containers: Vec::new(),
            jobs: Vec::new(),
            error: None,
        };
        let result = async {
            for container in containers_in_scope(app, scope).await? {
                if let Err(e) = naming::validate_container_name(&container) {
                    warn!(error = %e, "not a container name; skipped");
                    continue;
                }
                let queued = jobs::queue(app, NewJob::reconciliation(&container)).await?;
                scheduled.jobs.push(queued.job);
                scheduled.containers.push(container);
            }
            Ok::<_, StorageError>(())
        }
        .await;
        if let Err(e) = result {
            warn!(error = %e, "scheduling the reconciliation failed");
            scheduled.status = "failed";
            scheduled.error = Some(e.to_string());
        }
        info!(containers = ?scheduled.containers, status = scheduled.status, "reconciliation scheduled as shards");
        if telemetry::enabled() {
            record_poison_depths(app).await;
        }
        summarize_ended_jobs(app).await;
        scheduled
    }
    .instrument(span)
    .await
}

/// How long the timer spends on jobs' summaries after queuing its jobs.
const SUMMARIES_BUDGET: std::time::Duration = std::time::Duration::from_secs(60);

/// The summaries no shard's end wrote (jobs too large for its reading, jobs failed by a
/// deadline, jobs from before summaries): each job without one read whole, newest first,
/// within [`SUMMARIES_BUDGET`] (see [`jobs::ledger::summary`]). A failure is logged: the jobs
/// are queued already, and `job list` reads a job without a summary all the same.
async fn summarize_ended_jobs(app: &App) {
    let summarized = async {
        let ledger = app.job_ledger().await?;
        jobs::ledger::summary::summarize_ended(ledger, SUMMARIES_BUDGET).await
    };
    match summarized.await {
        Ok(read) => info!(jobs_read = read, "jobs without a summary read"),
        Err(e) => warn!(error = %e, "the jobs' summaries could not be written"),
    }
}

/// Each poison queue's depth, for the alert on a non-empty one: read at every timer, as the
/// doctor reads it (a queue not created yet holds nothing).
async fn record_poison_depths(app: &App) {
    for queue in [WorkQueue::Backups, WorkQueue::Shards, WorkQueue::Events] {
        let Some(name) = queue.name(&app.config) else {
            continue;
        };
        let poison = format!("{name}-poison");
        let depth = match app.jobs.queue(&poison) {
            Ok(queue) => queue.depth().await,
            Err(e) => Err(e),
        };
        match depth {
            Ok(depth) => telemetry::record::poison_depth(&name, depth.unwrap_or(0)),
            Err(e) => {
                warn!(error = %e, queue = poison, "the poison queue's depth could not be read")
            }
        }
    }
}

/// The containers to reconcile. A named container that does not exist is found out by its
/// sweep (and reported as not found), so only the whole-account scope lists containers: the
/// lake's, and those deleted from it whose backup containers remain (their job records that
/// every blob in them is gone).
pub async fn containers_in_scope(
    app: &App,
    scope: Option<&[String]>,
) -> Result<Vec<String>, StorageError> {
    if let Some(names) = scope {
        return Ok(names.to_vec());
    }
    let existing = list_container_names(&app.source).await?;
    // With one account for both, the backup containers are in the listing too; backing them up
    // again would nest backups forever.
    let same_account = app.source.same_blob_service(&app.backup);
    let suffix = app.config.backup_container_suffix.as_str();
    let is_backup_container = |name: &str| {
        same_account
            && name
                .strip_suffix(suffix)
                .is_some_and(|base| existing.iter().any(|e| e == base))
    };
    let mut containers: Vec<String> = existing
        .iter()
        .filter(|name| !is_backup_container(name))
        .cloned()
        .collect();
    if !same_account {
        // Best effort: an unreachable backup account fails each container's own job, loudly.
        let backups = list_container_names(&app.backup).await.unwrap_or_else(|error| {
            warn!(%error, "cannot list the backup containers: deleted lake containers are not looked for");
            Vec::new()
        });
        let gone = backups
            .iter()
            .filter_map(|name| name.strip_suffix(suffix))
            .filter(|base| naming::validate_container_name(base).is_ok())
            .filter(|base| !existing.iter().any(|e| e == base))
            .map(str::to_owned);
        containers.extend(gone);
    }
    Ok(containers)
}

fn fail(report: &mut ContainerReport, message: String) {
    warn!(error = message, "reconciliation of the container failed");
    report.status = ContainerStatus::Error;
    report.errors += 1;
    report.error_messages.push(message);
}

async fn reconcile_container(app: &App, container: &str, dry_run: bool) -> ContainerReport {
    let span = tracing::info_span!("container", container);
    async {
        let started = Instant::now();
        let mut report = ContainerReport {
            container: container.to_owned(),
            status: ContainerStatus::Ok,
            counts: BackupCounts::default().to_counts(),
            errors: 0,
            error_messages: Vec::new(),
            duration_ms: 0,
        };
        if let Err(e) = naming::validate_container_name(container) {
            fail(&mut report, e.to_string());
            return report;
        }
        if dry_run {
            dry_run_container(app, container, &mut report).await;
        } else {
            run_container_job(app, container, &mut report).await;
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        report
    }
    .instrument(span)
    .await
}

/// The container's job, its shards run here as the shard function runs them: snapshots, copies
/// (or requests for ADF) and deletion markers.
async fn run_container_job(app: &App, container: &str, report: &mut ContainerReport) {
    let exists = async { app.source.container(container)?.exists().await };
    match exists.await {
        Ok(true) => {}
        Ok(false) => {
            warn!("container in the reconcile scope does not exist");
            report.status = ContainerStatus::NotFound;
            // Deleted whole, with backups left: its job records that its blobs are gone.
            let backups_left = async { app.vault_of(container)?.exists().await };
            match backups_left.await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => return fail(report, e.to_string()),
            }
        }
        Err(e) => return fail(report, e.to_string()),
    }
    let job = jobs::run_here(app, NewJob::reconciliation(container), LOCAL_SHARDS_AT_ONCE).await;
    report.counts = job.totals.to_counts();
    for failure in job.notes.failures.iter().take(NOTES_PER_STATUS) {
        let message = match failure.blob.as_str() {
            "" => failure.reason.clone(),
            blob => format!("{blob}: {}", failure.reason),
        };
        report.error_messages.push(message);
    }
    if !job.succeeded() {
        report.status = ContainerStatus::Error;
        report.errors += job.shards_failed + job.totals.failed;
    }
}

/// What a pass would do, exactly, with nothing written.
async fn dry_run_container(app: &App, container: &str, report: &mut ContainerReport) {
    // Without the backup side, the snapshots can still be judged; backups are then unknown and
    // the container is reported as failed.
    let index = match backup_index(app, container).await {
        Ok(index) => Some(index),
        Err(message) => {
            fail(report, message);
            None
        }
    };
    let mut counts = BackupCounts::default();
    let result = survey(app, container, |verdict| {
        let backed_up = index
            .as_ref()
            .map(|index| index.contains(&verdict.blob.name, &verdict.blob.etag));
        counts.backups_present += u64::from(backed_up == Some(true));
        Repair {
            snapshot: verdict.needs_snapshot,
            request: backed_up == Some(false),
        }
    })
    .await;
    let swept = match result {
        Ok(counts) => counts,
        Err(SweepError::ContainerNotFound(_)) => {
            warn!("container in the reconcile scope does not exist");
            report.status = ContainerStatus::NotFound;
            SweepCounts::default()
        }
        Err(SweepError::Storage { source, done }) => {
            fail(report, source.to_string());
            done
        }
    };
    counts.blobs = swept.blobs;
    counts.snapshots_created = swept.snapshots_created;
    counts.backup_requests = swept.backup_requests;
    report.counts = counts.to_counts();
}

/// The complete backups of `container`'s versions; empty when its backup container does not
/// exist yet.
async fn backup_index(app: &App, container: &str) -> Result<BackupIndex, String> {
    let vault = app.vault_of(container).map_err(|e| e.to_string())?;
    let pages = until_container_missing(list_backups(&vault, None).map_err(|e| e.to_string())?);
    futures::pin_mut!(pages);
    let mut index = BackupIndex::new();
    while let Some(page) = pages.try_next().await.map_err(|e| e.to_string())? {
        for backup in page {
            index.insert_backup(&backup.name, backup.stamped_etag());
        }
    }
    Ok(index)
}
