//! The backup kind of work: one directory level of one container, from a continuation on,
//! repaired within a time budget.
//!
//! A part lists its level of `{c}bak` (backups and records of lives: [`VaultLevel`]) and the
//! same level of the lake with snapshots (delimiter `/`); backups keep the lake's directories,
//! so memory grows with one directory, never with the container. Entries are dealt with in the
//! order the service lists them, one slot per name or sub-directory ([`walk`]): each
//! sub-directory is queued as a new shard (the fan-out); a blob whose current version has no
//! complete backup is backed up — copied by the backup engine, or requested for the ADF engine —
//! and then snapshotted unless a snapshot carries its ETag. A blob that cannot be protected is
//! named in the part's notes and the rest of the directory goes on.
//!
//! The budget (`SHARD_TIME_BUDGET_SECONDS`) is checked before every repair starts; once it is
//! spent the rest of the directory is queued as a continuation that lists again from the page
//! of the first slot not done and skips, by equality, the entries through the last slot done.
//! Nothing compares a name with the service's order: which names are gone from the lake is
//! decided only from a complete listing of the level (this part's own, when it listed the whole
//! level; otherwise a names-only listing in a last part), and a gone name's life is recorded as
//! ended beside its backups. Every step is idempotent, so a part that fails or dies is simply
//! retried.

mod listing;
mod root;
mod slot;
mod walk;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use futures::{future::BoxFuture, TryStreamExt};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    budget::RecordedStop,
    kind::{Kind, NoLine, Part as KindPart, PartDone},
    Fanout, JobError, Shard,
};
use crate::{
    app::App,
    core::{job::Notes, life::Record, shard::Phase},
    engine::{
        lives,
        retention::{prune_directory, DirectoryScope, PruneOutcome},
        vault::VaultLevel,
    },
    kind_counts,
    storage::{
        listing::{list_directory_names, ListedEntry},
        ErrorCode, Namespace, StorageError,
    },
    telemetry,
};

/// The backup kind.
#[derive(Debug)]
pub struct BackupKind;

/// What a backup job does besides backing up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupOptions {
    /// A reconciliation's shard: it also prunes what the retention policy no longer keeps (a
    /// producer's job, which ingestion waits for, does not).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prune: bool,
}

kind_counts! {
    /// What one backup shard did, in numbers.
    pub struct BackupCounts {
        /// Base blobs judged.
        blobs,
        snapshots_created,
        /// Versions copied by the shard (direct engine).
        backups_copied,
        /// Per-blob requests queued (ADF engine).
        backup_requests,
        /// Versions whose complete backup was already there.
        backups_present,
        /// Sources in the archive tier: not readable until rehydrated.
        archived,
        /// Other outcomes of a copy (outdated, a name too long to back up).
        backups_skipped,
        subdirectories_queued,
        /// Blobs with backups found gone from the lake, whose deletion marker this shard wrote.
        deletions_recorded,
        /// Backup versions and snapshots the retention policy no longer keeps, deleted by the
        /// shard.
        versions_pruned,
        snapshots_pruned,
        /// Blobs whose backup or snapshot failed: named, with the reason, in the job's ledger.
        /// The rest of their directory went on.
        failed,
        /// Blobs whose stored Content-MD5 does not match their bytes: backed up all the same
        /// (the bytes as the lake holds them, the MD5 property as stored), and named in the
        /// ledger.
        md5_mismatches,
        /// Names seen again with a version whose deletion had been recorded (an undelete).
        revivals_recorded,
        /// Directories of a hierarchical namespace judged (empty ones included; not in `blobs`).
        directories,
        /// Directory versions backed up (a new directory, or a new access control on one; not
        /// in `backups_copied`).
        directory_backups,
    }
}

impl Kind for BackupKind {
    const NAME: &'static str = "backup";
    const FIELD: Option<&'static str> = None;
    type Options = BackupOptions;
    type Counts = BackupCounts;
    type Line = NoLine;
    const REPORTS_LINES: bool = false;

