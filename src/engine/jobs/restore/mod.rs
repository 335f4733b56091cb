//! The restore kind of job work: one directory level of a restore — of `{c}bak` for a restore
//! from the backup account, of the lake for one from snapshots — within the shard's budget.
//!
//! A part lists its whole level (the versions, and what the target's same level holds, one
//! listing each rather than a request per blob), chooses each name's version current at the
//! instant (`core::restore_plan`; [`plan`]) and writes back, in its own name order, those the
//! target does not hold ([`write`]). The first part fans out the level's sub-directories. When
//! the budget runs out, the continuation lists the level again and goes on after the last name
//! dealt with: that name order is the part's own, over a complete listing, never the service's
//! listing order.
//!
//! Every write is conditional on the target being what the plan saw (`If-Match` on its ETag, or
//! `If-None-Match: *` where it had no such blob), so a part redone after a crash finds its own
//! writes in place and writes nothing twice, and a write by ingestion meanwhile is never
//! overwritten. Nothing is ever deleted: a blob created after the instant stays. The account
//! written to is exactly the one the job names ([`target`]).
//!
//! Into an account with a hierarchical namespace, directory versions are created as directories
//! and every path is given its exact access control after its own write ([`access`], which
//! says why that is "ACLs last"); into a flat one, directories are left out and the job says
//! once that access control was not applied.

mod access;
mod copy;
mod plan;
mod target;
mod write;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing::Instrument;

use self::plan::Candidate;
use super::{
    budget::each_within_budget,
    kind::{Kind, Part as KindPart, PartDone},
    JobError, Shard,
};
pub use crate::core::restore_plan::RestoreOptions;
use crate::{
    app::App,
    core::{counts::KindCounts, restore_plan::RestoreFrom},
    kind_counts,
    storage::{Container, StorageAccount},
};

/// The restore kind.
#[derive(Debug)]
pub struct RestoreKind;

kind_counts! {
    /// What a restore counts, per blob. `errors`: blobs it could not restore, named in the
    /// notes (its name in the restore's summary since before restores were jobs).
    pub struct RestoreCounts {
        restored,
        unchanged,
        missing_version,
        deleted,
        changed_since_plan,
        errors,
        /// Directories of a hierarchical namespace created (empty ones included; each also
        /// counted `restored` or `unchanged`).
        directories_created,
        /// Paths given their exact access control (owner, group, permissions, ACL).
        access_set,
        /// Paths whose access control was not all set (an owner or group refused, or the
        /// call failed): named in the notes; their bytes stay restored.
        access_failed,
        /// Paths whose backup records an access control that a target without a hierarchical
        /// namespace cannot hold (said once in the notes); directories are not written there.
        access_not_applied,
        /// Directories that stood with other user metadata, which the service refused to
        /// set back (named in the warnings); their access control is set all the same.
        directory_metadata_refused,
        /// Directories a restore into a hierarchical namespace reaches (files at the instant
        /// under them) that have no directory version at the instant (backed up by an earlier
        /// release, or created after the instant): they come back only as their files' parents,
        /// with the access their parent's default ACL gives. Said once per level.
        directories_without_version,
    }
}

/// What a restore into a flat target from a hierarchical lake's backups says, once.
const ACCESS_NOT_APPLIED: &str =
    "the target account has no hierarchical namespace: the files were restored, but their \
     owners, groups, permissions and ACLs (kept by their backups) were not applied, and \
     directories were not created";

/// What a restore did with one blob (or, in a dry run, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreStep {
    /// Written back (or to be, in a dry run).
    Restore,
    /// The blob has no version at or before the instant (it was created later).
    MissingVersion,
    /// The blob's life had ended by the instant.
    Deleted,
    /// The target was written to (or created) between the plan and the write: left alone.
    ChangedSincePlan,
    Error,
}

/// One blob the restore acted on (or, in a dry run, would act on): every blob restored, to be
/// restored, without a version, deleted by then, changed since the plan, or failed (unchanged
/// ones are only counted). One line each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreAction {
    pub blob: String,
    pub action: RestoreStep,
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

impl Kind for RestoreKind {
    const NAME: &'static str = "restore";
    const FIELD: Option<&'static str> = Some("restore");
    type Options = RestoreOptions;
    type Counts = RestoreCounts;
    type Line = RestoreAction;

    fn run_part(part: KindPart<'_, Self>) -> BoxFuture<'_, Result<PartDone<Self>, JobError>> {
        Box::pin(run_part(part))
    }

    fn not_done(counts: &RestoreCounts) -> u64 {
        counts.errors + counts.access_failed
    }

    fn about(options: &RestoreOptions, container: &str) -> Option<serde_json::Value> {
        let target = options.target(container)?;
        Some(serde_json::json!({ "target": target }))
    }
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
    /// The target account has a hierarchical namespace: directories are created and every
    /// path is given its exact access control.
    target_hierarchical: bool,
}

impl<'a> Part<'a> {
    /// The part of `shard` about to run: where it restores to, and what that target is.
    async fn new(
        app: &'a App,
        shard: &'a Shard,
        options: &'a RestoreOptions,
    ) -> Result<Part<'a>, JobError> {
        let target_account = target::restore_account(app, options)?;
        let target_name = options.target_container(&shard.container);
        let target_in_lake_account = target_account.same_blob_service(&app.source);
        Ok(Part {
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
            target_hierarchical: target::hierarchical(target_account, target_name).await?,
        })
    }
}

