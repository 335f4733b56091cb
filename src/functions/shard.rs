//! `QueueSnapshotBackupShard`: one directory shard — one directory level of one container, from
//! a continuation on, repaired within a time budget.
//!
//! The shard lists its level of the source with snapshots (delimiter `/`) and the same level of
//! `{c}bak` with metadata; backups keep the source's directories, so this is two listings of one
//! directory, and memory grows with one directory, never with the container. Entries are dealt
//! with in the order the service lists them, one slot per name or sub-directory: each
//! sub-directory is queued as a new shard (the fan-out); a blob whose current version has no
//! complete backup is backed up — copied in the shard with the `direct` engine (the consumer's
//! own path, stamp in the copy request), or queued as a per-blob request for the `adf` engine —
//! and then snapshotted unless a snapshot carries its ETag. A blob that cannot be protected is
//! named in the shard's notes and the rest of the directory goes on.
//!
//! The budget (`SHARD_TIME_BUDGET_SECONDS`) is checked before every repair starts; once it is
//! spent the rest of the directory is queued as a continuation that lists again from the page
//! of the first slot not done and skips, by equality, the entries through the last slot done.
//! Nothing compares a name with the service's order: which names are gone from the lake is
//! decided only from a complete listing of the level (this part's own, when it listed the whole
//! level; otherwise a names-only listing in a last part), and a gone name's life is recorded as
//! ended beside its backups. Every step is idempotent, so a shard that fails or dies is simply
//! retried.
//!
//! On the queue, a shard belongs to a job whose ledger (see [`crate::job_ledger`]) records each
//! shard queued and each shard finished; `lakebackup produce` runs a job's shards in-process.

use crate::storage::ErrorCode;
use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use azure_storage_blob::models::{
    BlobClientCreateSnapshotOptions, BlobClientCreateSnapshotResultHeaders, BlobClientDeleteOptions,
};
use futures::{future::BoxFuture, stream::FuturesUnordered, StreamExt, TryStreamExt};
use serde::Serialize;
use thiserror::Error;
use time::OffsetDateTime;
use tracing::{info, warn, Instrument};

use super::{
    consumer::{self, ConsumerError, ConsumerOutcome},
    prune,
};
use crate::{
    app::{App, CopyEngine},
    core::{
        backup_index::BackupIndex,
        diff::{BlobVerdict, SnapshotDiff},
        etag::quoted_etag,
        job::{ShardCounts, ShardNotes},
        life::{Change, Lives, Record},
        message::BackupRequest,
        naming,
        shard::{Phase, Shard},
    },
    job_ledger,
    storage::{
        blobs::{is_tags_refusal, write_record},
        listing::{
            each_complete_backup, list_backup_directory, list_directory_names,
            list_directory_with_snapshots, ListedBackup, ListedEntry, ListingScope,
        },
        StorageError, StorageResultExt,
    },
};

pub const FUNCTION_NAME: &str = "QueueSnapshotBackupShard";

/// What one shard did; the invocation's return value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShardReport {
    pub job: String,
    pub container: String,
    pub prefix: String,
    #[serde(flatten)]
    pub counts: ShardCounts,
    /// The blobs it could not protect, and those it warns about.
    #[serde(skip_serializing_if = "ShardNotes::is_empty")]
    pub notes: ShardNotes,
    /// The budget ran out and the rest of the directory was queued.
    pub continued: bool,
    pub duration_ms: u64,
}

/// Where a shard puts the shards it spawns (sub-directories, its continuation).
pub enum Fanout<'a> {
    /// On the shard queue, entered in the job's ledger first (the functions).
    Queue,
    /// On a list in this process (`lakebackup produce`).
    Local(&'a Mutex<Vec<Shard>>),
}

impl Fanout<'_> {
    async fn push(&self, app: &App, shard: Shard) -> Result<(), StorageError> {
        match self {
            Fanout::Queue => job_ledger::queue_shard(app, &shard).await,
            Fanout::Local(list) => {
                list.lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(shard);
                Ok(())
            }
        }
    }
}

#[derive(Debug, Error)]
pub enum ShardError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Copy(#[from] ConsumerError),
}

