//! `lakebackup restore`: bring a container (or a prefix of it) back to what it held at an
//! instant, from its snapshots or from the backup account, in place, into another container,
//! or into another account (`RESTORE_TARGET_STORAGE`).
//!
//! A restore is a job on the job engine, of the restore kind (`jobs::restore`): one shard per
//! directory level, fanned out. [`restore`] runs its shards in this process,
//! `RESTORE_CONCURRENCY` at once, and reports each blob's action as it is done; [`start`] queues
//! them (`--distributed`) for the Function App's shard function or any number of `lakebackup
//! run` processes, and the job's ledger says where it stands. Before a job is made, the request
//! is checked: valid names, something to restore from, a reachable target.

use std::{sync::Mutex, time::Instant};

use serde::Serialize;
use thiserror::Error;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tracing::{info, Instrument};

pub use crate::core::restore_plan::RestoreFrom;
pub use crate::engine::jobs::restore::RestoreAction;
use crate::{
    app::App,
    config::RESTORE_TARGET_STORAGE,
    core::{
        job::BlobNote,
        naming,
        restore_plan::{stem_prefix, RestoreOptions},
    },
    engine::jobs::{self, restore::RestoreKind, JobOrigin, NewJob, Queued, Root},
    storage::{
        listing::{list_with_metadata, list_with_snapshots},
        Container, StorageError,
    },
};

