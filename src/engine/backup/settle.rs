//! What stands under a version's backup name, settled before anything is written there: a copy
//! still pending is waited for, a failed one or one that holds another version is removed
//! (`If-Match` on its own ETag), an unstamped one that provably holds this version is stamped,
//! and one nothing can judge is left alone and counted by nothing.

use super::*;

/// What an existing blob under a version's backup name turned out to be.
pub(super) enum Settled {
    /// Complete and stamped as that version.
    Complete,
    Absent,
    /// Unstamped, and nothing can tell which version it holds: left alone, counted by nothing.
    Unverifiable,
}

/// Whether a blob holds a given version, judged by what the service records.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Judgement {
    Same,
    Different,
    Unknown,
}

/// `source_unchanged`: the source has carried the version's ETag from before the copy until now,
/// so whatever landed under the version's name was read from that version.
pub(super) fn judge(landed: &Version, version: &Version, source_unchanged: bool) -> Judgement {
    if landed.content_length != version.content_length {
        return Judgement::Different;
    }
    match (&landed.content_md5, &version.content_md5) {
        (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => {
            if a == b {
                Judgement::Same
            } else {
                Judgement::Different
            }
        }
        _ if source_unchanged => Judgement::Same,
        _ => Judgement::Unknown,
    }
}

impl VersionBackup<'_> {
    /// A backup of this version whose name is not known from the source any more (no snapshot
    /// of it): listed by the name's prefix, matched by what the name says.
    pub(super) async fn find_backup_by_name(&self) -> Result<Option<String>, StorageError> {
        use futures::TryStreamExt;
        let vault = self.app.backup.container(&self.backup_container)?;
        let prefix = naming::backup_name_prefix(&self.request.blob_name);
        let pages = list_backups(&vault, Some(&prefix))?;
        futures::pin_mut!(pages);
        loop {
            match pages.try_next().await {
                Ok(Some(page)) => {
                    if let Some(found) = page.into_iter().find(|b| {
                        naming::parse_backup_blob_name(&b.name).is_ok_and(|p| {
                            p.source_name == self.request.blob_name && p.etag == self.etag
                        })
                    }) {
                        return Ok(Some(found.name));
                    }
                }
                Ok(None) => return Ok(None),
                Err(e) if e.is(ErrorCode::ContainerNotFound) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// The copy destination's state once its copy is no longer pending, or
    /// `COPY_TIMEOUT_SECONDS` has passed.
    pub(super) async fn wait_for_copy(
        &self,
        backup: &Blob,
    ) -> Result<Option<BlobState>, StorageError> {
        let config = &self.app.config;
        wait_for_copy(backup, config.copy_timeout, config.copy_poll_interval).await
    }

    /// What stands under a version's backup name now: a copy still pending is waited for; a
    /// failed one, or one that holds another version, is removed (If-Match on its own ETag);
    /// an unstamped one that holds this version is stamped. `version` is what to judge by
    /// (`None`: only a stamp proves anything); `source_unchanged` as for [`judge`].
    pub(super) async fn settle(
        &self,
        backup: &Blob,
        version: Option<&Version>,
        source_unchanged: bool,
    ) -> Result<Settled, BackupError> {
        let Some(existing) = self.wait_for_copy(backup).await? else {
            return Ok(Settled::Absent);
        };
        if existing.version.copy_status == Some(CopyStatus::Pending) {
            return Err(BackupError::Copy {
                what: backup.what(),
                detail: "a copy to it is still pending".into(),
            });
        }
        if !existing.version.copy_complete() {
            self.remove(backup, &existing, "an incomplete copy").await?;
            return Ok(Settled::Absent);
        }
        if existing.version.stamped_etag() == Some(self.etag.as_str()) {
            return Ok(Settled::Complete);
        }
        // An append or page blob this worker was still writing, or left half written: its
        // length and MD5 property are set when it is created, so nothing else tells.
        if stamp::is_incomplete(existing.metadata()) {
            self.remove(backup, &existing, "an incomplete copy through the worker")
                .await?;
            return Ok(Settled::Absent);
        }
        // Unstamped: landed by ADF, or by an earlier release between its copy and its stamp.
        let Some(version) = version else {
            return Ok(Settled::Unverifiable);
        };
        match judge(&existing.version, version, source_unchanged) {
            Judgement::Same => {
                self.write_stamp(backup, &existing, version).await?;
                Ok(Settled::Complete)
            }
            Judgement::Different => {
                self.remove(backup, &existing, "a copy of another version")
                    .await?;
                Ok(Settled::Absent)
            }
            Judgement::Unknown => Ok(Settled::Unverifiable),
        }
    }

    pub(super) async fn remove(
        &self,
        backup: &Blob,
        existing: &BlobState,
        why: &str,
    ) -> Result<(), StorageError> {
        warn!(
            backup = backup.what(),
            status = ?existing.version.copy_status,
            length = existing.version.content_length,
            why,
            "removing a backup blob that is not this version"
        );
        // Deleted as the pruning identity (`PRUNE_STORAGE` when set, else the backup
        // connection's): a writer without delete rights (deploy/backup-writer-role.json) could
        // never clear the name, and the version would never be backed up. Conditional on the
        // ETag judged, so only this blob, never a backup that replaced it, goes.
        let doomed = self
            .app
            .pruner()
            .container(backup.container())?
            .blob(backup.name());
        match doomed.delete(Some(existing.etag())).await {
            Ok(()) => Ok(()),
            // Changed or removed meanwhile by another invocation: judged again next time.
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.context(format!("removing {why} at {}", backup.what()))),
        }
    }

    /// Stamps a backup judged to hold `version`, only if it is still the blob that was judged.
    pub(super) async fn write_stamp(
        &self,
        backup: &Blob,
        judged: &BlobState,
        version: &Version,
    ) -> Result<(), StorageError> {
        let metadata = self
            .stamp(version)
            .checked_backup_metadata(&version.metadata_or_empty())
            .map_err(|e| {
                StorageError::other(format!("stamping {}", backup.what()), e.to_string())
            })?;
        backup
            .set_metadata(&metadata, judged.etag())
            .await
            .map_err(|e| e.context(format!("stamping {}", backup.what())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn version(length: u64, md5: Option<&[u8]>) -> Version {
        Version {
            content_length: length,
            content_md5: md5.map(<[u8]>::to_vec),
            ..crate::core::version::sample("raw/a.csv", "0xA")
        }
    }

    #[test]
    pub(super) fn a_landed_copy_is_judged_by_length_and_a_real_md5_only() {
        let md5: &[u8] = b"0123456789abcdef";
        let other: &[u8] = b"fedcba9876543210";
        let landed = version;
        assert_eq!(
            judge(&landed(3, None), &version(4, None), true),
            Judgement::Different
        );
        assert_eq!(
            judge(&landed(3, Some(md5)), &version(3, Some(md5)), false),
            Judgement::Same
        );
        assert_eq!(
            judge(&landed(3, Some(other)), &version(3, Some(md5)), true),
            Judgement::Different
        );
        // Same length, no digest: only an unchanged source vouches for it.
        assert_eq!(
            judge(&landed(3, None), &version(3, Some(md5)), false),
            Judgement::Unknown
        );
        assert_eq!(
            judge(&landed(3, Some(b"")), &version(3, Some(b"")), false),
            Judgement::Unknown
        );
        assert_eq!(
            judge(&landed(3, None), &version(3, None), true),
            Judgement::Same
        );
    }
}