    fn run_part(part: KindPart<'_, Self>) -> BoxFuture<'_, Result<PartDone<Self>, JobError>> {
        Box::pin(run_part(part))
    }

    fn not_done(counts: &BackupCounts) -> u64 {
        counts.failed
    }
}

impl super::NewJob<BackupKind> {
    /// A reconciliation of `container`: the whole container, pruning as it goes.
    pub fn reconciliation(container: &str) -> Self {
        Self {
            origin: super::JobOrigin::Reconcile,
            container: container.to_owned(),
            roots: vec![super::Root::directory("")],
            options: BackupOptions { prune: true },
        }
    }
}

/// Runs one part of a backup shard.
async fn run_part(part: KindPart<'_, BackupKind>) -> Result<PartDone<BackupKind>, JobError> {
    let mut part = Part {
        app: part.app,
        shard: part.shard,
        options: part.options,
        fanout: part.fanout,
        stop: part.stop.0,
        reached_stop: false,
        deadline: Instant::now(),
        counts: BackupCounts::default(),
        notes: Notes::default(),
        continuation: None,
        last_done: None,
        namespace: Namespace::Flat,
        behind_since: None,
    };
    part.run().await?;
    if part.shard.phase == Phase::Listing {
        part.record_rpo();
    }
    Ok(PartDone {
        counts: part.counts,
        notes: part.notes,
        continuation: part.continuation,
        last_done: part.last_done,
        lines: Vec::new(),
    })
}

/// One shard part under way.
struct Part<'a> {
    app: &'a App,
    shard: &'a Shard,
    options: &'a BackupOptions,
    fanout: &'a Fanout<'a>,
    /// Where a delivery of this shard before chose to stop (see [`super::Stop`]): this part's listing
    /// goes exactly that far — to the last entry that delivery dealt with, or before the first
    /// it did not — and leaves the rest to that continuation. Both may be gone from the lake
    /// since: then it stops at twice its budget, where it is (the continuation, which looks for
    /// its place again, then redoes what lies between; harmless, every step is idempotent).
    stop: Option<&'a RecordedStop>,
    /// The listing has reached `stop`: no slot after it is dealt with here.
    reached_stop: bool,
    /// No repair, record or deletion starts after it (one in flight may finish after it).
    deadline: Instant,
    counts: BackupCounts,
    notes: Notes,
    /// Where the rest of the directory goes on, when this part did not finish it.
    continuation: Option<Shard>,
    /// The last entry dealt with before that cut, in the service's order.
    last_done: Option<String>,
    /// The lake's namespace: a hierarchical one takes no snapshots and lists no tags.
    namespace: Namespace,
    /// The oldest Last-Modified of the listed versions this part left without a backup.
    behind_since: Option<OffsetDateTime>,
}

impl<'a> Part<'a> {
    /// The RPO as this part saw it: now less the oldest Last-Modified among the versions it
    /// listed that needed a backup and were left without one; zero when it left none.
    fn record_rpo(&self) {
        let behind = self.behind_since.map_or(Duration::ZERO, |since| {
            (OffsetDateTime::now_utc() - since)
                .try_into()
                .unwrap_or_default()
        });
        telemetry::record::rpo(&self.shard.container, behind);
    }

    fn budget_spent(&self) -> bool {
        Instant::now() >= self.deadline
    }

