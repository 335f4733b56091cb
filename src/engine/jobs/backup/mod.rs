//! The backup kind of work: one directory level of one container, from a continuation on,
//! repaired within a time budget.
//!
//! A part lists its level of `{c}bak` (backups and records of lives: [`BackupLevel`]) and the
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

mod walk;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use futures::{future::BoxFuture, stream::FuturesUnordered, StreamExt, TryStreamExt};
use time::OffsetDateTime;
use tracing::{info, warn, Instrument};

use self::walk::{Search, Slot, SlotWork, Walk};
use super::{
    runner::{CutBounds, Fanout, PartDone, RecordedStop, Stop},
    JobError,
};
use crate::{
    app::App,
    core::{
        diff::{BlobVerdict, SnapshotDiff},
        job::{BackupCounts, Notes},
        life::Record,
        shard::{Phase, Shard},
        version::Version,
    },
    engine::{
        backup::BackupError,
        jobs::prune,
        lives, protect,
        protect::{CopiedNote, Moving, Protected},
        vault::BackupLevel,
    },
    storage::{
        listing::{list_directory_names, list_directory_with_snapshots, ListedEntry, ListingScope},
        ErrorCode, StorageError,
    },
};

/// Runs one part of a backup shard.
pub(super) async fn run_part(
    app: &App,
    shard: &Shard,
    fanout: &Fanout<'_>,
    stop: Stop<'_>,
) -> Result<PartDone, JobError> {
    let mut part = Part {
        app,
        shard,
        fanout,
        stop: stop.0,
        reached_stop: false,
        deadline: Instant::now(),
        counts: BackupCounts::default(),
        notes: Notes::default(),
        continuation: None,
        bounds: CutBounds::default(),
    };
    part.run().await?;
    Ok(PartDone {
        counts: part.counts.to_counts(),
        notes: part.notes,
        continuation: part.continuation,
        bounds: part.bounds,
        lines: Vec::new(),
    })
}

/// One shard part under way.
struct Part<'a> {
    app: &'a App,
    shard: &'a Shard,
    fanout: &'a Fanout<'a>,
    /// Where a delivery of this shard before chose to stop (see [`Stop`]): this part's listing
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
    /// Where that cut lies in the service's order.
    bounds: CutBounds,
}

/// The repairs of a part in flight: each ends with its slot's index and outcome.
type Repairs<'a> = FuturesUnordered<BoxFuture<'a, (usize, SlotOutcome)>>;

impl<'a> Part<'a> {
    fn budget_spent(&self) -> bool {
        Instant::now() >= self.deadline
    }

