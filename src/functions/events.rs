//! `QueueBlobEvents`: a recovery point seconds after each write. Event Grid delivers the lake's
//! blob events to a storage queue (`EVENTS_QUEUE_NAME`); each is acted on from the blob's state
//! *now*, since events arrive late, twice and out of order — the event's ETag is only a hint.
//!
//! - `BlobCreated` (and `BlobRenamed`, for its new name): the current version is backed up
//!   through the consumer's own path, then snapshotted unless a snapshot carries its ETag. An
//!   event for a version the blob has already moved past costs one HEAD: the newer version's own
//!   event (or the next pass) protects it.
//! - `BlobDeleted`: the deletion marker the sweeps write, with the event's time.
//! - `DirectoryRenamed`: a job over the new directory. The old names are left to the next
//!   pass, which records their deletion markers.
//!
//! Events for other accounts, malformed ones and unknown types go to `{EVENTS_QUEUE_NAME}-poison`
//! unchanged; events for the backup account, `{c}bak`, the jobs' ledger, filtered-out names and
//! directory placeholders are ignored, so nothing loops.

use crate::storage::ErrorCode;
use azure_storage_blob::models::BlobClientCreateSnapshotOptions;
use serde::Serialize;
use thiserror::Error;
use tracing::{info, warn, Instrument};

use super::consumer::{self, ConsumerError, ConsumerOutcome, QueueDelivery};
use crate::{
    app::{App, CopyEngine},
    core::{
        etag::quoted_etag,
        event::{parse_event, BlobEvent, EventKind},
        message::BackupRequest,
        naming,
        restore_plan::written_by,
        shard::{directory_prefix, new_job_id, Shard},
    },
    job_ledger::{self, JobKind},
    storage::{
        blobs::{blob_state, write_record},
        listing::{backups_of_name, find_snapshot},
        StorageError, StorageResultExt,
    },
};

pub const FUNCTION_NAME: &str = "QueueBlobEvents";

/// What became of one event; the invocation's return value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum EventOutcome {
    /// The blob's current version has a stamped backup and a snapshot.
    Protected {
        container: String,
        blob: String,
        etag: String,
        /// `backed_up`, `already_backed_up`, `requested` (ADF engine), or what else the
        /// consumer said.
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
        /// `false`: the marker was there already.
        new: bool,
    },
    /// A job over a renamed directory.
    DirectoryQueued {
        container: String,
        prefix: String,
        job: String,
    },
    Ignored {
        reason: String,
    },
    Poisoned {
        reason: String,
    },
}

#[derive(Debug, Error)]
pub enum EventError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Backup(#[from] ConsumerError),
}

/// Handles one delivery from the events queue. A failure fails the invocation, for a retry.
pub async fn consume(app: &App, delivery: &QueueDelivery) -> Result<EventOutcome, EventError> {
    let span = tracing::info_span!(
        "event",
        function = FUNCTION_NAME,
        message_id = %delivery.message_id,
    );
    async {
        let event = match parse_event(&delivery.text) {
            Ok(event) => event,
            Err(reason) => return poison(app, delivery, reason).await,
        };
        let span = tracing::info_span!(
            "blob",
            container = %event.container,
            blob = %event.path,
            event_id = %event.id,
        );
        async {
            if let Some(ignored) = ignored(app, &event) {
                info!(reason = ignored, "event ignored");
                return Ok(EventOutcome::Ignored { reason: ignored });
            }
            if event.account != app.source.account_name().unwrap_or_default() {
                let reason = format!(
                    "the event is for account {:?}, not the lake's",
                    event.account
                );
                return poison(app, delivery, reason).await;
            }
            let names_valid = naming::validate_container_name(&event.container)
                .and_then(|()| naming::validate_blob_name(&event.path));
            if let Err(e) = names_valid {
                return poison(app, delivery, e.to_string()).await;
            }
            if event.of_snapshot {
                return Ok(EventOutcome::Ignored {
                    reason: "an event about a snapshot or version, not the blob".into(),
                });
            }
            match event.kind {
                EventKind::Created | EventKind::Renamed => protect(app, &event).await,
                EventKind::Deleted => record(app, &event).await,
                EventKind::DirectoryRenamed => {
                    let prefix = directory_prefix(&event.path);
                    let job = new_job_id();
                    let root = Shard::root(&job, &event.container, &prefix);
                    job_ledger::start_job(app, JobKind::Command, std::slice::from_ref(&root))
                        .await?;
                    info!(job, prefix, "directory renamed: a job over its new name");
                    Ok(EventOutcome::DirectoryQueued {
                        container: event.container,
                        prefix,
                        job,
                    })
                }
            }
        }
        .instrument(span)
        .await
    }
    .instrument(span)
    .await
}

