//! Carrying out one blob's restore plan: counting what needs nothing, comparing content where
//! asked, keeping the version the target holds before it is overwritten, and writing the chosen
//! version back — through the worker (small block blobs onto no blob, or every blob of a source
//! that cannot sign a copy source) or server-side from a one-blob SAS — each write conditional
//! on the target being what the plan saw.

use time::format_description::well_known::Rfc3339;
use tracing::{info, warn};

use super::{copy::CopyBack, plan::Candidate, Part, RestoreAction, RestoreCounts, RestoreStep};
use crate::{
    core::{
        etag::normalize_etag,
        message::BackupRequest,
        properties::Access,
        restore_plan::{holds_besides_bytes, Plan, Restorable, VersionSource},
        version::Version,
    },
    engine::backup::{self, BackupOutcome},
    storage::{dfs::AccessNow, ErrorCode, StorageError},
};

/// What one blob counts toward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Counted {
    Restored,
    Unchanged,
    MissingVersion,
    Deleted,
    ChangedSincePlan,
    Error,
}

impl Counted {
    pub(super) fn count(self, counts: &mut RestoreCounts) {
        *match self {
            Counted::Restored => &mut counts.restored,
            Counted::Unchanged => &mut counts.unchanged,
            Counted::MissingVersion => &mut counts.missing_version,
            Counted::Deleted => &mut counts.deleted,
            Counted::ChangedSincePlan => &mut counts.changed_since_plan,
            Counted::Error => &mut counts.errors,
        } += 1;
    }
}

/// What was done for one blob: what it counts toward, and its line (unchanged blobs have none).
pub(super) struct Outcome {
    pub(super) blob: String,
    pub(super) counted: Counted,
    pub(super) action: Option<RestoreAction>,
    /// What it counts toward besides (a directory created, its access control set...).
    pub(super) also: RestoreCounts,
    /// Why its access control was not all set, for the job's failures.
    pub(super) access_failure: Option<String>,
    /// What was left undone that is no failure (a directory's user metadata refused), for
    /// the job's warnings.
    pub(super) warning: Option<String>,
    /// The ETag the target had once this restore wrote it, where known: its access control is
    /// set only while it has it.
    pub(super) written_etag: Option<String>,
}

impl Outcome {
    pub(super) fn line(counted: Counted, action: RestoreAction) -> Self {
        Self {
            blob: action.blob.clone(),
            counted,
            action: Some(action),
            also: RestoreCounts::default(),
            access_failure: None,
            warning: None,
            written_etag: None,
        }
    }

    pub(super) fn unchanged(blob: String) -> Self {
        Self {
            blob,
            counted: Counted::Unchanged,
            action: None,
            also: RestoreCounts::default(),
            access_failure: None,
            warning: None,
            written_etag: None,
        }
    }
}

/// What keeps a version from being written over the target.
enum Obstacle {
    /// The target holds the version's content already (its bytes read and compared).
    SameContent,
    /// The target is a blob of another type, which Azure cannot copy over.
    OtherType(String),
}

