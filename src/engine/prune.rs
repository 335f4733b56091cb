//! `lakebackup prune`: deletes the backup versions and snapshots the retention policy
//! (`RETENTION_*`, see [`crate::core::retention`]) no longer keeps, directory by directory.
//!
//! Per directory it lists the `{c}bak` level (the versions, with their stamps), the source level
//! with snapshots (which blobs exist, and their snapshots) and the level's deletion markers;
//! memory holds one directory. Only complete, stamped backups are versions: anything else is
//! neither counted as a kept copy nor deleted. Each deletion carries `If-Match` on the ETag it
//! judged, so a blob that changed meanwhile is left alone; one the service refuses (an
//! immutability policy, a legal hold, a lease) is reported and skipped.

use std::{
    collections::{BTreeMap, HashSet},
    time::Instant,
};

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use time::OffsetDateTime;
use tracing::{info, warn, Instrument};

use super::reconcile::containers_in_scope;
use crate::{
    app::App,
    core::{
        life::Lives,
        naming::{self, ParsedBackupName},
        retention::{self, Fate, RetentionPolicy, VersionTime},
        version::Version,
    },
    storage::{
        listing::{
            each_complete_backup, list_backup_directory, list_directory_with_snapshots,
            until_container_missing, ListingScope,
        },
        Container, ErrorCode, StorageError,
    },
};

#[derive(Debug, Clone)]
pub struct PruneRequest {
    pub container: String,
    pub prefix: Option<String>,
    /// Report what would be deleted; delete nothing.
    pub dry_run: bool,
}

/// One blob pruning deleted (or, in a dry run, would delete), or could not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneAction {
    /// The lake's blob the version belongs to.
    pub blob: String,
    /// `backup` or `snapshot`.
    pub kind: &'static str,
    /// The backup blob's name, or the snapshot's timestamp.
    pub version: String,
    /// `delete` (dry run), `deleted`, `refused` (immutable, held or leased: skipped), `changed`
    /// (not the blob judged any more: left alone) or `error`.
    pub action: &'static str,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What pruning kept and deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneCounts {
    pub versions_kept: u64,
    pub versions_deleted: u64,
    pub snapshots_kept: u64,
    pub snapshots_deleted: u64,
    pub bytes_freed: u64,
    pub bytes_kept: u64,
    pub refused: u64,
    pub errors: u64,
}