/// Runs one shard. A failure of the shard itself (a listing, the fan-out) fails it: the host
/// retries it, and what it had done is found done the next time. A blob that cannot be
/// protected does not fail it.
pub async fn run_shard(
    app: &App,
    shard: &Shard,
    fanout: &Fanout<'_>,
) -> Result<ShardReport, ShardError> {
    let span = tracing::info_span!(
        "shard",
        function = FUNCTION_NAME,
        job = %shard.job,
        container = %shard.container,
        prefix = %shard.prefix,
        part = shard.part,
    );
    async {
        let started = Instant::now();
        let mut part = Part {
            app,
            shard,
            fanout,
            deadline: started + app.config.shard_budget,
            report: ShardReport {
                job: shard.job.clone(),
                container: shard.container.clone(),
                prefix: shard.prefix.clone(),
                ..Default::default()
            },
            continuation: None,
        };
        part.run().await?;
        let mut report = part.report;
        if let Some(next) = part.continuation {
            fanout.push(app, next).await?;
            report.continued = true;
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        info!(report = ?report, "shard finished");
        Ok(report)
    }
    .instrument(span)
    .await
}

/// One shard part under way.
struct Part<'a> {
    app: &'a App,
    shard: &'a Shard,
    fanout: &'a Fanout<'a>,
    /// No repair, record or deletion starts after it (one in flight may finish after it).
    deadline: Instant,
    report: ShardReport,
    /// Where the rest of the directory goes on, when this part did not finish it.
    continuation: Option<Shard>,
}

/// The repairs of a part in flight: each ends with its slot's index and outcome.
type Repairs<'a> = FuturesUnordered<BoxFuture<'a, (usize, SlotOutcome)>>;

impl<'a> Part<'a> {
    fn budget_spent(&self) -> bool {
        Instant::now() >= self.deadline
    }

