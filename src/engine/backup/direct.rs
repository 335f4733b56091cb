//! The direct copy engine: one version copied by this worker or by the service, with its stamp
//! in the same request (or the last one of an append or page blob written through the worker),
//! created only where nothing stands.

use super::*;

impl VersionBackup<'_> {
    /// Copies exactly this version with its stamp: through this worker (reads pinned to the
    /// version's ETag, in bounded chunks) for a block blob up to `COPY_THROUGH_WORKER_MAX_BYTES`
    /// and for every blob of a lake connected by SAS (which cannot sign a one-blob copy source,
    /// and whose own SAS must never be recorded as one); else server-side — synchronous for
    /// block blobs up to 256 MiB, asynchronous for every other type and size (the stamp still
    /// travels with the request; the backup counts once its copy status is `success`). The
    /// backup keeps the version's type, content headers, Content-MD5 as stored, metadata and
    /// tags, and is created only where none stands (`If-None-Match: *`).
    pub(super) async fn copy_direct(
        &self,
        backup: &Blob,
        name: String,
        version: &Version,
    ) -> Result<BackupOutcome, BackupError> {
        let attributes = CopyAttributes {
            metadata: self.backup_metadata(version)?,
            tags: version.properties.tags.clone(),
            tier: None,
            stored_md5: version.content_md5.clone(),
            record_md5: true,
        };
        let blob_type = version.properties.blob_type;
        let small_block = blob_type == BlobType::Block
            && version.content_length <= self.app.config.copy_through_max_bytes;
        if small_block || !self.app.source.signs_copy_sources() {
            let mut source = self.source()?;
            if let Some(snapshot) = &version.snapshot {
                source = source.at_snapshot(snapshot)?;
            }
            let read = SourceVersion {
                etag: &self.etag,
                length: version.content_length,
                blob_type,
            };
            let copied =
                copy_version_through(&source, backup, read, &attributes, Overwrite::Never).await;
            return match copied {
                Ok(copied) => Ok(self.backed_up(name, version, version.snapshot.clone(), &copied)),
                Err(e) if e.is(ErrorCode::BlobArchived) => Ok(archived_refused(&e)),
                Err(e) => Err(e.into()),
            };
        }
        let source_url = self
            .app
            .source
            .readable_blob_url(
                &self.request.container,
                &self.request.blob_name,
                version.snapshot.as_deref(),
                self.app.copy_source_expiry(),
            )
            .await?;
        let path = ServerCopy::for_source(blob_type, version.content_length);
        let started = copy_version(backup, &source_url, &self.etag, &attributes, path).await;
        match started {
            Ok(copied) if copied.state == CopyStart::Done => {
                Ok(self.backed_up(name, version, version.snapshot.clone(), &copied))
            }
            Ok(copied) => self.copy_finished(backup, name, version, &copied).await,
            Err(e) if e.is(ErrorCode::BlobArchived) => Ok(archived_refused(&e)),
            Err(e) => Err(e.into()),
        }
    }

    /// An asynchronous copy waited for: counted once its status is `success`; still pending
    /// after `COPY_TIMEOUT_SECONDS`, an error (it goes on and counts when complete); failed,
    /// its result removed.
    async fn copy_finished(
        &self,
        backup: &Blob,
        name: String,
        version: &Version,
        copied: &Copied,
    ) -> Result<BackupOutcome, BackupError> {
        let what = backup.what();
        match self.wait_for_copy(backup).await? {
            Some(state) if state.version.copy_status == Some(CopyStatus::Success) => {
                Ok(self.backed_up(name, version, version.snapshot.clone(), copied))
            }
            Some(state) if state.version.copy_status == Some(CopyStatus::Pending) => {
                Err(BackupError::Copy {
                    what,
                    detail: format!(
                        "still pending after {}s (COPY_TIMEOUT_SECONDS); it goes on \
                         server-side and counts once it is complete",
                        self.app.config.copy_timeout.as_secs()
                    ),
                })
            }
            Some(state) => {
                self.remove(backup, &state, "a failed copy").await?;
                Err(BackupError::Copy {
                    what,
                    detail: format!(
                        "the copy ended {:?}: {}; its result was removed",
                        state.version.copy_status,
                        state.copy_status_description.unwrap_or_default()
                    ),
                })
            }
            None => Err(BackupError::Copy {
                what,
                detail: "the copy's destination vanished".into(),
            }),
        }
    }
}