#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub container: String,
    /// Only blobs whose names start with this (`raw/2026` also takes `raw/2026.csv`; a trailing
    /// `/` keeps it to the directory).
    pub prefix: Option<String>,
    /// Only the blob of exactly this name (`--blob`); not together with `prefix`.
    pub blob: Option<String>,
    /// The instant to restore to; the newest versions when `None`.
    pub as_of: Option<OffsetDateTime>,
    pub from: RestoreFrom,
    /// Restore into this container instead of in place.
    pub to_container: Option<String>,
    /// Restore into the account of `RESTORE_TARGET_STORAGE` instead of the lake's.
    pub to_account: bool,
    pub dry_run: bool,
    /// Where the content cannot be compared by MD5 (a side has none), read both sides' bytes
    /// before writing, instead of writing whenever the ETags differ.
    pub verify_content: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreSummary {
    pub status: &'static str,
    pub container: String,
    pub target_container: String,
    /// Written into the account of `RESTORE_TARGET_STORAGE`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub to_account: bool,
    pub from: RestoreFrom,
    pub as_of: Option<String>,
    pub dry_run: bool,
    pub restored: u64,
    pub unchanged: u64,
    pub missing_version: u64,
    /// Blobs whose deletion was seen before the instant: left out, as the lake was then.
    pub deleted: u64,
    /// Blobs written to (or created) in the target between planning and copying: left alone.
    pub changed_since_plan: u64,
    pub errors: u64,
    /// A hierarchical namespace's directories created, paths given their exact access control,
    /// paths whose access control was not all set (named in `failures`), and paths whose access
    /// control a flat target cannot hold (said once in `warnings`): absent when none.
    #[serde(skip_serializing_if = "is_zero")]
    pub directories_created: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub access_set: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub access_failed: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub access_not_applied: u64,
    /// Directories whose user metadata the service refused to set back (named in
    /// `warnings`; their access control set all the same).
    #[serde(skip_serializing_if = "is_zero")]
    pub directory_metadata_refused: u64,
    /// Directories reached with no version at the instant (said in `warnings`).
    #[serde(skip_serializing_if = "is_zero")]
    pub directories_without_version: u64,
    /// The paths whose access control was not all set, each with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<BlobNote>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<BlobNote>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

impl RestoreSummary {
    pub fn succeeded(&self) -> bool {
        self.errors == 0 && self.access_failed == 0 && self.error.is_none()
    }
}

/// Why a restore was refused before any job was made.
#[derive(Debug, Error)]
pub enum RestoreRefused {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Restores `request` in this process, reporting each action to `report` as it is done (the
/// summary only counts them, so memory does not grow with the container).
pub async fn restore(
    app: &App,
    request: &RestoreRequest,
    report: &mut (dyn FnMut(RestoreAction) + Send),
) -> RestoreSummary {
    let span = tracing::info_span!("restore", container = %request.container, from = ?request.from);
    async {
        let started = Instant::now();
        let mut summary = empty_summary(request);
        let new = match prepare(app, request).await {
            Ok(new) => new,
            Err(refused) => {
                summary.status = "failed";
                summary.error = Some(refused.to_string());
                return summary;
            }
        };
        let report = Mutex::new(report);
        let on_line = |action: RestoreAction| {
            let mut report = report.lock().unwrap_or_else(|p| p.into_inner());
            (*report)(action);
        };
        let job =
            jobs::run_here_reporting(app, new, app.config.restore_concurrency, &on_line).await;
        let totals = &job.totals;
        summary.restored = totals.restored;
        summary.unchanged = totals.unchanged;
        summary.missing_version = totals.missing_version;
        summary.deleted = totals.deleted;
        summary.changed_since_plan = totals.changed_since_plan;
        summary.errors = totals.errors + job.shards_failed;
        summary.directories_created = totals.directories_created;
        summary.access_set = totals.access_set;
        summary.access_failed = totals.access_failed;
        summary.access_not_applied = totals.access_not_applied;
        summary.directory_metadata_refused = totals.directory_metadata_refused;
        summary.directories_without_version = totals.directories_without_version;
        // Each path that failed, with why (access control has no line of its own).
        summary.failures = job.notes.failures.clone();
        summary.warnings = job.notes.warnings.clone();
        if job.shards_failed > 0 {
            summary.error = job.shard_failure();
        }
        if !summary.succeeded() {
            summary.status = "failed";
        }
        summary.duration_ms = started.elapsed().as_millis() as u64;
        info!(
            restored = summary.restored,
            unchanged = summary.unchanged,
            missing_version = summary.missing_version,
            deleted = summary.deleted,
            errors = summary.errors,
            dry_run = summary.dry_run,
            "restore finished"
        );
        summary
    }
    .instrument(span)
    .await
}

/// Starts `request` as a queued job (`--distributed`): its ledger first, then its root shard,
/// which the shard function of any instance (or `lakebackup run`) works off.
pub async fn start(app: &App, request: &RestoreRequest) -> Result<Queued, RestoreRefused> {
    let new = prepare(app, request).await?;
    Ok(jobs::queue(app, new).await?)
}

fn empty_summary(request: &RestoreRequest) -> RestoreSummary {
    RestoreSummary {
        status: "ok",
        container: request.container.clone(),
        target_container: target_container(request).to_owned(),
        to_account: request.to_account,
        from: request.from,
        as_of: request.as_of.and_then(|t| t.format(&Rfc3339).ok()),
        dry_run: request.dry_run,
        restored: 0,
        unchanged: 0,
        missing_version: 0,
        deleted: 0,
        changed_since_plan: 0,
        errors: 0,
        directories_created: 0,
        access_set: 0,
        access_failed: 0,
        access_not_applied: 0,
        directory_metadata_refused: 0,
        directories_without_version: 0,
        failures: Vec::new(),
        warnings: Vec::new(),
        error: None,
        duration_ms: 0,
    }
}

fn target_container(request: &RestoreRequest) -> &str {
    request
        .to_container
        .as_deref()
        .unwrap_or(&request.container)
}

/// Checks `request` and makes its job: names valid, something to restore from under the
/// prefix, the target reachable (and its container made, unless it is a dry run).
async fn prepare(
    app: &App,
    request: &RestoreRequest,
) -> Result<NewJob<RestoreKind>, RestoreRefused> {
    let target = target_container(request);
    naming::validate_container_name(&request.container)
        .and_then(|()| naming::validate_container_name(target))
        .map_err(|e| RestoreRefused::Invalid(e.to_string()))?;
    let (filter, exact) = scope_of(request)?;
    let directory = naming::directory_of(&filter).unwrap_or("").to_owned();
    something_to_restore(app, request, &filter, exact).await?;
    let target_account = reach_target(app, request, target).await?;
    Ok(NewJob {
        origin: JobOrigin::Restore,
        container: request.container.clone(),
        roots: vec![Root::directory(&directory)],
        options: RestoreOptions {
            from: request.from,
            as_of: request.as_of.and_then(|t| t.format(&Rfc3339).ok()),
            to_container: request.to_container.clone(),
            to_account: request.to_account,
            target_account: Some(target_account),
            lake_account: app.source.identity().map(|a| a.display_url()),
            backup_account: app.backup.identity().map(|a| a.display_url()),
            dry_run: request.dry_run,
            verify_content: request.verify_content,
            filter,
            job_started: OffsetDateTime::now_utc().format(&Rfc3339).ok(),
            exact,
        },
    })
}

/// Refuses a restore with nothing to restore from under its filter: no `{c}bak` or no complete
/// backup there, or no lake container or blob for `--from snapshots`.
async fn something_to_restore(
    app: &App,
    request: &RestoreRequest,
    filter: &str,
    exact: bool,
) -> Result<(), RestoreRefused> {
    let scope = match (exact, filter.is_empty()) {
        (true, _) => format!(" named {filter:?}"),
        (false, true) => String::new(),
        (false, false) => format!(" under {filter:?}"),
    };
    let container = &request.container;
    let refused = match request.from {
        RestoreFrom::Backup => {
            let vault = app.vault_of(container)?;
            if !vault.exists().await? {
                Some(format!(
                    "backup container {} does not exist in BACKUP_STORAGE: there is nothing to \
                     restore {container} from",
                    vault.name()
                ))
            } else if !has_backup(app, request, filter, exact).await? {
                Some(format!(
                    "{} holds no complete backup of {container}{scope}: there is nothing to \
                     restore",
                    vault.name()
                ))
            } else {
                None
            }
        }
        RestoreFrom::Snapshots => {
            let lake = app.source.container(container)?;
            if !lake.exists().await? {
                Some(format!(
                    "container {container} does not exist in SOURCE_STORAGE: it has no snapshots \
                     to restore from"
                ))
            } else if !has_blob(&lake, filter, exact).await? {
                Some(format!(
                    "container {container}{scope} holds no blob or snapshot: there is nothing to \
                     restore"
                ))
            } else {
                None
            }
        }
    };
    refused.map_or(Ok(()), |reason| Err(RestoreRefused::Invalid(reason)))
}

/// Reaches the restore's target container (made, unless it is a dry run) and names its account,
/// so that every worker writes into exactly this one.
async fn reach_target(
    app: &App,
    request: &RestoreRequest,
    target: &str,
) -> Result<String, RestoreRefused> {
    let account = app.restore_target(request.to_account)?;
    let where_to = match request.to_account {
        true => RESTORE_TARGET_STORAGE,
        false => "SOURCE_STORAGE",
    };
    let container = account.container(target)?;
    let reached = match request.dry_run {
        true => container.exists().await.map(|_| ()),
        false => container.create_if_missing().await,
    };
    reached.map_err(|e| e.context(format!("reaching the restore's target in {where_to}")))?;
    account.identity().map(|a| a.display_url()).ok_or_else(|| {
        RestoreRefused::Invalid(format!(
            "{where_to} names no blob endpoint: the restore's target account cannot be named"
        ))
    })
}

/// What the request restores: the filter names are checked against, and whether it is one
/// blob's whole name (`--blob`) rather than a prefix.
fn scope_of(request: &RestoreRequest) -> Result<(String, bool), RestoreRefused> {
    match (&request.prefix, &request.blob) {
        (Some(_), Some(_)) => Err(RestoreRefused::Invalid(
            "give either a prefix or one blob's name, not both".into(),
        )),
        (_, Some(blob)) => {
            naming::validate_blob_name(blob).map_err(|e| RestoreRefused::Invalid(e.to_string()))?;
            if blob.ends_with('/') {
                return Err(RestoreRefused::Invalid(format!(
                    "{blob:?} names a directory, not a blob: restore it with --prefix"
                )));
            }
            Ok((blob.clone(), true))
        }
        (prefix, None) => Ok((
            prefix
                .as_deref()
                .unwrap_or("")
                .trim_start_matches('/')
                .to_owned(),
            false,
        )),
    }
}

/// Whether the lake's container holds a blob or snapshot under `filter` (named `filter`, when
/// `exact`); pages are read until the first such entry: Azure may answer a page with none and a
/// marker.
async fn has_blob(lake: &Container, filter: &str, exact: bool) -> Result<bool, StorageError> {
    let pages = list_with_snapshots(lake, (!filter.is_empty()).then_some(filter))?;
    futures::pin_mut!(pages);
    while let Some(page) = futures::TryStreamExt::try_next(&mut pages).await? {
        if page.iter().any(|blob| !exact || blob.name == filter) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether the backup container holds at least one complete backup of a name under `filter`
/// (of the name `filter`, when `exact`), listed flat from the names' common stem until the first
/// is found.
async fn has_backup(
    app: &App,
    request: &RestoreRequest,
    filter: &str,
    exact: bool,
) -> Result<bool, StorageError> {
    let vault = app.vault_of(&request.container)?;
    let listed_from = if exact {
        naming::backup_name_prefix(filter)
    } else {
        stem_prefix(filter).to_owned()
    };
    let pages = list_with_metadata(&vault, &listed_from)?;
    futures::pin_mut!(pages);
    while let Some(page) = futures::TryStreamExt::try_next(&mut pages).await? {
        let found = page.iter().any(|blob| {
            blob.as_complete_backup().is_some_and(|(parsed, _)| {
                if exact {
                    parsed.source_name == filter
                } else {
                    parsed.source_name.starts_with(filter)
                }
            })
        });
        if found {
            return Ok(true);
        }
    }
    Ok(false)
}
