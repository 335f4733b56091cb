//! The restore kind of job work: one directory level of a restore — of `{c}bak` for a restore
//! from the backup account, of the lake for one from snapshots — within the shard's budget.
//!
//! A part lists its whole level (the versions, and what the target's same level holds, one
//! listing each rather than a request per blob), chooses each name's version current at the
//! instant (`core::restore_plan`) and writes back, in its own name order, those the target does
//! not hold. The first part fans out the level's sub-directories. When the budget runs out, the
//! continuation lists the level again and goes on after the last name dealt with: that name
//! order is the part's own, over a complete listing, never the service's listing order.
//!
//! Every write is conditional on the target being what the plan saw (`If-Match` on its ETag, or
//! `If-None-Match: *` where it had no such blob), so a part redone after a crash finds its own
//! writes in place and writes nothing twice, and a write by ingestion meanwhile is never
//! overwritten. Nothing is ever deleted: a blob created after the instant stays.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tracing::{info, warn, Instrument};
use url::Url;

use super::{
    runner::{each_within_budget, options_of, LineSink, PartDone, Stop},
    target, Fanout, JobError,
};
use crate::{
    app::App,
    core::{
        etag::normalize_etag,
        job::{ERRORS, RESTORE_COUNTS},
        life::Lives,
        message::BackupRequest,
        properties::{BlobProperties, BlobType},
        restore_plan::{
            holds_besides_bytes, plan, version_at, version_with_lake, written_by_job, Plan,
            Restorable, RestoreFrom, RestoreOptions, VersionSource,
        },
        shard::Shard,
        stamp,
        version::{CopyStatus, Version},
    },
    engine::backup::{self, BackupOutcome},
    storage::{
        copy::{
            copy_server_side, copy_version_through, wait_for_copy, CopyAttributes, Overwrite,
            ServerCopy, SourceVersion,
        },
        listing::{
            each_complete_backup, list_backup_directory, list_directory,
            list_directory_with_snapshots, ListedEntry, ListingScope,
        },
        Blob, Container, ErrorCode, StorageAccount, StorageError,
    },
};

/// One blob the restore acted on (or, in a dry run, would act on): every blob restored, to be
/// restored, without a version, deleted by then, changed since the plan, or failed (unchanged
/// ones are only counted). One JSON line each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreAction {
    pub blob: String,
    /// `restore`, `missing_version`, `deleted`, `changed_since_plan` or `error`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_last_modified: Option<String>,
    /// The snapshot timestamp or backup blob it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Runs one part of a restore shard.
pub(super) async fn run_part(
    app: &App,
    shard: &Shard,
    fanout: &Fanout<'_>,
    sink: Option<LineSink<'_>>,
    stop: Stop<'_>,
) -> Result<PartDone, JobError> {
    let options = options_of(shard, shard.restore.as_deref())?;
    let target_account = target::restore_account(app, options)?;
    let target_name = options.target_container(&shard.container);
    let target_in_lake_account = target_account.same_blob_service(&app.source);
    let part = Part {
        app,
        shard,
        options,
        as_of: options.instant(),
        job_started: options.job_started_at(),
        lake: app.source.container(&shard.container)?,
        target: target_account.container(target_name)?,
        target_name,
        target_account,
        in_place: target_in_lake_account && target_name == shard.container,
        target_in_lake_account,
    };
    let level = match options.from {
        RestoreFrom::Backup => part.plan_from_backup().await?,
        RestoreFrom::Snapshots => part.plan_from_snapshots().await?,
    };
    // The first part fans the level out; a continuation's names and sub-directories were seen
    // by the part before it.
    if shard.part == 0 {
        for sub in level.subdirectories {
            if options.reaches(&sub) {
                fanout.push(app, shard.child(&sub)).await?;
            }
        }
        app.progress.saw(level.candidates.len() as u64);
    }
    // The budget is for writes: a part always plans its whole level first.
    let deadline = stop.deadline(app.config.shard_budget);
    let mut done = PartDone::new(&RESTORE_COUNTS);
    for warning in &level.warnings {
        done.notes.warn("", warning.clone());
    }
    let mut last_done = None;
    let candidates: Vec<Candidate> = level
        .candidates
        .into_iter()
        .filter(|candidate| stop.admits(&candidate.blob))
        .collect();
    let finished = each_within_budget(
        candidates,
        deadline,
        app.config.snapshot_concurrency,
        |candidate| {
            let span = tracing::info_span!("blob", blob = %candidate.blob);
            part.act(candidate).instrument(span)
        },
        |outcome| {
            app.progress.did(1);
            done.counts
                .set(outcome.count, done.counts.get(outcome.count) + 1);
            if let Some(action) = outcome.action {
                if let Some(error) = &action.error {
                    done.notes.fail(&action.blob, error.clone());
                }
                done.line(sink, &action);
            }
            last_done = Some(outcome.blob);
        },
    )
    .await;
    if !finished {
        done.continuation = Some(shard.continuation(None, last_done.as_deref()));
    }
    Ok(done)
}

