//! The prune kind of job work: one directory level of a `{c}bak` container and the lake's same
//! level, pruned by the retention policy the job was started with ([`crate::engine::retention`])
//! within the shard's budget. The policy is judged at one instant for the whole job. The first
//! part fans out the `{c}bak` level's sub-directories; when the budget runs out, the
//! continuation judges the level again and goes on after the last deletion done, in the part's
//! own order (blob, kind, version). Queued, a part records its plan in the job's ledger before
//! it deletes anything, so a delivery redone after a crash carries out the same plan and
//! reports what the one before deleted too; the plan is checked against the level judged again
//! first (the ledger is no authority): only what both doom is deleted.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    kind::{Kind, Part, PartDone},
    ledger, Fanout, JobError,
};
use crate::{
    core::{restore_plan::filter_reaches, retention::RetentionPolicy},
    engine::retention::{
        carry_out, confirm_plan, judge_level, DirectoryScope, PruneAction, PruneCounts, PruneOutcome, PrunePlan,
        Replay,
    },
    storage::StorageError,
};

/// The prune kind.
#[derive(Debug)]
pub struct PruneKind;

/// What a prune job deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneOptions {
    /// Only names starting with it (empty: every name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter: String,
    /// Say what would be deleted; delete nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// The instant (Unix seconds) the retention policy is judged at: one for the whole job, so
    /// that every part of a level judges it alike (a version written since is kept).
    pub judged_at: i64,
    /// The policy the job was started with (`RETENTION_*` where it started): the workers' own
    /// settings never decide what a prune deletes.
    pub policy: RetentionPolicy,
}

impl Kind for PruneKind {
    const NAME: &'static str = "prune";
    const FIELD: Option<&'static str> = Some("pruning");
    type Options = PruneOptions;
    type Counts = PruneCounts;
    type Line = PruneAction;

    fn run_part(part: Part<'_, Self>) -> BoxFuture<'_, Result<PartDone<Self>, JobError>> {
        Box::pin(run_part(part))
    }

    fn not_done(counts: &PruneCounts) -> u64 {
        counts.errors
    }
}

/// How far past this worker's clock a shard's instant may be (clocks differ a little).
const CLOCK_SKEW_SECONDS: i64 = 300;

/// A prune shard asks for no more than this worker's `RETENTION_*` (`bound`) allows: its policy
/// keeps at least as much, and its instant is not in the future (judged later, more looks
/// old). Anyone who can write the shard queue can write a shard; only the admin sets the
/// worker's settings. Otherwise it is refused: recorded failed and poisoned, nothing deleted.
fn within_the_workers_policy(
    bound: &RetentionPolicy,
    options: &PruneOptions,
) -> Result<(), JobError> {
    let looser = options.policy.looser_rules_than(bound);
    if !looser.is_empty() {
        return Err(JobError::Refused(format!(
            "the prune shard's retention policy keeps less than this worker's RETENTION_* \
             settings allow ({}): a shard may only be as strict or stricter; nothing was \
             deleted. Set RETENTION_* on the workers to the policy you mean, or prune in \
             process (`lakebackup prune` without --distributed)",
            looser.join(", ")
        )));
    }
    let latest = OffsetDateTime::now_utc().unix_timestamp() + CLOCK_SKEW_SECONDS;
    if options.judged_at > latest {
        return Err(JobError::Refused(format!(
            "the prune shard is judged at an instant in the future ({} s from now): nothing was deleted",
            options.judged_at - OffsetDateTime::now_utc().unix_timestamp()
        )));
    }
    Ok(())
}

async fn run_part(part: Part<'_, PruneKind>) -> Result<PartDone<PruneKind>, JobError> {
    let Part {
        app,
        shard,
        options,
        fanout,
        sink,
        stop,
    } = part;
    let mut done = PartDone::new();
    // The policy of the job's start travels with it, bounded by the worker's own.
    let policy = &options.policy;
    if !policy.prunes_backups() && !policy.prunes_snapshots() {
        return Ok(done);
    }
    within_the_workers_policy(&app.config.retention, options)?;
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
        until: stop.after(),
    };
    let queued = matches!(fanout, Fanout::Queue);
    let recorded = match queued {
        true => ledger::read_plan::<PrunePlan>(app, shard).await?,
        false => None,
    };
    let (plan, replay) = match recorded {
        // The ledger is no authority: what the delivery before planned is deleted only where
        // the level judged again dooms it too.
        Some(recorded) => (confirm_plan(app, &scope, recorded).await?, Replay::Yes),
        None => {
            let plan = judge_level(app, &scope).await?;
            if queued {
                ledger::record_plan(app, shard, &plan).await?;
            }
            (plan, Replay::No)
        }
    };
    let level = carry_out(app, &scope, plan, replay, &mut |action| {
        if action.action == PruneOutcome::Error {
            done.notes
                .fail(&action.blob, action.reason.clone().unwrap_or_default());
        }
        done.line(sink, action);
    })
    .await?;
    if shard.part == 0 {
        for sub in level.subdirectories {
            if filter_reaches(&options.filter, &sub) {
                fanout.push(app, shard.child(&sub)).await?;
            }
        }
    }
    done.counts = level.counts;
    if let Some(last) = level.stopped_after {
        done.continuation = Some(shard.continuation(None, Some(&last)));
    }
    Ok(done)
}
