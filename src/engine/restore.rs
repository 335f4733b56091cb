//! `lakebackup restore`: bring a container (or a prefix of it) back to what it held at an
//! instant, from its snapshots or from the backup account.
//!
//! For each blob the version current at the instant is chosen (`core::restore_plan`); it is
//! written back with a server-side copy only where the target's content differs. Nothing is
//! ever deleted: a blob created after the instant stays, and is reported as having no version.

use std::{collections::BTreeMap, time::Instant};

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tracing::{info, warn, Instrument};
use url::Url;

use crate::{
    app::App,
    core::{
        life::Lives,
        naming,
        properties::{BlobProperties, BlobType, Tags},
        restore_plan::{plan, version_at, Plan, Restorable, VersionSource},
        stamp,
        version::{CopyStatus, Version},
    },
    storage::{
        copy::{copy_server_side, wait_for_copy, CopyAttributes, Overwrite, ServerCopy},
        listing::{each_complete_backup, list_backup_directory, list_with_snapshots},
        Blob, ErrorCode, StorageError,
    },
};

/// Where versions are restored from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RestoreFrom {
    /// The source container's own snapshots (same account).
    Snapshots,
    /// The backup container in the backup account; also brings back deleted blobs.
    Backup,
}

#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub container: String,
    pub prefix: Option<String>,
    /// The instant to restore to; the newest versions when `None`.
    pub as_of: Option<OffsetDateTime>,
    pub from: RestoreFrom,
    /// Restore into this container instead of in place.
    pub to_container: Option<String>,
    pub dry_run: bool,
    /// Where the content cannot be compared by MD5 (a side has none), read both sides' bytes
    /// before writing, instead of writing whenever the ETags differ.
    pub verify_content: bool,
}

/// One blob the restore acted on (or, in a dry run, would act on); every blob restored, to be
/// restored, without a version, deleted by then, or failed (unchanged ones are only counted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreAction {
    pub blob: String,
    /// `restore`, `missing_version`, `deleted`, `changed_since_plan` or `error`.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_last_modified: Option<String>,
    /// The snapshot timestamp or backup blob it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreSummary {
    pub status: &'static str,
    pub container: String,
    pub target_container: String,
    pub from: RestoreFrom,
    pub as_of: Option<String>,
    pub dry_run: bool,
    pub restored: u64,
    pub unchanged: u64,
    pub missing_version: u64,
    /// Blobs whose deletion was seen before the instant: left out, as the lake was then.
    pub deleted: u64,
    /// Blobs written to (or created) in the target between planning and copying: left alone.
    pub changed_since_plan: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl RestoreSummary {
    pub fn succeeded(&self) -> bool {
        self.errors == 0 && self.error.is_none()
    }
}

/// One blob's chosen version (or none) and what its target holds.
struct Candidate {
    blob: String,
    plan: Plan,
    /// The target blob's version the plan was made against; `None`: the target had no such
    /// blob.
    target: Option<Version>,
}

/// Candidates planned before their writes are made: what restore holds at once.
const BATCH: usize = 1_000;