/// A restore part: what it restores, from where, into what.
struct Part<'a> {
    app: &'a App,
    shard: &'a Shard,
    options: &'a RestoreOptions,
    as_of: Option<OffsetDateTime>,
    /// When the job started (see [`RestoreOptions::job_started`]).
    job_started: Option<OffsetDateTime>,
    /// The lake's container being restored.
    lake: Container,
    /// The container written to, its name, and its account.
    target: Container,
    target_name: &'a str,
    target_account: &'a StorageAccount,
    /// The target is the lake's container itself.
    in_place: bool,
    /// The target is a container of the lake's account (itself or another): its blobs are the
    /// lake's, backed up by the backup engine.
    target_in_lake_account: bool,
}

/// A level planned: its candidates in name order, after the previous part's last name.
struct Level {
    candidates: Vec<Candidate>,
    subdirectories: Vec<String>,
    /// What the job should know about how the level was planned.
    warnings: Vec<String>,
}

/// One blob's chosen version (or none) and what its target holds.
struct Candidate {
    blob: String,
    plan: Plan,
    /// The target blob's version the plan was made against; `None`: the target had no such
    /// blob.
    target: Option<Version>,
    /// That version has a complete backup already.
    current_kept: bool,
    /// The target holds the chosen version because this job wrote it (a delivery that died
    /// before it recorded the write): reported restored.
    written_by_job: bool,
}

/// What was done for one blob: the count it adds to, and its line (unchanged blobs have none).
struct Outcome {
    blob: String,
    count: &'static str,
    action: Option<RestoreAction>,
}

enum CopyBack {
    Written,
    /// The target blob is no longer what the plan saw: nothing was written.
    ChangedSincePlan,
}