impl Part<'_> {
    /// Carries out one path's plan — a directory's ([`Part::restore_directory`]) or a blob's —
    /// then gives it its access control ([`Part::restore_access`]).
    pub(super) async fn act(&self, candidate: Candidate) -> Outcome {
        if candidate.directory {
            return self.restore_directory(candidate).await;
        }
        let access = candidate.access.clone();
        let target_access = candidate
            .target
            .as_ref()
            .and_then(|t| t.properties.access.clone());
        let target_etag = candidate.target.as_ref().map(|t| t.etag.clone());
        let blob = candidate.blob.clone();
        let outcome = self.act_on_blob(candidate).await;
        let written_etag = outcome.written_etag.clone();
        let written = outcome.counted == Counted::Restored;
        let current = if written { None } else { target_access.clone() };
        // A file rewritten keeps the sticky bit its path had; a new one has none.
        // Set only while the path is what the restore saw: listed where it wrote nothing, as
        // written where it wrote (an ingestion's write since is never given the instant's ACL).
        let if_match = match written {
            false => target_etag.as_deref(),
            true => written_etag.as_deref(),
        };
        if written && if_match.is_none() && access.is_some() {
            warn!(blob, "the write answered with no ETag: its access is set unconditionally");
        }
        let now = AccessNow {
            current: current.as_ref(),
            sticky: target_access.as_ref().is_some_and(Access::sticky),
            if_match,
        };
        self.restore_access(outcome, &blob, access.as_ref(), now)
            .await
    }

    /// Carries out one blob's plan: counts what needs nothing, compares content where asked,
    /// then writes the version back.
    async fn act_on_blob(&self, candidate: Candidate) -> Outcome {
        let blob = candidate.blob.clone();
        match &candidate.plan {
            Plan::Unchanged if candidate.written_by_job => {
                let mut restored = action(blob, RestoreStep::Restore, None);
                let etag = candidate.target.as_ref().map(|t| t.etag.clone());
                if let Some(etag) = &etag {
                    restored.version_etag = Some(normalize_etag(etag).to_owned());
                }
                Outcome {
                    written_etag: etag,
                    ..Outcome::line(Counted::Restored, restored)
                }
            }
            Plan::Unchanged => Outcome::unchanged(blob),
            Plan::Deleted => {
                Outcome::line(Counted::Deleted, action(blob, RestoreStep::Deleted, None))
            }
            Plan::MissingVersion => Outcome::line(
                Counted::MissingVersion,
                action(blob, RestoreStep::MissingVersion, None),
            ),
            Plan::Restore(version) => {
                let version = version.as_ref().clone();
                self.restore_version(candidate, version).await
            }
        }
    }

    /// Writes `version` back over (or in place of) the blob the candidate's plan saw, unless its
    /// content proves equal or something stands in the way.
    async fn restore_version(&self, candidate: Candidate, version: Restorable) -> Outcome {
        let blob = candidate.blob.clone();
        let failed = |error: String| {
            let mut failed = action(blob.clone(), RestoreStep::Error, Some(&version));
            failed.error = Some(error);
            Outcome::line(Counted::Error, failed)
        };
        match self.obstacle(&candidate, &version).await {
            Ok(None) => {}
            Ok(Some(Obstacle::SameContent)) => return Outcome::unchanged(blob),
            Ok(Some(Obstacle::OtherType(reason))) => return failed(reason),
            Err(error) => {
                warn!(blob, %error, "could not compare the content");
                return failed(error.to_string());
            }
        }
        let restored = |step| action(blob.clone(), step, Some(&version));
        if self.options.dry_run {
            return Outcome::line(Counted::Restored, restored(RestoreStep::Restore));
        }
        let target = candidate.target.as_ref();
        match self
            .copy_back(&blob, &version, target, candidate.current_kept)
            .await
        {
            Ok(CopyBack::Written(etag)) => Outcome {
                written_etag: etag,
                ..Outcome::line(Counted::Restored, restored(RestoreStep::Restore))
            },
            Ok(CopyBack::ChangedSincePlan) => {
                info!(blob, "written to since the plan was made; left alone");
                Outcome::line(
                    Counted::ChangedSincePlan,
                    restored(RestoreStep::ChangedSincePlan),
                )
            }
            Err(error) => {
                warn!(blob, %error, "restoring the blob failed");
                failed(error.to_string())
            }
        }
    }

    /// What keeps `version` from being written over the target: its content proved equal
    /// (where MD5s cannot tell, the bytes are read when asked), or a target of another type.
    async fn obstacle(
        &self,
        candidate: &Candidate,
        version: &Restorable,
    ) -> Result<Option<Obstacle>, StorageError> {
        let target = candidate.target.as_ref();
        // Where MD5s cannot prove the bytes equal, reading them can; the rest must match too.
        let unprovable = target.is_some_and(|t| {
            (t.content_md5.is_none() || version.version.content_md5.is_none())
                && holds_besides_bytes(t, &version.version)
        });
        if self.options.verify_content
            && unprovable
            && self.same_bytes(&candidate.blob, version).await?
        {
            return Ok(Some(Obstacle::SameContent));
        }
        let ours = version.version.properties.blob_type;
        Ok(target
            .map(|t| t.properties.blob_type)
            .filter(|theirs| *theirs != ours)
            .map(|theirs| {
                // Azure copies onto a blob of the same type only (409 InvalidBlobType); restore
                // never deletes, so it says what stands in the way.
                Obstacle::OtherType(format!(
                    "the target is a {}, the version a {}: Azure cannot copy over a blob of \
                     another type; delete the target (soft delete keeps it) or restore to \
                     another container",
                    theirs.as_str(),
                    ours.as_str()
                ))
            }))
    }

    /// Keeps the version `target` holds now before the restore overwrites it. In the lake's
    /// account it is backed up through the backup engine, with its usual stamp (a later restore
    /// as of just before this one brings it back); in another account, which no backup covers,
    /// it is snapshotted — or, that account hierarchical (no snapshots), not overwritten at all. `Some(ChangedSincePlan)` when it moved on since the plan (nothing is
    /// written then); an error when it cannot be kept, and the blob is left as it is.
    pub(super) async fn keep_current(
        &self,
        blob: &str,
        target: &Version,
    ) -> Result<Option<CopyBack>, StorageError> {
        let left_alone = |detail: String| {
            StorageError::other(
                format!("keeping the version {blob} holds now before the restore overwrites it"),
                format!("{detail}; the blob was left as it is"),
            )
        };
        if !self.target_in_lake_account && self.target_hierarchical {
            // An HNS account takes no snapshots (Azure refuses them), and no backup covers
            // another account: nothing can keep the version, so it is not overwritten.
            return Err(left_alone(
                "the target account has a hierarchical namespace, where no snapshot can keep \
                 the version it holds, and no backup covers another account; restore into a \
                 container or prefix that does not hold it, or move it away first"
                    .to_owned(),
            ));
        }
        if !self.target_in_lake_account {
            let snapshot = self
                .target
                .blob(blob)
                .take_snapshot(Some(&target.etag))
                .await;
            return match snapshot {
                Ok(_) => Ok(None),
                Err(e) if e.is(ErrorCode::ConditionNotMet) => Ok(Some(CopyBack::ChangedSincePlan)),
                Err(e) => Err(left_alone(e.to_string())),
            };
        }
        let request = BackupRequest::new(self.target_name, blob, &target.etag);
        match backup::back_up(self.app, &request).await {
            Ok(BackupOutcome::BackedUp { .. } | BackupOutcome::AlreadyBackedUp { .. }) => {
                info!(
                    blob,
                    "the version it held is backed up before the restore overwrites it"
                );
                Ok(None)
            }
            Ok(BackupOutcome::Outdated { .. }) => Ok(Some(CopyBack::ChangedSincePlan)),
            Ok(other) => Err(left_alone(format!("it could not be backed up: {other:?}"))),
            Err(e) => Err(left_alone(format!("it could not be backed up: {e}"))),
        }
    }
}

fn action(blob: String, step: RestoreStep, version: Option<&Restorable>) -> RestoreAction {
    RestoreAction {
        blob,
        action: step,
        version_etag: version.map(|r| r.version.etag.clone()),
        version_last_modified: version.and_then(|r| r.version.last_modified.format(&Rfc3339).ok()),
        from: version.and_then(|v| match &v.source {
            VersionSource::Base => None,
            VersionSource::Snapshot(id) => Some(format!("snapshot {id}")),
            VersionSource::Backup { name, .. } => Some(format!("backup {name}")),
        }),
        error: None,
    }
}
