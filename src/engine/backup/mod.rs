//! The backup engine: one exact version of one blob `(container, name, ETag)` into its own,
//! immutable backup blob.
//!
//! It decides from the facts as they are now (the blob's state, what stands under the version's
//! backup name), settles whatever stands there (a copy still pending is waited for, one that
//! holds another version or failed is removed, one that holds this version is stamped), and
//! copies — directly (through the worker for small block blobs and for every blob of a lake
//! connected by SAS, server-side for the rest, the stamp in the same request, or in the last one
//! of an append or page blob written through the worker, so a backup is complete and stamped at
//! once or is never counted), or
//! with an ADF pipeline run ([`adf`]), judged before it is stamped.
//!
//! When the blob has moved on, the version is not simply "outdated": a backup already under its
//! name is settled first, and a version that lives on in a snapshot is backed up from the
//! snapshot. The queue consumer, the shards and the events function all back up through here.
//!
//! A directory of a hierarchical namespace is a version too ([`back_up_directory`]): an empty
//! backup stamped as a directory, with its access control.
//!
//! A lake with a hierarchical namespace (`storage::Namespace`) has no snapshots and no index
//! tags: neither is asked of it. Every copy is pinned to the version's ETag all the same (reads
//! with `If-Match`, server-side copies with `x-ms-source-if-match`), so a file that moves on
//! while it is copied is refused (412) and never recorded as a backup.

mod adf;
mod direct;
mod directory;
mod settle;

pub use self::directory::{back_up_directory, root_directory};
use self::settle::Settled;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{info, warn};

use crate::{
    adf::AdfError,
    app::{App, CopyEngine},
    core::{
        etag::normalize_etag,
        message::BackupRequest,
        naming,
        properties::BlobType,
        stamp::{self, Stamp},
        version::{CopyStatus, Version},
    },
    storage::{
        copy::{
            copy_version, copy_version_through, wait_for_copy, Copied, CopyAttributes, CopyStart,
            Overwrite, ServerCopy, SourceVersion,
        },
        listing::{access_as_listed, find_snapshot, list_backups},
        Blob, BlobState, ErrorCode, StorageError,
    },
    telemetry,
};

/// What became of one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum BackupOutcome {
    BackedUp {
        backup_container: String,
        backup_name: String,
        /// Set when the blob had moved on and the version was copied from its snapshot.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_snapshot: Option<String>,
        /// The source's stored Content-MD5 does not match its bytes: the bytes were backed up
        /// as the lake holds them, the MD5 property as stored.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        md5_mismatch: bool,
        /// The backup account refused to set the blob's tags: they are not on the backup.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        tags_refused: bool,
    },
    AlreadyBackedUp {
        backup_container: String,
        backup_name: String,
    },
    Outdated {
        reason: String,
    },
    /// The source is in the archive tier: it cannot be read until it is rehydrated.
    Archived {
        tier: String,
        reason: String,
    },
    /// Another invocation holds the lease on this blob; the request was put back on the queue.
    Deferred {
        reason: String,
        deferrals: u32,
    },
}

/// Why a version was not backed up.
#[derive(Debug, Error)]
pub enum BackupError {
    /// Worth retrying.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Worth retrying.
    #[error(transparent)]
    Adf(#[from] AdfError),
    /// Worth retrying.
    #[error("copy of {what} did not complete: {detail}")]
    Copy { what: String, detail: String },
    /// The version can never be backed up (its backup name would break Azure's limits, it is
    /// encrypted with a key this worker does not hold): a queued request is poisoned.
    #[error("{what} cannot be backed up: {reason}")]
    Unusable { what: String, reason: String },
}

/// After this many deferrals a busy blob fails like any other failure (and can end poisoned):
/// a lease held for hours is not another invocation's copy.
const MAX_DEFERRALS: u32 = 30;

/// Backs up the version `request` names, deciding from the facts as they are now; a copy
/// refused by a condition (409/412) means the facts changed under it, so they are read once
/// more.
pub async fn back_up(app: &App, request: &BackupRequest) -> Result<BackupOutcome, BackupError> {
    let backup = VersionBackup::new(app, request, normalize_etag(&request.etag))?;
    let attempted = match backup.attempt().await {
        Err(BackupError::Storage(e)) if e.is_condition_conflict() => {
            info!(error = %e, "a condition refused the copy; reading the facts again");
            backup.attempt().await
        }
        other => other,
    };
    match attempted {
        Err(BackupError::Storage(e)) if e.is(ErrorCode::BlobUsesCustomerSpecifiedEncryption) => {
            Err(backup.unusable(format!(
                "the blob is encrypted with a customer-provided key, which this worker does not \
                 hold: it cannot be read to be backed up ({e})"
            )))
        }
        other => other,
    }
}

/// Backs up the current version of a blob a listing has just shown: the listing already says
/// the version (ETag, time, length, the source's metadata) and that no stamped backup of it
/// exists, so it is copied at once, in one request carrying the stamp. Anything a condition
/// refuses (the blob changed, a backup appeared) goes the whole way, from the facts.
pub async fn back_up_listed(
    app: &App,
    container: &str,
    listed: &Version,
) -> Result<BackupOutcome, BackupError> {
    let request = BackupRequest::new(container, &listed.name, &listed.etag);
    if listed.metadata.is_none() {
        return back_up(app, &request).await;
    }
    let backup = VersionBackup::new(app, &request, &listed.etag)?;
    let copied = async {
        let listed = &backup.with_access(listed.clone()).await?;
        let name = backup.backup_name(listed)?;
        app.ensure_backup_container(&backup.backup_container)
            .await?;
        let destination = backup.backup_blob(&name)?;
        backup.copy_direct(&destination, name, listed).await
    }
    .await;
    match copied {
        // The blob changed or went since it was listed, or a backup appeared: decided again
        // from the facts.
        Err(BackupError::Storage(e))
            if e.is_condition_conflict() || e.is(ErrorCode::BlobNotFound) =>
        {
            back_up(app, &request).await
        }
        other => other,
    }
}

/// The service refused to read the source: it is in the archive tier (found only at the copy
/// when the tier changed after it was read).
fn archived_refused(error: &StorageError) -> BackupOutcome {
    BackupOutcome::Archived {
        tier: "Archive".into(),
        reason: format!("the service refused to copy an archived blob ({error})"),
    }
}

/// One version's backup under way.
struct VersionBackup<'a> {
    app: &'a App,
    request: &'a BackupRequest,
    /// Without quotes.
    etag: String,
    backup_container: String,
}