impl Part<'_> {
    /// The names of the level still to do, in name order: those after the previous part's last
    /// (the order is this part's own, over a complete listing of the level).
    fn still_to_do(&self, name: &str) -> bool {
        self.shard.after.as_deref().is_none_or(|after| name > after)
    }

    /// The prefix the level is listed with (in `{c}bak` with `backups`, else in the lake and
    /// the target): the directory, narrowed to the filter.
    fn listing_prefix(&self, backups: bool) -> Option<String> {
        Some(self.options.level_prefix(&self.shard.prefix, backups)).filter(|p| !p.is_empty())
    }

    /// From the backup account: the level's backups and records of lives.
    async fn plan_from_backup(&self) -> Result<Level, StorageError> {
        let app = self.app;
        let tags = app.config.list_tags && !app.backup.tags_refused();
        let level = match self.backup_choices(tags).await {
            // Without the right to read the backups' tags, they are restored without them.
            Err(e) if tags && e.is_tags_refusal() => {
                warn!(error = %e, "the backup account refused to show tags: restoring without them");
                app.backup.refuse_tags();
                self.backup_choices(false).await?
            }
            other => other?,
        };
        let mut targets = self.target_level().await?;
        // The lake's versions now are versions too: one written at or before the instant is
        // the version of the instant, backed up yet or not. In place they are the targets;
        // elsewhere the lake's level is listed as well.
        let mut warnings = Vec::new();
        let mut lake_now = if self.in_place {
            HashMap::new()
        } else {
            self.lake_level(&mut warnings).await?
        };
        let mut names: BTreeMap<String, Option<Restorable>> = level.choices;
        for name in lake_now.keys() {
            names.entry(name.clone()).or_insert(None);
        }
        let mut candidates = Vec::new();
        for (blob, backup_choice) in names {
            if !self.still_to_do(&blob) {
                continue;
            }
            let current = targets.remove(&blob);
            let in_lake = if self.in_place {
                current.clone()
            } else {
                lake_now.remove(&blob)
            };
            let written_by_this_job =
                |plan: &Plan| self.job_wrote(plan, backup_choice.as_ref(), current.as_ref());
            let chosen = version_with_lake(backup_choice.clone(), in_lake, self.as_of);
            let chosen = chosen.as_ref();
            // Deletions count only for an instant: without one, restore brings back every blob.
            let deleted_by_then = match (chosen, self.as_of) {
                (Some(chosen), Some(instant)) => {
                    level.lives.ended_by(&blob, &chosen.version.etag, instant)
                }
                _ => false,
            };
            let plan = if deleted_by_then {
                Plan::Deleted
            } else {
                plan(chosen, current.as_ref())
            };
            // The level's backups are the lake container's: they say whether a version of the
            // lake is kept, never one of another container.
            let current_kept = self.in_place
                && current.as_ref().is_some_and(|current| {
                    level
                        .backed_up
                        .contains(&(blob.clone(), normalize_etag(&current.etag).to_owned()))
                });
            candidates.push(Candidate {
                written_by_job: written_by_this_job(&plan),
                blob,
                plan,
                target: current,
                current_kept,
            });
        }
        Ok(Level {
            candidates,
            subdirectories: level.subdirectories,
            warnings,
        })
    }

    /// Whether the target, found unchanged, holds `original` (the version chosen from the
    /// backups or snapshots, the lake's own set aside) because this job wrote it
    /// ([`written_by_job`]).
    fn job_wrote(
        &self,
        plan: &Plan,
        original: Option<&Restorable>,
        target: Option<&Version>,
    ) -> bool {
        *plan == Plan::Unchanged && written_by_job(original, target, self.job_started)
    }

    /// The lake's versions now at the level, for a restore into another container: what
    /// cannot be read is said once, and the restore goes on from the backups alone.
    async fn lake_level(
        &self,
        warnings: &mut Vec<String>,
    ) -> Result<HashMap<String, Version>, StorageError> {
        match self.list_level(&self.lake, false).await {
            // A blob still being copied into, or whose copy failed, is no version of the lake.
            Ok(mut level) => {
                level.retain(|_, version| version.copy_complete());
                Ok(level)
            }
            Err(e) if e.is(ErrorCode::ContainerNotFound) => Ok(HashMap::new()),
            Err(e) if e.is_transient() || e.status == Some(403) => {
                warn!(error = %e, "the lake could not be listed: restoring from the backups alone");
                warnings.push(format!(
                    "the lake's container {} could not be read ({e}): versions written since \
                     the last backup pass were not considered",
                    self.shard.container
                ));
                Ok(HashMap::new())
            }
            Err(e) => Err(e),
        }
    }

    async fn backup_choices(&self, tags: bool) -> Result<BackupLevel, StorageError> {
        let vault = self.app.vault_of(&self.shard.container)?;
        let pages = list_backup_directory(&vault, self.listing_prefix(true).as_deref(), tags)?;
        let mut best: BTreeMap<String, Option<Restorable>> = BTreeMap::new();
        let mut backed_up = HashSet::new();
        let as_of = self.as_of;
        let level = each_complete_backup(pages, &self.options.filter, |parsed, written, backup| {
            if !self.options.in_scope(&parsed.source_name) {
                return;
            }
            // The backup carries the version's type, headers, MD5 and tags; its stamp the tier.
            let metadata = backup.metadata_or_empty();
            let source = VersionSource::Backup {
                name: backup.name.clone(),
                etag: backup.etag.clone(),
            };
            let version = Version {
                name: parsed.source_name.clone(),
                snapshot: None,
                etag: parsed.etag,
                last_modified: written,
                metadata: Some(stamp::user_metadata(&metadata)),
                properties: BlobProperties {
                    access_tier: stamp::stamped_access_tier(&metadata),
                    ..backup.properties.clone()
                },
                copy_status: None,
                ..backup
            };
            backed_up.insert((
                parsed.source_name.clone(),
                normalize_etag(&version.etag).to_owned(),
            ));
            let slot = best.entry(parsed.source_name).or_insert(None);
            let candidates: Vec<Restorable> = slot
                .take()
                .into_iter()
                .chain([Restorable { version, source }])
                .collect();
            *slot = version_at(&candidates, as_of).cloned();
        })
        .await?;
        Ok(BackupLevel {
            choices: best,
            backed_up,
            lives: level.lives,
            subdirectories: level.subdirectories,
        })
    }

    /// From the lake's own snapshots: the level's blobs with their snapshots, one name's
    /// versions grouped by equality of names.
    async fn plan_from_snapshots(&self) -> Result<Level, StorageError> {
        let pages = list_directory_with_snapshots(
            &self.lake,
            ListingScope {
                prefix: self.listing_prefix(false).as_deref(),
                ..Default::default()
            },
        )?;
        futures::pin_mut!(pages);
        let mut names: BTreeMap<String, Vec<Version>> = BTreeMap::new();
        let mut subdirectories = Vec::new();
        while let Some(page) = pages.try_next().await? {
            for entry in page.entries {
                match entry {
                    ListedEntry::Directory(sub) => subdirectories.push(sub),
                    ListedEntry::Item(version) => {
                        // A hierarchical namespace's directory is no blob to write back.
                        if self.options.in_scope(&version.name)
                            && !version.is_directory_placeholder()
                        {
                            names.entry(version.name.clone()).or_default().push(version);
                        }
                    }
                }
            }
        }
        let mut targets = if self.in_place {
            HashMap::new()
        } else {
            self.target_level().await?
        };
        let mut candidates = Vec::new();
        for (blob, entries) in names {
            if !self.still_to_do(&blob) {
                continue;
            }
            let mut base = None;
            let versions: Vec<Restorable> = entries
                .into_iter()
                .map(|entry| {
                    let source = match &entry.snapshot {
                        Some(id) => VersionSource::Snapshot(id.clone()),
                        None => VersionSource::Base,
                    };
                    let version = Version {
                        // A snapshot has no tags of its own: the blob's stay as they are.
                        properties: BlobProperties {
                            tags: None,
                            ..entry.properties.clone()
                        },
                        ..entry
                    };
                    if source == VersionSource::Base {
                        base = Some(version.clone());
                    }
                    Restorable { version, source }
                })
                .collect();
            let chosen = version_at(&versions, self.as_of);
            let current = if self.in_place {
                base
            } else {
                targets.remove(&blob)
            };
            // Whether the version now current has a backup is the backup engine's to find out,
            // before anything overwrites it.
            let current_kept = false;
            let plan = plan(chosen, current.as_ref());
            let snapshots: Vec<Restorable> = versions
                .iter()
                .filter(|v| v.source != VersionSource::Base)
                .cloned()
                .collect();
            let original = version_at(&snapshots, self.as_of);
            candidates.push(Candidate {
                written_by_job: self.job_wrote(&plan, original, current.as_ref()),
                plan,
                target: current,
                current_kept,
                blob,
            });
        }
        Ok(Level {
            candidates,
            subdirectories,
            warnings: Vec::new(),
        })
    }

    /// What the target's level holds, by name (with tags when they can be read); nothing when
    /// the target container does not exist yet.
    async fn target_level(&self) -> Result<HashMap<String, Version>, StorageError> {
        let mut tags = self.app.config.list_tags && !self.target_account.tags_refused();
        loop {
            match self.list_level(&self.target, tags).await {
                Err(e) if tags && e.is_tags_refusal() => {
                    warn!(error = %e, "the target refused to show tags: comparing without them");
                    self.target_account.refuse_tags();
                    tags = false;
                }
                Err(e) if e.is(ErrorCode::ContainerNotFound) => return Ok(HashMap::new()),
                other => return other,
            }
        }
    }

    /// What `container`'s level holds, by name, narrowed to the filter (directories of a
    /// hierarchical namespace are no blobs to restore).
    async fn list_level(
        &self,
        container: &Container,
        tags: bool,
    ) -> Result<HashMap<String, Version>, StorageError> {
        let pages = list_directory(
            container,
            ListingScope {
                prefix: self.listing_prefix(false).as_deref(),
                tags,
                copy: true,
                ..Default::default()
            },
        )?;
        futures::pin_mut!(pages);
        let mut level = HashMap::new();
        while let Some(page) = pages.try_next().await? {
            for version in page.into_items() {
                if self.options.in_scope(&version.name) && !version.is_directory_placeholder() {
                    level.insert(version.name.clone(), version);
                }
            }
        }
        Ok(level)
    }

    /// Carries out one blob's plan: counts what needs nothing, compares content where asked,
    /// then writes the version back.
    async fn act(&self, candidate: Candidate) -> Outcome {
        let blob = candidate.blob;
        let with_line = |count: &'static str, action: RestoreAction| Outcome {
            blob: action.blob.clone(),
            count,
            action: Some(action),
        };
        let version = match candidate.plan {
            Plan::Unchanged if candidate.written_by_job => {
                let mut restored = action(blob, "restore", None);
                if let Some(target) = &candidate.target {
                    restored.version_etag = Some(normalize_etag(&target.etag).to_owned());
                }
                return with_line("restored", restored);
            }
            Plan::Unchanged => {
                return Outcome {
                    blob,
                    count: "unchanged",
                    action: None,
                }
            }
            Plan::Deleted => return with_line("deleted", action(blob, "deleted", None)),
            Plan::MissingVersion => {
                return with_line("missing_version", action(blob, "missing_version", None))
            }
            Plan::Restore(version) => version,
        };
        let failed = |error: String| {
            let mut failed = action(blob.clone(), "error", Some(&version));
            failed.error = Some(error);
            with_line(ERRORS, failed)
        };
        // Where MD5s cannot prove the bytes equal, reading them can; the rest must match too.
        let unprovable = candidate.target.as_ref().is_some_and(|t| {
            (t.content_md5.is_none() || version.version.content_md5.is_none())
                && holds_besides_bytes(t, &version.version)
        });
        if self.options.verify_content && unprovable {
            match self.same_bytes(&blob, &version).await {
                Ok(true) => {
                    return Outcome {
                        blob,
                        count: "unchanged",
                        action: None,
                    }
                }
                Ok(false) => {}
                Err(error) => {
                    warn!(blob, %error, "could not compare the content");
                    return failed(error.to_string());
                }
            }
        }
        let ours = version.version.properties.blob_type;
        if let Some(theirs) = candidate.target.as_ref().map(|t| t.properties.blob_type) {
            if theirs != ours {
                // Azure copies onto a blob of the same type only (409 InvalidBlobType); restore
                // never deletes, so it says what stands in the way.
                return failed(format!(
                    "the target is a {}, the version a {}: Azure cannot copy over a blob of \
                     another type; delete the target (soft delete keeps it) or restore to \
                     another container",
                    theirs.as_str(),
                    ours.as_str()
                ));
            }
        }
        if self.options.dry_run {
            return with_line("restored", action(blob, "restore", Some(&version)));
        }
        match self
            .copy_back(
                &blob,
                &version,
                candidate.target.as_ref(),
                candidate.current_kept,
            )
            .await
        {
            Ok(CopyBack::Written) => with_line("restored", action(blob, "restore", Some(&version))),
            Ok(CopyBack::ChangedSincePlan) => {
                info!(blob, "written to since the plan was made; left alone");
                with_line(
                    "changed_since_plan",
                    action(blob, "changed_since_plan", Some(&version)),
                )
            }
            Err(error) => {
                warn!(blob, %error, "restoring the blob failed");
                failed(error.to_string())
            }
        }
    }

    /// Keeps the version `target` holds now before the restore overwrites it. In the lake's
    /// account it is backed up through the backup engine, with its usual stamp (a later restore
    /// as of just before this one brings it back); in another account, which no backup covers,
    /// it is snapshotted. `Some(ChangedSincePlan)` when it moved on since the plan (nothing is
    /// written then); an error when it cannot be kept, and the blob is left as it is.
    async fn keep_current(
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

    /// The blob a version is read from.
    fn source_blob(&self, blob: &str, restorable: &Restorable) -> Result<Blob, StorageError> {
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
    async fn same_bytes(&self, blob: &str, version: &Restorable) -> Result<bool, StorageError> {
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
    /// write by ingestion since is never overwritten. Small block blobs restored onto no blob,
    /// and every version read from an account connected by SAS (which cannot sign a one-blob
    /// copy source, and whose own SAS must never be recorded as one), go through this worker
    /// (reads pinned to the version's ETag, in bounded chunks, then writes carrying metadata,
    /// content headers, Content-MD5 as stored, tags and tier); others are copied server-side
    /// from a one-blob SAS and waited to completion. Either way the target gets the version's
    /// user metadata, never a backup's stamp.
    async fn copy_back(
        &self,
        blob: &str,
        restorable: &Restorable,
        planned_target: Option<&Version>,
        current_kept: bool,
    ) -> Result<CopyBack, StorageError> {
        let version = &restorable.version;
        if restorable.source == VersionSource::Base && self.in_place {
            return Ok(CopyBack::Written);
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
        let properties = &version.properties;
        let attributes = CopyAttributes {
            metadata: version.metadata_or_empty(),
            stored_md5: version.content_md5.clone(),
            record_md5: false,
            tags: properties.tags.clone(),
            // Tiers are a block blob's.
            tier: properties
                .access_tier
                .clone()
                .filter(|_| properties.blob_type == BlobType::Block),
        };
        // Small ones through the worker only onto no blob: its block list (for a version whose
        // stored MD5 is not its bytes') must not meet blocks another writer staged on a live
        // blob. A source that cannot sign a copy source leaves no choice: its block list's
        // commit, conditional on the planned ETag, then discards any such blocks.
        let through_worker = !self.source_account(restorable).signs_copy_sources()
            || (planned_against.is_none()
                && properties.blob_type == BlobType::Block
                && version.content_length <= self.app.config.copy_through_max_bytes);
        if through_worker {
            let source = self.source_blob(blob, restorable)?;
            let source_etag = match &restorable.source {
                VersionSource::Backup { etag, .. } => etag.as_str(),
                _ => version.etag.as_str(),
            };
            let read = SourceVersion {
                etag: source_etag,
                length: version.content_length,
                blob_type: properties.blob_type,
            };
            let copied =
                copy_version_through(&source, &destination, read, &attributes, overwrite).await;
            return match copied {
                Ok(copied) => {
                    if copied.tags_refused {
                        warn!(
                            blob,
                            "the target refused the version's tags: restored without them"
                        );
                    }
                    Ok(CopyBack::Written)
                }
                Err(e)
                    if e.is(ErrorCode::ConditionNotMet) || e.is(ErrorCode::BlobAlreadyExists) =>
                {
                    // The source moved on (its read is pinned), or the target was written: our
                    // own write, whose answer was lost and which the retry then found, or
                    // someone else's. What the target holds now tells them apart.
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
                    Ok(if holds {
                        CopyBack::Written
                    } else {
                        CopyBack::ChangedSincePlan
                    })
                }
                Err(e) => Err(e),
            };
        }
        self.copy_server_side(blob, restorable, &destination, &attributes, overwrite)
            .await
    }

    async fn copy_server_side(
        &self,
        blob: &str,
        restorable: &Restorable,
        destination: &Blob,
        attributes: &CopyAttributes,
        overwrite: Overwrite<'_>,
    ) -> Result<CopyBack, StorageError> {
        let (app, container) = (self.app, self.shard.container.as_str());
        let version = &restorable.version;
        let expiry =
            OffsetDateTime::now_utc() + app.config.copy_timeout + time::Duration::minutes(15);
        let source_url: Url = match &restorable.source {
            VersionSource::Snapshot(id) => {
                app.source
                    .readable_blob_url(container, blob, Some(id), expiry)
                    .await?
            }
            VersionSource::Backup { name, .. } => {
                let backup_container = app.backup_container_of(container)?;
                app.backup
                    .readable_blob_url(&backup_container, name, None, expiry)
                    .await?
            }
            VersionSource::Base => {
                app.source
                    .readable_blob_url(container, blob, None, expiry)
                    .await?
            }
        };
        let pinned = match &restorable.source {
            VersionSource::Base => Some(version.etag.as_str()),
            VersionSource::Backup { etag, .. } => Some(etag.as_str()),
            VersionSource::Snapshot(_) => None,
        };
        let what = destination.what();
        // Copy Blob copies the source's metadata when the request names none: a version without
        // user metadata is cleared after the copy, so no stamp key stays behind.
        let clear_metadata = attributes.metadata.is_empty();
        // Onto a live blob, the asynchronous Copy Blob, which carries every property of the
        // version as stored; onto no blob, the synchronous one where it can.
        let path = match overwrite {
            Overwrite::IfMatch(_) => ServerCopy::Async,
            Overwrite::Never => {
                ServerCopy::for_source(version.properties.blob_type, version.content_length)
            }
        };
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
            Ok(copied) if copied.tags_refused => {
                warn!(
                    blob,
                    "the target refused the version's tags: restored without them"
                );
            }
            Ok(_) => {}
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
        let config = &app.config;
        let done =
            wait_for_copy(destination, config.copy_timeout, config.copy_poll_interval).await?;
        let failed = |detail: String| StorageError::other(format!("restoring {what}"), detail);
        match done {
            Some(state)
                if matches!(state.version.copy_status, Some(CopyStatus::Success) | None) =>
            {
                if state.version.content_length != version.content_length {
                    return Err(failed(format!(
                        "the restored blob has {} bytes, the version {}",
                        state.version.content_length, version.content_length
                    )));
                }
                if clear_metadata && !state.metadata().is_empty() {
                    let cleared = destination
                        .set_metadata(&Default::default(), state.etag())
                        .await
                        .map_err(|e| {
                            e.context(format!("clearing the bookkeeping metadata of {what}"))
                        });
                    match cleared {
                        Ok(()) => {}
                        // Cleared by a try whose answer was lost, or written by someone since:
                        // the blob as it is now says which.
                        Err(e) if e.is(ErrorCode::ConditionNotMet) => {
                            let now = destination.probe().await?;
                            match now {
                                Some(now)
                                    if now.metadata().is_empty()
                                        && now.copied_from(&source_url) => {}
                                _ => return Ok(CopyBack::ChangedSincePlan),
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(CopyBack::Written)
            }
            Some(state) => Err(failed(format!(
                "the copy ended {:?}: {}",
                state.version.copy_status,
                state.copy_status_description.unwrap_or_default()
            ))),
            None => Err(failed(
                "the restored blob does not exist after the copy".into(),
            )),
        }
    }
}

/// One directory level of the backup container.
struct BackupLevel {
    /// Per source name in scope, the backup version current at the instant (`None`: backups
    /// exist, but all are newer); in name order.
    choices: BTreeMap<String, Option<Restorable>>,
    /// The lives recorded for the level's names.
    lives: Lives,
    /// Every version of the level with a complete backup: `(name, ETag)`.
    backed_up: HashSet<(String, String)>,
    subdirectories: Vec<String>,
}

fn action(blob: String, kind: &str, version: Option<&Restorable>) -> RestoreAction {
    RestoreAction {
        blob,
        action: kind.to_owned(),
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
