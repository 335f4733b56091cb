//! The doctor's checks of the jobs' ledger: whether any of the newest jobs failed, and each
//! container's last successful reconciliation against `RECONCILE_SCHEDULE`.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;

use super::{check, Check, Status};
use crate::{
    app::App,
    core::{job::JobState, shard::is_job_id},
    engine::jobs,
    host::standalone,
    settings::Settings,
    storage::{
        listing::{list_directory_names, until_container_missing},
        Container, StorageError,
    },
};

/// How many of the newest jobs the ledger checks read.
pub(super) const RECENT_JOBS: usize = 30;

/// The newest jobs of the ledger: any that failed, and each container's last successful
/// reconciliation against `RECONCILE_SCHEDULE`.
pub(super) async fn recent_jobs(app: &App, settings: &Settings, reached: bool) -> Vec<Check> {
    if !reached {
        return Vec::new();
    }
    let title = "AzureWebJobsStorage: recent jobs";
    let ledger = match app.jobs.container(&app.config.job_ledger) {
        Ok(ledger) => ledger,
        Err(e) => return vec![check(title, Status::Warn, e.to_string())],
    };
    let job_ids = match newest_job_ids(&ledger).await {
        Ok(jobs) => jobs,
        Err(e) => {
            return vec![check(
                title,
                Status::Warn,
                format!("the ledger could not be read: {e}"),
            )]
        }
    };
    // Read where the listing found them: never through the worker's ledger, which it creates.
    let read: Vec<Result<Option<jobs::JobStatus>, StorageError>> = futures::stream::iter(job_ids)
        .map(|job| {
            let ledger = &ledger;
            async move { jobs::ledger::job_status_in(ledger, &job).await }
        })
        .buffered(8)
        .collect()
        .await;
    let unreadable = read.iter().filter(|status| status.is_err()).count();
    let statuses: Vec<jobs::JobStatus> =
        read.into_iter().filter_map(|s| s.ok().flatten()).collect();
    let mut checks = Vec::new();
    if unreadable > 0 {
        checks.push(check(
            title,
            Status::Warn,
            format!("{unreadable} of the newest jobs could not be read from the ledger"),
        ));
    }
    checks.push(failed_jobs(title, &statuses));
    checks.extend(last_reconciliations(app, settings, &statuses));
    checks
}

/// The ids of the [`RECENT_JOBS`] newest jobs in the ledger, newest first.
async fn newest_job_ids(ledger: &Container) -> Result<Vec<String>, StorageError> {
    let pages = until_container_missing(list_directory_names(ledger, None)?);
    futures::pin_mut!(pages);
    let mut jobs = Vec::new();
    while let Some(page) = pages.try_next().await? {
        jobs.extend(
            page.directories()
                .map(|d| d.trim_end_matches('/').to_owned())
                .filter(|job| is_job_id(job)),
        );
    }
    // Job ids are their start time in hex: the newest sort last.
    jobs.sort();
    jobs.reverse();
    jobs.truncate(RECENT_JOBS);
    Ok(jobs)
}

/// Whether any of the newest jobs failed, and which.
fn failed_jobs(title: &str, statuses: &[jobs::JobStatus]) -> Check {
    let failed: Vec<String> = statuses
        .iter()
        .filter(|s| s.progress.state == JobState::Failed)
        .map(|s| format!("{} ({} of {})", s.job, s.work, s.container))
        .collect();
    if failed.is_empty() {
        check(
            title,
            Status::Ok,
            format!("none of the {} newest jobs failed", statuses.len()),
        )
    } else {
        check(
            title,
            Status::Warn,
            format!(
                "failed: {} (`lakebackup job JOB` says why)",
                failed.join(", ")
            ),
        )
    }
}

/// Each container's last successful reconciliation among the newest jobs, against two of
/// `RECONCILE_SCHEDULE`'s intervals.
fn last_reconciliations(
    app: &App,
    settings: &Settings,
    statuses: &[jobs::JobStatus],
) -> Vec<Check> {
    let interval = standalone::reconcile_schedule(settings)
        .ok()
        .and_then(|cron| schedule_interval(&cron))
        .unwrap_or(Duration::from_secs(86_400));
    let containers = app.config.reconcile_containers.clone().unwrap_or_else(|| {
        let mut seen: Vec<String> = statuses.iter().map(|s| s.container.clone()).collect();
        seen.sort();
        seen.dedup();
        seen
    });
    let now = OffsetDateTime::now_utc();
    let mut checks = Vec::new();
    for container in containers {
        let title = format!("RECONCILE_SCHEDULE: last reconciliation of {container}");
        let last_done = statuses
            .iter()
            .filter(|s| s.container == container && s.kind == jobs::JobOrigin::Reconcile.as_str())
            .filter(|s| s.progress.state == JobState::Done)
            .filter_map(|s| {
                OffsetDateTime::parse(&s.started, &time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .max();
        checks.push(match last_done {
            Some(started) if now - started <= interval * 2 => check(
                title,
                Status::Ok,
                format!("done, started {}", started.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()),
            ),
            Some(started) => check(
                title,
                Status::Warn,
                format!(
                    "the last one that ended well started {} ago, more than two schedule intervals ({} s each)",
                    humanize(now - started),
                    interval.as_secs()
                ),
            ),
            None => check(
                title,
                Status::Warn,
                format!("no successful reconciliation among the {RECENT_JOBS} newest jobs"),
            ),
        });
    }
    checks
}

/// The time between the schedule's next two occurrences.
pub(super) fn schedule_interval(cron: &croner::Cron) -> Option<Duration> {
    let first = cron.find_next_occurrence(&chrono::Utc::now(), false).ok()?;
    let second = cron.find_next_occurrence(&first, false).ok()?;
    (second - first).to_std().ok()
}

pub(super) fn humanize(duration: time::Duration) -> String {
    let hours = duration.whole_hours();
    if hours >= 48 {
        format!("{} days", hours / 24)
    } else if hours >= 1 {
        format!("{hours} h")
    } else {
        format!("{} min", duration.whole_minutes())
    }
}
