//! Blob events: a recovery point seconds after each write. Each event is acted on from the
//! blob's state *now*, since events arrive late, twice and out of order — the event's ETag is
//! only a hint.
//!
//! - `BlobCreated` (and `BlobRenamed`, for its new name): the current version is backed up by the
//!   backup engine, then snapshotted unless a snapshot carries its ETag. An event for a version
//!   the blob has already moved past costs one HEAD: the newer version's own event (or the next
//!   pass) protects it.
//! - `BlobDeleted`: the end of the life of the version the lake held then, with the event's time.
//! - `BlobRenamed` and `DirectoryRenamed` (ADLS Gen2): a deletion of the old name and a write of
//!   the new one. The new file is protected as a created one (a new directory gets a job); the
//!   old file's life ends at the event's time as a deleted one's (an old directory gets a job,
//!   as a deleted one does). An old name the event does not give, or that is none of this
//!   worker's business, is left to the next pass.
//! - `DirectoryDeleted` (one event for a whole tree): the end of the life of the directory's own
//!   version at the event's time, and a job over the directory, whose pass records the end of the
//!   life of every version the backup holds under it, at the pass's time (seconds after the
//!   event), as a reconciliation would. A renamed directory's old name is deleted so; its new
//!   name's own version is backed up as a created directory's, and a job covers what is under it.
//! - `DirectoryCreated` (a hierarchical namespace's): the directory's version — its owner,
//!   group, permissions and ACL, default ACL included — backed up as it is now; ignored on a
//!   flat lake.
//!
//! Events for other accounts and invalid names are unusable (the trigger poisons them); events
//! for the backup account, `{c}bak`, the jobs' ledger, filtered-out names, snapshots and
//! directory placeholders are ignored, so nothing loops.

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::info;

use crate::{
    app::{App, CopyEngine},
    core::{
        event::{BlobEvent, EventKind},
        message::BackupRequest,
        naming,
        shard::directory_prefix,
    },
    engine::{
        backup::{self, BackupError, BackupOutcome},
        jobs::{
            self,
            backup::{BackupKind, BackupOptions},
            JobOrigin, NewJob, Root,
        },
        lives::{self, Deletion},
        protect,
    },
    storage::{listing::find_snapshot, ErrorCode, StorageError},
};

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum EventOutcome {
    /// The blob's current version has a stamped backup and a snapshot.
    Protected {
        container: String,
        blob: String,
        etag: String,
        /// `backed_up`, `already_backed_up` or `requested` (ADF engine).
        backup: String,
        snapshot_taken: bool,
    },
    /// The blob moved on (or went) since the event: its newer event protects it.
    Stale {
        container: String,
        blob: String,
        reason: String,
    },
    DeletionRecorded {
        container: String,
        blob: String,
        etag: String,
        /// `false`: the record was there already.
        new: bool,
    },
    /// A rename: what became of its old name and of its new one.
    Renamed {
        from: Box<EventOutcome>,
        to: Box<EventOutcome>,
    },
    /// A job over a directory (renamed or deleted).
    DirectoryQueued {
        container: String,
        prefix: String,
        job: String,
    },
    Ignored {
        reason: String,
    },
}