    async fn run(&mut self) -> Result<(), JobError> {
        self.namespace = self.app.source.namespace(&self.shard.container).await?;
        let level = match &self.shard.only {
            Some(name) => VaultLevel::of_name(self.app, &self.shard.container, name).await?,
            None => {
                VaultLevel::of_directory(self.app, &self.shard.container, &self.shard.prefix)
                    .await?
            }
        };
        // The budget is the part's work, after the listing of its `{c}bak` level: a level that
        // takes longer to list than a budget must not leave a part with nothing done.
        let budget = self.app.config.shard_budget;
        // A redo gets twice that (and half a minute more at least) to reach the stop the dead
        // delivery reached in one: it does again what that delivery had done, mostly found done.
        self.deadline = Instant::now()
            + if self.stop.is_some() {
                (budget * 2).max(budget + REDO_LEEWAY)
            } else {
                budget
            };
        if self.namespace.is_hierarchical() && self.shard.starts_container() && self.stop.is_none()
        {
            self.back_up_root(&level).await;
        }
        let listed = match self.shard.phase {
            Phase::Listing => Some(self.list_and_repair(&level).await?),
            Phase::Deletions => None,
        };
        // A redo cut short of the recorded stop fails, for a retry: the recorded continuation
        // goes on past that stop, so what lies between (a blob the dead delivery failed,
        // whose failure died with it) would be left to no part, and the job end `done`.
        if self.stop.is_some() && matches!(listed, Some(Listed::Cut)) && !self.reached_stop {
            return Err(StorageError::other(
                format!("redoing a part of {}", self.shard.prefix),
                "the redo did not reach where the delivery before it stopped within twice the                  shard's budget (SHARD_TIME_BUDGET_SECONDS): it is retried",
            )
            .into());
        }
        // What lies beyond a recorded stop (the rest of the listing, or the deletions) is the
        // recorded continuation's.
        if self.shard.only.is_some() || self.stop.is_some() {
            return Ok(());
        }
        // Which backed-up names the level no longer holds: known only from a complete listing.
        let present = match listed {
            Some(Listed::Complete(present)) => Some(present),
            Some(Listed::Cut) => return Ok(()),
            Some(Listed::Partial) if level.has_names() && self.budget_spent() => {
                // This part did its share: the survey is the next part's.
                self.continuation = Some(self.shard.deletions());
                return Ok(());
            }
            Some(Listed::Partial) | None if level.has_names() => {
                Some(survey(self.app, self.shard, &level).await?)
            }
            Some(Listed::Partial) | None => Some(Present::default()),
        };
        if let Some(present) = present {
            if !self.record_deletions(&level, &present).await? {
                return Ok(());
            }
        }
        self.migrate_legacy_markers(&level).await;
        self.prune().await
    }

    /// Lists the level from the shard's continuation and repairs slot by slot, until the
    /// listing ends or the budget is spent (then the continuation is set).
    /// Records, beside the backups, the end of every life the level no longer holds and the
    /// visit of every backed-up sub-directory it no longer has; returns `false` when the budget
    /// cut it short (the rest is queued).
    async fn record_deletions(
        &mut self,
        level: &VaultLevel,
        present: &Present,
    ) -> Result<bool, JobError> {
        let mut gone: Vec<Record> = level
            .newest
            .iter()
            .filter(|(name, _)| !present.names.contains(name.as_str()))
            .filter_map(|(name, (_, etag))| level.lives.next_deletion(name, etag))
            .collect();
        gone.sort_by(|a, b| a.name.cmp(&b.name));
        let vault = self.app.backup.container(&level.container)?;
        let now = OffsetDateTime::now_utc();
        let mut rounds = gone
            .chunks(self.app.config.snapshot_concurrency.max(1))
            .peekable();
        while let Some(round) = rounds.next() {
            let written = futures::future::join_all(round.iter().map(|record| {
                let written = level.newest.get(&record.name).map(|(at, _)| *at);
                vault.write_record(record, now.max(written.unwrap_or(now)))
            }))
            .await;
            for new in written {
                self.counts.deletions_recorded += u64::from(new?);
            }
            if rounds.peek().is_some() && self.budget_spent() {
                self.continuation = Some(self.shard.deletions());
                return Ok(false);
            }
        }
        // Queued once the records are all written: a cut part's continuation surveys again.
        for sub in level
            .subdirectories
            .iter()
            .filter(|sub| !present.directories.contains(sub.as_str()))
        {
            self.fanout.push(self.app, self.shard.child(sub)).await?;
            self.counts.subdirectories_queued += 1;
        }
        Ok(true)
    }