    async fn run(&mut self) -> Result<(), ShardError> {
        let level = backup_level(self.app, self.shard).await?;
        // The budget is the part's work, after the listing of its `{c}bak` level: a level that
        // takes longer to list than a budget must not leave a part with nothing done.
        self.deadline = Instant::now() + self.app.config.shard_budget;
        let listed = match self.shard.phase {
            Phase::Listing => Some(self.list_and_repair(&level).await?),
            Phase::Deletions => None,
        };
        if self.shard.only.is_some() {
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
    async fn list_and_repair(&mut self, level: &BackupLevel) -> Result<Listed, ShardError> {
        let (app, shard) = (self.app, self.shard);
        let source = app.source.container(&shard.container)?;
        let listing_prefix = shard.listing_prefix();
        let listing = |tags: bool| {
            list_directory_with_snapshots(
                &source,
                &shard.container,
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
        let mut walk = Walk::new(shard.after.clone());
        let mut diff = SnapshotDiff::new();
        // The marker each page was listed from, by page number.
        let mut page_markers: Vec<Option<String>> = Vec::new();
        let mut next_marker = shard.marker.clone();
        let mut work: Repairs<'a> = FuturesUnordered::new();
        let mut ended = false;
        let mut cut = false;
        'pages: loop {
            // A page is fetched only while there is budget, or while nothing was started yet.
            if self.budget_spent() && walk.started > 0 {
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
                Err(e) if tags && page_markers.is_empty() && is_tags_refusal(&e) => {
                    app.source.refuse_tags();
                    warn!(error = %e, "the lake refused to list tags: backing up without them");
                    self.report.notes.warn("", TAGS_REFUSED);
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
            if page_number == 0 {
                walk.find_skip(page.entries.iter().map(entry_identity));
            }
            for entry in page.entries {
                if walk.skips(entry_identity(&entry)) {
                    continue;
                }
                present.note(entry_identity(&entry), level);
                match entry {
                    ListedEntry::Directory(_) if shard.only.is_some() => {}
                    ListedEntry::Directory(sub) => {
                        // A directory never falls between a name's entries: its group is whole.
                        if let Some(verdict) = std::mem::take(&mut diff).finish() {
                            walk.push(Slot::blob(verdict, walk.group_page));
                        }
                        walk.push(Slot::directory(sub, page_number));
                    }
                    ListedEntry::Item(blob) => {
                        if shard.only.as_deref().is_some_and(|only| only != blob.name) {
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
            // Start what is ready, in order, as budget and concurrency allow.
            if !self.start_ready(&mut walk, &mut work, level).await? {
                cut = true;
                break 'pages;
            }
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
        let continuation = match first_open_page {
            Some(page) => shard.continuation(
                page_markers.get(page).cloned().flatten().as_deref(),
                walk.last_done.as_deref(),
            ),
            None => shard.continuation(next_marker.as_deref(), None),
        };
        self.continuation = Some(continuation);
        Ok(Listed::Cut)
    }

    /// Starts the ready slots in order; returns `false` when the budget stopped it (slots were
    /// left for the continuation).
    async fn start_ready(
        &mut self,
        walk: &mut Walk,
        work: &mut Repairs<'a>,
        level: &BackupLevel,
    ) -> Result<bool, ShardError> {
        while let Some(index) = walk.next_to_start() {
            let work_of_slot = match &walk.slot(index).work {
                SlotWork::Directory(sub) => SlotWork::Directory(sub.clone()),
                SlotWork::Blob(verdict) => SlotWork::Blob(verdict.clone()),
            };
            match work_of_slot {
                SlotWork::Directory(sub) => {
                    let child = self.shard.child(&sub);
                    self.fanout.push(self.app, child).await?;
                    self.report.counts.subdirectories_queued += 1;
                    walk.mark_started();
                    self.settle(walk, index, SlotOutcome::default());
                }
                SlotWork::Blob(verdict) => {
                    let needs = Needs::of(&verdict, level);
                    if needs.nothing() {
                        walk.mark_started();
                        self.report.counts.blobs += 1;
                        self.report.counts.backups_present += 1;
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
                    let (app, shard) = (self.app, self.shard);
                    work.push(Box::pin(async move {
                        (index, protect(app, shard, *verdict, needs).await)
                    }));
                }
            }
        }
        Ok(true)
    }

    fn settle(&mut self, walk: &mut Walk, index: usize, outcome: SlotOutcome) {
        let counts = &mut self.report.counts;
        counts.add(&outcome.counts);
        if let Some((blob, reason)) = outcome.failure {
            self.report.notes.fail(&blob, reason);
        }
        for (blob, reason) in outcome.warnings {
            self.report.notes.warn(&blob, reason);
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
    ) -> Result<bool, ShardError> {
        let mut gone: Vec<Record> = level
            .newest
            .iter()
            .filter(|(name, _)| !present.names.contains(name.as_str()))
            .filter_map(|(name, (_, etag))| level.lives.next_deletion(name, etag))
            .collect();
        gone.sort_by(|a, b| a.name.cmp(&b.name));
        let client = self.app.backup.container(&level.container)?;
        let now = OffsetDateTime::now_utc();
        let mut rounds = gone
            .chunks(self.app.config.snapshot_concurrency.max(1))
            .peekable();
        while let Some(round) = rounds.next() {
            let written = futures::future::join_all(round.iter().map(|record| {
                let written = level.newest.get(&record.name).map(|(at, _)| *at);
                write_record(
                    &client,
                    &level.container,
                    record,
                    now.max(written.unwrap_or(now)),
                )
            }))
            .await;
            for new in written {
                self.report.counts.deletions_recorded += u64::from(new?);
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
            self.report.counts.subdirectories_queued += 1;
        }
        Ok(true)
    }

    /// Moves the markers of earlier releases found at this level beside their backups, as the
    /// first deletion of their life with its time, then removes them where the service lets it.
    async fn migrate_legacy_markers(&mut self, level: &BackupLevel) {
        if level.legacy_markers.is_empty() || self.budget_spent() {
            return;
        }
        let Ok(client) = self.app.backup.container(&level.container) else {
            return;
        };
        for (marker, name, etag, seen) in &level.legacy_markers {
            if self.budget_spent() {
                return;
            }
            let seen = seen.unwrap_or_else(OffsetDateTime::now_utc);
            if let Err(error) = self
                .migrate_marker(&client, &level.container, name, etag, seen)
                .await
            {
                warn!(%error, marker = marker.name, "could not move a legacy deletion marker");
                continue;
            }
            let removed = client
                .blob_client(&marker.name)
                .delete(Some(BlobClientDeleteOptions {
                    if_match: Some(quoted_etag(&marker.etag).into()),
                    ..Default::default()
                }))
                .await
                .during(|| format!("removing the legacy marker {}", marker.name));
            match removed {
                Ok(_) => info!(marker = marker.name, "legacy deletion marker moved"),
                // An immutable backup container keeps it; it is read as what it is.
                Err(error) => info!(%error, marker = marker.name, "legacy marker kept"),
            }
        }
    }

    /// Writes a legacy marker's life as ended at `seen`, and — when the lake holds that very
    /// version now (undeleted since) — as seen again now: the shard of the name's own directory
    /// may have run before this one moved the marker, and would not have known.
    async fn migrate_marker(
        &self,
        client: &azure_storage_blob::BlobContainerClient,
        container: &str,
        name: &str,
        etag: &str,
        seen: OffsetDateTime,
    ) -> Result<(), StorageError> {
        let deletion = Record::new(name, etag, Change::Deleted, 1);
        write_record(client, container, &deletion, seen).await?;
        let lake = self.app.source.container(&self.shard.container)?;
        let what = format!("{}/{name}", self.shard.container);
        let now = crate::storage::blobs::blob_state(&lake.blob_client(name), &what).await;
        let lives_on = match now {
            Ok(state) => state.is_some_and(|state| state.etag == etag),
            Err(e) if e.is(ErrorCode::ContainerNotFound) => false,
            Err(e) => return Err(e),
        };
        if lives_on {
            let revival = Record::new(name, etag, Change::Revived, 1);
            let again = OffsetDateTime::now_utc().max(seen);
            write_record(client, container, &revival, again).await?;
        }
        Ok(())
    }

    /// The directory is done: what the retention policy no longer keeps goes, within what is
    /// left of the budget (the next pass takes the rest).
    async fn prune(&mut self) -> Result<(), ShardError> {
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
            now: OffsetDateTime::now_utc(),
            deadline: Some(self.deadline),
        };
        let (pruned, _) = prune::prune_directory(app, &scope, &mut |_| {}).await?;
        self.report.counts.versions_pruned += pruned.versions_deleted;
        self.report.counts.snapshots_pruned += pruned.snapshots_deleted;
        Ok(())
    }
}

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
async fn survey(app: &App, shard: &Shard, level: &BackupLevel) -> Result<Present, ShardError> {
    let source = app.source.container(&shard.container)?;
    let prefix = (!shard.prefix.is_empty()).then_some(shard.prefix.as_str());
    let pages = list_directory_names(&source, &shard.container, prefix)?;
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

/// The slots of a part in listing order: which are ready, started and done, and where the
/// part's continuation would go on.
struct Walk {
    /// Entries of the first page up to and including this name's run are skipped.
    skip_through: Option<String>,
    skip: SkipState,
    /// Slots not yet in the done prefix, in listing order, by index.
    pending: VecDeque<Slot>,
    /// The index of `pending`'s first slot.
    first_index: usize,
    /// How many of `pending` (from the front) have been started.
    started_in_pending: usize,
    /// Slots started in this part.
    started: usize,
    /// The identity of the last slot of the done prefix.
    last_done: Option<String>,
    /// The page the diff's open group started on.
    group_page: usize,
}

#[derive(Debug, PartialEq, Eq)]
enum SkipState {
    /// The first page has not been seen yet.
    Unknown,
    /// Skipping the first page's entries up to the name's run.
    Before,
    /// Inside that name's run (it may go on into the next page).
    InRun,
    Done,
}

impl Walk {
    fn new(skip_through: Option<String>) -> Self {
        Self {
            skip: if skip_through.is_some() {
                SkipState::Unknown
            } else {
                SkipState::Done
            },
            skip_through,
            pending: VecDeque::new(),
            first_index: 0,
            started_in_pending: 0,
            started: 0,
            last_done: None,
            group_page: 0,
        }
    }

    /// Looks for the name to skip through on the first page: when the page holds it, its
    /// entries up to and including that name's run are skipped; when it does not (the entry is
    /// gone, or was the last of the page before), nothing is.
    fn find_skip<'e>(&mut self, mut identities: impl Iterator<Item = &'e str>) {
        if self.skip != SkipState::Unknown {
            return;
        }
        let target = self.skip_through.as_deref().unwrap_or_default();
        self.skip = if identities.any(|identity| identity == target) {
            SkipState::Before
        } else {
            SkipState::Done
        };
    }

    /// Whether to skip this entry (see [`Walk::find_skip`]).
    fn skips(&mut self, identity: &str) -> bool {
        let target = self.skip_through.as_deref().unwrap_or_default();
        match self.skip {
            SkipState::Unknown | SkipState::Done => false,
            SkipState::Before => {
                if identity == target {
                    self.skip = SkipState::InRun;
                }
                true
            }
            SkipState::InRun if identity == target => true,
            SkipState::InRun => {
                self.skip = SkipState::Done;
                false
            }
        }
    }

    fn push(&mut self, slot: Slot) {
        self.pending.push_back(slot);
    }

    fn slot(&self, index: usize) -> &Slot {
        &self.pending[index - self.first_index]
    }

    fn next_to_start(&self) -> Option<usize> {
        (self.started_in_pending < self.pending.len())
            .then_some(self.first_index + self.started_in_pending)
    }

    fn mark_started(&mut self) {
        self.started_in_pending += 1;
        self.started += 1;
    }

    fn done(&mut self, index: usize) {
        if let Some(slot) = self.pending.get_mut(index - self.first_index) {
            slot.done = true;
        }
        while self.pending.front().is_some_and(|slot| slot.done) {
            let slot = self.pending.pop_front().expect("checked just above");
            self.last_done = Some(slot.identity);
            self.first_index += 1;
            self.started_in_pending = self.started_in_pending.saturating_sub(1);
        }
    }
}

/// One name (with its verdict) or one sub-directory, in listing order.
struct Slot {
    identity: String,
    /// The page its first entry was listed on.
    page: usize,
    work: SlotWork,
    done: bool,
}

enum SlotWork {
    Directory(String),
    Blob(Box<BlobVerdict>),
}

impl Slot {
    fn blob(verdict: BlobVerdict, page: usize) -> Self {
        Slot {
            identity: verdict.blob.name.clone(),
            page,
            work: SlotWork::Blob(Box::new(verdict)),
            done: false,
        }
    }

    fn directory(sub: String, page: usize) -> Self {
        Slot {
            identity: sub.clone(),
            page,
            work: SlotWork::Directory(sub),
            done: false,
        }
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
    counts: ShardCounts,
    failure: Option<(String, String)>,
    warnings: Vec<(String, String)>,
}

/// What a copy said beside "done".
#[derive(Debug, Clone, Copy)]
struct CopiedNote {
    md5_mismatch: bool,
    tags_refused: bool,
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
async fn protect(app: &App, shard: &Shard, verdict: BlobVerdict, needs: Needs) -> SlotOutcome {
    let span = tracing::info_span!("blob", blob = %verdict.blob.name, etag = %verdict.blob.etag);
    protect_blob(app, shard, &verdict, needs)
        .instrument(span)
        .await
}

async fn protect_blob(
    app: &App,
    shard: &Shard,
    verdict: &BlobVerdict,
    needs: Needs,
) -> SlotOutcome {
    let blob = &verdict.blob;
    let mut outcome = SlotOutcome::default();
    if is_directory_placeholder(verdict) {
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
        match retried(|| back_up(app, shard, verdict)).await {
            Ok(Repaired::Copied(copied)) => {
                outcome.counts.backups_copied = 1;
                outcome.note_copy(&blob.name, copied);
            }
            Ok(Repaired::Present) => outcome.counts.backups_present = 1,
            Ok(Repaired::Requested) => outcome.counts.backup_requests = 1,
            Ok(Repaired::Archived) => {
                outcome.counts.archived = 1;
                outcome.warnings.push((
                    blob.name.clone(),
                    "it is in the archive tier: not readable, so not backed up, until it is \
                     rehydrated"
                        .into(),
                ));
            }
            Ok(Repaired::Moved(reason)) => {
                info!(reason, "moved on since it was listed");
                moved = true;
            }
            Err(reason) => failed.push(format!("backup: {reason}")),
        }
    } else {
        outcome.counts.backups_present = 1;
    }
    if needs.snapshot && !moved {
        match retried(|| snapshot(app, shard, verdict)).await {
            Ok(true) => outcome.counts.snapshots_created = 1,
            Ok(false) => moved = true,
            Err(reason) => failed.push(format!("snapshot: {reason}")),
        }
    }
    if moved {
        match retried(|| protect_moving(app, shard, &blob.name)).await {
            Ok(Some(copied)) => {
                outcome.counts.snapshots_created = 1;
                if let Some(copied) = copied {
                    outcome.counts.backups_copied = 1;
                    outcome.note_copy(&blob.name, copied);
                }
            }
            Ok(None) => outcome.counts.backups_skipped = 1,
            Err(reason) => failed.push(format!("its version now: {reason}")),
        }
    }
    if needs.revival {
        match retried(|| record_revival(app, shard, verdict)).await {
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

/// Whether the listed blob is a directory of a hierarchical namespace (an empty blob marked
/// `hdi_isfolder`).
fn is_directory_placeholder(verdict: &BlobVerdict) -> bool {
    let blob = &verdict.blob;
    blob.content_length == 0
        && blob.metadata.as_ref().is_some_and(|metadata| {
            metadata.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case("hdi_isfolder") && v.eq_ignore_ascii_case("true")
            })
        })
}

/// Protects a blob that moves under the shard: a snapshot now — whatever its ETag, a snapshot
/// is one consistent version — and that version's backup (from the snapshot, once the blob has
/// moved on again). `None` when the blob is gone; the copy is `None` when the version had a
/// backup already (or, with ADF, was requested).
async fn protect_moving(
    app: &App,
    shard: &Shard,
    name: &str,
) -> Result<Option<Option<CopiedNote>>, Failure> {
    let taken = app
        .source
        .container(&shard.container)?
        .blob_client(name)
        .create_snapshot(None)
        .await
        .during(|| format!("snapshotting {}/{name}", shard.container));
    let response = match taken {
        Ok(response) => response,
        Err(e) if e.is(ErrorCode::BlobNotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let etag = response
        .etag()
        .ok()
        .flatten()
        .map(|etag| etag.to_string())
        .ok_or_else(|| Failure::Lasting("the snapshot's answer carried no ETag".into()))?;
    let request = BackupRequest::new(&shard.container, name, &etag);
    if app.config.copy_engine == CopyEngine::Adf {
        app.enqueue_backup(&request).await?;
        return Ok(Some(None));
    }
    match consumer::back_up_now(app, &request).await? {
        ConsumerOutcome::BackedUp {
            md5_mismatch,
            tags_refused,
            ..
        } => Ok(Some(Some(CopiedNote {
            md5_mismatch,
            tags_refused,
        }))),
        ConsumerOutcome::AlreadyBackedUp { .. } => Ok(Some(None)),
        other => Err(Failure::Lasting(format!(
            "its snapshot was taken but not backed up: {other:?}"
        ))),
    }
}

/// Runs `attempt` until it succeeds, fails for good, or [`BLOB_ATTEMPTS`] are spent.
async fn retried<T, F, Fut>(mut attempt: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut pause = Duration::from_millis(500);
    for tries in 1..=BLOB_ATTEMPTS {
        match attempt().await {
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

impl From<ConsumerError> for Failure {
    fn from(error: ConsumerError) -> Self {
        match error {
            ConsumerError::Storage(e) => e.into(),
            ConsumerError::Adf(e) => Failure::Passing(e.to_string()),
            other => Failure::Lasting(other.to_string()),
        }
    }
}

enum Repaired {
    Copied(CopiedNote),
    Present,
    Requested,
    Archived,
    /// The blob changed or went since it was listed.
    Moved(String),
}

async fn back_up(app: &App, shard: &Shard, verdict: &BlobVerdict) -> Result<Repaired, Failure> {
    let blob = &verdict.blob;
    if app.config.copy_engine == CopyEngine::Adf {
        let request = BackupRequest::new(&shard.container, &blob.name, &blob.etag);
        app.enqueue_backup(&request).await?;
        return Ok(Repaired::Requested);
    }
    match consumer::back_up_listed(app, &shard.container, blob).await? {
        ConsumerOutcome::BackedUp {
            md5_mismatch,
            tags_refused,
            ..
        } => Ok(Repaired::Copied(CopiedNote {
            md5_mismatch,
            tags_refused,
        })),
        ConsumerOutcome::AlreadyBackedUp { .. } => Ok(Repaired::Present),
        ConsumerOutcome::Archived { .. } => Ok(Repaired::Archived),
        ConsumerOutcome::Outdated { reason } => Ok(Repaired::Moved(reason)),
        other => Err(Failure::Lasting(format!("{other:?}"))),
    }
}

/// A snapshot of exactly the listed version; `false` when the blob changed since.
async fn snapshot(app: &App, shard: &Shard, verdict: &BlobVerdict) -> Result<bool, Failure> {
    let blob = &verdict.blob;
    let result = app
        .source
        .container(&shard.container)?
        .blob_client(&blob.name)
        .create_snapshot(Some(BlobClientCreateSnapshotOptions {
            if_match: Some(quoted_etag(&blob.etag).into()),
            ..Default::default()
        }))
        .await
        .during(|| format!("snapshotting {}/{}", shard.container, blob.name));
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.is(ErrorCode::ConditionNotMet) || e.is(ErrorCode::BlobNotFound) => {
            info!("blob changed since it was listed; left for the next pass");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

async fn record_revival(app: &App, shard: &Shard, verdict: &BlobVerdict) -> Result<bool, Failure> {
    let blob = &verdict.blob;
    let backup_container = app.backup_container_of(&shard.container)?;
    let client = app.backup.container(&backup_container)?;
    // The level listed at the start of the part says which record comes next.
    let level = backup_level_of_name(app, shard, &blob.name).await?;
    let Some(record) = level.lives.next_revival(&blob.name, &blob.etag) else {
        return Ok(false);
    };
    let seen = OffsetDateTime::now_utc().max(
        level
            .lives
            .last_seen(&blob.name, &blob.etag)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    );
    Ok(write_record(&client, &backup_container, &record, seen).await?)
}

/// The shard's directory level of `{c}bak`: its complete backups, per source name the newest
/// one, the lives recorded, and the sub-directories.
struct BackupLevel {
    container: String,
    index: BackupIndex,
    /// Per source name, when its newest backed-up version was written, and its ETag.
    newest: HashMap<String, (OffsetDateTime, String)>,
    lives: Lives,
    legacy_markers: Vec<(ListedBackup, String, String, Option<OffsetDateTime>)>,
    /// Its sub-directories: one the lake no longer has is visited all the same.
    subdirectories: HashSet<String>,
}

impl BackupLevel {
    /// Whether anything is backed up here that the lake might have lost.
    fn has_names(&self) -> bool {
        !self.newest.is_empty() || !self.subdirectories.is_empty()
    }
}

async fn backup_level(app: &App, shard: &Shard) -> Result<BackupLevel, StorageError> {
    match &shard.only {
        Some(name) => backup_level_of_name(app, shard, name).await,
        None => list_backup_level(app, shard, &shard.prefix, "").await,
    }
}

/// The backups and records of the one name `name` (listed by its backup names' prefix).
async fn backup_level_of_name(
    app: &App,
    shard: &Shard,
    name: &str,
) -> Result<BackupLevel, StorageError> {
    let mut level = list_backup_level(app, shard, &naming::backup_name_prefix(name), name).await?;
    level.newest.retain(|source, _| source == name);
    level.subdirectories.clear();
    Ok(level)
}

async fn list_backup_level(
    app: &App,
    shard: &Shard,
    listing_prefix: &str,
    names_prefix: &str,
) -> Result<BackupLevel, StorageError> {
    let backup_container = app.backup_container_of(&shard.container)?;
    let client = app.backup.container(&backup_container)?;
    let pages = list_backup_directory(
        &client,
        &backup_container,
        (!listing_prefix.is_empty()).then_some(listing_prefix),
        false,
    )?;
    let mut index = BackupIndex::new();
    // Per name: (written, backup name) of its newest backup, and its ETag. Versions written in
    // one second are ordered by backup name, as restore orders them (the name ends in the
    // ETag, and Azure's ETags grow with time), so a deletion is recorded for the very version
    // restore would choose.
    let mut newest: HashMap<String, ((OffsetDateTime, String), String)> = HashMap::new();
    let listed = each_complete_backup(
        crate::storage::listing::until_container_missing(pages),
        names_prefix,
        |parsed, written, backup| {
            index.insert_backup(&backup.name, backup.stamped_etag());
            let key = (written, backup.name);
            match newest.get_mut(&parsed.source_name) {
                Some((slot, _)) if *slot >= key => {}
                Some(entry) => *entry = (key, parsed.etag),
                None => {
                    newest.insert(parsed.source_name, (key, parsed.etag));
                }
            }
        },
    )
    .await?;
    Ok(BackupLevel {
        container: backup_container,
        index,
        newest: newest
            .into_iter()
            .map(|(name, ((written, _), etag))| (name, (written, etag)))
            .collect(),
        lives: listed.lives,
        legacy_markers: listed.legacy_markers,
        subdirectories: listed.subdirectories.into_iter().collect(),
    })
}

/// What became of one shard message; the invocation's return value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ShardOutcome {
    Done {
        #[serde(flatten)]
        report: Box<ShardReport>,
    },
    Poisoned {
        reason: String,
    },
}

/// Handles one delivery from the shard queue: a message that is not a shard goes to
/// `{shard queue}-poison` unchanged; a failed shard fails the invocation for a retry. On its
/// last allowed delivery the shard says so in its job's ledger first, so that a job whose shard
/// is killed there ends failed rather than running for ever.
pub async fn consume(
    app: &App,
    delivery: &consumer::QueueDelivery,
) -> Result<ShardOutcome, ShardError> {
    let shard = match Shard::parse(&delivery.text) {
        Ok(shard) => shard,
        Err(reason) => {
            app.poison_shard_raw(&delivery.as_queued()).await?;
            warn!(
                reason,
                message_id = delivery.message_id,
                "shard message moved to the poison queue unchanged"
            );
            return Ok(ShardOutcome::Poisoned { reason });
        }
    };
    let last_attempt = delivery.dequeue_count >= app.config.max_dequeue_count;
    if last_attempt {
        job_ledger::record_last_attempt(app, &shard).await?;
    }
    let report = match run_shard(app, &shard, &Fanout::Queue).await {
        Ok(report) => report,
        Err(e) => {
            if last_attempt {
                // The host gives the message up now: say so in the job's ledger, or the job
                // would wait for it forever.
                if let Err(ledger) = job_ledger::record_failed(app, &shard, &e.to_string()).await {
                    warn!(error = %ledger, "could not record the failed shard in its job's ledger");
                }
            }
            return Err(e);
        }
    };
    job_ledger::record_finished(app, &shard, &report.counts, &report.notes).await?;
    Ok(ShardOutcome::Done {
        report: Box::new(report),
    })
}

/// A whole job run in this process: its totals, the shards that ran, and the notes of the
/// blobs it could not protect (and of the shards that failed).
#[derive(Debug, Default)]
pub struct LocalJob {
    pub totals: ShardCounts,
    pub shards: u64,
    pub shards_failed: u64,
    pub notes: ShardNotes,
}

impl LocalJob {
    /// Adds another job's run to this one.
    pub fn add(&mut self, other: LocalJob) {
        self.totals.add(&other.totals);
        self.shards += other.shards;
        self.shards_failed += other.shards_failed;
        self.notes.extend(other.notes);
    }

    /// Every shard ended and every blob it judged is protected.
    pub fn succeeded(&self) -> bool {
        self.shards_failed == 0 && self.totals.failed == 0
    }
}

/// Runs a whole job in this process, starting at `root`, up to `concurrency` shards at once. A
/// shard that fails is tried again, as the host would, up to `maxDequeueCount` times; then it
/// is named in the notes and the rest of the job goes on.
pub async fn run_job_here(app: &App, root: Shard, concurrency: usize) -> LocalJob {
    let pending = Mutex::new(vec![(root, 1u64)]);
    let take = || {
        pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
    };
    let spawned = Mutex::new(Vec::new());
    let fanout = Fanout::Local(&spawned);
    let mut running = FuturesUnordered::new();
    let mut job = LocalJob::default();
    loop {
        while running.len() < concurrency.max(1) {
            let Some((shard, attempt)) = take() else {
                break;
            };
            let fanout = &fanout;
            running.push(async move {
                if attempt > 1 {
                    tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
                }
                let result = run_shard(app, &shard, fanout).await;
                (shard, attempt, result)
            });
        }
        let Some((shard, attempt, result)) = running.next().await else {
            return job;
        };
        let mut queue = pending.lock().unwrap_or_else(|p| p.into_inner());
        queue.extend(
            spawned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..)
                .map(|s| (s, 1)),
        );
        match result {
            Ok(report) => {
                job.totals.add(&report.counts);
                job.shards += 1;
                job.notes.extend(report.notes);
            }
            Err(error) if attempt < app.config.max_dequeue_count => {
                warn!(%error, attempt, prefix = shard.prefix, "shard failed; trying it again");
                queue.push((shard, attempt + 1));
            }
            Err(error) => {
                warn!(%error, prefix = shard.prefix, "shard failed for good");
                job.shards += 1;
                job.shards_failed += 1;
                job.notes.failures.push(crate::core::job::BlobNote {
                    blob: String::new(),
                    reason: format!(
                        "the shard of {:?} (part {}) failed {attempt} times: {error}",
                        shard.prefix, shard.part
                    ),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which of `pages` (entry identities) a part that skips through `after` deals with.
    fn walked(after: Option<&str>, pages: &[&[&str]]) -> Vec<String> {
        let mut walk = Walk::new(after.map(str::to_owned));
        let mut kept = Vec::new();
        for (number, page) in pages.iter().enumerate() {
            if number == 0 {
                walk.find_skip(page.iter().copied());
            }
            for identity in page.iter() {
                if !walk.skips(identity) {
                    kept.push((*identity).to_owned());
                }
            }
        }
        kept
    }

    #[test]
    fn a_continuation_skips_by_identity_never_by_order() {
        // The service's order is its own: "😀" before "｡" here, as UTF-16 sorts them.
        let page: &[&str] = &["a", "😀", "😀", "｡", "z/"];
        assert_eq!(walked(Some("😀"), &[page]), ["｡", "z/"]);
        assert_eq!(walked(None, &[page]).len(), 5);
        // The name is not on the page (it was the last of the page before, or it is gone):
        // nothing is skipped, and redoing is harmless.
        assert_eq!(walked(Some("gone"), &[page]).len(), 5);
        // A name's run spilling over into the next page is skipped there too, and no further.
        assert_eq!(
            walked(Some("😀"), &[&["a", "😀"], &["😀", "b", "😀"]]),
            ["b", "😀"]
        );
        // Only the first page is searched: a name equal to the target later is dealt with.
        assert_eq!(walked(Some("x"), &[&["a"], &["x", "y"]]), ["a", "x", "y"]);
    }

    #[test]
    fn the_done_prefix_ends_before_the_first_slot_not_done() {
        let mut walk = Walk::new(None);
        for (name, page) in [("a", 0), ("b", 0), ("c", 1)] {
            walk.push(Slot::directory(format!("{name}/"), page));
        }
        let (a, b, c) = (0, 1, 2);
        for _ in 0..3 {
            walk.mark_started();
        }
        walk.done(b);
        assert_eq!(walk.last_done, None, "b is done, a is not");
        walk.done(a);
        assert_eq!(walk.last_done.as_deref(), Some("b/"));
        assert_eq!(walk.pending.front().map(|s| s.page), Some(1));
        walk.done(c);
        assert!(walk.pending.is_empty());
        assert_eq!(walk.last_done.as_deref(), Some("c/"));
    }
}