impl<'a> VersionBackup<'a> {
    fn new(app: &'a App, request: &'a BackupRequest, etag: &str) -> Result<Self, BackupError> {
        let unusable = |reason: String| BackupError::Unusable {
            what: format!("{}/{}", request.container, request.blob_name),
            reason,
        };
        let backup_container =
            naming::backup_container_name(&request.container, &app.config.backup_container_suffix)
                .map_err(|e| unusable(e.to_string()))?;
        Ok(Self {
            app,
            request,
            etag: etag.to_owned(),
            backup_container,
        })
    }

    /// Whether the lake has a hierarchical namespace (asked once per process).
    async fn hierarchical(&self) -> Result<bool, StorageError> {
        let namespace = self.app.source.namespace(&self.request.container).await?;
        Ok(namespace.is_hierarchical())
    }

    /// `version` with its access control, on a hierarchical namespace, when what read it did
    /// not say it (Get Blob Properties, a listing without permissions): read by listing it, at
    /// its ETag (a version that moved on keeps none, and its copy is refused all the same).
    async fn with_access(&self, mut version: Version) -> Result<Version, StorageError> {
        if version.properties.access.is_none() && self.hierarchical().await? {
            let container = self.app.source.container(&self.request.container)?;
            version.properties.access =
                access_as_listed(&container, &self.request.blob_name, &version.etag).await?;
        }
        Ok(version)
    }

    fn unusable(&self, reason: String) -> BackupError {
        BackupError::Unusable {
            what: format!("{}/{}", self.request.container, self.request.blob_name),
            reason,
        }
    }

    fn source(&self) -> Result<Blob, StorageError> {
        Ok(self
            .app
            .source
            .container(&self.request.container)?
            .blob(&self.request.blob_name))
    }

    fn stamp(&self, version: &Version) -> Stamp {
        Stamp::new(
            &self.request.container,
            &self.request.blob_name,
            &self.etag,
            version.last_modified,
        )
        .with_properties(&version.properties)
    }

    /// The backup's whole metadata (the version's own and its stamp, access control
    /// included), refused as [`BackupError::Unusable`] where it would pass Azure's 8 KiB: a
    /// backup never loses its access control to the limit.
    fn backup_metadata(
        &self,
        version: &Version,
    ) -> Result<std::collections::HashMap<String, String>, BackupError> {
        self.stamp(version)
            .checked_backup_metadata(&version.metadata_or_empty())
            .map_err(|e| self.unusable(e.to_string()))
    }

    fn backup_name(&self, version: &Version) -> Result<String, BackupError> {
        naming::backup_blob_name(&self.request.blob_name, version.last_modified, &self.etag)
            .map_err(|e| self.unusable(e.to_string()))
    }

    fn backup_blob(&self, name: &str) -> Result<Blob, StorageError> {
        Ok(self
            .app
            .backup
            .container(&self.backup_container)?
            .blob(name))
    }

    /// The one place a version is counted backed up, whichever engine copied it.
    fn backed_up(
        &self,
        name: String,
        version: &Version,
        from_snapshot: Option<String>,
        copied: &Copied,
    ) -> BackupOutcome {
        telemetry::record::version_backed_up(&self.request.container, version.content_length);
        info!(
            backup = name,
            from_snapshot,
            md5_mismatch = copied.md5_mismatch,
            tags_refused = copied.tags_refused,
            "version backed up"
        );
        BackupOutcome::BackedUp {
            backup_container: self.backup_container.clone(),
            backup_name: name,
            from_snapshot,
            md5_mismatch: copied.md5_mismatch,
            tags_refused: copied.tags_refused,
        }
    }

