//! Pruning one directory level by a retention policy (`RETENTION_*`, see
//! [`crate::core::retention`]): what a `{c}bak` level and the lake's same level keep, and the
//! deletion of the rest. Both kinds that prune use it: the prune kind, and the backup kind's
//! reconciliation shards.
//!
//! A level is judged ([`judge_level`], in [`judge`]) from one listing of each side; memory holds
//! one level. Only complete, stamped backups are versions: anything else is neither counted as a
//! kept copy nor deleted. Deletions ([`carry_out`]) go in the part's own order (blob, kind,
//! version) within a deadline; each carries `If-Match` on the ETag it judged, so a blob that
//! changed meanwhile is left alone; one the service refuses (an immutability policy, a legal
//! hold, a lease, a writer without delete rights) is reported `refused` and kept.

mod deletion;
mod judge;

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing::{info, warn};

pub use self::{deletion::judge_refusal, judge::judge_level};
use crate::{
    app::App, core::retention::RetentionPolicy, engine::jobs::each_within_budget, kind_counts,
    storage::StorageError,
};

kind_counts! {
    /// What pruning kept and deleted, per backup version and snapshot (and their bytes).
    pub struct PruneCounts {
        versions_kept,
        versions_deleted,
        snapshots_kept,
        snapshots_deleted,
        bytes_freed,
        bytes_kept,
        refused,
        errors,
    }
}

/// What kind of version a deletion is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionKind {
    /// A backup blob in `{c}bak`.
    Backup,
    /// A snapshot in the lake.
    Snapshot,
}

impl VersionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionKind::Backup => "backup",
            VersionKind::Snapshot => "snapshot",
        }
    }
}

/// What became of one deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneOutcome {
    /// Would be deleted (a dry run).
    Delete,
    Deleted,
    /// Immutable, held, leased, or this identity may not delete: kept.
    Refused,
    /// Not the blob judged any more, or gone: left alone.
    Changed,
    Error,
}

/// One version pruning deleted (or, in a dry run, would delete), or could not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneAction {
    /// The lake's blob the version belongs to.
    pub blob: String,
    pub kind: VersionKind,
    /// The backup blob's name, or the snapshot's timestamp.
    pub version: String,
    pub action: PruneOutcome,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
    /// The last deletion a delivery of this part before chose to stop after: none after it is
    /// done here.
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

/// A backup or snapshot the policy no longer keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Doomed {
    blob: String,
    kind: VersionKind,
    version: String,
    /// The backup blob's ETag, for the condition (snapshots never change).
    etag: Option<String>,
    bytes: u64,
    /// Planned by the delivery before, and no longer in the level: only looked at (gone: that
    /// delivery deleted it), never deleted.
    #[serde(skip)]
    gone: bool,
}

/// A backup version or snapshot of a level: its blob, kind and version.
pub(super) type VersionKey = (String, VersionKind, String);

impl Doomed {
    /// Where it comes in a part's deletions.
    fn order(&self) -> (&str, &str, &str) {
        (&self.blob, self.kind.as_str(), &self.version)
    }

    fn key(&self) -> VersionKey {
        (self.blob.clone(), self.kind, self.version.clone())
    }
}