/// Restores `request`, reporting each action to `report` as it is settled (the summary only
/// counts them, so memory does not grow with the container).
pub async fn restore(
    app: &App,
    request: &RestoreRequest,
    report: &mut (dyn FnMut(RestoreAction) + Send),
) -> RestoreSummary {
    let span = tracing::info_span!("restore", container = %request.container, from = ?request.from);
    async {
        let started = Instant::now();
        let target = request
            .to_container
            .clone()
            .unwrap_or_else(|| request.container.clone());
        let mut summary = RestoreSummary {
            status: "ok",
            container: request.container.clone(),
            target_container: target.clone(),
            from: request.from,
            as_of: request.as_of.and_then(|t| t.format(&Rfc3339).ok()),
            dry_run: request.dry_run,
            restored: 0,
            unchanged: 0,
            missing_version: 0,
            deleted: 0,
            changed_since_plan: 0,
            errors: 0,
            error: None,
            duration_ms: 0,
        };
        let names_valid = naming::validate_container_name(&request.container)
            .and_then(|()| naming::validate_container_name(&target));
        if let Err(e) = names_valid {
            summary.status = "failed";
            summary.error = Some(e.to_string());
            return summary;
        }
        let mut progress = Progress {
            app,
            request,
            target: &target,
            summary: &mut summary,
            report,
            target_ready: false,
        };
        let walked = match request.from {
            RestoreFrom::Snapshots => restore_from_snapshots(&mut progress).await,
            RestoreFrom::Backup => restore_from_backup(&mut progress).await,
        };
        if let Err(error) = walked {
            warn!(%error, "restore stopped");
            summary.error = Some(error.to_string());
        }
        if !summary.succeeded() {
            summary.status = "failed";
        }
        summary.duration_ms = started.elapsed().as_millis() as u64;
        info!(
            restored = summary.restored,
            unchanged = summary.unchanged,
            missing_version = summary.missing_version,
            deleted = summary.deleted,
            errors = summary.errors,
            dry_run = summary.dry_run,
            "restore finished"
        );
        summary
    }
    .instrument(span)
    .await
}

/// A restore under way: its counts so far, and where its actions go.
struct Progress<'a> {
    app: &'a App,
    request: &'a RestoreRequest,
    target: &'a str,
    summary: &'a mut RestoreSummary,
    report: &'a mut (dyn FnMut(RestoreAction) + Send),
    /// The target container is known to exist.
    target_ready: bool,
}

impl Progress<'_> {
    fn act(&mut self, action: RestoreAction) {
        match action.action {
            "deleted" => self.summary.deleted += 1,
            "missing_version" => self.summary.missing_version += 1,
            "error" => self.summary.errors += 1,
            "changed_since_plan" => self.summary.changed_since_plan += 1,
            _ => self.summary.restored += 1,
        }
        (self.report)(action);
    }

    /// Carries out a batch of plans: counts what needs nothing, compares content where asked,
    /// then writes the rest, `SNAPSHOT_CONCURRENCY` at once.
    async fn settle(&mut self, planned: Vec<Candidate>) -> Result<(), StorageError> {
        let (app, request, target) = (self.app, self.request, self.target);
        let mut to_copy = Vec::new();
        for candidate in planned {
            match candidate.plan {
                Plan::Unchanged => self.summary.unchanged += 1,
                Plan::Deleted => self.act(action(candidate.blob, "deleted", None)),
                Plan::MissingVersion => self.act(action(candidate.blob, "missing_version", None)),
                Plan::Restore(version) => {
                    let unprovable = candidate.target.as_ref().is_some_and(|t| {
                        t.content_md5.is_none() || version.version.content_md5.is_none()
                    });
                    if request.verify_content && unprovable {
                        match same_bytes(app, request, target, &candidate.blob, &version).await {
                            Ok(true) => {
                                self.summary.unchanged += 1;
                                continue;
                            }
                            Ok(false) => {}
                            Err(error) => {
                                warn!(blob = candidate.blob, %error, "could not compare the content");
                                let mut failed = action(candidate.blob, "error", Some(&version));
                                failed.error = Some(error.to_string());
                                self.act(failed);
                                continue;
                            }
                        }
                    }
                    let target_type = candidate.target.as_ref().map(|t| t.properties.blob_type);
                    let ours = version.version.properties.blob_type;
                    if let Some(theirs) = target_type {
                        if theirs != ours {
                            // Azure copies onto a blob of the same type only (409 InvalidBlobType);
                            // restore never deletes, so it says what stands in the way.
                            let mut refused = action(candidate.blob, "error", Some(&version));
                            refused.error = Some(format!(
                                "the target is a {}, the version a {}: Azure cannot copy over a \
                                 blob of another type; delete the target (soft delete keeps it) \
                                 or restore to another container",
                                theirs.as_str(),
                                ours.as_str()
                            ));
                            self.act(refused);
                            continue;
                        }
                    }
                    let planned_against = candidate.target.map(|t| t.etag);
                    to_copy.push((candidate.blob, version, planned_against))
                }
            }
        }
        if to_copy.is_empty() {
            return Ok(());
        }
        if !request.dry_run && !self.target_ready {
            ensure_container(app, target).await?;
            self.target_ready = true;
        }
        let mut results = futures::stream::iter(to_copy)
            .map(|(blob, version, planned_against)| async move {
                let mut done = action(blob.clone(), "restore", Some(&version));
                if request.dry_run {
                    return done;
                }
                let copied = copy_back(
                    app,
                    request,
                    target,
                    &blob,
                    &version,
                    planned_against.as_deref(),
                )
                .await;
                match copied {
                    Ok(CopyBack::Written) => {}
                    Ok(CopyBack::ChangedSincePlan) => {
                        info!(blob, "written to since the plan was made; left alone");
                        done.action = "changed_since_plan";
                    }
                    Err(error) => {
                        warn!(blob, %error, "restoring the blob failed");
                        done.action = "error";
                        done.error = Some(error.to_string());
                    }
                }
                done
            })
            .buffer_unordered(app.config.snapshot_concurrency);
        while let Some(done) = results.next().await {
            self.act(done);
        }
        Ok(())
    }
}

