//! `lakebackup doctor`: is this deployment set up right? Every check it can make with the app's
//! own settings and identity, all at once, each read-only: the settings and the names the host
//! binds; the lake's containers in scope (listed, which must work when `RECONCILE_CONTAINERS` is
//! unset); each connection reachable and authorised where lakebackup works with it — in each
//! container in scope, or at the account where it needs the account (`reach`; its identity's
//! token obtained where it uses one) — and granted each right the settings make it need there
//! (`rights`); the backup account apart from the lake; soft delete and a hierarchical namespace
//! on the lake; an immutability policy or legal hold on each `{c}bak` in scope and soft delete on
//! the backup account; the queues and the depth of each poison queue; the recent jobs; the ADF
//! pipeline. It never writes: no container, queue, blob or ledger is created, and a right is
//! tried only where trying changes nothing.

mod reach;
mod rights;

use std::{path::Path, time::Duration};

use futures::{future::join_all, StreamExt, TryStreamExt};
use serde::Serialize;
use time::OffsetDateTime;

use crate::{
    app::{App, WorkQueue, BACKUP_STORAGE, JOBS_STORAGE, SOURCE_STORAGE},
    config::CopyEngine,
    core::{job::JobState, shard::is_job_id},
    engine::{jobs, reconcile::containers_in_scope},
    host::{bindings, standalone},
    settings::Settings,
    storage::{
        listing::{list_directory_names, until_container_missing},
        StorageAccount, StorageError,
    },
};

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One check: what it is about (the setting or account, and what was checked), its verdict, and
/// what it found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
}

fn check(name: impl Into<String>, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status,
        detail: detail.into(),
    }
}

/// Every check, and the worst verdict among them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub status: Status,
    pub checks: Vec<Check>,
}

impl Report {
    fn of(checks: Vec<Check>) -> Self {
        let status = checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
        Self { status, checks }
    }
}

/// How many of the newest jobs the ledger checks read.
const RECENT_JOBS: usize = 30;

/// Runs every check against `settings` (and `host_json`'s limits); never writes.
pub async fn doctor(settings: &Settings, host_json: &Path, app_dir: &Path) -> Report {
    let mut app = match App::from_settings(settings) {
        Ok(app) => app,
        // Without valid settings nothing else can be reached: say which one.
        Err(e) => {
            return Report::of(vec![check(
                format!("settings: {}", e.setting),
                Status::Fail,
                e.to_string(),
            )])
        }
    };
    let mut checks = vec![];
    let function_timeout = standalone::function_timeout_of(host_json);
    match function_timeout {
        Ok(limit) => {
            app.config.function_timeout = limit;
            checks.push(match app.config.check_fits_invocation(limit) {
                Ok(()) => check(
                    "settings",
                    Status::Ok,
                    "every setting is valid, and its timeouts fit host.json's functionTimeout",
                ),
                Err(e) => check(
                    format!("settings: {}", e.setting),
                    Status::Fail,
                    e.to_string(),
                ),
            });
        }
        Err(e) => checks.push(check(
            "settings: host.json",
            Status::Warn,
            format!("{e}: the timeouts were not checked against functionTimeout"),
        )),
    }
    let problems = bindings::check(app_dir, settings, &app.config);
    let has_functions = std::fs::read_dir(app_dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|entry| entry.path().join("function.json").is_file())
    });
    checks.push(if !has_functions {
        check(
            "host bindings (%Setting%)",
            Status::Warn,
            "no function folder here: run doctor in the app's folder (beside host.json) to check \
             the %Setting% names the host binds",
        )
    } else if problems.is_empty() {
        check(
            "host bindings (%Setting%)",
            Status::Ok,
            "every %Setting% the function.json files bind resolves to the worker's own names",
        )
    } else {
        check(
            "host bindings (%Setting%)",
            Status::Fail,
            problems
                .iter()
                .map(|p| format!("{}: {}", p.function, p.message))
                .collect::<Vec<_>>()
                .join("; "),
        )
    });
    let app = &app;
    // The lake's containers in scope: where each connection is reached and its rights tried,
    // and whose {c}bak's immutability is read.
    let scope = match &app.config.reconcile_containers {
        Some(names) => reach::LakeScope::Named(names.clone()),
        None => match containers_in_scope(app, None).await {
            Ok(names) => reach::LakeScope::Listed(names),
            Err(e) => reach::LakeScope::Unknown(e),
        },
    };
    // Each account is reached first: the checks of one that does not answer are not made (each
    // would wait out its own retries), its failure says why.
    let ((places, reach_checks), lake_containers) = futures::join!(
        reach::reach_all(app, &scope),
        reach::lake_containers(app, &scope)
    );
    checks.extend(reach_checks);
    checks.push(lake_containers);
    checks.extend(accounts_apart(app));
    checks.extend(rights::sas_validity(app));
    let reached = |setting: &str| places.contains_key(setting);
    let groups = join_all([
        Box::pin(lake_account(app, reached(SOURCE_STORAGE)))
            as std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Check>> + Send + '_>>,
        Box::pin(backup_account(app, reached(BACKUP_STORAGE), &scope)),
        Box::pin(rights::rights(app, &places)),
        Box::pin(queues(app, reached(JOBS_STORAGE))),
        Box::pin(recent_jobs(app, settings, reached(JOBS_STORAGE))),
        Box::pin(pipeline(app)),
    ])
    .await;
    checks.extend(groups.into_iter().flatten());
    Report::of(checks)
}