impl PrunePlan {
    /// A recorded plan checked against the level judged again (`judged`, keeping `kept`): the
    /// ledger is writable by whoever can write the shard queue, so a recorded plan is no
    /// authority. A deletion is carried out only when the new judgement dooms it too (under
    /// the same bounded policy and instant, with the ETag it lists now); a version the new
    /// judgement keeps is kept and counted kept; one the level no longer holds was deleted by
    /// the delivery before, and is only looked at, so that it is reported once, as it was
    /// planned. A level's judgement stands when doomed versions go (a version's life grows only
    /// over lives that were doomed too), so an honest replay deletes exactly its plan.
    fn confirmed_by(self, judged: PrunePlan, kept: &HashMap<VersionKey, u64>) -> PrunePlan {
        let mut doomed_now: HashMap<VersionKey, Doomed> =
            judged.doomed.into_iter().map(|d| (d.key(), d)).collect();
        let mut counts = self.kept;
        let mut doomed = Vec::with_capacity(self.doomed.len());
        let mut seen = HashSet::new();
        for recorded in self.doomed {
            let key = recorded.key();
            if !seen.insert(key.clone()) {
                continue;
            }
            if let Some(confirmed) = doomed_now.remove(&key) {
                doomed.push(confirmed);
            } else if let Some(&bytes) = kept.get(&key) {
                info!(
                    blob = recorded.blob,
                    version = recorded.version,
                    "a recorded deletion the policy keeps: kept"
                );
                match recorded.kind {
                    VersionKind::Backup => counts.versions_kept += 1,
                    VersionKind::Snapshot => counts.snapshots_kept += 1,
                }
                counts.bytes_kept += bytes;
            } else {
                doomed.push(Doomed {
                    gone: true,
                    ..recorded
                });
            }
        }
        PrunePlan {
            kept: counts,
            doomed,
            // A recorded sub-directory only queues a shard of the same bounded policy, which
            // judges its own level: kept as the delivery before queued them.
            subdirectories: self.subdirectories,
        }
    }
}

/// A queued part's recorded plan, carried out again by a later delivery: checked against the
/// level judged again ([`PrunePlan::confirmed_by`]), then carried out.
pub async fn confirm_plan(
    app: &App,
    scope: &DirectoryScope<'_>,
    recorded: PrunePlan,
) -> Result<PrunePlan, StorageError> {
    let (judged, kept) = judge::judge_with_kept(app, scope).await?;
    Ok(recorded.confirmed_by(judged, &kept))
}

/// Whether a plan is carried out again, after a delivery that died part-way through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    No,
    /// A planned deletion found gone was done by the delivery before.
    Yes,
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

/// A position in a part's own order of deletions, as a continuation or a recorded stop carries
/// it (unreadable: `None`, and said so).
fn position(text: &str, what: &str) -> Option<(String, String, String)> {
    serde_json::from_str(text)
        .map_err(|e| warn!(error = %e, "{what} is unreadable: judging the level again"))
        .ok()
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
    if let Some(until) = scope.until.and_then(|u| position(u, "a recorded stop")) {
        doomed.retain(|d| d.order() <= (&until.0, &until.1, &until.2));
    }
    // A redo first goes as far as the delivery before got (its furthest deletion, gone now),
    // whatever the budget: the continuation judges the level again and no longer lists what
    // that delivery deleted, so a deletion left unreported here never would be, and a stop
    // recorded short of it would leave what lies between to no part at all. That delivery got
    // there within one budget, and most of it is a look each now.
    let reach = doomed
        .iter()
        .rposition(|d| d.gone)
        .map_or(0, |last| last + 1);
    let beyond = doomed.split_off(reach);
    let mut last_done = None;
    let mut done = |action: PruneAction| {
        count(&mut counts, &action);
        last_done = serde_json::to_string(&(&action.blob, action.kind, &action.version)).ok();
        report(action);
    };
    let delete = |doomed| deletion::delete(app, scope, &vault, doomed, replay);
    let unbounded = Instant::now() + Duration::from_secs(86_400 * 365);
    let concurrency = app.config.snapshot_concurrency;
    each_within_budget(doomed, unbounded, concurrency, delete, &mut done).await;
    let finished = each_within_budget(beyond, scope.deadline, concurrency, delete, &mut done).await;
    Ok(PrunedLevel {
        counts,
        subdirectories,
        stopped_after: if finished { None } else { last_done },
    })
}

fn count(counts: &mut PruneCounts, action: &PruneAction) {
    match (action.action, action.kind) {
        (PruneOutcome::Delete | PruneOutcome::Deleted, VersionKind::Backup) => {
            counts.versions_deleted += 1;
            counts.bytes_freed += action.bytes;
        }
        (PruneOutcome::Delete | PruneOutcome::Deleted, VersionKind::Snapshot) => {
            counts.snapshots_deleted += 1;
            counts.bytes_freed += action.bytes;
        }
        (PruneOutcome::Refused | PruneOutcome::Changed, _) => {
            counts.refused += 1;
            counts.bytes_kept += action.bytes;
        }
        (PruneOutcome::Error, _) => counts.errors += 1,
    }
}