fn action(blob: String, kind: &'static str, version: Option<&Restorable>) -> RestoreAction {
    RestoreAction {
        blob,
        action: kind,
        version_etag: version.map(|r| r.version.etag.clone()),
        version_last_modified: version.and_then(|r| r.version.last_modified.format(&Rfc3339).ok()),
        from: version.and_then(|v| match &v.source {
            VersionSource::Base => None,
            VersionSource::Snapshot(id) => Some(format!("snapshot {id}")),
            VersionSource::Backup(name) => Some(format!("backup {name}")),
        }),
        error: None,
    }
}

/// From the container's own snapshots: one listing, one name's versions at a time, written in
/// batches.
async fn restore_from_snapshots(progress: &mut Progress<'_>) -> Result<(), StorageError> {
    let (app, request, target) = (progress.app, progress.request, progress.target);
    let in_place = target == request.container;
    let lake = app.source.container(&request.container)?;
    let pages = list_with_snapshots(&lake, request.prefix.as_deref())?;
    futures::pin_mut!(pages);
    // Listings keep one name's entries together: hold one name's versions at a time.
    let mut group: Vec<Version> = Vec::new();
    let mut batch = Vec::new();
    while let Some(page) = pages.try_next().await? {
        for entry in page {
            if group.first().is_some_and(|first| first.name != entry.name) {
                let versions = std::mem::take(&mut group);
                batch.push(snapshot_candidate(app, versions, request, target, in_place).await?);
                if batch.len() >= BATCH {
                    progress.settle(std::mem::take(&mut batch)).await?;
                }
            }
            group.push(entry);
        }
    }
    if !group.is_empty() {
        batch.push(snapshot_candidate(app, group, request, target, in_place).await?);
    }
    progress.settle(batch).await
}

