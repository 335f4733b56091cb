//! Writing one version of a restore onto its target: through this worker (small block blobs
//! onto no blob, and every blob of a source that cannot sign a copy source), or server-side from
//! a one-blob read SAS and waited for; each write conditional on the target being what the plan
//! saw, and a conflict found after a lost answer told apart from someone else's write.

use time::OffsetDateTime;
use tracing::warn;
use url::Url;

use super::Part;
use crate::{
    core::{
        properties::BlobType,
        restore_plan::{holds_besides_bytes, plan, Plan, Restorable, VersionSource},
        version::{CopyStatus, Version},
    },
    storage::{
        copy::{
            copy_server_side, copy_version_through, wait_for_copy, CopyAttributes, CopyStart,
            Overwrite, ServerCopy, SourceVersion,
        },
        Blob, ErrorCode, StorageAccount, StorageError,
    },
};

/// What writing a version back came to.
pub(super) enum CopyBack {
    /// Written: the target's ETag as this write left it, where known (the access control the
    /// restore sets after is pinned to it).
    Written(Option<String>),
    /// The target blob is no longer what the plan saw: nothing was written.
    ChangedSincePlan,
}

impl Part<'_> {
    /// The blob a version is read from.
    pub(super) fn source_blob(
        &self,
        blob: &str,
        restorable: &Restorable,
    ) -> Result<Blob, StorageError> {
        match &restorable.source {
            VersionSource::Base => Ok(self.lake.blob(blob)),
            VersionSource::Snapshot(id) => self.lake.blob(blob).at_snapshot(id),
            VersionSource::Backup { name, .. } => {
                Ok(self.app.vault_of(&self.shard.container)?.blob(name))
            }
        }
    }

    /// Whether the target blob holds exactly the bytes of `version`: both read in bounded
    /// chunks side by side (the version's pinned to its ETag) and compared as they come.
    pub(super) async fn same_bytes(
        &self,
        blob: &str,
        version: &Restorable,
    ) -> Result<bool, StorageError> {
        if version.source == VersionSource::Base && self.in_place {
            return Ok(true);
        }
        let source = self.source_blob(blob, version)?;
        // Pinned to the version (a snapshot never changes).
        let pinned = match &version.source {
            VersionSource::Backup { etag, .. } => Some(etag.as_str()),
            VersionSource::Base => Some(version.version.etag.as_str()),
            VersionSource::Snapshot(_) => None,
        };
        let current = self.target.blob(blob);
        let (theirs, ours) =
            futures::try_join!(current.read_chunks(None), source.read_chunks(pinned))?;
        theirs.same_bytes(ours).await
    }

    /// The account a version is read from.
    fn source_account(&self, restorable: &Restorable) -> &StorageAccount {
        match restorable.source {
            VersionSource::Backup { .. } => &self.app.backup,
            VersionSource::Base | VersionSource::Snapshot(_) => &self.app.source,
        }
    }

    /// Writes the chosen version onto the target blob, conditional on the target being what the
    /// plan saw (`If-Match` on its ETag, or `If-None-Match: *` for a blob that was absent), so a
    /// write by ingestion since is never overwritten. Small block blobs go through this worker
    /// (a read pinned to the version's ETag, then one write carrying metadata, content headers,
    /// Content-MD5 as stored, tags and tier); others are copied server-side from a one-blob SAS
    /// and waited to completion. Either way the target gets the version's user metadata, never
    /// a backup's stamp.
    pub(super) async fn copy_back(
        &self,
        blob: &str,
        restorable: &Restorable,
        planned_target: Option<&Version>,
        current_kept: bool,
    ) -> Result<CopyBack, StorageError> {
        let version = &restorable.version;
        if restorable.source == VersionSource::Base && self.in_place {
            return Ok(CopyBack::Written(planned_target.map(|t| t.etag.clone())));
        }
        let planned_against = planned_target.map(|t| t.etag.as_str());
        let destination = self.target.blob(blob);
        let overwrite = match planned_against {
            Some(etag) => Overwrite::IfMatch(etag),
            None => Overwrite::Never,
        };
        // A restore never destroys a version: the one it overwrites (written after the last
        // pass, or by whatever the restore undoes) is kept first unless a backup holds it.
        if let (Some(target), false) = (planned_target, current_kept) {
            if let Some(changed) = self.keep_current(blob, target).await? {
                return Ok(changed);
            }
        }
        let attributes = attributes_of(version);
        // Small ones through the worker only onto no blob: its block list (for a version whose
        // stored MD5 is not its bytes') must not meet blocks another writer staged on a live
        // blob. A source that cannot sign a copy source leaves no choice: its block list's
        // commit, conditional on the planned ETag, then discards any such blocks.
        let through_worker = !self.source_account(restorable).signs_copy_sources()
            || (planned_against.is_none()
                && version.properties.blob_type == BlobType::Block
                && version.content_length <= self.app.config.copy_through_max_bytes);
        match through_worker {
            true => {
                self.copy_through(blob, restorable, &destination, &attributes, overwrite)
                    .await
            }
            false => {
                self.copy_server_side(blob, restorable, &destination, &attributes, overwrite)
                    .await
            }
        }
    }

    /// The version read by this worker, pinned to its ETag, and written in one conditional
    /// write (or a block list and its commit).
    async fn copy_through(
        &self,
        blob: &str,
        restorable: &Restorable,
        destination: &Blob,
        attributes: &CopyAttributes,
        overwrite: Overwrite<'_>,
    ) -> Result<CopyBack, StorageError> {
        let version = &restorable.version;
        let source = self.source_blob(blob, restorable)?;
        let read = SourceVersion {
            etag: pinned_etag(restorable).unwrap_or(&version.etag),
            length: version.content_length,
            blob_type: version.properties.blob_type,
        };
        let copied = copy_version_through(&source, destination, read, attributes, overwrite).await;
        match copied {
            Ok(copied) => {
                if copied.tags_refused {
                    warn!(
                        blob,
                        "the target refused the version's tags: restored without them"
                    );
                }
                Ok(CopyBack::Written(copied.etag))
            }
            Err(e) if e.is(ErrorCode::ConditionNotMet) || e.is(ErrorCode::BlobAlreadyExists) => {
                // The source moved on (its read is pinned), or the target was written: our own
                // write, whose answer was lost and which the retry then found, or someone
                // else's. What the target holds now tells them apart.
                let Some(now) = destination.state().await? else {
                    // No target, yet the create-only write was refused: a blob created and
                    // deleted since; or a 412 that only the pinned source read can give.
                    if e.is(ErrorCode::BlobAlreadyExists) {
                        return Ok(CopyBack::ChangedSincePlan);
                    }
                    return Err(e.context(format!(
                        "the version of {blob} changed at its source since the plan"
                    )));
                };
                let holds = plan(Some(restorable), Some(&now.version)) == Plan::Unchanged
                    || (holds_besides_bytes(&now.version, version)
                        && self.same_bytes(blob, restorable).await?);
                Ok(match holds {
                    true => CopyBack::Written(Some(now.version.etag)),
                    false => CopyBack::ChangedSincePlan,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The version copied by the service from a one-blob SAS, then waited for and checked.
    async fn copy_server_side(
        &self,
        blob: &str,
        restorable: &Restorable,
        destination: &Blob,
        attributes: &CopyAttributes,
        overwrite: Overwrite<'_>,
    ) -> Result<CopyBack, StorageError> {
        let version = &restorable.version;
        let source_url = self.source_url(blob, restorable).await?;
        // Onto a live blob, the asynchronous Copy Blob, which carries every property of the
        // version as stored; onto no blob, the synchronous one where it can.
        let path = match overwrite {
            Overwrite::IfMatch(_) => ServerCopy::Async,
            Overwrite::Never => {
                ServerCopy::for_source(version.properties.blob_type, version.content_length)
            }
        };
        let pinned = pinned_etag(restorable);
        let mut answered = Answered::default();
        match copy_server_side(
            destination,
            &source_url,
            pinned,
            attributes,
            path,
            overwrite,
        )
        .await
        {
            Ok(copied) => {
                if copied.tags_refused {
                    warn!(
                        blob,
                        "the target refused the version's tags: restored without them"
                    );
                }
                answered = Answered {
                    done: copied.state == CopyStart::Done,
                    etag: copied.etag,
                    copy_id: copied.copy_id,
                };
            }
            Err(e) if e.is(ErrorCode::ConditionNotMet) || e.is(ErrorCode::BlobAlreadyExists) => {
                // Our own copy, whose answer was lost and which the retry then found, looks the
                // same as a write by someone else: the copy's source tells them apart.
                let ours = destination
                    .probe()
                    .await?
                    .is_some_and(|state| state.copied_from(&source_url));
                if !ours {
                    return Ok(CopyBack::ChangedSincePlan);
                }
            }
            Err(e) => return Err(e),
        }
        // Copy Blob copies the source's metadata when the request names none: a version without
        // user metadata is cleared after the copy, so no stamp key stays behind.
        let clear_metadata = attributes.metadata.is_empty();
        self.copied(destination, &source_url, version, clear_metadata, answered)
            .await
    }

    /// A one-blob read SAS URL of where the version is read from.
    async fn source_url(&self, blob: &str, restorable: &Restorable) -> Result<Url, StorageError> {
        let (app, container) = (self.app, self.shard.container.as_str());
        let expiry =
            OffsetDateTime::now_utc() + app.config.copy_timeout + time::Duration::minutes(15);
        match &restorable.source {
            VersionSource::Snapshot(id) => {
                app.source
                    .readable_blob_url(container, blob, Some(id), expiry)
                    .await
            }
            VersionSource::Backup { name, .. } => {
                let backup_container = app.backup_container_of(container)?;
                app.backup
                    .readable_blob_url(&backup_container, name, None, expiry)
                    .await
            }
            VersionSource::Base => {
                app.source
                    .readable_blob_url(container, blob, None, expiry)
                    .await
            }
        }
    }

    /// Waits for a server-side copy to end and checks what landed: the version's length, and
    /// no bookkeeping metadata left behind where the version had none. `answered`: what the
    /// copy request answered with (nothing where its answer was lost).
    async fn copied(
        &self,
        destination: &Blob,
        source_url: &Url,
        version: &Version,
        clear_metadata: bool,
        answered: Answered,
    ) -> Result<CopyBack, StorageError> {
        let state = self.copy_ended(destination, version).await?;
        let what = destination.what();
        // Another copy landed since ours (its id is not the one ours answered with): the
        // blob is someone else's now.
        if !state.is_copy(answered.copy_id.as_deref()) {
            return Ok(CopyBack::ChangedSincePlan);
        }
        // The copy as it ended is ours while it still says it is this copy's destination (a
        // write since clears the copy's properties; Set Blob Metadata or Properties by anyone
        // keeps them, and moves the ETag: no longer the one the copy answered with, once it
        // is known): its ETag is the version written.
        let ours = match answered.etag.as_deref() {
            // Done when it answered: the ETag it answered with is the version written, any
            // other a write since.
            Some(etag) if answered.done => match etag == state.etag() {
                true => Some(etag.to_owned()),
                false => return Ok(CopyBack::ChangedSincePlan),
            },
            _ => state
                .copied_from(source_url)
                .then(|| state.etag().to_owned()),
        };
        if !clear_metadata || state.metadata().is_empty() {
            return Ok(CopyBack::Written(ours));
        }
        let cleared = destination
            .set_metadata_etag(&Default::default(), state.etag())
            .await
            .map_err(|e| e.context(format!("clearing the bookkeeping metadata of {what}")));
        match cleared {
            Ok(etag) => Ok(CopyBack::Written(etag)),
            // Cleared by a try whose answer was lost, or written by someone since: the blob as
            // it is now says which.
            Err(e) if e.is(ErrorCode::ConditionNotMet) => match destination.probe().await? {
                Some(now)
                    if now.metadata().is_empty()
                        && now.copied_from(source_url)
                        && now.is_copy(answered.copy_id.as_deref()) =>
                {
                    Ok(CopyBack::Written(Some(now.etag().to_owned())))
                }
                _ => Ok(CopyBack::ChangedSincePlan),
            },
            Err(e) => Err(e),
        }
    }

    /// Waits for a server-side copy to `destination` to end, and checks that it ended well with
    /// the version's length.
    async fn copy_ended(
        &self,
        destination: &Blob,
        version: &Version,
    ) -> Result<crate::storage::BlobState, StorageError> {
        let config = &self.app.config;
        let what = destination.what();
        let done =
            wait_for_copy(destination, config.copy_timeout, config.copy_poll_interval).await?;
        let failed = |detail: String| StorageError::other(format!("restoring {what}"), detail);
        let state = match done {
            Some(state)
                if matches!(state.version.copy_status, Some(CopyStatus::Success) | None) =>
            {
                state
            }
            Some(state) => {
                return Err(failed(format!(
                    "the copy ended {:?}: {}",
                    state.version.copy_status,
                    state.copy_status_description.unwrap_or_default()
                )))
            }
            None => {
                return Err(failed(
                    "the restored blob does not exist after the copy".into(),
                ))
            }
        };
        if state.version.content_length != version.content_length {
            return Err(failed(format!(
                "the restored blob has {} bytes, the version {}",
                state.version.content_length, version.content_length
            )));
        }
        Ok(state)
    }
}

/// What a restore writes with a version besides its bytes: its user metadata, Content-MD5 as
/// stored, tags, and a block blob's tier.
fn attributes_of(version: &Version) -> CopyAttributes {
    let properties = &version.properties;
    CopyAttributes {
        metadata: version.metadata_or_empty(),
        stored_md5: version.content_md5.clone(),
        record_md5: false,
        tags: properties.tags.clone(),
        // Tiers are a block blob's.
        tier: properties
            .access_tier
            .clone()
            .filter(|_| properties.blob_type == BlobType::Block),
    }
}

/// The ETag a read of the version is pinned to (a snapshot never changes: none).
fn pinned_etag(restorable: &Restorable) -> Option<&str> {
    match &restorable.source {
        VersionSource::Base => Some(restorable.version.etag.as_str()),
        VersionSource::Backup { etag, .. } => Some(etag.as_str()),
        VersionSource::Snapshot(_) => None,
    }
}

/// What a server-side copy request answered with (nothing, where its answer was lost).
#[derive(Debug, Default)]
struct Answered {
    /// The copy was done when it answered (a synchronous copy, or a quick one).
    done: bool,
    /// The destination's ETag it answered with: the version written when `done`, else the
    /// empty blob's the copy started on.
    etag: Option<String>,
    /// The copy's id (`x-ms-copy-id`).
    copy_id: Option<String>,
}
