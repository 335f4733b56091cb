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

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Instant,
};

use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tracing::{info, warn, Instrument};
use url::Url;

use super::{
    runner::{each_within_budget, options_of, LineSink, PartDone},
    Fanout, JobError,
};
use crate::{
    app::App,
    core::{
        etag::normalize_etag,
        job::{ERRORS, RESTORE_COUNTS},
        life::Lives,
        properties::{BlobProperties, BlobType},
        restore_plan::{
            filter_reaches, holds_besides_bytes, level_prefix, plan, version_at, Plan, Restorable,
            RestoreFrom, RestoreOptions, VersionSource,
        },
        shard::Shard,
        stamp,
        version::{CopyStatus, Version},
    },
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
) -> Result<PartDone, JobError> {
    let options = options_of(shard, shard.restore.as_deref())?;
    let target_account = app.restore_target(options.to_account)?;
    let target_name = options.to_container.as_deref().unwrap_or(&shard.container);
    let part = Part {
        app,
        shard,
        options,
        as_of: options.instant(),
        lake: app.source.container(&shard.container)?,
        target: target_account.container(target_name)?,
        target_account,
        in_place: !options.to_account && target_name == shard.container,
    };
    let level = match options.from {
        RestoreFrom::Backup => part.plan_from_backup().await?,
        RestoreFrom::Snapshots => part.plan_from_snapshots().await?,
    };
    // The first part fans the level out; a continuation's names and sub-directories were seen
    // by the part before it.
    if shard.part == 0 {
        for sub in level.subdirectories {
            let filter = options.filter.as_str();
            if filter_reaches(filter, &sub) {
                fanout.push(app, shard.child(&sub)).await?;
            }
        }
        app.progress.saw(level.candidates.len() as u64);
    }
    // The budget is for writes: a part always plans its whole level first.
    let deadline = Instant::now() + app.config.shard_budget;
    let mut done = PartDone::new(&RESTORE_COUNTS);
    let mut last_done = None;
    let finished = each_within_budget(
        level.candidates,
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
    /// The lake's container being restored.
    lake: Container,
    /// The container written to, and its account.
    target: Container,
    target_account: &'a StorageAccount,
    /// The target is the lake's container itself.
    in_place: bool,
}

/// A level planned: its candidates in name order, after the previous part's last name.
struct Level {
    candidates: Vec<Candidate>,
    subdirectories: Vec<String>,
}

/// One blob's chosen version (or none) and what its target holds.
struct Candidate {
    blob: String,
    plan: Plan,
    /// The target blob's version the plan was made against; `None`: the target had no such
    /// blob.
    target: Option<Version>,
    /// That version has a snapshot or a complete backup already.
    current_kept: bool,
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

    /// The prefix the level is listed with: the directory, narrowed to the filter.
    fn listing_prefix(&self) -> Option<String> {
        Some(level_prefix(&self.shard.prefix, &self.options.filter)).filter(|p| !p.is_empty())
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
        let mut candidates = Vec::new();
        for (blob, chosen) in level.choices {
            if !self.still_to_do(&blob) {
                continue;
            }
            let current = targets.remove(&blob);
            // Deletions count only for an instant: without one, restore brings back every blob.
            let deleted_by_then = match (&chosen, self.as_of) {
                (Some(chosen), Some(instant)) => {
                    level.lives.ended_by(&blob, &chosen.version.etag, instant)
                }
                _ => false,
            };
            let plan = if deleted_by_then {
                Plan::Deleted
            } else {
                plan(chosen.as_ref(), current.as_ref())
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
                blob,
                plan,
                target: current,
                current_kept,
            });
        }
        Ok(Level {
            candidates,
            subdirectories: level.subdirectories,
        })
    }

    async fn backup_choices(&self, tags: bool) -> Result<BackupLevel, StorageError> {
        let vault = self.app.vault_of(&self.shard.container)?;
        let pages = list_backup_directory(&vault, self.listing_prefix().as_deref(), tags)?;
        let mut best: BTreeMap<String, Option<Restorable>> = BTreeMap::new();
        let mut backed_up = HashSet::new();
        let as_of = self.as_of;
        let level = each_complete_backup(pages, &self.options.filter, |parsed, written, backup| {
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
                prefix: self.listing_prefix().as_deref(),
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
                        if version.name.starts_with(&self.options.filter) {
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
            // In place, the lake's own snapshots say whether the version now current is kept.
            let current_kept = self.in_place
                && current.as_ref().is_some_and(|current| {
                    versions.iter().any(|v| {
                        v.source != VersionSource::Base
                            && normalize_etag(&v.version.etag) == normalize_etag(&current.etag)
                    })
                });
            candidates.push(Candidate {
                plan: plan(chosen, current.as_ref()),
                target: current,
                current_kept,
                blob,
            });
        }
        Ok(Level {
            candidates,
            subdirectories,
        })
    }

    /// What the target's level holds, by name (with tags when they can be read); nothing when
    /// the target container does not exist yet.
    async fn target_level(&self) -> Result<HashMap<String, Version>, StorageError> {
        let mut tags = self.app.config.list_tags && !self.target_account.tags_refused();
        loop {
            match self.list_target_level(tags).await {
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

    async fn list_target_level(
        &self,
        tags: bool,
    ) -> Result<HashMap<String, Version>, StorageError> {
        let pages = list_directory(
            &self.target,
            ListingScope {
                prefix: self.listing_prefix().as_deref(),
                tags,
                ..Default::default()
            },
        )?;
        futures::pin_mut!(pages);
        let mut level = HashMap::new();
        while let Some(page) = pages.try_next().await? {
            for version in page.into_items() {
                if version.name.starts_with(&self.options.filter) {
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
        let planned_against = candidate.target.map(|t| t.etag);
        match self
            .copy_back(
                &blob,
                &version,
                planned_against.as_deref(),
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
        planned_against: Option<&str>,
        current_kept: bool,
    ) -> Result<CopyBack, StorageError> {
        let version = &restorable.version;
        if restorable.source == VersionSource::Base && self.in_place {
            return Ok(CopyBack::Written);
        }
        let destination = self.target.blob(blob);
        let overwrite = match planned_against {
            Some(etag) => Overwrite::IfMatch(etag),
            None => Overwrite::Never,
        };
        // A restore never destroys a version: the one it overwrites (written after the last
        // pass, or by whatever the restore undoes) is snapshotted first unless a snapshot or a
        // backup holds it already.
        if let (Some(etag), false) = (planned_against, current_kept) {
            match destination.take_snapshot(Some(etag)).await {
                Ok(_) => {}
                Err(e) if e.is(ErrorCode::ConditionNotMet) => {
                    return Ok(CopyBack::ChangedSincePlan)
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "keeping the version {blob} holds now before the restore overwrites it"
                    )))
                }
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
                    .state()
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
                            let now = destination.state().await?;
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
