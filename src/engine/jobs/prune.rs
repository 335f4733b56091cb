//! The prune kind of job work: one directory level of a `{c}bak` container and the lake's same
//! level, pruned by the retention policy (`RETENTION_*`, see [`crate::core::retention`]) within
//! the shard's budget. A reconciliation's backup shards prune their level with the same
//! [`prune_directory`].
//!
//! A part lists the `{c}bak` level (the versions, with their stamps, and the records of lives)
//! and the lake's level with snapshots (which blobs exist, and their snapshots); memory holds one
//! level. Only complete, stamped backups are versions: anything else is neither counted as a kept
//! copy nor deleted. The policy is judged at one instant for the whole job. Each deletion carries
//! `If-Match` on the ETag it judged, so a blob that changed meanwhile is left alone; one the
//! service refuses (an immutability policy, a legal hold, a lease) is reported `refused` and
//! kept. The first part fans out the `{c}bak` level's sub-directories; when the budget runs out,
//! the continuation judges the level again and goes on after the last deletion done, in the
//! part's own order (blob, kind, version).

use std::{
    collections::{BTreeMap, HashSet},
    time::Instant,
};

use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::{
    ledger,
    runner::{each_within_budget, options_of, LineSink, PartDone, Stop},
    Fanout, JobError,
};
use crate::{
    app::App,
    core::{
        etag::normalize_etag,
        job::{Counts, PRUNE_COUNTS},
        life::Lives,
        naming::ParsedBackupName,
        restore_plan::filter_reaches,
        retention::{self, Fate, RetentionPolicy, VersionTime},
        shard::Shard,
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

/// Runs one part of a prune shard.
pub(super) async fn run_part(
    app: &App,
    shard: &Shard,
    fanout: &Fanout<'_>,
    sink: Option<LineSink<'_>>,
    stop: Stop<'_>,
) -> Result<PartDone, JobError> {
    let options = options_of(shard, shard.pruning.as_ref())?;
    let mut done = PartDone::new(&PRUNE_COUNTS);
    // The policy of the job's start travels with it: a worker's own settings never decide.
    let policy = &options.policy;
    if !policy.prunes_backups() && !policy.prunes_snapshots() {
        return Ok(done);
    }
    let now = OffsetDateTime::from_unix_timestamp(options.judged_at).map_err(|e| {
        StorageError::other(
            format!("pruning {}", shard.container),
            format!("the shard's instant is not one: {e}"),
        )
    })?;
    let scope = DirectoryScope {
        container: &shard.container,
        directory: &shard.prefix,
        prefix: &options.filter,
        dry_run: options.dry_run,
        policy,
        now,
        deadline: stop.deadline(app.config.shard_budget),
        after: shard.after.as_deref(),
        until: stop.0.and_then(|stop| stop.next.after.as_deref()),
    };
    // Queued, the plan is recorded before anything is deleted: a delivery redone after a crash
    // carries out the same plan, and reports what the one before deleted too.
    let queued = matches!(fanout, Fanout::Queue);
    let recorded = match queued {
        true => ledger::read_plan::<PrunePlan>(app, shard).await?,
        false => None,
    };
    let (plan, replay) = match recorded {
        Some(plan) => (plan, Replay::Yes),
        None => {
            let plan = judge_level(app, &scope).await?;
            if queued {
                ledger::record_plan(app, shard, &plan).await?;
            }
            (plan, Replay::No)
        }
    };
    let level = carry_out(app, &scope, plan, replay, &mut |action| {
        if action.action == "error" {
            done.notes
                .fail(&action.blob, action.reason.clone().unwrap_or_default());
        }
        done.line(sink, &action);
    })
    .await?;
    if shard.part == 0 {
        let filter = options.filter.as_str();
        for sub in level.subdirectories {
            if filter_reaches(filter, &sub) {
                fanout.push(app, shard.child(&sub)).await?;
            }
        }
    }
    done.counts = level.counts.to_counts();
    if let Some(last) = level.stopped_after {
        done.continuation = Some(shard.continuation(None, Some(&last)));
    }
    Ok(done)
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

/// What pruning kept and deleted (named as in [`PRUNE_COUNTS`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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

    /// As a shard's named counts.
    pub fn to_counts(&self) -> Counts {
        let mut counts = Counts::zero(&PRUNE_COUNTS);
        for (name, value) in self.fields() {
            counts.set(name, value);
        }
        counts
    }

    /// Read back from a job's named counts.
    pub fn from_counts(counts: &Counts) -> Self {
        let mut pruned = Self::default();
        for (name, value) in pruned.fields_mut() {
            *value = counts.get(name);
        }
        pruned
    }

    fn fields(&self) -> [(&'static str, u64); 8] {
        [
            (PRUNE_COUNTS[0], self.versions_kept),
            (PRUNE_COUNTS[1], self.versions_deleted),
            (PRUNE_COUNTS[2], self.snapshots_kept),
            (PRUNE_COUNTS[3], self.snapshots_deleted),
            (PRUNE_COUNTS[4], self.bytes_freed),
            (PRUNE_COUNTS[5], self.bytes_kept),
            (PRUNE_COUNTS[6], self.refused),
            (PRUNE_COUNTS[7], self.errors),
        ]
    }

    fn fields_mut(&mut self) -> [(&'static str, &mut u64); 8] {
        [
            (PRUNE_COUNTS[0], &mut self.versions_kept),
            (PRUNE_COUNTS[1], &mut self.versions_deleted),
            (PRUNE_COUNTS[2], &mut self.snapshots_kept),
            (PRUNE_COUNTS[3], &mut self.snapshots_deleted),
            (PRUNE_COUNTS[4], &mut self.bytes_freed),
            (PRUNE_COUNTS[5], &mut self.bytes_kept),
            (PRUNE_COUNTS[6], &mut self.refused),
            (PRUNE_COUNTS[7], &mut self.errors),
        ]
    }
}

/// One directory to prune.
pub struct DirectoryScope<'a> {
    pub container: &'a str,
    /// Empty for the root, else ending in `/`.
    pub directory: &'a str,
    /// Only names starting with it.
    pub prefix: &'a str,
    pub dry_run: bool,
    /// The policy judged by, and the instant it is judged at.
    pub policy: &'a RetentionPolicy,
    pub now: OffsetDateTime,
    /// Past it no deletion is started (a shard's budget) but the first; the rest waits for the
    /// continuation, or the next pass.
    pub deadline: Instant,
    /// The last deletion a previous part of the level did ([`PrunedLevel::stopped_after`]): only
    /// those after it are done, and what is kept was counted by the part that started the level.
    pub after: Option<&'a str>,
    /// The last deletion a delivery of this part before chose to stop after (see
    /// [`super::runner::Stop`]): none after it is done here.
    pub until: Option<&'a str>,
}

/// One directory level pruned.
pub struct PrunedLevel {
    pub counts: PruneCounts,
    /// The sub-directories of its `{c}bak` level.
    pub subdirectories: Vec<String>,
    /// The budget ran out: the last deletion done, for the continuation to go on after.
    pub stopped_after: Option<String>,
}

/// Prunes the blobs directly in one directory, reporting each deletion to `report`.
pub async fn prune_directory(
    app: &App,
    scope: &DirectoryScope<'_>,
    report: &mut (dyn FnMut(PruneAction) + Send),
) -> Result<PrunedLevel, StorageError> {
    let plan = judge_level(app, scope).await?;
    carry_out(app, scope, plan, Replay::No, report).await
}

/// A level judged: what it keeps (counted by the level's first part only) and what goes, in the
/// part's own order, after the part before's last deletion. A queued prune part records it in
/// its job's ledger before it deletes anything, so a delivery redone after a crash deletes and
/// reports exactly what the first planned, those the first deleted included.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PrunePlan {
    kept: PruneCounts,
    doomed: Vec<Doomed>,
    subdirectories: Vec<String>,
}

/// Whether a plan is carried out again, after a delivery that died part-way through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    No,
    /// A planned deletion found gone was done by the delivery before.
    Yes,
}

/// Judges one directory level by the policy: lists `{c}bak`'s level and the lake's, and says
/// what stays and what goes.
pub async fn judge_level(app: &App, scope: &DirectoryScope<'_>) -> Result<PrunePlan, StorageError> {
    let policy = scope.policy;
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
        // A version written after the instant the job judges at is younger than the judgement:
        // kept. The rest are judged as the level stood at that instant, the newest of them
        // current then.
        let (judged, later): (Vec<&BackupVersion>, Vec<&BackupVersion>) =
            backups.iter().partition(|b| b.written <= scope.now);
        let times: Vec<VersionTime> = judged
            .iter()
            .map(|b| VersionTime {
                last_modified: b.written,
            })
            .collect();
        let kept = if policy.prunes_backups() {
            // Ordered as restore orders them: by time, then by backup name.
            let newest = judged
                .iter()
                .max_by_key(|b| (b.written, b.backup.name.clone()));
            let fate = match (lake.get(name), newest) {
                _ if !later.is_empty() => Fate::Present,
                (Some(entries), _) if entries.iter().any(|e| e.snapshot.is_none()) => Fate::Present,
                (_, Some(newest)) if lives.ended_now(name, &newest.parsed.etag) => lives
                    .last_seen(name, &newest.parsed.etag)
                    .map_or(Fate::Present, Fate::DeletedAt),
                _ => Fate::Present,
            };
            retention::keep(policy, &times, fate, scope.now, &instants)
        } else {
            vec![true; judged.len()]
        };
        // The lake's current version keeps its backup whatever the order of versions written
        // in one second says (a backup's name orders them by ETag, which only Azure makes grow).
        let current = lake
            .get(name)
            .and_then(|entries| entries.iter().find(|e| e.snapshot.is_none()))
            .map(|base| normalize_etag(&base.etag).to_owned());
        let is_current =
            |b: &BackupVersion| current.as_deref() == Some(normalize_etag(&b.parsed.etag));
        let decided = judged
            .into_iter()
            .zip(kept)
            .chain(later.into_iter().map(|b| (b, true)))
            .map(|(b, kept)| (b, kept || is_current(b)));
        app.progress.saw(backups.len() as u64);
        app.progress.did(backups.len() as u64);
        for (backup, kept) in decided {
            let bytes = backup.backup.content_length;
            if kept {
                counts.versions_kept += 1;
                counts.bytes_kept += bytes;
                kept_backups.insert((name.as_str(), backup.parsed.etag.as_str()));
            } else {
                doomed.push(Doomed {
                    blob: name.clone(),
                    kind: DoomedKind::Backup,
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
                // Written after the instant judged at: younger than the judgement.
                let kept = kept || snapshots[0].last_modified > scope.now;
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
                            kind: DoomedKind::Snapshot,
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
    // The part's own order, so a continuation goes on after the last deletion done.
    doomed.sort_by(|a, b| a.order().cmp(&b.order()));
    if let Some(after) = scope.after {
        // What is kept was counted by the part that started the level.
        counts = PruneCounts::default();
        match serde_json::from_str::<(String, String, String)>(after) {
            Ok(after) => doomed.retain(|d| d.order() > (&after.0, &after.1, &after.2)),
            Err(e) => {
                warn!(error = %e, "a continuation's last deletion is unreadable: judging the level again")
            }
        }
    }
    Ok(PrunePlan {
        kept: counts,
        doomed,
        subdirectories,
    })
}

/// Deletes what `plan` dooms, in its order, until the scope's deadline (or its recorded stop),
/// reporting each deletion to `report`.
pub async fn carry_out(
    app: &App,
    scope: &DirectoryScope<'_>,
    plan: PrunePlan,
    replay: Replay,
    report: &mut (dyn FnMut(PruneAction) + Send),
) -> Result<PrunedLevel, StorageError> {
    let vault = app.vault_of(scope.container)?;
    let PrunePlan {
        kept: mut counts,
        mut doomed,
        subdirectories,
    } = plan;
    if let Some(until) = scope.until {
        match serde_json::from_str::<(String, String, String)>(until) {
            Ok(until) => doomed.retain(|d| d.order() <= (&until.0, &until.1, &until.2)),
            Err(e) => warn!(error = %e, "a recorded stop is unreadable: judging to the budget"),
        }
    }
    let mut last_done = None;
    let finished = each_within_budget(
        doomed,
        scope.deadline,
        app.config.snapshot_concurrency,
        |doomed| delete(app, scope, &vault, doomed, replay),
        |action| {
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
            last_done = serde_json::to_string(&(&action.blob, action.kind, &action.version)).ok();
            report(action);
        },
    )
    .await;
    Ok(PrunedLevel {
        counts,
        subdirectories,
        stopped_after: if finished { None } else { last_done },
    })
}

/// A backup or snapshot the policy no longer keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Doomed {
    blob: String,
    kind: DoomedKind,
    version: String,
    /// The backup blob's ETag, for the condition (snapshots never change).
    etag: Option<String>,
    bytes: u64,
}

/// What a doomed version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum DoomedKind {
    Backup,
    Snapshot,
}

impl DoomedKind {
    fn as_str(self) -> &'static str {
        match self {
            DoomedKind::Backup => "backup",
            DoomedKind::Snapshot => "snapshot",
        }
    }
}

impl Doomed {
    /// Where it comes in a part's deletions.
    fn order(&self) -> (&str, &str, &str) {
        (&self.blob, self.kind.as_str(), &self.version)
    }
}

async fn delete(
    app: &App,
    scope: &DirectoryScope<'_>,
    vault: &Container,
    doomed: Doomed,
    replay: Replay,
) -> PruneAction {
    let mut action = PruneAction {
        blob: doomed.blob,
        kind: doomed.kind.as_str(),
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
            // Deleted as the pruning identity (PRUNE_STORAGE), which may differ from the writer.
            DoomedKind::Backup => app.pruner().container(vault.name())?.blob(&action.version),
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
        // Planned, and deleted by the delivery before that died part-way through the plan.
        Err(e) if replay == Replay::Yes && e.is(ErrorCode::BlobNotFound) => {
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
    } else if error.is_permission_refusal() {
        (
            "refused",
            "this identity may not delete (a writer without delete rights): kept; prune with \
             PRUNE_STORAGE set to an identity that may",
        )
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
            (403, "AuthorizationPermissionMismatch", "refused"),
            (403, "AuthenticationFailed", "error"),
        ] {
            assert_eq!(judge_refusal(&refusal(status, code)).0, verdict, "{code}");
        }
    }
}
