//! The ADF path of the backup engine: the pipeline copies the version by name while a lease
//! (renewed, released on every path) keeps the source from changing; what landed is then judged
//! against the version before it is stamped. A lease held by someone else is usually another
//! invocation copying the same version: the request waits a little, then goes back on the
//! queue rather than fail toward poison.

use tracing::info;

use super::{
    outdated,
    settle::{judge, Judgement},
    BackupError, BackupOutcome, VersionBackup, MAX_DEFERRALS,
};
use crate::{
    adf::PipelineParameters,
    core::version::Version,
    storage::{copy::Copied, lease::HeldLease, Blob, ErrorCode},
};

/// One version's copy by the pipeline: from the lake's blob to its backup under `name`.
pub(super) struct AdfCopy<'a> {
    pub source: &'a Blob,
    pub backup: &'a Blob,
    pub name: String,
    pub version: &'a Version,
}

enum Leased {
    Held(HeldLease),
    Done(BackupOutcome),
}

impl VersionBackup<'_> {
    /// Triggers the pipeline and follows its run, holding a lease on the source throughout when
    /// lease mode is on (released on every path; a lost lease abandons and cancels the run).
    /// What landed is then judged against the version before it is stamped.
    pub(super) async fn copy_with_adf(
        &self,
        copy: AdfCopy<'_>,
    ) -> Result<BackupOutcome, BackupError> {
        let (source, backup) = (copy.source, copy.backup);
        let Some(adf) = &self.app.adf else {
            return Err(BackupError::Copy {
                what: backup.what(),
                detail: "the ADF engine is selected but not configured".into(),
            });
        };
        let lease = if self.app.config.use_lease {
            match self.lease_source(source, backup, &copy.name).await? {
                Leased::Held(lease) => Some(lease),
                Leased::Done(outcome) => return Ok(outcome),
            }
        } else {
            None
        };
        let parameters = PipelineParameters {
            container: self.request.container.clone(),
            container_backup: self.backup_container.clone(),
            blob_name: self.request.blob_name.clone(),
            blob_name_backup: copy.name.clone(),
        };
        let run = async {
            let run_id = adf.create_run(&parameters).await?;
            match &lease {
                Some(lease) => adf.follow_run(&run_id, lease.lost()).await,
                None => adf.follow_run(&run_id, std::future::pending()).await,
            }
        }
        .await;
        // Judged and stamped while the lease still pins the source, so that a duplicate request
        // waiting for the lease finds the backup complete.
        let judged = match run {
            Ok(()) => self.judge_adf_copy(copy).await,
            Err(e) => Err(e.into()),
        };
        let released = match lease {
            Some(lease) => lease.release().await,
            None => Ok(()),
        };
        let outcome = judged?;
        released?;
        Ok(outcome)
    }

    async fn judge_adf_copy(&self, copy: AdfCopy<'_>) -> Result<BackupOutcome, BackupError> {
        let AdfCopy {
            source,
            backup,
            name,
            version,
        } = copy;
        let what = backup.what();
        // ETags never repeat: a source that carries the version's ETag now carried it throughout.
        let now = source.probe().await?;
        let source_unchanged = now.as_ref().is_some_and(|s| s.etag() == self.etag);
        let Some(landed) = backup.probe().await? else {
            return Err(BackupError::Copy {
                what,
                detail: "the pipeline run succeeded but the backup does not exist".into(),
            });
        };
        match judge(&landed.version, version, source_unchanged) {
            Judgement::Same => {
                self.write_stamp(backup, &landed, version).await?;
                Ok(self.backed_up(name, version, None, &Copied::default()))
            }
            Judgement::Different if source_unchanged => {
                self.remove(backup, &landed, "an incomplete copy").await?;
                Err(BackupError::Copy {
                    what,
                    detail: format!(
                        "it has {} bytes, the source version {}; it was removed",
                        landed.version.content_length, version.content_length
                    ),
                })
            }
            Judgement::Different => {
                self.remove(backup, &landed, "a copy of a newer version")
                    .await?;
                Ok(outdated(
                    "the blob changed while the pipeline copied it; its copy held the newer \
                     version and was removed"
                        .into(),
                ))
            }
            Judgement::Unknown => Ok(outdated(format!(
                "the blob changed while the pipeline copied it, and without an MD5 the copy at \
                 {what} cannot be verified: it is left unstamped, so nothing counts it"
            ))),
        }
    }

    /// Leases the source for the run. A lease held by someone else is usually another invocation
    /// copying the same version: wait for it a little, then put the request back on the queue
    /// rather than fail toward poison.
    async fn lease_source(
        &self,
        source: &Blob,
        backup: &Blob,
        name: &str,
    ) -> Result<Leased, BackupError> {
        let deadline = tokio::time::Instant::now() + self.app.config.lease_wait;
        let mut waited = false;
        loop {
            // After a wait: the holder may have been another invocation that finished this very
            // version (it stamps before it releases).
            if waited && self.stamped_backup_exists(backup).await? {
                return Ok(Leased::Done(self.already(name.to_owned())));
            }
            match HeldLease::acquire(source, &self.etag).await {
                Ok(lease) => return Ok(Leased::Held(lease)),
                Err(e) if e.is(ErrorCode::LeaseAlreadyPresent) => {}
                Err(e) => return Err(e.into()),
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            waited = true;
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        let deferrals = self.request.deferrals + 1;
        if deferrals > MAX_DEFERRALS {
            return Err(BackupError::Copy {
                what: source.what(),
                detail: format!(
                    "the source has been leased by someone else through {MAX_DEFERRALS} deferrals"
                ),
            });
        }
        let mut again = self.request.clone();
        again.deferrals = deferrals;
        self.app
            .defer_backup(&again, self.app.config.lease_wait)
            .await?;
        let reason = format!(
            "the source is leased by another invocation (usually one copying this version); \
             the request was put back on the queue for {}s",
            self.app.config.lease_wait.as_secs()
        );
        info!(deferrals, "{reason}");
        Ok(Leased::Done(BackupOutcome::Deferred { reason, deferrals }))
    }

    async fn stamped_backup_exists(&self, backup: &Blob) -> Result<bool, BackupError> {
        Ok(backup
            .probe()
            .await?
            .is_some_and(|state| state.version.stamped_etag() == Some(self.etag.as_str())))
    }
}