/// Runs one part of a restore shard.
async fn run_part(part: KindPart<'_, RestoreKind>) -> Result<PartDone<RestoreKind>, JobError> {
    let KindPart {
        app,
        shard,
        options,
        fanout,
        sink,
        stop,
    } = part;
    let part = Part::new(app, shard, options).await?;
    let level = match options.from {
        RestoreFrom::Backup => part.plan_from_backup().await?,
        RestoreFrom::Snapshots => part.plan_from_snapshots().await?,
    };
    // The first part fans the level out; a continuation's names and sub-directories were seen
    // by the part before it.
    let mut done: PartDone<RestoreKind> = PartDone::new();
    if shard.part == 0 {
        part.open_level(&level, fanout, &mut done).await?;
    }
    for warning in &level.warnings {
        done.notes.warn("", warning.clone());
    }
    let candidates: Vec<Candidate> = level
        .candidates
        .into_iter()
        .filter(|candidate| stop.admits(&candidate.blob))
        .collect();
    let mut last_done = None;
    // The budget is for writes: a part always plans its whole level first.
    let finished = each_within_budget(
        candidates,
        stop.deadline(app.config.shard_budget),
        app.config.snapshot_concurrency,
        |candidate| {
            let span = tracing::info_span!("blob", blob = %candidate.blob);
            part.act(candidate).instrument(span)
        },
        |outcome| {
            app.progress.did(1);
            outcome.counted.count(&mut done.counts);
            KindCounts::add(&mut done.counts, &outcome.also);
            if let Some(reason) = outcome.access_failure {
                done.notes.fail(&outcome.blob, reason);
            }
            if let Some(warning) = outcome.warning {
                done.notes.warn(&outcome.blob, warning);
            }
            if let Some(action) = outcome.action {
                if let Some(error) = &action.error {
                    done.notes.fail(&action.blob, error.clone());
                }
                done.line(sink, action);
            }
            last_done = Some(outcome.blob);
        },
    )
    .await;
    if done.counts.access_not_applied > 0 {
        done.notes.warn("", ACCESS_NOT_APPLIED.to_owned());
    }
    if !finished {
        done.continuation = Some(shard.continuation(None, last_done.as_deref()));
    }
    Ok(done)
}

impl Part<'_> {
    /// What only a level's first part does: its sub-directories' shards queued, the level
    /// counted for the progress line, and on a hierarchical target the sub-directories with no
    /// version at the instant counted and named once.
    async fn open_level(
        &self,
        level: &plan::Level,
        fanout: &super::runner::Fanout<'_>,
        done: &mut PartDone<RestoreKind>,
    ) -> Result<(), JobError> {
        let (app, shard, options) = (self.app, self.shard, self.options);
        if self.target_hierarchical && !level.subdirectories.is_empty() {
            let unversioned = without_version(&level.subdirectories, &level.candidates, options);
            if !unversioned.is_empty() {
                done.counts.directories_without_version = unversioned.len() as u64;
                done.notes.warn("", without_version_warning(&unversioned));
            }
        }
        for sub in &level.subdirectories {
            if options.reaches(sub) {
                fanout.push(app, shard.child(sub)).await?;
            }
        }
        app.progress.saw(level.candidates.len() as u64);
        Ok(())
    }
}

/// The sub-directories (`a/b/`) a restore reaches that have no directory version at the
/// instant among `candidates` (none at all, or none then; one deleted then is no such).
fn without_version<'a>(
    subdirectories: &'a [String],
    candidates: &[Candidate],
    options: &RestoreOptions,
) -> Vec<&'a str> {
    subdirectories
        .iter()
        .filter(|sub| options.reaches(sub))
        .map(|sub| sub.trim_end_matches('/'))
        .filter(|name| {
            !candidates.iter().any(|c| {
                c.directory
                    && c.blob == *name
                    && !matches!(c.plan, crate::core::restore_plan::Plan::MissingVersion)
            })
        })
        .collect()
}

/// The one warning of a level about its directories without a version, naming a few.
fn without_version_warning(names: &[&str]) -> String {
    const NAMED: usize = 3;
    let shown: Vec<String> = names.iter().take(NAMED).map(|n| format!("{n:?}")).collect();
    let more = match names.len().saturating_sub(NAMED) {
        0 => String::new(),
        more => format!(" and {more} more"),
    };
    format!(
        "{} directories have no version at the instant ({}{more}): backed up before directories \
         were versions, or created after it, they come back only as their files' parents, with \
         the access their parent's default ACL gives, not their own",
        names.len(),
        shown.join(", ")
    )
}