    fn already(&self, name: String) -> BackupOutcome {
        info!(backup = name, "version already backed up");
        BackupOutcome::AlreadyBackedUp {
            backup_container: self.backup_container.clone(),
            backup_name: name,
        }
    }

    async fn attempt(&self) -> Result<BackupOutcome, BackupError> {
        let source = self.source()?;
        match source.state().await? {
            Some(state) if state.version.etag == self.etag => {
                self.back_up_current(source, state).await
            }
            Some(state) => {
                let reason = format!(
                    "the blob changed: its ETag is now {}, not {}",
                    state.version.etag, self.etag
                );
                self.back_up_past(reason).await
            }
            None => self.back_up_past("the blob no longer exists".into()).await,
        }
    }

    /// The source still carries the requested version.
    async fn back_up_current(
        &self,
        source: Blob,
        state: BlobState,
    ) -> Result<BackupOutcome, BackupError> {
        let mut version = self.with_access(state.version.clone()).await?;
        let hierarchical = self.hierarchical().await?;
        if state.tag_count > 0
            && self.app.config.list_tags
            && !self.app.source.tags_refused()
            && !hierarchical
        {
            version.properties.tags = match source.tags().await {
                Ok(tags) => Some(tags),
                // Without the right to read tags the version is backed up all the same.
                Err(e) if e.is_tags_refusal() => {
                    warn!(error = %e, "the lake refused to show the blob's tags: backed up without them");
                    self.app.source.refuse_tags();
                    None
                }
                Err(e) => return Err(e.into()),
            };
        }
        let name = self.backup_name(&version)?;
        self.app
            .ensure_backup_container(&self.backup_container)
            .await?;
        let backup = self.backup_blob(&name)?;
        if let Settled::Complete = self.settle(&backup, Some(&version), true).await? {
            return Ok(self.already(name));
        }
        if state.is_archived() {
            return Ok(archived(&state));
        }
        match self.app.config.copy_engine {
            CopyEngine::Direct => self.copy_direct(&backup, name, &version).await,
            CopyEngine::Adf => {
                // Refused before a pipeline copies what could never be stamped.
                self.backup_metadata(&version)?;
                let copy = adf::AdfCopy {
                    source: &source,
                    backup: &backup,
                    name,
                    version: &version,
                };
                self.copy_with_adf(copy).await
            }
        }
    }

    /// The source moved on (or is gone). Settles a backup already under this version's name,
    /// and backs the version up from a snapshot of it when one exists; otherwise it is outdated.
    async fn back_up_past(&self, reason: String) -> Result<BackupOutcome, BackupError> {
        let container = self.app.source.container(&self.request.container)?;
        let snapshot = if self.hierarchical().await? {
            // No snapshots to look for.
            Ok(None)
        } else {
            find_snapshot(&container, &self.request.blob_name, &self.etag).await
        };
        let snapshot = match snapshot {
            Ok(snapshot) => snapshot,
            Err(e) if e.is(ErrorCode::ContainerNotFound) => None,
            Err(e) => return Err(e.into()),
        };
        let existing = match &snapshot {
            Some(version) => Some(self.backup_name(version)?),
            None => self.find_backup_by_name().await?,
        };
        if let Some(name) = &existing {
            let backup = self.backup_blob(name)?;
            match self.settle(&backup, snapshot.as_ref(), false).await? {
                Settled::Complete => return Ok(self.already(name.clone())),
                Settled::Absent => {}
                Settled::Unverifiable => {
                    return Ok(outdated(format!(
                        "{reason}; an unstamped copy under its backup name {name} cannot be \
                         verified (no snapshot of the version, or no MD5 to compare), and is \
                         left alone"
                    )))
                }
            }
        }
        match (snapshot, self.app.config.copy_engine) {
            (Some(version), CopyEngine::Direct) => {
                let name = self.backup_name(&version)?;
                self.app
                    .ensure_backup_container(&self.backup_container)
                    .await?;
                let backup = self.backup_blob(&name)?;
                self.copy_direct(&backup, name, &version).await
            }
            // The pipeline copies a blob by name; it cannot address a snapshot.
            _ => Ok(outdated(reason)),
        }
    }
}

fn outdated(reason: String) -> BackupOutcome {
    info!(
        reason,
        "request outdated; a newer request or the reconciler covers the new version"
    );
    BackupOutcome::Outdated { reason }
}

fn archived(state: &BlobState) -> BackupOutcome {
    let tier = state.access_tier.clone().unwrap_or_default();
    let reason =
        "the blob is in the archive tier; rehydrate it (or wait for its rehydration) and the \
         next reconciliation backs it up"
            .to_owned();
    warn!(tier, reason, "source archived; not backed up");
    BackupOutcome::Archived { tier, reason }
}
