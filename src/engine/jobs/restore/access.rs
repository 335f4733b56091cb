//! What a restore does for a hierarchical namespace (ADLS Gen2): a directory version created
//! as a directory (empty ones included; Path - Create, create-only), and every path given its
//! exact owner, group, permissions and ACL — default ACL included — from its backup's stamp,
//! after its own write.
//!
//! Why "after its own write" is "ACLs last": default-ACL inheritance applies to a path only when
//! it is created. A path's access control is set right after the request that created (or
//! rewrote) it, so nothing afterwards inherits onto it: its children's creation changes only
//! the children, each of which is set exactly by its own shard after its own write. A child
//! written before its parent's ACL is set (levels run in parallel; writing a file creates its
//! missing parents, which then inherit their parent's default ACL) is set exactly all the
//! same, and a parent created that way is found by its own level (Create Path refused: it
//! stands) and set exactly there. A redelivered part sets the same access again: harmless.
//!
//! Into a target without a hierarchical namespace, directories are not written (an
//! `hdi_isfolder` blob there would be junk), files are, and the job says once that access
//! control was not applied.

use std::collections::HashMap;

use tracing::{info, warn};

use super::{
    plan::Candidate,
    write::{Counted, Outcome},
    Part, RestoreAction, RestoreStep,
};
use crate::{
    core::{
        properties::Access,
        restore_plan::{same_metadata, Plan},
        version::{is_folder_mark, FOLDER_MARK},
    },
    storage::{
        dfs::{AccessNow, AccessRefused, CreatedDirectory},
        ErrorCode, StorageError,
    },
};

/// What writing a directory came to, before its access control is set.
struct DirectoryWritten {
    outcome: Outcome,
    /// The ETag its access control is set under: the listed one, or what its write left.
    etag: Option<String>,
    /// Created with its owner, group and ACL in the one request.
    with_access: bool,
    /// It stood, and its user metadata was written back.
    rewritten: bool,
}

/// What writing a standing directory's user metadata back did.
enum MetadataWrite {
    /// Nothing to write (the same metadata, or a dry run).
    Nothing,
    /// Written: the ETag the directory has after.
    Written(String),
    /// The service refused it (other than for a changed ETag): the directory is left as it
    /// stood, its access control still to set.
    Refused(StorageError),
}

/// How lines and failures name the container's root directory (its version is named `""`).
const ROOT: &str = "/";