impl PruneCounts {
    pub fn add(&mut self, other: &PruneCounts) {
        self.versions_kept += other.versions_kept;
        self.versions_deleted += other.versions_deleted;
        self.snapshots_kept += other.snapshots_kept;
        self.snapshots_deleted += other.snapshots_deleted;
        self.bytes_freed += other.bytes_freed;
        self.bytes_kept += other.bytes_kept;
        self.refused += other.refused;
        self.errors += other.errors;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneSummary {
    pub status: &'static str,
    pub container: String,
    pub dry_run: bool,
    #[serde(flatten)]
    pub counts: PruneCounts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// A prune over several containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneRun {
    pub status: &'static str,
    pub dry_run: bool,
    pub total: PruneCounts,
    pub containers: Vec<PruneSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Prunes every container in `scope` (every container of the lake when `None`), one after the
/// other.
pub async fn prune_all(
    app: &App,
    scope: Option<&[String]>,
    prefix: Option<String>,
    dry_run: bool,
    report: &mut (dyn FnMut(PruneAction) + Send),
) -> PruneRun {
    let mut run = PruneRun {
        status: "ok",
        dry_run,
        total: PruneCounts::default(),
        containers: Vec::new(),
        error: None,
    };
    let containers = match containers_in_scope(app, scope).await {
        Ok(containers) => containers,
        Err(e) => {
            run.status = "failed";
            run.error = Some(e.to_string());
            return run;
        }
    };
    for container in containers {
        let request = PruneRequest {
            container,
            prefix: prefix.clone(),
            dry_run,
        };
        let summary = prune(app, &request, report).await;
        run.total.add(&summary.counts);
        if summary.status != "ok" {
            run.status = "failed";
        }
        run.containers.push(summary);
    }
    run
}

/// Prunes `request`'s container (or directory tree) by the app's policy, reporting each
/// deletion to `report` as it is made.
pub async fn prune(
    app: &App,
    request: &PruneRequest,
    report: &mut (dyn FnMut(PruneAction) + Send),
) -> PruneSummary {
    let span =
        tracing::info_span!("prune", container = %request.container, dry_run = request.dry_run);
    async {
        let started = Instant::now();
        let mut summary = PruneSummary {
            status: "ok",
            container: request.container.clone(),
            dry_run: request.dry_run,
            counts: PruneCounts::default(),
            error: None,
            duration_ms: 0,
        };
        if let Err(e) = naming::validate_container_name(&request.container) {
            summary.status = "failed";
            summary.error = Some(e.to_string());
            return summary;
        }
        if !app.config.retention.prunes_backups() && !app.config.retention.prunes_snapshots() {
            info!("no RETENTION_* setting: nothing is pruned");
            return summary;
        }
        let prefix = request.prefix.as_deref().unwrap_or("");
        let mut directories = vec![naming::directory_of(prefix).unwrap_or("").to_owned()];
        let now = OffsetDateTime::now_utc();
        while let Some(directory) = directories.pop() {
            let scope = DirectoryScope {
                container: &request.container,
                directory: &directory,
                prefix,
                dry_run: request.dry_run,
                now,
                deadline: None,
            };
            match prune_directory(app, &scope, report).await {
                Ok((counts, subdirectories)) => {
                    summary.counts.add(&counts);
                    directories.extend(
                        subdirectories
                            .into_iter()
                            .filter(|sub| {
                                sub.starts_with(prefix) || prefix.starts_with(sub.as_str())
                            })
                            .rev(),
                    );
                }
                Err(error) => {
                    warn!(%error, directory, "pruning stopped");
                    summary.error = Some(error.to_string());
                    break;
                }
            }
        }
        if summary.error.is_some() || summary.counts.errors > 0 {
            summary.status = "failed";
        }
        summary.duration_ms = started.elapsed().as_millis() as u64;
        info!(counts = ?summary.counts, status = summary.status, "pruning finished");
        summary
    }
    .instrument(span)
    .await
}

/// One directory to prune.
pub struct DirectoryScope<'a> {
    pub container: &'a str,
    /// Empty for the root, else ending in `/`.
    pub directory: &'a str,
    /// Only names starting with it.
    pub prefix: &'a str,
    pub dry_run: bool,
    pub now: OffsetDateTime,
    /// Past it no deletion is started (a shard's budget); the rest waits for the next pass.
    pub deadline: Option<Instant>,
}

/// Prunes the blobs directly in one directory; returns the counts and the sub-directories of
/// its `{c}bak` level.
pub async fn prune_directory(
    app: &App,
    scope: &DirectoryScope<'_>,
    report: &mut (dyn FnMut(PruneAction) + Send),
) -> Result<(PruneCounts, Vec<String>), StorageError> {
    let policy = &app.config.retention;
    let mut counts = PruneCounts::default();
    let vault = app.vault_of(scope.container)?;
    let source = app.source.container(scope.container)?;
    let (versions, lives, subdirectories) =
        backup_versions(&vault, scope.directory, scope.prefix).await?;
    let lake = lake_level(&source, scope.directory, scope.prefix).await?;
    let instants = policy.kept_instants(scope.now);
    let mut doomed = Vec::new();
    // The versions whose backup stays: a snapshot of any other version may be its only copy.
    let mut kept_backups: HashSet<(&str, &str)> = HashSet::new();
    for (name, backups) in &versions {
        let times: Vec<VersionTime> = backups
            .iter()
            .map(|b| VersionTime {
                last_modified: b.written,
            })
            .collect();
        let kept = if policy.prunes_backups() {
            // Ordered as restore orders them: by time, then by backup name.
            let newest = backups
                .iter()
                .max_by_key(|b| (b.written, b.backup.name.clone()));
            let fate = match (lake.get(name), newest) {
                (Some(entries), _) if entries.iter().any(|e| e.snapshot.is_none()) => Fate::Present,
                (_, Some(newest)) if lives.ended_now(name, &newest.parsed.etag) => lives
                    .last_seen(name, &newest.parsed.etag)
                    .map_or(Fate::Present, Fate::DeletedAt),
                _ => Fate::Present,
            };
            retention::keep(policy, &times, fate, scope.now, &instants)
        } else {
            vec![true; backups.len()]
        };
        app.progress.saw(backups.len() as u64);
        app.progress.did(backups.len() as u64);
        for (backup, kept) in backups.iter().zip(kept) {
            let bytes = backup.backup.content_length;
            if kept {
                counts.versions_kept += 1;
                counts.bytes_kept += bytes;
                kept_backups.insert((name.as_str(), backup.parsed.etag.as_str()));
            } else {
                doomed.push(Doomed {
                    blob: name.clone(),
                    kind: "backup",
                    version: backup.backup.name.clone(),
                    etag: Some(backup.backup.etag.clone()),
                    bytes,
                });
            }
        }
    }
    if policy.prunes_snapshots() {
        let snapshot_policy = RetentionPolicy {
            keep_days: policy.snapshot_days,
            ..Default::default()
        };
        for (name, entries) in &lake {
            let Some(base) = entries.iter().find(|e| e.snapshot.is_none()) else {
                continue;
            };
            // A version per ETag: the base's own (its snapshots are never pruned) and each
            // older one its snapshots hold.
            let mut by_etag: BTreeMap<&str, Vec<&Version>> = BTreeMap::new();
            for entry in entries.iter().filter(|e| e.snapshot.is_some()) {
                by_etag.entry(entry.etag.as_str()).or_default().push(entry);
            }
            let older: Vec<(&str, &Vec<&Version>)> = by_etag
                .iter()
                .filter(|(etag, _)| **etag != base.etag.as_str())
                .map(|(etag, snapshots)| (*etag, snapshots))
                .collect();
            let mut times: Vec<VersionTime> = older
                .iter()
                .map(|(_, snapshots)| VersionTime {
                    last_modified: snapshots[0].last_modified,
                })
                .collect();
            times.push(VersionTime {
                last_modified: base.last_modified,
            });
            let kept = retention::keep(&snapshot_policy, &times, Fate::Present, scope.now, &[]);
            for ((etag, snapshots), kept) in older.iter().zip(kept) {
                // Never the only copy: a version without a backup that stays keeps its snapshots.
                let only_copy = !kept_backups.contains(&(name.as_str(), *etag));
                if only_copy && !kept {
                    info!(
                        blob = name,
                        etag, "snapshot kept: its version has no backup that stays"
                    );
                }
                for snapshot in snapshots.iter() {
                    if kept || only_copy {
                        counts.snapshots_kept += 1;
                        counts.bytes_kept += snapshot.content_length;
                    } else {
                        doomed.push(Doomed {
                            blob: name.clone(),
                            kind: "snapshot",
                            version: snapshot.snapshot.clone().unwrap_or_default(),
                            etag: None,
                            bytes: snapshot.content_length,
                        });
                    }
                }
            }
            let current = by_etag.get(base.etag.as_str()).map_or(0, Vec::len) as u64;
            counts.snapshots_kept += current;
        }
    }
    let deadline = scope.deadline;
    let mut deletions = futures::stream::iter(doomed)
        .take_while(|_| std::future::ready(deadline.is_none_or(|d| Instant::now() < d)))
        .map(|doomed| delete(app, scope, &vault, doomed))
        .buffer_unordered(app.config.snapshot_concurrency);
    while let Some(action) = deletions.next().await {
        match action.action {
            "delete" | "deleted" if action.kind == "backup" => {
                counts.versions_deleted += 1;
                counts.bytes_freed += action.bytes;
            }
            "delete" | "deleted" => {
                counts.snapshots_deleted += 1;
                counts.bytes_freed += action.bytes;
            }
            "refused" | "changed" => {
                counts.refused += 1;
                counts.bytes_kept += action.bytes;
            }
            _ => counts.errors += 1,
        }
        report(action);
    }
    Ok((counts, subdirectories))
}

/// A backup or snapshot the policy no longer keeps.
struct Doomed {
    blob: String,
    kind: &'static str,
    version: String,
    /// The backup blob's ETag, for the condition (snapshots never change).
    etag: Option<String>,
    bytes: u64,
}

async fn delete(
    app: &App,
    scope: &DirectoryScope<'_>,
    vault: &Container,
    doomed: Doomed,
) -> PruneAction {
    let mut action = PruneAction {
        blob: doomed.blob,
        kind: doomed.kind,
        version: doomed.version,
        action: "delete",
        bytes: doomed.bytes,
        reason: None,
    };
    if scope.dry_run {
        return action;
    }
    let deleted = async {
        let doomed_blob = match doomed.kind {
            "backup" => vault.blob(&action.version),
            _ => app
                .source
                .container(scope.container)?
                .blob(&action.blob)
                .at_snapshot(&action.version)?,
        };
        doomed_blob
            .delete(doomed.etag.as_deref())
            .await
            .map_err(|e| e.context(format!("pruning {} {}", action.kind, action.version)))
    }
    .await;
    match deleted {
        Ok(()) => {
            info!(
                blob = action.blob,
                kind = action.kind,
                version = action.version,
                "pruned"
            );
            action.action = "deleted";
        }
        Err(e) => {
            let (verdict, reason) = judge_refusal(&e);
            if verdict == "error" {
                warn!(error = %e, version = action.version, "pruning a version failed");
            } else {
                info!(version = action.version, reason, "not pruned");
            }
            action.action = verdict;
            action.reason = Some(match verdict {
                "error" => e.to_string(),
                _ => reason.to_owned(),
            });
        }
    }
    action
}

/// How a refused deletion counts: `refused` (immutable, held, leased), `changed` (not the blob
/// judged, or gone already) or `error`.
pub fn judge_refusal(error: &StorageError) -> (&'static str, &'static str) {
    if error.is_immutable() {
        ("refused", "immutable (a WORM policy or legal hold): kept")
    } else if error.is_leased() {
        ("refused", "leased: kept")
    } else if error.is(ErrorCode::ConditionNotMet) || error.is(ErrorCode::BlobNotFound) {
        ("changed", "changed or gone since it was judged: left alone")
    } else {
        ("error", "")
    }
}

/// One complete, stamped backup of a version: the backup blob, what its name says, and when its
/// version was written.
struct BackupVersion {
    backup: Version,
    parsed: ParsedBackupName,
    written: OffsetDateTime,
}

/// The complete backups directly in `directory`, per source name (names under `prefix`), the
/// lives recorded there, and the level's sub-directories.
async fn backup_versions(
    vault: &Container,
    directory: &str,
    prefix: &str,
) -> Result<(BTreeMap<String, Vec<BackupVersion>>, Lives, Vec<String>), StorageError> {
    let pages = until_container_missing(list_backup_directory(
        vault,
        (!directory.is_empty()).then_some(directory),
        false,
    )?);
    let mut versions: BTreeMap<String, Vec<BackupVersion>> = BTreeMap::new();
    let level = each_complete_backup(pages, prefix, |parsed, written, backup| {
        versions
            .entry(parsed.source_name.clone())
            .or_default()
            .push(BackupVersion {
                backup,
                parsed,
                written,
            });
    })
    .await?;
    Ok((versions, level.lives, level.subdirectories))
}

/// The lake's blobs directly in `directory` (names under `prefix`): each name's base and
/// snapshots.
async fn lake_level(
    source: &Container,
    directory: &str,
    prefix: &str,
) -> Result<BTreeMap<String, Vec<Version>>, StorageError> {
    let pages = until_container_missing(list_directory_with_snapshots(
        source,
        ListingScope {
            prefix: (!directory.is_empty()).then_some(directory),
            ..Default::default()
        },
    )?);
    futures::pin_mut!(pages);
    let mut lake: BTreeMap<String, Vec<Version>> = BTreeMap::new();
    while let Some(page) = pages.try_next().await? {
        for entry in page.into_items() {
            if entry.name.starts_with(prefix) {
                lake.entry(entry.name.clone()).or_default().push(entry);
            }
        }
    }
    Ok(lake)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(status: u16, code: &str) -> StorageError {
        StorageError::refused("pruning", status, ErrorCode::parse(code))
    }

    #[test]
    fn immutable_held_or_leased_blobs_are_refusals_not_errors() {
        for (status, code, verdict) in [
            (409, "BlobImmutableDueToPolicy", "refused"),
            (409, "BlobImmutableDueToLegalHold", "refused"),
            (412, "LeaseIdMissing", "refused"),
            (412, "ConditionNotMet", "changed"),
            (404, "BlobNotFound", "changed"),
            (403, "AuthorizationPermissionMismatch", "error"),
        ] {
            assert_eq!(judge_refusal(&refusal(status, code)).0, verdict, "{code}");
        }
    }
}