/// From the backup account, directory by directory (backups keep the source's directories): a
/// directory's backups and deletion markers are listed one level at a time, so memory holds
/// one directory, never the container.
async fn restore_from_backup(progress: &mut Progress<'_>) -> Result<(), StorageError> {
    let (app, request, target) = (progress.app, progress.request, progress.target);
    let prefix = request.prefix.as_deref().unwrap_or("");
    let mut directories = vec![naming::directory_of(prefix).unwrap_or("").to_owned()];
    while let Some(directory) = directories.pop() {
        let level = match backup_choices(app, request, &directory, app.config.list_tags).await {
            // Without the right to read the backups' tags, they are restored without them.
            Err(e) if e.is_tags_refusal() => {
                warn!(error = %e, "the backup account refused to show tags: restoring without them");
                backup_choices(app, request, &directory, false).await?
            }
            other => other?,
        };
        // Visited in name order: the stack takes the last pushed first.
        directories.extend(
            level
                .subdirectories
                .into_iter()
                .filter(|sub| sub.starts_with(prefix) || prefix.starts_with(sub.as_str()))
                .rev(),
        );
        if level.choices.is_empty() {
            continue;
        }
        let mut batch = Vec::new();
        for (blob, chosen) in level.choices {
            let current = target_blob(app, target, &blob, chosen.as_ref()).await?;
            // Deletions count only for an instant: without one, restore brings back every blob.
            let deleted_by_then = match (&chosen, request.as_of) {
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
            batch.push(Candidate {
                blob,
                plan,
                target: current,
            });
            if batch.len() >= BATCH {
                progress.settle(std::mem::take(&mut batch)).await?;
            }
        }
        progress.settle(batch).await?;
    }
    Ok(())
}

async fn snapshot_candidate(
    app: &App,
    entries: Vec<Version>,
    request: &RestoreRequest,
    target: &str,
    in_place: bool,
) -> Result<Candidate, StorageError> {
    let blob = entries[0].name.clone();
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
    let chosen = version_at(&versions, request.as_of);
    let current = if in_place {
        base
    } else {
        target_blob(app, target, &blob, chosen).await?
    };
    Ok(Candidate {
        plan: plan(chosen, current.as_ref()),
        target: current,
        blob,
    })
}

/// One directory level of the backup container.
struct BackupLevel {
    /// Per source name in scope, the backup version current at the instant (`None`: backups
    /// exist, but all are newer); in name order.
    choices: Vec<(String, Option<Restorable>)>,
    /// The lives recorded for the level's names.
    lives: Lives,
    subdirectories: Vec<String>,
}

async fn backup_choices(
    app: &App,
    request: &RestoreRequest,
    directory: &str,
    tags: bool,
) -> Result<BackupLevel, StorageError> {
    let vault = app.vault_of(&request.container)?;
    let pages = list_backup_directory(&vault, (!directory.is_empty()).then_some(directory), tags)?;
    let mut best: BTreeMap<String, Option<Restorable>> = BTreeMap::new();
    let prefix = request.prefix.as_deref().unwrap_or_default();
    let level = each_complete_backup(pages, prefix, |parsed, written, backup| {
        // The backup carries the version's type, headers, MD5 and tags; its stamp the tier.
        let metadata = backup.metadata_or_empty();
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
            ..backup.clone()
        };
        let restorable = Restorable {
            version,
            source: VersionSource::Backup(backup.name),
        };
        let slot = best.entry(parsed.source_name).or_insert(None);
        let candidates: Vec<Restorable> = slot.take().into_iter().chain([restorable]).collect();
        *slot = version_at(&candidates, request.as_of).cloned();
    })
    .await?;
    Ok(BackupLevel {
        choices: best.into_iter().collect(),
        lives: level.lives,
        subdirectories: level.subdirectories,
    })
}

/// The version now at `target/blob`, with its tags when they could matter (the chosen version
/// has some, or the blob does).
async fn target_blob(
    app: &App,
    target: &str,
    blob: &str,
    chosen: Option<&Restorable>,
) -> Result<Option<Version>, StorageError> {
    let client = app.source.container(target)?.blob(blob);
    let state = match client.state().await {
        Ok(state) => state,
        Err(e) if e.is(ErrorCode::ContainerNotFound) => None,
        Err(e) => return Err(e),
    };
    let Some(state) = state else {
        return Ok(None);
    };
    let version_tags = chosen.and_then(|r| r.version.properties.tags.as_ref());
    let mut version = state.version;
    version.properties.tags = match (state.tag_count, version_tags) {
        (0, _) => Some(Tags::new()),
        (_, None) => None,
        (_, Some(_)) => match client.tags().await {
            Ok(tags) => Some(tags),
            Err(e) if e.is_tags_refusal() => None,
            Err(e) => return Err(e),
        },
    };
    Ok(Some(version))
}

async fn ensure_container(app: &App, name: &str) -> Result<(), StorageError> {
    app.source.container(name)?.create_if_missing().await
}