async fn poison(
    app: &App,
    delivery: &QueueDelivery,
    reason: String,
) -> Result<EventOutcome, EventError> {
    app.poison_event_raw(&delivery.as_queued()).await?;
    warn!(
        reason,
        message_id = delivery.message_id,
        "event moved to the poison queue unchanged"
    );
    Ok(EventOutcome::Poisoned { reason })
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
async fn protect(app: &App, event: &BlobEvent) -> Result<EventOutcome, EventError> {
    let (container, name) = (&event.container, &event.path);
    let source = app.source.container(container)?;
    let blob = source.blob_client(name);
    let stale = |reason: &str| EventOutcome::Stale {
        container: container.clone(),
        blob: name.clone(),
        reason: reason.to_owned(),
    };
    let state = match blob_state(&blob, &format!("{container}/{name}")).await {
        Ok(Some(state)) => state,
        Ok(None) => return Ok(stale("the blob no longer exists")),
        Err(e) if e.is(ErrorCode::ContainerNotFound) => return Ok(stale("the container is gone")),
        Err(e) => return Err(e.into()),
    };
    let placeholder = state.content_length == 0
        && state
            .metadata
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("hdi_isfolder") && v.eq_ignore_ascii_case("true"));
    if placeholder {
        return Ok(EventOutcome::Ignored {
            reason: "a directory placeholder (hdi_isfolder)".into(),
        });
    }
    if event.etag.as_ref().is_some_and(|etag| *etag != state.etag) {
        return Ok(stale("the blob changed since: its newer event protects it"));
    }
    let request = BackupRequest::new(container, name, &state.etag);
    let backup = if app.config.copy_engine == CopyEngine::Adf {
        app.enqueue_backup(&request).await?;
        "requested".to_owned()
    } else {
        match consumer::back_up_now(app, &request).await? {
            ConsumerOutcome::BackedUp { .. } => "backed_up".to_owned(),
            ConsumerOutcome::AlreadyBackedUp { .. } => "already_backed_up".to_owned(),
            other => {
                info!(outcome = ?other, "not backed up");
                return Ok(stale(&format!("{other:?}")));
            }
        }
    };
    let snapshot_taken = if find_snapshot(&source, container, name, &state.etag)
        .await?
        .is_some()
    {
        false
    } else {
        match blob
            .create_snapshot(Some(BlobClientCreateSnapshotOptions {
                if_match: Some(quoted_etag(&state.etag).into()),
                ..Default::default()
            }))
            .await
            .during(|| format!("snapshotting {container}/{name}"))
        {
            Ok(_) => true,
            // Replaced meanwhile: that version's own event snapshots it.
            Err(e) if e.is(ErrorCode::ConditionNotMet) || e.is(ErrorCode::BlobNotFound) => false,
            Err(e) => return Err(e.into()),
        }
    };
    info!(
        etag = state.etag,
        backup, snapshot_taken, "version protected"
    );
    Ok(EventOutcome::Protected {
        container: container.clone(),
        blob: name.clone(),
        etag: state.etag,
        backup,
        snapshot_taken,
    })
}

/// A deleted blob: the end of the life of the version the lake held when it was deleted — the
/// newest backed-up version certainly written before the event — recorded with the event's
/// time. Events come late and twice: one older than that life's last record changes nothing,
/// and a version the lake holds again now is recorded as seen again at once.
async fn record(app: &App, event: &BlobEvent) -> Result<EventOutcome, EventError> {
    let (container, name) = (&event.container, &event.path);
    let backup_container = app.backup_container_of(container)?;
    let vault = app.backup.container(&backup_container)?;
    let (backups, lives) = backups_of_name(&vault, &backup_container, name, false).await?;
    let deleted_at = event.time.unwrap_or_else(time::OffsetDateTime::now_utc);
    let ended = backups
        .iter()
        .filter(|(_, written, _)| written_by(*written) <= deleted_at)
        .max_by_key(|(_, written, backup)| (*written, backup.name.clone()));
    let ignored = |reason: &str| {
        Ok(EventOutcome::Ignored {
            reason: reason.to_owned(),
        })
    };
    let Some((parsed, written, _)) = ended else {
        return ignored("no version of the blob backed up before it was deleted: no life to end");
    };
    let etag = parsed.etag.clone();
    // (The same event again finds its own record: that is no later one.)
    if lives
        .last_seen(name, &etag)
        .is_some_and(|last| last > deleted_at)
    {
        return ignored("the life's last record is newer than the event: a late event");
    }
    // Read, never guessed: an error here fails the invocation, which the host retries.
    let now = blob_state(
        &app.source.container(container)?.blob_client(name),
        &format!("{container}/{name}"),
    )
    .await;
    let lives_on = match now {
        Ok(state) => state.is_some_and(|state| state.etag == etag),
        Err(e) if e.is(ErrorCode::ContainerNotFound) => false,
        Err(e) => return Err(e.into()),
    };
    let mut new = false;
    if let Some(deletion) = lives.next_deletion(name, &etag) {
        let seen = deleted_at.max(*written);
        new = write_record(&vault, &backup_container, &deletion, seen).await?;
        if lives_on {
            // Deleted at the event's time, and here again now (undeleted): both are true.
            let mut after = lives.clone();
            after.insert(&deletion, Some(seen));
            if let Some(revival) = after.next_revival(name, &etag) {
                let again = time::OffsetDateTime::now_utc().max(seen);
                write_record(&vault, &backup_container, &revival, again).await?;
            }
        }
    }
    Ok(EventOutcome::DeletionRecorded {
        container: container.clone(),
        blob: name.clone(),
        etag,
        new,
    })
}