#[derive(Debug, Error)]
pub enum EventError {
    /// The event can never be acted on here (another account's, an invalid name).
    #[error("{0}")]
    Unusable(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Backup(#[from] BackupError),
}

/// Acts on one event. A failure (other than [`EventError::Unusable`]) is worth a retry.
pub async fn handle(app: &App, event: &BlobEvent) -> Result<EventOutcome, EventError> {
    if let Some(outcome) = screened(app, event)? {
        return Ok(outcome);
    }
    match event.kind {
        EventKind::Created => protect_current(app, event).await,
        EventKind::Deleted => record_deletion(app, event).await,
        EventKind::Renamed | EventKind::DirectoryRenamed => renamed(app, event).await,
        // The whole tree in one event: a job over the directory, whose pass records the end of
        // the life of every version the backup holds under it that the lake no longer lists.
        EventKind::DirectoryDeleted => directory_deleted(app, event, "deleted").await,
        EventKind::DirectoryCreated => protect_directory(app, event).await,
    }
}

/// `Some` outcome for an event that is not to be acted on; an error for one that never can be.
fn screened(app: &App, event: &BlobEvent) -> Result<Option<EventOutcome>, EventError> {
    if let Some(ignored) = ignored(app, event) {
        info!(reason = ignored, "event ignored");
        return Ok(Some(EventOutcome::Ignored { reason: ignored }));
    }
    if event.account != app.source.account_name().unwrap_or_default() {
        return Err(EventError::Unusable(format!(
            "the event is for account {:?}, not the lake's",
            event.account
        )));
    }
    naming::validate_container_name(&event.container)
        .and_then(|()| naming::validate_blob_name(&event.path))
        .map_err(|e| EventError::Unusable(e.to_string()))?;
    if event.of_snapshot {
        return Ok(Some(EventOutcome::Ignored {
            reason: "an event about a snapshot or version, not the blob".into(),
        }));
    }
    Ok(None)
}

/// A rename: the new name written (a file protected, a directory given a job), the old one
/// deleted (a file's life ended at the event's time, a directory given a job whose pass ends
/// the lives under it). Each half is idempotent, so a redelivery redoes both safely.
async fn renamed(app: &App, event: &BlobEvent) -> Result<EventOutcome, EventError> {
    let directory = event.kind == EventKind::DirectoryRenamed;
    let to = match directory {
        true => {
            // The new directory itself (its access control) as a created one; what is under
            // it by a job (whose pass lists below the directory, not the directory).
            let itself = protect_directory(app, event).await?;
            info!(?itself, "renamed directory: its new name");
            queue_directory(app, event, "renamed: its new name").await?
        }
        false => protect_current(app, event).await?,
    };
    let from = match &event.renamed_from {
        Some(Ok(source)) => {
            let gone = BlobEvent {
                kind: match directory {
                    true => EventKind::DirectoryDeleted,
                    false => EventKind::Deleted,
                },
                container: source.container.clone(),
                path: source.path.clone(),
                etag: None,
                renamed_from: None,
                ..event.clone()
            };
            match screened(app, &gone) {
                Ok(Some(outcome)) => outcome,
                Ok(None) if directory => {
                    directory_deleted(app, &gone, "renamed: its old name").await?
                }
                Ok(None) => record_deletion(app, &gone).await?,
                // The new name was acted on: an old one that can never be is no reason to poison.
                Err(EventError::Unusable(reason)) => EventOutcome::Ignored { reason },
                Err(e) => return Err(e),
            }
        }
        Some(Err(reason)) => EventOutcome::Ignored {
            reason: format!("{reason}: the next pass records the end of the old name's life"),
        },
        // Not a rename (never so: `handle` sends only renames here).
        None => EventOutcome::Ignored {
            reason: "the event gives no old name".into(),
        },
    };
    Ok(EventOutcome::Renamed {
        from: Box::new(from),
        to: Box::new(to),
    })
}

/// A created directory of a hierarchical namespace: its version (its access control) backed
/// up as it is now. On a flat lake (which has no directories) it is ignored.
async fn protect_directory(app: &App, event: &BlobEvent) -> Result<EventOutcome, EventError> {
    let (container, name) = (&event.container, &event.path);
    if !app.source.namespace(container).await?.is_hierarchical() {
        return Ok(EventOutcome::Ignored {
            reason: "a directory created on a lake without a hierarchical namespace: its files' \
                     own events back them up"
                .into(),
        });
    }
    let stale = |reason: &str| EventOutcome::Stale {
        container: container.clone(),
        blob: name.clone(),
        reason: reason.to_owned(),
    };
    let state = match app.source.container(container)?.blob(name).probe().await {
        Ok(Some(state)) => state,
        Ok(None) => return Ok(stale("the directory no longer exists")),
        Err(e) if e.is(ErrorCode::ContainerNotFound) => return Ok(stale("the container is gone")),
        Err(e) => return Err(e.into()),
    };
    if !state.version.is_directory_placeholder() {
        return Ok(stale(
            "a file stands under the name now: its own event protects it",
        ));
    }
    let etag = state.version.etag.clone();
    let backup = match backup::back_up_directory(app, container, &state.version).await? {
        BackupOutcome::BackedUp { .. } => "backed_up",
        _ => "already_backed_up",
    };
    info!(etag, backup, "directory protected");
    Ok(EventOutcome::Protected {
        container: container.clone(),
        blob: name.clone(),
        etag,
        backup: backup.to_owned(),
        snapshot_taken: false,
    })
}

/// A deleted directory (or a renamed one's old name): the life of the directory's own version
/// ended at the event's time, as a deleted file's (it lives one level up, where a job over the
/// directory does not look), then a job over the directory for everything under it.
async fn directory_deleted(
    app: &App,
    event: &BlobEvent,
    what: &str,
) -> Result<EventOutcome, EventError> {
    let deleted_at = event.time.unwrap_or_else(time::OffsetDateTime::now_utc);
    match lives::record_deletion(app, &event.container, &event.path, deleted_at).await? {
        Deletion::Recorded { etag, new } => {
            info!(
                etag,
                new, "directory {what}: the life of its own version ended"
            )
        }
        Deletion::Nothing(reason) => info!(reason, "directory {what}: no own version to end"),
    }
    queue_directory(app, event, what).await
}

/// A backup job over the event's directory, queued.
async fn queue_directory(
    app: &App,
    event: &BlobEvent,
    what: &str,
) -> Result<EventOutcome, EventError> {
    let prefix = directory_prefix(&event.path);
    let new = NewJob::<BackupKind> {
        origin: JobOrigin::Event,
        container: event.container.clone(),
        roots: vec![Root::directory(&prefix)],
        options: BackupOptions::default(),
    };
    let job = jobs::queue(app, new).await?.job;
    info!(job, prefix, "directory {what}: a job over it");
    Ok(EventOutcome::DirectoryQueued {
        container: event.container.clone(),
        prefix,
        job,
    })
}

/// Why an event is none of this worker's business, if it is not.
fn ignored(app: &App, event: &BlobEvent) -> Option<String> {
    let config = &app.config;
    let backup_account = app.backup.account_name();
    let same_account = app.source.same_blob_service(&app.backup);
    if !same_account && backup_account.as_deref() == Some(event.account.as_str()) {
        return Some("an event of the backup account".into());
    }
    if same_account
        && event
            .container
            .ends_with(config.backup_container_suffix.as_str())
    {
        return Some(format!(
            "{} is a backup container (suffix {:?})",
            event.container, config.backup_container_suffix
        ));
    }
    if app.source.same_blob_service(&app.jobs) && event.container == config.job_ledger {
        return Some("the jobs' ledger".into());
    }
    if let Some(containers) = &config.events.containers {
        if !containers.contains(&event.container) {
            return Some(format!("{} is not in EVENTS_CONTAINERS", event.container));
        }
    }
    if let Some(prefix) = &config.events.prefix {
        if !event.path.starts_with(prefix.as_str()) {
            return Some(format!("outside EVENTS_PREFIX {prefix:?}"));
        }
    }
    None
}

/// A created or replaced blob: its current version backed up, then snapshotted.
async fn protect_current(app: &App, event: &BlobEvent) -> Result<EventOutcome, EventError> {
    let (container, name) = (&event.container, &event.path);
    let source = app.source.container(container)?;
    let stale = |reason: &str| EventOutcome::Stale {
        container: container.clone(),
        blob: name.clone(),
        reason: reason.to_owned(),
    };
    // The ETag and whether it is a directory: the backup reads the blob itself.
    let state = match source.blob(name).probe().await {
        Ok(Some(state)) => state,
        Ok(None) => return Ok(stale("the blob no longer exists")),
        Err(e) if e.is(ErrorCode::ContainerNotFound) => return Ok(stale("the container is gone")),
        Err(e) => return Err(e.into()),
    };
    if state.version.is_directory_placeholder() {
        return Ok(EventOutcome::Ignored {
            reason: "a directory placeholder (hdi_isfolder)".into(),
        });
    }
    let etag = state.version.etag.clone();
    if event.etag.as_ref().is_some_and(|hint| *hint != etag) {
        return Ok(stale("the blob changed since: its newer event protects it"));
    }
    let request = BackupRequest::new(container, name, &etag);
    // The RPO as this event sees it, when it leaves its version without a backup.
    let left_behind = || left_without_backup(container, state.version.last_modified);
    let backup = if app.config.copy_engine == CopyEngine::Adf {
        app.enqueue_backup(&request).await?;
        left_behind();
        "requested".to_owned()
    } else {
        let backed_up = backup::back_up(app, &request)
            .await
            .inspect_err(|_| left_behind());
        match backed_up? {
            BackupOutcome::BackedUp { .. } => "backed_up".to_owned(),
            BackupOutcome::AlreadyBackedUp { .. } => "already_backed_up".to_owned(),
            other => {
                info!(outcome = ?other, "not backed up");
                left_behind();
                return Ok(stale(&format!("{other:?}")));
            }
        }
    };
    let snapshot_taken = if app.source.namespace(container).await?.is_hierarchical() {
        // No snapshots on a hierarchical namespace: not even a listing of them is asked for.
        false
    } else {
        match find_snapshot(&source, name, &etag).await? {
            Some(_) => false,
            // Replaced meanwhile: that version's own event snapshots it.
            None => protect::snapshot_version(app, container, name, &etag).await?,
        }
    };
    info!(etag, backup, snapshot_taken, "version protected");
    Ok(EventOutcome::Protected {
        container: container.clone(),
        blob: name.clone(),
        etag,
        backup,
        snapshot_taken,
    })
}

/// The RPO an event sees (`lakebackup.rpo`): the age of the one version it leaves without a
/// backup (its copy failed, was only requested from ADF, or could not be made: archived, …).
/// An event that backs its version up records nothing: it sees one blob, not what else is left
/// behind, so a 0 from it would say nothing of the container.
fn left_without_backup(container: &str, last_modified: time::OffsetDateTime) {
    let behind = (time::OffsetDateTime::now_utc() - last_modified)
        .try_into()
        .unwrap_or_default();
    crate::telemetry::record::rpo(container, behind);
}

/// A deleted blob: the end of its life, at the event's time.
async fn record_deletion(app: &App, event: &BlobEvent) -> Result<EventOutcome, EventError> {
    let deleted_at = event.time.unwrap_or_else(time::OffsetDateTime::now_utc);
    match lives::record_deletion(app, &event.container, &event.path, deleted_at).await? {
        Deletion::Nothing(reason) => Ok(EventOutcome::Ignored { reason }),
        Deletion::Recorded { etag, new } => Ok(EventOutcome::DeletionRecorded {
            container: event.container.clone(),
            blob: event.path.clone(),
            etag,
            new,
        }),
    }
}
