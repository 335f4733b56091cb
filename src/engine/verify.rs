//! `lakebackup verify`: proof that the backups are there. For every current blob of a container
//! (or a directory tree): is there a complete backup of its current version, and a snapshot of
//! it (on a hierarchical namespace, no snapshot, and the backup records its access control)? The age of the oldest current version without a backup is the recovery point the lake
//! actually has. With `deep`, each backup's bytes are read and checked (see `jobs::verify`).
//!
//! A verify is a job on the job engine, of the verify kind: one shard per directory level. This
//! module is its front end: the request checked and made a job, run here (the problems reported
//! as they are found, the summary from the job's counts) or queued (`--distributed`).

use std::{sync::Mutex, time::Instant};

use serde::Serialize;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tracing::{info, Instrument};

use crate::{
    app::App,
    core::naming,
    engine::jobs::{
        self,
        verify::{VerifyKind, VerifyOptions},
        JobOrigin, NewJob, Queued, Root, LOCAL_SHARDS_AT_ONCE,
    },
    storage::StorageError,
};

/// One blob that is not protected as it should be (or, among the warnings, one with something
/// to know).
pub use crate::engine::jobs::verify::VerifyLine as Gap;

#[derive(Debug, Clone)]
pub struct VerifyRequest {
    pub container: String,
    pub prefix: Option<String>,
    pub deep: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifySummary {
    /// `ok`, `gaps` (some blob is not protected or a backup does not match) or `failed`.
    pub status: &'static str,
    pub container: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    pub deep: bool,
    pub blobs: u64,
    pub backed_up: u64,
    pub without_backup: u64,
    pub without_snapshot: u64,
    /// Backups whose bytes were checked (deep).
    pub checked: u64,
    pub mismatched: u64,
    /// On a hierarchical namespace, paths (files and directories) whose access control
    /// (owner, group, permissions, ACL) differs from the one their backup recorded.
    pub access_differs: u64,
    /// On a hierarchical namespace, directories judged (not in `blobs` or `backed_up`; a
    /// directory without a backup is counted in `without_backup`). Absent when none.
    #[serde(skip_serializing_if = "is_zero")]
    pub directories: u64,
    /// Seconds since the oldest current version without a backup was written: the data a loss
    /// now would take with it. `None` when every current version has a backup.
    pub rpo_seconds: Option<i64>,
    pub gaps: Vec<Gap>,
    /// Blobs protected, with something to know: `stored_md5_mismatch`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Gap>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl VerifySummary {
    pub fn succeeded(&self) -> bool {
        self.status == "ok"
    }
}

impl VerifySummary {
    /// The summary of `request` before anything is verified: `ok`, every count 0.
    fn nothing_yet(request: &VerifyRequest) -> Self {
        VerifySummary {
            status: "ok",
            container: request.container.clone(),
            prefix: request.prefix.clone(),
            deep: request.deep,
            blobs: 0,
            backed_up: 0,
            without_backup: 0,
            without_snapshot: 0,
            checked: 0,
            mismatched: 0,
            access_differs: 0,
            directories: 0,
            rpo_seconds: None,
            gaps: Vec::new(),
            warnings: Vec::new(),
            error: None,
            duration_ms: 0,
        }
    }
}

/// Verifies `request` in this process, up to four directory levels at once, handing each gap
/// and warning to `report` as it is found.
pub async fn verify(
    app: &App,
    request: &VerifyRequest,
    report: &(dyn Fn(&Gap) + Send + Sync),
) -> VerifySummary {
    let span = tracing::info_span!("verify", container = %request.container, deep = request.deep);
    async {
        let started = Instant::now();
        let mut summary = VerifySummary::nothing_yet(request);
        let new = match prepare(app, request).await {
            Ok(new) => new,
            Err(error) => {
                summary.status = "failed";
                summary.error = Some(error.to_string());
                return summary;
            }
        };
        let found = Mutex::new((Vec::new(), Vec::new()));
        let on_line = |gap: Gap| {
            report(&gap);
            let mut found = found.lock().unwrap_or_else(|p| p.into_inner());
            match gap.is_warning() {
                true => found.1.push(gap),
                false => found.0.push(gap),
            }
        };
        let job = jobs::run_here_reporting(app, new, LOCAL_SHARDS_AT_ONCE, &on_line).await;
        (summary.gaps, summary.warnings) = found.into_inner().unwrap_or_else(|p| p.into_inner());
        let totals = &job.totals;
        summary.blobs = totals.blobs;
        summary.backed_up = totals.backed_up;
        summary.without_backup = totals.without_backup;
        summary.without_snapshot = totals.without_snapshot;
        summary.checked = totals.checked;
        summary.mismatched = totals.mismatched;
        summary.access_differs = totals.access_differs;
        summary.directories = totals.directories;
        let oldest_unprotected = summary
            .gaps
            .iter()
            .filter_map(|gap| OffsetDateTime::parse(gap.written.as_deref()?, &Rfc3339).ok())
            .min();
        summary.rpo_seconds =
            oldest_unprotected.map(|t| (OffsetDateTime::now_utc() - t).whole_seconds().max(0));
        if job.shards_failed > 0 {
            summary.status = "failed";
            summary.error = job.shard_failure();
        } else if !summary.gaps.is_empty() {
            summary.status = "gaps";
        }
        summary.gaps.sort_by(|a, b| a.blob.cmp(&b.blob));
        summary.warnings.sort_by(|a, b| a.blob.cmp(&b.blob));
        summary.duration_ms = started.elapsed().as_millis() as u64;
        info!(
            status = summary.status,
            blobs = summary.blobs,
            gaps = summary.gaps.len(),
            "verify finished"
        );
        summary
    }
    .instrument(span)
    .await
}

/// Starts `request` as a queued job (`--distributed`): the shard function of any instance (or
/// `lakebackup run`) works it off, and the job's report holds its gaps.
pub async fn start(app: &App, request: &VerifyRequest) -> Result<Queued, StorageError> {
    let new = prepare(app, request).await?;
    jobs::queue(app, new).await
}

/// The request checked (a valid name of a container the lake has) and made a verify job.
async fn prepare(app: &App, request: &VerifyRequest) -> Result<NewJob<VerifyKind>, StorageError> {
    naming::validate_container_name(&request.container)
        .map_err(|e| StorageError::other("verifying", e.to_string()))?;
    let filter = request.prefix.clone().unwrap_or_default();
    if let Some(prefix) = request.prefix.as_deref() {
        naming::validate_blob_name(prefix)
            .map_err(|e| StorageError::other("verifying", e.to_string()))?;
    }
    let lake = app.source.container(&request.container)?;
    if !lake.exists().await? {
        return Err(StorageError::other(
            "verifying",
            format!(
                "container {} does not exist in SOURCE_STORAGE: there is nothing to verify",
                request.container
            ),
        ));
    }
    Ok(NewJob {
        origin: JobOrigin::Verify,
        container: request.container.clone(),
        roots: vec![Root::directory(naming::directory_of(&filter).unwrap_or(""))],
        options: VerifyOptions {
            filter,
            deep: request.deep,
        },
    })
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}
