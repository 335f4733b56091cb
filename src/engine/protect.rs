//! Protecting one version of one blob, as the shards and the events function do it: its backup
//! (copied by the backup engine, or requested on the queue for the ADF engine), then a snapshot
//! of exactly that version; and, for a blob that moves under us, a snapshot of whatever it is
//! now and that version's backup.
//!
//! A lake with a hierarchical namespace takes no snapshots (Azure has none to offer new
//! customers there): no snapshot is ever asked of it, and a file that moves under us has its
//! version now backed up instead ([`back_up_now`]), pinned to that version's ETag.

use tracing::info;

use crate::{
    app::{App, CopyEngine},
    core::{message::BackupRequest, version::Version},
    engine::backup::{self, BackupError, BackupOutcome},
    storage::{ErrorCode, StorageError},
};

/// What a copy said beside "done".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopiedNote {
    /// The stored Content-MD5 does not match the bytes (backed up as the lake holds them).
    pub md5_mismatch: bool,
    /// The backup account refused to set tags: the backup has none.
    pub tags_refused: bool,
}

/// What backing up a listed version came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protected {
    Copied(CopiedNote),
    /// A complete backup of it was there already.
    Present,
    /// Requested on the backup queue (the ADF engine copies it).
    Requested,
    /// In the archive tier: not readable until rehydrated.
    Archived,
    /// The blob changed or went since it was listed.
    Moved(String),
}

/// Backs up the listed version `listed` of a blob of `container`: copied now with the direct
/// engine, or requested for the ADF engine.
pub async fn back_up_listed(
    app: &App,
    container: &str,
    listed: &Version,
) -> Result<Protected, BackupError> {
    if app.config.copy_engine == CopyEngine::Adf {
        let request = BackupRequest::new(container, &listed.name, &listed.etag);
        app.enqueue_backup(&request).await?;
        return Ok(Protected::Requested);
    }
    match backup::back_up_listed(app, container, listed).await? {
        BackupOutcome::BackedUp {
            md5_mismatch,
            tags_refused,
            ..
        } => Ok(Protected::Copied(CopiedNote {
            md5_mismatch,
            tags_refused,
        })),
        BackupOutcome::AlreadyBackedUp { .. } => Ok(Protected::Present),
        BackupOutcome::Archived { .. } => Ok(Protected::Archived),
        BackupOutcome::Outdated { reason } => Ok(Protected::Moved(reason)),
        other => Err(BackupError::Copy {
            what: format!("{container}/{}", listed.name),
            detail: format!("{other:?}"),
        }),
    }
}

/// A snapshot of exactly version `etag` of `container/name`; `false` when the blob changed (or
/// went) since: that version is no longer there to snapshot — or when the lake has a
/// hierarchical namespace, which takes none (nothing is asked of it).
pub async fn snapshot_version(
    app: &App,
    container: &str,
    name: &str,
    etag: &str,
) -> Result<bool, StorageError> {
    if app.source.namespace(container).await?.is_hierarchical() {
        return Ok(false);
    }
    let taken = app
        .source
        .container(container)?
        .blob(name)
        .take_snapshot(Some(etag))
        .await;
    match taken {
        Ok(_) => Ok(true),
        Err(e) if e.is(ErrorCode::ConditionNotMet) || e.is(ErrorCode::BlobNotFound) => {
            info!("blob changed since it was listed; left for the next pass");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// What protecting a moving blob came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moving {
    /// The blob is gone.
    Gone,
    /// A snapshot was taken; its version was copied (with what the copy said), or had a backup
    /// already, or was requested (ADF): `None`.
    Snapshotted(Option<CopiedNote>),
    /// A hierarchical namespace (no snapshots): its version now, backed up as a listed one is
    /// ([`back_up_listed`]); `Protected::Moved` when that one moved on too.
    BackedUpNow(Protected),
}

/// Protects a blob that moves under us: a snapshot now — whatever its ETag, a snapshot is one
/// consistent version — and that version's backup (from the snapshot, once the blob has moved
/// on again).
pub async fn protect_moving(app: &App, container: &str, name: &str) -> Result<Moving, BackupError> {
    if app.source.namespace(container).await?.is_hierarchical() {
        return back_up_now(app, container, name).await;
    }
    let taken = app
        .source
        .container(container)?
        .blob(name)
        .take_snapshot(None)
        .await;
    let taken = match taken {
        Ok(taken) => taken,
        Err(e) if e.is(ErrorCode::BlobNotFound) => return Ok(Moving::Gone),
        Err(e) => return Err(e.into()),
    };
    let request = BackupRequest::new(container, name, &taken.etag);
    if app.config.copy_engine == CopyEngine::Adf {
        app.enqueue_backup(&request).await?;
        return Ok(Moving::Snapshotted(None));
    }
    match backup::back_up(app, &request).await? {
        BackupOutcome::BackedUp {
            md5_mismatch,
            tags_refused,
            ..
        } => Ok(Moving::Snapshotted(Some(CopiedNote {
            md5_mismatch,
            tags_refused,
        }))),
        BackupOutcome::AlreadyBackedUp { .. } => Ok(Moving::Snapshotted(None)),
        other => Err(BackupError::Copy {
            what: format!("{container}/{name}"),
            detail: format!("its snapshot was taken but not backed up: {other:?}"),
        }),
    }
}

/// Backs up the version a blob has now, as a listed version is backed up: every copy pinned to
/// its ETag, so a blob that moves on again meanwhile is refused (412), never copied torn or
/// mixed, and comes back `Protected::Moved`. For a lake with a hierarchical namespace, which
/// offers no snapshot to hold a version still.
pub async fn back_up_now(app: &App, container: &str, name: &str) -> Result<Moving, BackupError> {
    let source = app.source.container(container)?.blob(name);
    let Some(state) = source.state().await? else {
        return Ok(Moving::Gone);
    };
    Ok(Moving::BackedUpNow(
        back_up_listed(app, container, &state.version).await?,
    ))
}