    /// Moves the markers of earlier releases found at this level beside their backups, within
    /// the budget (the next pass takes the rest).
    async fn migrate_legacy_markers(&mut self, level: &VaultLevel) {
        for legacy in &level.legacy_markers {
            if self.budget_spent() {
                return;
            }
            lives::migrate_legacy_marker(self.app, &self.shard.container, legacy).await;
        }
    }

    /// The directory is done: what the retention policy no longer keeps goes, within what is
    /// left of the budget (the next pass takes the rest).
    async fn prune(&mut self) -> Result<(), JobError> {
        let app = self.app;
        let policy = &app.config.retention;
        let prunes = policy.prunes_backups() || policy.prunes_snapshots();
        if !self.options.prune || !prunes || self.continuation.is_some() || self.budget_spent() {
            return Ok(());
        }
        let scope = DirectoryScope {
            container: &self.shard.container,
            directory: &self.shard.prefix,
            prefix: "",
            dry_run: false,
            policy,
            now: OffsetDateTime::now_utc(),
            deadline: self.deadline,
            after: None,
            until: None,
        };
        let mut refused = Vec::new();
        let pruned = prune_directory(app, &scope, &mut |action| {
            if action.action == PruneOutcome::Refused {
                refused.push(action);
            }
        })
        .await?
        .counts;
        self.counts.versions_pruned += pruned.versions_deleted;
        self.counts.snapshots_pruned += pruned.snapshots_deleted;
        // A writer without delete rights, an immutable container: the pass goes on, and says so.
        if let Some(first) = refused.first() {
            self.notes.warn(
                &first.blob,
                format!(
                    "{} deletion(s) the retention policy asks for in {:?} were refused ({}); \
                     the versions are kept",
                    refused.len(),
                    self.shard.prefix,
                    first.reason.as_deref().unwrap_or("refused")
                ),
            );
        }
        Ok(())
    }
}

/// The least time a redo has beyond its budget to reach the recorded stop.
const REDO_LEEWAY: Duration = Duration::from_secs(30);

/// How far a part's listing went.
enum Listed {
    /// It listed the whole level, from its start to its end: what it saw is what the level holds.
    Complete(Present),
    /// It listed the level to its end, from a continuation: which names were in the parts before
    /// is not known here.
    Partial,
    /// The budget stopped it; the continuation goes on.
    Cut,
}

/// The backed-up names and sub-directories a listing showed at the level (only those: memory
/// stays within the backup level's).
#[derive(Default)]
struct Present {
    names: HashSet<String>,
    directories: HashSet<String>,
}

impl Present {
    fn note(&mut self, identity: &str, level: &VaultLevel) {
        if level.newest.contains_key(identity) {
            self.names.insert(identity.to_owned());
        } else if level.subdirectories.contains(identity) {
            self.directories.insert(identity.to_owned());
        }
    }
}

/// A names-only listing of the whole level: which backed-up names and sub-directories it holds.
async fn survey(app: &App, shard: &Shard, level: &VaultLevel) -> Result<Present, JobError> {
    let source = app.source.container(&shard.container)?;
    let prefix = (!shard.prefix.is_empty()).then_some(shard.prefix.as_str());
    let pages = list_directory_names(&source, prefix)?;
    futures::pin_mut!(pages);
    let mut present = Present::default();
    loop {
        match pages.try_next().await {
            Ok(Some(page)) => {
                for entry in &page.entries {
                    match entry {
                        ListedEntry::Item(name) | ListedEntry::Directory(name) => {
                            present.note(name, level)
                        }
                    }
                }
            }
            Ok(None) => return Ok(present),
            Err(e) if e.is(ErrorCode::ContainerNotFound) => return Ok(present),
            Err(e) => return Err(e.into()),
        }
    }
}