/// The backup account is not the lake's, and `PRUNE_STORAGE` is the backup account.
fn accounts_apart(app: &App) -> Vec<Check> {
    let mut checks = vec![if app.backup.same_blob_service(&app.source) {
        check(
            "BACKUP_STORAGE: another account than the lake's",
            Status::Fail,
            "BACKUP_STORAGE is SOURCE_STORAGE's own account: an incident that takes the lake's \
             account (deletion, ransomware with its keys, a region) takes the backups with it",
        )
    } else {
        check(
            "BACKUP_STORAGE: another account than the lake's",
            Status::Ok,
            "the backups live in an account of their own",
        )
    }];
    if let Some(pruner) = &app.prune_account {
        if !pruner.same_blob_service(&app.backup) {
            checks.push(check(
                "PRUNE_STORAGE: the backup account",
                Status::Fail,
                "PRUNE_STORAGE names another account than BACKUP_STORAGE: prune would find \
                 nothing it judged there",
            ));
        }
    }
    checks.extend(restore_target_apart(app));
    checks
}

/// `RESTORE_TARGET_STORAGE`, when set, is neither the backup account (a restore would write the
/// lake's data among the backups) nor the lake's (`--to-account` would write into the lake).
/// Accounts are compared as the service knows them, however their endpoints are spelled.
fn restore_target_apart(app: &App) -> Option<Check> {
    let target = app.restore_target.as_ref()?;
    let title = "RESTORE_TARGET_STORAGE: another account than the lake's and the backups'";
    Some(if target.same_blob_service(&app.backup) {
        check(
            title,
            Status::Fail,
            "RESTORE_TARGET_STORAGE is BACKUP_STORAGE's own account: restore --to-account would \
             write the lake's data among the backups; name a clean account",
        )
    } else if target.same_blob_service(&app.source) {
        check(
            title,
            Status::Warn,
            "RESTORE_TARGET_STORAGE is SOURCE_STORAGE's own account: restore --to-account writes \
             into the lake itself (a restore into the lake needs no --to-account); after a \
             compromise, restore into a clean account",
        )
    } else {
        check(
            title,
            Status::Ok,
            "a restore --to-account writes into an account of its own",
        )
    })
}

/// Soft delete and a hierarchical namespace on the lake's account (when it answers).
async fn lake_account(app: &App, reached: bool) -> Vec<Check> {
    if !reached {
        return Vec::new();
    }
    let (soft_delete, namespace) = futures::join!(
        soft_delete(
            SOURCE_STORAGE,
            &app.source,
            "a blob deleted or overwritten between two passes (without events) is lost for good",
        ),
        app.source.hierarchical_namespace()
    );
    let mut checks = vec![soft_delete];
    checks.push(check(
        "SOURCE_STORAGE: container soft delete",
        Status::Warn,
        "not visible to the data plane: check it with `az storage account blob-service-properties \
         show -n <account> -g <resource-group> --query containerDeleteRetentionPolicy`; without \
         it a deleted container is gone at \
         once (its backups stay in {c}bak)",
    ));
    checks.push(match namespace {
        Ok(Some(true)) => check(
            "SOURCE_STORAGE: hierarchical namespace",
            Status::Warn,
            "on: blobs, their properties, metadata and tags are backed up, but not POSIX ACLs, \
             owners or groups, nor empty directories; a directory rename is followed through \
             events (EVENTS_QUEUE_NAME) or the next pass",
        ),
        Ok(Some(false)) => check(
            "SOURCE_STORAGE: hierarchical namespace",
            Status::Ok,
            "off (a flat namespace: everything lakebackup backs up is all there is)",
        ),
        Ok(None) => check(
            "SOURCE_STORAGE: hierarchical namespace",
            Status::Ok,
            "the service did not say (an emulator): taken as off",
        ),
        Err(e) => check(
            "SOURCE_STORAGE: hierarchical namespace",
            Status::Warn,
            format!("could not be read: {e}"),
        ),
    });
    checks
}