    async fn run(&mut self) -> Result<(), JobError> {
        let level = match &self.shard.only {
            Some(name) => BackupLevel::of_name(self.app, &self.shard.container, name).await?,
            None => {
                BackupLevel::of_directory(self.app, &self.shard.container, &self.shard.prefix)
                    .await?
            }
        };
        // The budget is the part's work, after the listing of its `{c}bak` level: a level that
        // takes longer to list than a budget must not leave a part with nothing done.
        let budget = self.app.config.shard_budget;
        self.deadline = Instant::now()
            + if self.stop.is_some() {
                budget * 2
            } else {
                budget
            };
        let listed = match self.shard.phase {
            Phase::Listing => Some(self.list_and_repair(&level).await?),
            Phase::Deletions => None,
        };
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
    async fn list_and_repair(&mut self, level: &BackupLevel) -> Result<Listed, JobError> {
        let (app, shard) = (self.app, self.shard);
        let source = app.source.container(&shard.container)?;
        let listing_prefix = shard.listing_prefix();
        let listing = |tags: bool| {
            list_directory_with_snapshots(
                &source,
                ListingScope {
                    prefix: (!listing_prefix.is_empty()).then_some(listing_prefix),
                    marker: shard.marker.as_deref(),
                    page_size: Some(app.config.shard_page_size as i32),
                    tags,
                    ..Default::default()
                },
            )
        };
        let mut tags = app.config.list_tags && !app.source.tags_refused();
        let mut pages = Box::pin(listing(tags)?);
        let from_start = shard.marker.is_none() && shard.after.is_none();
        let mut present = Present::default();
        // The name to skip through is looked for over more names than one page of the part
        // before could hold (this worker's page size, or the largest the service gives).
        let search_limit = 2 * (app.config.shard_page_size.max(MAX_PAGE_SIZE) as usize);
        let mut walk = Walk::new(shard.after.clone(), shard.resume_at.clone(), search_limit);
        let mut diff = SnapshotDiff::new();
        // The marker each page was listed from, by page number.
        let mut page_markers: Vec<Option<String>> = Vec::new();
        let mut next_marker = shard.marker.clone();
        // Pages listed while the name to skip through is looked for, not yet dealt with.
        let mut held: Vec<(usize, Vec<ListedEntry<Version>>)> = Vec::new();
        let mut work: Repairs<'a> = FuturesUnordered::new();
        let mut ended = false;
        let mut cut = false;
        loop {
            // A page is fetched only while there is budget, or while nothing was started yet.
            if (self.budget_spent() && walk.started > 0) || self.reached_stop {
                cut = true;
                break;
            }
            let page = match pages.try_next().await {
                Ok(Some(page)) => page,
                Ok(None) => {
                    ended = true;
                    break;
                }
                // An identity may read blobs but not their tags (Storage Blob Data Contributor):
                // the lake is listed without them, and the job says so.
                Err(e) if tags && page_markers.is_empty() && e.is_tags_refusal() => {
                    app.source.refuse_tags();
                    warn!(error = %e, "the lake refused to list tags: backing up without them");
                    self.notes.warn("", TAGS_REFUSED);
                    tags = false;
                    pages = Box::pin(listing(tags)?);
                    continue;
                }
                Err(e) if e.is(ErrorCode::ContainerNotFound) => {
                    warn!("the shard's container does not exist; nothing to do");
                    ended = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            let page_number = page_markers.len();
            page_markers.push(next_marker.clone());
            next_marker = page.next_marker.clone();
            let search = walk.search(page.entries.iter().map(entry_identity));
            held.push((page_number, page.entries));
            if search == Search::Holding {
                continue;
            }
            for (page_number, entries) in std::mem::take(&mut held) {
                self.take_page(
                    &mut walk,
                    &mut diff,
                    &mut present,
                    level,
                    page_number,
                    entries,
                );
            }
            // Start what is ready, in order, as budget and concurrency allow.
            if !self.start_ready(&mut walk, &mut work, level).await? {
                cut = true;
                break;
            }
        }
        // The listing ended while the name to skip through was still looked for: it is gone,
        // and nothing is skipped.
        walk.give_up_search();
        for (page_number, entries) in held {
            self.take_page(
                &mut walk,
                &mut diff,
                &mut present,
                level,
                page_number,
                entries,
            );
        }
        if ended {
            if let Some(verdict) = std::mem::take(&mut diff).finish() {
                walk.push(Slot::blob(verdict, walk.group_page));
            }
            if !self.start_ready(&mut walk, &mut work, level).await? {
                cut = true;
            }
        }
        while let Some((index, outcome)) = work.next().await {
            self.settle(&mut walk, index, outcome);
        }
        if !cut {
            return Ok(if from_start {
                Listed::Complete(present)
            } else {
                Listed::Partial
            });
        }
        // Go on from the page of the first slot not done, skipping through the last one done;
        // a name whose group was still open is such a slot too.
        let first_open_page = walk
            .pending
            .front()
            .map(|slot| slot.page)
            .or_else(|| diff.current_name().map(|_| walk.group_page));
        let first_open = walk
            .pending
            .front()
            .map(|slot| slot.identity().to_owned())
            .or_else(|| diff.current_name().map(str::to_owned));
        let continuation = match first_open_page {
            Some(page) => shard
                .continuation(
                    page_markers.get(page).cloned().flatten().as_deref(),
                    walk.last_done.as_deref(),
                )
                .resuming_at(first_open),
            None => shard.continuation(next_marker.as_deref(), None),
        };
        self.continuation = Some(continuation);
        self.bounds = CutBounds {
            last_done: walk.last_done.clone(),
        };
        Ok(Listed::Cut)
    }

    /// Deals with one page's entries in listing order: each name's group (its base and
    /// snapshots) becomes one slot with the diff's verdict, each sub-directory one slot.
    fn take_page(
        &self,
        walk: &mut Walk,
        diff: &mut SnapshotDiff,
        present: &mut Present,
        level: &BackupLevel,
        page_number: usize,
        entries: Vec<ListedEntry<Version>>,
    ) {
        let only = self.shard.only.as_deref();
        for entry in entries {
            if walk.skips(entry_identity(&entry)) {
                continue;
            }
            present.note(entry_identity(&entry), level);
            match entry {
                ListedEntry::Directory(_) if only.is_some() => {}
                ListedEntry::Directory(sub) => {
                    // A directory never falls between a name's entries: its group is whole.
                    if let Some(verdict) = std::mem::take(diff).finish() {
                        walk.push(Slot::blob(verdict, walk.group_page));
                    }
                    walk.push(Slot::directory(sub, page_number));
                }
                ListedEntry::Item(blob) => {
                    if only.is_some_and(|only| only != blob.name) {
                        continue;
                    }
                    let starts_group = diff.current_name() != Some(blob.name.as_str());
                    if let Some(verdict) = diff.push(blob) {
                        walk.push(Slot::blob(verdict, walk.group_page));
                    }
                    if starts_group {
                        walk.group_page = page_number;
                    }
                }
            }
        }
    }

    /// Starts the ready slots in order; returns `false` when the budget stopped it (slots were
    /// left for the continuation).
    async fn start_ready(
        &mut self,
        walk: &mut Walk,
        work: &mut Repairs<'a>,
        level: &BackupLevel,
    ) -> Result<bool, JobError> {
        while let Some(index) = walk.next_to_start() {
            if self.reached_stop {
                return Ok(false);
            }
            if let Some(stop) = self.stop {
                let identity = Some(walk.slot(index).identity());
                if stop.next.resume_at.as_deref() == identity {
                    self.reached_stop = true;
                    return Ok(false);
                }
                self.reached_stop = stop.last_done.as_deref() == identity;
            }
            let work_of_slot = match &walk.slot(index).work {
                SlotWork::Directory(sub) => SlotWork::Directory(sub.clone()),
                SlotWork::Blob(verdict) => SlotWork::Blob(verdict.clone()),
            };
            match work_of_slot {
                SlotWork::Directory(sub) => {
                    let child = self.shard.child(&sub);
                    self.fanout.push(self.app, child).await?;
                    self.counts.subdirectories_queued += 1;
                    walk.mark_started();
                    self.settle(walk, index, SlotOutcome::default());
                }
                SlotWork::Blob(verdict) => {
                    self.app.progress.saw(1);
                    let needs = Needs::of(&verdict, level);
                    if needs.nothing() {
                        walk.mark_started();
                        self.app.progress.did(1);
                        self.counts.blobs += 1;
                        self.counts.backups_present += 1;
                        self.settle(walk, index, SlotOutcome::default());
                        continue;
                    }
                    // Budget plus one repair: the first of a part always starts.
                    if self.budget_spent() && walk.started > 0 {
                        return Ok(false);
                    }
                    while work.len() >= self.app.config.snapshot_concurrency.max(1) {
                        if let Some((done, outcome)) = work.next().await {
                            self.settle(walk, done, outcome);
                        }
                    }
                    walk.mark_started();
                    let (app, container) = (self.app, self.shard.container.as_str());
                    work.push(Box::pin(async move {
                        (index, protect_blob(app, container, *verdict, needs).await)
                    }));
                }
            }
        }
        Ok(true)
    }

    fn settle(&mut self, walk: &mut Walk, index: usize, outcome: SlotOutcome) {
        self.app.progress.did(outcome.counts.blobs);
        self.counts.add(&outcome.counts);
        if let Some((blob, reason)) = outcome.failure {
            self.notes.fail(&blob, reason);
        }
        for (blob, reason) in outcome.warnings {
            self.notes.warn(&blob, reason);
        }
        walk.done(index);
    }

    /// Records, beside the backups, the end of every life the level no longer holds and the
    /// visit of every backed-up sub-directory it no longer has; returns `false` when the budget
    /// cut it short (the rest is queued).
    async fn record_deletions(
        &mut self,
        level: &BackupLevel,
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
    async fn migrate_legacy_markers(&mut self, level: &BackupLevel) {
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
        if !self.shard.prune || !prunes || self.continuation.is_some() || self.budget_spent() {
            return Ok(());
        }
        let scope = prune::DirectoryScope {
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
        let pruned = prune::prune_directory(app, &scope, &mut |action| {
            if action.action == "refused" {
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

/// The most entries the service lists in one page.
const MAX_PAGE_SIZE: u32 = 5_000;

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
    fn note(&mut self, identity: &str, level: &BackupLevel) {
        if level.newest.contains_key(identity) {
            self.names.insert(identity.to_owned());
        } else if level.subdirectories.contains(identity) {
            self.directories.insert(identity.to_owned());
        }
    }
}

/// A names-only listing of the whole level: which backed-up names and sub-directories it holds.
async fn survey(app: &App, shard: &Shard, level: &BackupLevel) -> Result<Present, JobError> {
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

/// What identifies an entry within its listing: a blob's name, or a sub-directory's prefix.
fn entry_identity<T: AsRef<str>>(entry: &ListedEntry<T>) -> &str {
    match entry {
        ListedEntry::Item(item) => item.as_ref(),
        ListedEntry::Directory(sub) => sub.as_str(),
    }
}

/// What one blob needs.
#[derive(Debug, Clone, Copy)]
struct Needs {
    backup: bool,
    snapshot: bool,
    /// Its version's life was recorded ended, and here it is again.
    revival: bool,
}

impl Needs {
    fn of(verdict: &BlobVerdict, level: &BackupLevel) -> Self {
        let blob = &verdict.blob;
        Needs {
            backup: !level.index.contains(&blob.name, &blob.etag),
            snapshot: verdict.needs_snapshot,
            revival: level.lives.ended_now(&blob.name, &blob.etag),
        }
    }

    fn nothing(&self) -> bool {
        !(self.backup || self.snapshot || self.revival)
    }
}

/// What protecting one blob did.
#[derive(Default)]
struct SlotOutcome {
    counts: BackupCounts,
    failure: Option<(String, String)>,
    warnings: Vec<(String, String)>,
}

impl SlotOutcome {
    fn note_copy(&mut self, blob: &str, copied: CopiedNote) {
        if copied.md5_mismatch {
            self.counts.md5_mismatches = 1;
            self.warnings.push((
                blob.to_owned(),
                "its stored Content-MD5 does not match its bytes: the bytes were backed up as \
                 the lake holds them, with the stored MD5 as is"
                    .into(),
            ));
        }
        if copied.tags_refused {
            self.warnings.push((
                blob.to_owned(),
                "its tags are not on its backup: the backup account refused to set tags (it \
                 takes Storage Blob Data Owner, or the blob tags/write action)"
                    .into(),
            ));
        }
    }
}

/// The warning of a job whose lake would not show blob index tags.
const TAGS_REFUSED: &str = "blob index tags are not backed up: the lake refused to list them to \
     this identity (reading tags takes Storage Blob Data Owner, a role with the blob tags/read \
     action, or a SAS with the t permission); set BACKUP_TAGS=false to say that is intended";

/// Attempts at a blob whose protection failed for a reason that may pass (the service busy or
/// unreachable), within the slot, before it is reported.
const BLOB_ATTEMPTS: u32 = 3;

/// Protects one blob: its backup (copied, or requested for ADF), then its snapshot — taken even
/// when the backup failed, since it is then the version's only copy — and the record of its
/// life seen again.
async fn protect_blob(
    app: &App,
    container: &str,
    verdict: BlobVerdict,
    needs: Needs,
) -> SlotOutcome {
    let span = tracing::info_span!("blob", blob = %verdict.blob.name, etag = %verdict.blob.etag);
    protect_listed(app, container, &verdict, needs)
        .instrument(span)
        .await
}

async fn protect_listed(
    app: &App,
    container: &str,
    verdict: &BlobVerdict,
    needs: Needs,
) -> SlotOutcome {
    let blob = &verdict.blob;
    let mut outcome = SlotOutcome::default();
    if blob.is_directory_placeholder() {
        // A hierarchical namespace lists its directories as empty blobs: not data.
        return outcome;
    }
    outcome.counts.blobs = 1;
    if blob.properties.customer_key {
        outcome.counts.failed = 1;
        outcome.failure = Some((
            blob.name.clone(),
            "it is encrypted with a customer-provided key, which this worker does not hold: \
             neither backed up nor snapshotted"
                .into(),
        ));
        warn!("encrypted with a customer-provided key; cannot be protected");
        return outcome;
    }
    let mut failed = Vec::new();
    // The blob changed since it was listed (an append log, a writer at work): its listed
    // version is gone, so the version it has now is protected instead.
    let mut moved = false;
    if needs.backup {
        match retried(|| protect::back_up_listed(app, container, blob)).await {
            Ok(Protected::Copied(copied)) => {
                outcome.counts.backups_copied = 1;
                outcome.note_copy(&blob.name, copied);
            }
            Ok(Protected::Present) => outcome.counts.backups_present = 1,
            Ok(Protected::Requested) => outcome.counts.backup_requests = 1,
            Ok(Protected::Archived) => {
                outcome.counts.archived = 1;
                outcome.warnings.push((
                    blob.name.clone(),
                    "it is in the archive tier: not readable, so not backed up, until it is \
                     rehydrated"
                        .into(),
                ));
            }
            Ok(Protected::Moved(reason)) => {
                info!(reason, "moved on since it was listed");
                moved = true;
            }
            Err(reason) => failed.push(format!("backup: {reason}")),
        }
    } else {
        outcome.counts.backups_present = 1;
    }
    if needs.snapshot && !moved {
        match retried(|| protect::snapshot_version(app, container, &blob.name, &blob.etag)).await {
            Ok(true) => outcome.counts.snapshots_created = 1,
            Ok(false) => moved = true,
            Err(reason) => failed.push(format!("snapshot: {reason}")),
        }
    }
    if moved {
        match retried(|| protect::protect_moving(app, container, &blob.name)).await {
            Ok(Moving::Snapshotted(copied)) => {
                outcome.counts.snapshots_created = 1;
                if let Some(copied) = copied {
                    outcome.counts.backups_copied = 1;
                    outcome.note_copy(&blob.name, copied);
                }
            }
            Ok(Moving::Gone) => outcome.counts.backups_skipped = 1,
            Err(reason) => failed.push(format!("its version now: {reason}")),
        }
    }
    if needs.revival {
        match retried(|| lives::record_revival(app, container, &blob.name, &blob.etag)).await {
            Ok(new) => outcome.counts.revivals_recorded = u64::from(new),
            Err(reason) => failed.push(format!("recording its return: {reason}")),
        }
    }
    if !failed.is_empty() {
        let reason = failed.join("; ");
        warn!(
            reason,
            "blob not protected; the rest of the directory goes on"
        );
        outcome.counts.failed = 1;
        outcome.failure = Some((blob.name.clone(), reason));
    }
    outcome
}

/// Runs `attempt` until it succeeds, fails for good, or [`BLOB_ATTEMPTS`] are spent.
async fn retried<T, E, F, Fut>(mut attempt: F) -> Result<T, String>
where
    E: Into<Failure>,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut pause = Duration::from_millis(500);
    for tries in 1..=BLOB_ATTEMPTS {
        match attempt().await.map_err(Into::into) {
            Ok(done) => return Ok(done),
            Err(Failure::Passing(reason)) if tries < BLOB_ATTEMPTS => {
                info!(reason, tries, "failed; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(Failure::Passing(reason) | Failure::Lasting(reason)) => return Err(reason),
        }
    }
    unreachable!("the last attempt returns")
}

/// Why a step for one blob failed.
enum Failure {
    /// The service was busy or could not be reached: worth another attempt.
    Passing(String),
    /// It will fail the same way again.
    Lasting(String),
}

impl From<StorageError> for Failure {
    fn from(error: StorageError) -> Self {
        if error.is_transient() {
            Failure::Passing(error.to_string())
        } else {
            Failure::Lasting(error.to_string())
        }
    }
}

impl From<BackupError> for Failure {
    fn from(error: BackupError) -> Self {
        match error {
            BackupError::Storage(e) => e.into(),
            BackupError::Adf(e) => Failure::Passing(e.to_string()),
            other => Failure::Lasting(other.to_string()),
        }
    }
}