/// Whether the target blob holds exactly the bytes of `version` (both read in full).
async fn same_bytes(
    app: &App,
    request: &RestoreRequest,
    target: &str,
    blob: &str,
    version: &Restorable,
) -> Result<bool, StorageError> {
    let source = match &version.source {
        VersionSource::Base if target == request.container => return Ok(true),
        VersionSource::Base => app.source.container(&request.container)?.blob(blob),
        VersionSource::Snapshot(id) => app
            .source
            .container(&request.container)?
            .blob(blob)
            .at_snapshot(id)?,
        VersionSource::Backup(name) => app.vault_of(&request.container)?.blob(name),
    };
    let current = app.source.container(target)?.blob(blob);
    let (theirs, ours) = futures::try_join!(current.read(None), source.read(None))?;
    Ok(theirs.bytes == ours.bytes)
}

enum CopyBack {
    Written,
    /// The target blob is no longer what the plan saw: nothing was written.
    ChangedSincePlan,
}

/// Server-side copy of the chosen version onto the target blob, waited to completion. The copy
/// is conditional on the target being what the plan saw (`If-Match` on its ETag, or
/// `If-None-Match: *` for a blob that was absent), so a write by ingestion since is never
/// overwritten; it keeps the version's type, content headers and Content-MD5 as stored, and
/// carries the version's user metadata (never the stamp), tags and tier.
async fn copy_back(
    app: &App,
    request: &RestoreRequest,
    target: &str,
    blob: &str,
    restorable: &Restorable,
    planned_against: Option<&str>,
) -> Result<CopyBack, StorageError> {
    let version = &restorable.version;
    let expiry = OffsetDateTime::now_utc() + app.config.copy_timeout + time::Duration::minutes(15);
    let source_url: Url = match &restorable.source {
        VersionSource::Snapshot(id) => {
            app.source
                .readable_blob_url(&request.container, blob, Some(id), expiry)
                .await?
        }
        VersionSource::Backup(name) => {
            let backup_container = app.backup_container_of(&request.container)?;
            app.backup
                .readable_blob_url(&backup_container, name, None, expiry)
                .await?
        }
        // In place, the base blob is the version; into another container it is copied from the
        // lake, pinned to the version's ETag.
        VersionSource::Base if target == request.container => return Ok(CopyBack::Written),
        VersionSource::Base => {
            app.source
                .readable_blob_url(&request.container, blob, None, expiry)
                .await?
        }
    };
    let pinned = (restorable.source == VersionSource::Base).then_some(version.etag.as_str());
    let what = format!("{target}/{blob}");
    let destination: Blob = app.source.container(target)?.blob(blob);
    // Copy Blob copies the source's metadata when the request names none: a version without
    // user metadata is cleared after the copy, so no stamp key stays behind.
    let metadata = version.metadata_or_empty();
    let clear_metadata = metadata.is_empty();
    let properties = &version.properties;
    let attributes = CopyAttributes {
        metadata,
        stored_md5: None,
        tags: properties.tags.clone(),
        // Tiers are a block blob's.
        tier: properties
            .access_tier
            .clone()
            .filter(|_| properties.blob_type == BlobType::Block),
    };
    let overwrite = match planned_against {
        Some(etag) => Overwrite::IfMatch(etag),
        None => Overwrite::Never,
    };
    match copy_server_side(
        &destination,
        &source_url,
        pinned,
        &attributes,
        ServerCopy::Async,
        overwrite,
    )
    .await
    {
        Ok(copied) if copied.tags_refused => {
            warn!(
                blob,
                "the lake refused to set the version's tags: restored without them"
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
    let done = wait_for_copy(&destination, config.copy_timeout, config.copy_poll_interval).await?;
    let failed = |detail: String| StorageError::other(format!("restoring {what}"), detail);
    match done {
        Some(state) if matches!(state.version.copy_status, Some(CopyStatus::Success) | None) => {
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
                    .map_err(|e| e.context(format!("clearing the bookkeeping metadata of {what}")));
                match cleared {
                    Ok(()) => {}
                    // Cleared by a try whose answer was lost, or written by someone since: the
                    // blob as it is now says which.
                    Err(e) if e.is(ErrorCode::ConditionNotMet) => {
                        let now = destination.state().await?;
                        match now {
                            Some(now)
                                if now.metadata().is_empty() && now.copied_from(&source_url) => {}
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