async fn soft_delete(name: &str, account: &StorageAccount, protects: &str) -> Check {
    let title = format!("{name}: blob soft delete");
    match account.blob_service_setup().await {
        Ok(setup) => match setup.blob_soft_delete_days {
            Some(days) => check(title, Status::Ok, format!("on, {days} days")),
            None => check(
                title,
                Status::Warn,
                format!("off: {protects}. Turn it on (`az storage account blob-service-properties update -n <account> -g <resource-group> --enable-delete-retention true --delete-retention-days 14`)"),
            ),
        },
        Err(e) => check(
            title,
            Status::Warn,
            format!("could not be read (the identity may lack the right to read the service's properties): {e}"),
        ),
    }
}

/// An immutability policy or legal hold on each `{c}bak` in scope; soft delete on the account
/// (when it answers).
async fn backup_account(app: &App, reached: bool, scope: &reach::LakeScope) -> Vec<Check> {
    if !reached {
        return Vec::new();
    }
    let soft_delete = soft_delete(
        BACKUP_STORAGE,
        &app.backup,
        "a backup deleted by mistake or by an attacker with delete rights is gone at once",
    )
    .await;
    let mut checks = vec![soft_delete];
    let Some(containers) = scope.containers() else {
        checks.push(check(
            "BACKUP_STORAGE: immutability of {c}bak",
            Status::Warn,
            "the lake's containers in scope are not known (see SOURCE_STORAGE: the lake's \
             containers)",
        ));
        return checks;
    };
    let protections = futures::stream::iter(containers.to_vec())
        .map(|container| async move {
            let vault = app.backup_container_of(&container);
            let protection = match &vault {
                Ok(vault) => app.backup.container(vault)?.protection().await,
                Err(e) => Err(StorageError::other(
                    "naming a backup container",
                    e.to_string(),
                )),
            };
            Ok::<_, StorageError>((vault.unwrap_or_default(), protection))
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    for result in protections {
        let (vault, protection) = match result {
            Ok(found) => found,
            Err(e) => {
                checks.push(check(
                    "BACKUP_STORAGE: immutability",
                    Status::Warn,
                    e.to_string(),
                ));
                continue;
            }
        };
        let title = format!("BACKUP_STORAGE: immutability of {vault}");
        checks.push(match protection {
            Ok(Some(p)) if !p.immutability_policy && !p.legal_hold && p.version_level_worm => check(
                title,
                Status::Warn,
                "version-level immutability is enabled, which alone protects nothing: check that \
                 the container has a default time-based policy",
            ),
            Ok(Some(p)) if p.immutability_policy || p.legal_hold => {
                let what: Vec<&str> = [
                    (p.immutability_policy, "a time-based retention policy"),
                    (p.legal_hold, "a legal hold"),
                ]
                .into_iter()
                .filter_map(|(on, what)| on.then_some(what))
                .collect();
                if app.config.copy_engine == CopyEngine::Adf {
                    // ADF writes the backup, then lakebackup stamps it: a second write.
                    check(
                        title,
                        Status::Fail,
                        format!(
                            "{}, but BACKUP_COPY_ENGINE=adf stamps each backup after Data \
                             Factory wrote it, which the policy refuses: no backup would ever \
                             count. Use BACKUP_COPY_ENGINE=direct (one create-only write)",
                            what.join(", ")
                        ),
                    )
                } else {
                    check(
                        title,
                        Status::Ok,
                        format!("{}: no backup can be deleted or overwritten", what.join(", ")),
                    )
                }
            }
            Ok(Some(_)) => check(
                title,
                Status::Warn,
                "no immutability policy or legal hold: anyone with delete rights on the backup \
                 account (a compromised app identity, ransomware) can destroy the backups; add a \
                 time-based retention policy (lakebackup writes every backup create-only)",
            ),
            Ok(None) => check(
                title,
                Status::Warn,
                "not created yet (the first backup creates it): give it an immutability policy then",
            ),
            Err(e) => check(title, Status::Warn, format!("could not be read: {e}")),
        });
    }
    checks
}

/// The work queues exist; each poison queue is empty.
async fn queues(app: &App, reached: bool) -> Vec<Check> {
    if !reached {
        return Vec::new();
    }
    let mut names: Vec<(String, bool)> = Vec::new();
    for queue in [WorkQueue::Backups, WorkQueue::Shards, WorkQueue::Events] {
        if let Some(name) = queue.name(&app.config) {
            names.push((format!("{name}-poison"), true));
            names.push((name, false));
        }
    }
    join_all(names.into_iter().map(|(name, poison)| async move {
        let depth = match app.jobs.queue(&name) {
            Ok(queue) => queue.depth().await,
            Err(e) => Err(e),
        };
        let title = format!("AzureWebJobsStorage: queue {name}");
        match (depth, poison) {
            (Ok(None), false) => check(title, Status::Warn, "does not exist yet (the functions create it when they first start)"),
            (Ok(None), true) | (Ok(Some(0)), true) => check(title, Status::Ok, "empty"),
            (Ok(Some(depth)), true) => check(
                title,
                Status::Warn,
                format!("holds {depth} message(s) that could never be handled: read them, fix the cause, put them back on the queue"),
            ),
            (Ok(Some(depth)), false) => check(title, Status::Ok, format!("exists, {depth} message(s) waiting")),
            (Err(e), _) => check(title, Status::Warn, format!("could not be read: {e}")),
        }
    }))
    .await
}

/// The newest jobs of the ledger: any that failed, and each container's last successful
/// reconciliation against `RECONCILE_SCHEDULE`.
async fn recent_jobs(app: &App, settings: &Settings, reached: bool) -> Vec<Check> {
    if !reached {
        return Vec::new();
    }
    let title = "AzureWebJobsStorage: recent jobs";
    let ledger = match app.jobs.container(&app.config.job_ledger) {
        Ok(ledger) => ledger,
        Err(e) => return vec![check(title, Status::Warn, e.to_string())],
    };
    let newest = async {
        let pages = until_container_missing(list_directory_names(&ledger, None)?);
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
        Ok::<_, StorageError>(jobs)
    };
    let job_ids = match newest.await {
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
    let failed: Vec<String> = statuses
        .iter()
        .filter(|s| s.progress.state == JobState::Failed)
        .map(|s| format!("{} ({} of {})", s.job, s.work, s.container))
        .collect();
    checks.push(if failed.is_empty() {
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
    });
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
fn schedule_interval(cron: &croner::Cron) -> Option<Duration> {
    let first = cron.find_next_occurrence(&chrono::Utc::now(), false).ok()?;
    let second = cron.find_next_occurrence(&first, false).ok()?;
    (second - first).to_std().ok()
}

fn humanize(duration: time::Duration) -> String {
    let hours = duration.whole_hours();
    if hours >= 48 {
        format!("{} days", hours / 24)
    } else if hours >= 1 {
        format!("{hours} h")
    } else {
        format!("{} min", duration.whole_minutes())
    }
}

/// With the `adf` engine: the pipeline reachable through ARM with the app's identity.
async fn pipeline(app: &App) -> Vec<Check> {
    if app.config.copy_engine != CopyEngine::Adf {
        return Vec::new();
    }
    let title = "ADF_PIPELINE_NAME: the pipeline reachable through ARM";
    match &app.adf {
        Some(adf) => match adf.check_pipeline().await {
            Ok(()) => vec![check(
                title,
                Status::Ok,
                format!("pipeline {} read", adf.config().pipeline_name),
            )],
            Err(e) => vec![check(title, Status::Fail, e.to_string())],
        },
        None => vec![check(
            title,
            Status::Fail,
            "BACKUP_COPY_ENGINE=adf without the ADF_* settings",
        )],
    }
}

/// The report as a table: verdict, check, detail.
pub fn table(report: &Report) -> String {
    let width = report
        .checks
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for c in &report.checks {
        out.push_str(&format!(
            "{:<4}  {:<width$}  {}\n",
            c.status.as_str(),
            c.name,
            c.detail
        ));
    }
    out.push_str(&format!("{}\n", report.status.as_str()));
    out
}