impl Part<'_> {
    /// Carries out a directory's plan: created where the target has no such path, then given
    /// its access control.
    pub(super) async fn restore_directory(&self, candidate: Candidate) -> Outcome {
        if candidate.blob.is_empty() {
            return self.restore_root(candidate).await;
        }
        let name = candidate.blob.clone();
        let line = |step| RestoreAction {
            blob: name.clone(),
            action: step,
            version_etag: None,
            version_last_modified: None,
            from: None,
            error: None,
        };
        match candidate.plan {
            Plan::Deleted => return Outcome::line(Counted::Deleted, line(RestoreStep::Deleted)),
            Plan::MissingVersion => {
                return Outcome::line(Counted::MissingVersion, line(RestoreStep::MissingVersion))
            }
            Plan::Restore(_) | Plan::Unchanged => {}
        }
        if !self.target_hierarchical {
            let mut outcome = Outcome::unchanged(name);
            outcome.also.access_not_applied = 1;
            return outcome;
        }
        let current = candidate
            .target
            .as_ref()
            .and_then(|t| t.properties.access.clone());
        let written = match self.write_directory(&candidate, &line).await {
            Ok(written) => written,
            Err(outcome) => return outcome,
        };
        let DirectoryWritten {
            mut outcome,
            etag,
            with_access,
            rewritten,
        } = written;
        // A directory created now has the access its parent's default ACL gave it, and no
        // sticky bit.
        let current = if outcome.counted == Counted::Restored && !rewritten {
            None
        } else {
            current
        };
        if with_access && !candidate.access.as_ref().is_some_and(Access::sticky) {
            // Created with its exact access, in the one request.
            outcome.also.access_set = 1;
            return outcome;
        }
        let now = AccessNow {
            current: current.as_ref(),
            sticky: current.as_ref().is_some_and(Access::sticky),
            if_match: etag.as_deref(),
        };
        outcome = self
            .restore_access(outcome, &name, candidate.access.as_ref(), now)
            .await;
        outcome
    }

    /// Writes the directory of `candidate`: created where the target has none, its user
    /// metadata written back where it stands with other metadata; or the outcome that ends
    /// its restore (changed since the plan, an error).
    async fn write_directory(
        &self,
        candidate: &Candidate,
        line: &(dyn Fn(RestoreStep) -> RestoreAction + Sync),
    ) -> Result<DirectoryWritten, Outcome> {
        let name = &candidate.blob;
        let failed = |e: StorageError, what: &str| {
            warn!(directory = name, error = %e, "{what}");
            let mut failed = line(RestoreStep::Error);
            failed.error = Some(e.to_string());
            Outcome::line(Counted::Error, failed)
        };
        let restored = || Outcome::line(Counted::Restored, line(RestoreStep::Restore));
        // The ETag its access control is set under: the listed one, or what its write left.
        let mut written = DirectoryWritten {
            outcome: Outcome::unchanged(name.clone()),
            etag: candidate.target.as_ref().map(|t| t.etag.clone()),
            with_access: false,
            rewritten: false,
        };
        match &candidate.target {
            Some(target) => match self.restore_directory_metadata(candidate, target).await {
                Ok(MetadataWrite::Nothing) => {}
                Ok(MetadataWrite::Written(etag)) => {
                    written.etag = Some(etag);
                    written.rewritten = true;
                    written.outcome = restored();
                }
                Ok(MetadataWrite::Refused(e)) => {
                    // Set Blob Metadata on a directory is what Azure's own Data Lake SDKs
                    // send (DataLakePathClient.SetMetadata); were it refused, the directory's
                    // access control matters more than its user metadata: set all the same.
                    warn!(directory = name, error = %e, "its user metadata refused; its access control is set all the same");
                    written.outcome.also.directory_metadata_refused = 1;
                    written.outcome.warning = Some(format!(
                        "its user metadata could not be set back ({e}); its access control is \
                         set all the same"
                    ));
                }
                Err(e) if e.is(ErrorCode::ConditionNotMet) => {
                    info!(directory = name, "written since the plan: its metadata left alone");
                    let changed = line(RestoreStep::ChangedSincePlan);
                    return Err(Outcome::line(Counted::ChangedSincePlan, changed));
                }
                Err(e) => return Err(failed(e, "restoring its metadata failed")),
            },
            None if self.options.dry_run => written.outcome = restored(),
            None => match self.create_directory(candidate).await {
                Ok(created) => {
                    written.outcome = restored();
                    written.outcome.also.directories_created = u64::from(created.is_some());
                    if let Some(created) = created {
                        written.etag = Some(created.etag);
                        written.with_access = created.with_access;
                    }
                }
                Err(e) => return Err(failed(e, "creating the directory failed")),
            },
        }
        Ok(written)
    }

    /// Gives the target container's root directory (`/`, which always stands) the access
    /// control of the root's version chosen, where what it has now (read with Get Access
    /// Control) differs, `If-Match` the ETag that read gave. Named `/` in lines and failures.
    async fn restore_root(&self, candidate: Candidate) -> Outcome {
        let access = candidate.access.as_ref();
        let mut outcome = Outcome::unchanged(ROOT.to_owned());
        if !self.target_hierarchical || self.options.dry_run || access.is_none() {
            return self.restore_access(outcome, "", access, AccessNow::default()).await;
        }
        let now = match self
            .target_account
            .get_access_control(self.target_name, "")
            .await
        {
            Ok(Some(now)) => now,
            Ok(None) => return outcome,
            Err(e) => {
                warn!(error = %e, "reading the root directory's access control failed");
                outcome.also.access_failed = 1;
                outcome.access_failure = Some(format!(
                    "its access control could not be read, so it was not set: {e}"
                ));
                return outcome;
            }
        };
        let current = AccessNow {
            current: Some(&now.access),
            sticky: now.access.sticky(),
            if_match: Some(&now.etag),
        };
        outcome = self.restore_access(outcome, "", access, current).await;
        outcome.blob = ROOT.to_owned();
        if let Some(action) = &mut outcome.action {
            action.blob = ROOT.to_owned();
        }
        outcome
    }

    /// Writes the user metadata of the directory version chosen back onto the directory that
    /// stands (`target`, as listed), where it differs (names compared case-blind), `If-Match`
    /// its listed ETag, with the folder mark kept. An error is a changed ETag (412), or the
    /// version it holds now not kept; a refusal of the write itself is
    /// [`MetadataWrite::Refused`].
    async fn restore_directory_metadata(
        &self,
        candidate: &Candidate,
        target: &crate::core::version::Version,
    ) -> Result<MetadataWrite, StorageError> {
        let (Plan::Restore(version), Some(theirs)) = (&candidate.plan, &target.metadata) else {
            return Ok(MetadataWrite::Nothing);
        };
        let user = |metadata: &HashMap<String, String>| -> HashMap<String, String> {
            let mut user = metadata.clone();
            user.retain(|name, value| !is_folder_mark(name, value));
            user
        };
        let wanted = user(&version.version.metadata_or_empty());
        if same_metadata(&wanted, &user(theirs)) || self.options.dry_run {
            return Ok(MetadataWrite::Nothing);
        }
        // A restore never destroys a version: the directory's version now is backed up first
        // (in the lake's account, where backups are) unless a backup holds it.
        if !candidate.current_kept && self.target_in_lake_account {
            let kept = crate::engine::backup::back_up_directory(self.app, self.target_name, target)
                .await
                .map_err(|e| {
                    StorageError::other(
                        format!("keeping the version {} holds now", candidate.blob),
                        format!("it could not be backed up ({e}); the directory was left as it is"),
                    )
                })?;
            info!(directory = candidate.blob, ?kept, "its version now is kept before the restore rewrites it");
        }
        let mut metadata = wanted;
        metadata.insert(FOLDER_MARK.to_owned(), "true".to_owned());
        let blob = self.target.blob(&candidate.blob);
        match blob.set_metadata_etag(&metadata, &target.etag).await {
            Ok(written) => Ok(MetadataWrite::Written(written.unwrap_or_default())),
            Err(e) if e.is(ErrorCode::ConditionNotMet) => Err(e),
            Err(e) => Ok(MetadataWrite::Refused(e)),
        }
    }

    /// Creates the directory of `candidate`, with its version's user metadata (the folder
    /// mark left out) and, where the service takes it at create, its access control.
    async fn create_directory(
        &self,
        candidate: &Candidate,
    ) -> Result<Option<CreatedDirectory>, StorageError> {
        let mut metadata = match &candidate.plan {
            Plan::Restore(version) => version.version.metadata_or_empty(),
            _ => Default::default(),
        };
        metadata.retain(|name, _| !name.eq_ignore_ascii_case("hdi_isfolder"));
        self.target_account
            .create_directory(
                self.target_name,
                &candidate.blob,
                candidate.access.as_ref(),
                &metadata,
            )
            .await
    }

    /// Gives path `name` the access control `access` its chosen version had (where what it has
    /// `now` differs), after what `outcome` did to it. Into a target
    /// without a hierarchical namespace it is counted as not applied; a dry run sets nothing.
    pub(super) async fn restore_access(
        &self,
        mut outcome: Outcome,
        name: &str,
        access: Option<&Access>,
        now: AccessNow<'_>,
    ) -> Outcome {
        let Some(access) = access else {
            return outcome;
        };
        if !matches!(outcome.counted, Counted::Restored | Counted::Unchanged) {
            return outcome;
        }
        if !self.target_hierarchical {
            outcome.also.access_not_applied = 1;
            return outcome;
        }
        if self.options.dry_run || now.current == Some(access) {
            return outcome;
        }
        let set = self
            .target_account
            .set_access_control(self.target_name, name, access, now)
            .await;
        let failure = match set {
            Ok(()) => {
                outcome.also.access_set = 1;
                return outcome;
            }
            Err(AccessRefused::Owner(e)) => {
                outcome.also.access_set = 1;
                format!(
                    "its bytes are restored and its ACL set, but its owner {} and group {} were \
                     refused: {e}",
                    access.owner, access.group
                )
            }
            Err(AccessRefused::Changed) => {
                info!(path = name, "written since the restore saw it: its access left alone");
                outcome.counted = Counted::ChangedSincePlan;
                outcome.action = Some(RestoreAction {
                    blob: name.to_owned(),
                    action: RestoreStep::ChangedSincePlan,
                    version_etag: None,
                    version_last_modified: None,
                    from: None,
                    error: None,
                });
                return outcome;
            }
            Err(AccessRefused::Storage(e)) => {
                format!("its bytes are restored, but its access control could not be set: {e}")
            }
            Err(e @ AccessRefused::NotHeld(_)) => format!(
                "its bytes are restored, but read back its access control is not its version's                  (owner {} group {} permissions {} ACL {}): {e}",
                access.owner, access.group, access.permissions, access.acl
            ),
        };
        warn!(path = name, reason = failure, "access control not all set");
        outcome.also.access_failed = 1;
        outcome.access_failure = Some(failure);
        outcome
    }
}
