//! A backup part's walk over its level of the lake, in the service's order: pages listed from
//! the shard's contination (the entries the part before dealt with skipped by identity), each
//! name's group of entries made one slot with the diff's verdict, slots started in order within
//! the budget and concurrency, and where the continuation goes on when the budget is spent.

use std::pin::Pin;

use futures::{future::BoxFuture, stream::FuturesUnordered, Stream, StreamExt, TryStreamExt};
use tracing::warn;

use super::{
    slot::{protect_blob, Needs, SlotOutcome, TAGS_REFUSED},
    walk::{Search, Slot, SlotWork, Walk},
    Listed, Part, Present,
};
use crate::engine::jobs::Shard;
use crate::{
    core::{counts::KindCounts, diff::SnapshotDiff, version::Version},
    engine::{jobs::JobError, vault::VaultLevel},
    storage::{
        listing::{list_directory_with_snapshots, ListedEntry, ListingPage, ListingScope},
        ErrorCode, StorageError,
    },
};

/// The most entries the service lists in one page.
const MAX_PAGE_SIZE: u32 = 5_000;

/// The repairs of a part in flight: each ends with its slot's index and outcome.
type Repairs<'a> = FuturesUnordered<BoxFuture<'a, (usize, SlotOutcome)>>;

/// The pages of the lake's level a part lists, from its continuation on, with the blobs' index
/// tags unless the lake refuses to show them to this identity (then without, said once).
struct LakePages {
    pages: Pin<Box<dyn Stream<Item = Result<ListingPage<Version>, StorageError>> + Send>>,
    tags: bool,
    listed: usize,
}

/// What the next page of a listing is.
enum NextPage {
    Page(ListingPage<Version>),
    /// The listing is over (or the container does not exist).
    End,
}

impl LakePages {
    fn new(part: &Part<'_>) -> Result<Self, StorageError> {
        let app = part.app;
        // A hierarchical namespace has no index tags: it is never asked for them.
        let tags =
            app.config.list_tags && !app.source.tags_refused() && !part.namespace.is_hierarchical();
        Ok(Self {
            pages: Box::pin(Self::list(part, tags)?),
            tags,
            listed: 0,
        })
    }

    fn list(
        part: &Part<'_>,
        tags: bool,
    ) -> Result<
        impl Stream<Item = Result<ListingPage<Version>, StorageError>> + Send + 'static,
        StorageError,
    > {
        let (app, shard) = (part.app, part.shard);
        let source = app.source.container(&shard.container)?;
        let listing_prefix = shard.listing_prefix();
        list_directory_with_snapshots(
            &source,
            ListingScope {
                prefix: (!listing_prefix.is_empty()).then_some(listing_prefix),
                marker: shard.marker.as_deref(),
                page_size: Some(app.config.shard_page_size as i32),
                tags,
                // A hierarchical namespace's owners, groups, permissions and ACLs, in bulk.
                permissions: part.namespace.is_hierarchical(),
                ..Default::default()
            },
        )
    }

    async fn next(&mut self, part: &mut Part<'_>) -> Result<NextPage, StorageError> {
        loop {
            match self.pages.try_next().await {
                Ok(Some(page)) => {
                    self.listed += 1;
                    return Ok(NextPage::Page(page));
                }
                Ok(None) => return Ok(NextPage::End),
                // An identity may read blobs but not their tags (Storage Blob Data
                // Contributor): the lake is listed without them, and the job says so.
                Err(e) if self.tags && self.listed == 0 && e.is_tags_refusal() => {
                    part.app.source.refuse_tags();
                    warn!(error = %e, "the lake refused to list tags: backing up without them");
                    part.notes.warn("", TAGS_REFUSED);
                    self.tags = false;
                    self.pages = Box::pin(Self::list(part, false)?);
                }
                Err(e) if e.is(ErrorCode::ContainerNotFound) => {
                    warn!("the shard's container does not exist; nothing to do");
                    return Ok(NextPage::End);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A part's walk over its listing as it goes: the slots, the open name's group, what the level
/// was seen to hold, and the marker each page was listed from.
struct Listing {
    walk: Walk,
    diff: SnapshotDiff,
    present: Present,
    /// The marker each page was listed from, by page number.
    page_markers: Vec<Option<String>>,
    next_marker: Option<String>,
    /// Pages listed while the name to skip through is looked for, not yet dealt with.
    held: Vec<(usize, Vec<ListedEntry<Version>>)>,
}

impl Listing {
    fn new(part: &Part<'_>) -> Self {
        let shard = part.shard;
        // The name to skip through is looked for over more names than one page of the part
        // before could hold (this worker's page size, or the largest the service gives).
        let search_limit = 2 * (part.app.config.shard_page_size.max(MAX_PAGE_SIZE) as usize);
        Self {
            walk: Walk::new(shard.after.clone(), shard.resume_at.clone(), search_limit),
            diff: SnapshotDiff::new(),
            present: Present::default(),
            page_markers: Vec::new(),
            next_marker: shard.marker.clone(),
            held: Vec::new(),
        }
    }

    /// Notes a page listed; whether the pages held can now be dealt with.
    fn hold(&mut self, page: ListingPage<Version>) -> bool {
        let page_number = self.page_markers.len();
        self.page_markers.push(self.next_marker.clone());
        self.next_marker = page.next_marker.clone();
        let search = self.walk.search(page.entries.iter().map(entry_identity));
        self.held.push((page_number, page.entries));
        search == Search::Resolved
    }

    /// Where the rest of the directory goes on: from the page of the first slot not done,
    /// skipping through the last one done and resuming at the first not done (a name whose
    /// group was still open is such a slot too); or from the next page.
    fn continuation(&self, shard: &Shard) -> Shard {
        let walk = &self.walk;
        let (first_open_page, first_open) = match walk.pending.front() {
            Some(slot) => (Some(slot.page), Some(slot.identity().to_owned())),
            None => match self.diff.current_name() {
                Some(name) => (Some(walk.group_page), Some(name.to_owned())),
                None => (None, None),
            },
        };
        match first_open_page {
            Some(page) => shard
                .continuation(
                    self.page_markers.get(page).cloned().flatten().as_deref(),
                    walk.last_done.as_deref(),
                )
                .resuming_at(first_open),
            None => shard.continuation(self.next_marker.as_deref(), None),
        }
    }
}

impl<'a> Part<'a> {
    /// Lists the level from the shard's continuation and repairs slot by slot, until the
    /// listing ends or the budget is spent (then the continuation is set).
    pub(super) async fn list_and_repair(&mut self, level: &VaultLevel) -> Result<Listed, JobError> {
        let from_start = self.shard.marker.is_none() && self.shard.after.is_none();
        let mut pages = LakePages::new(self)?;
        let mut listing = Listing::new(self);
        let mut work: Repairs<'a> = FuturesUnordered::new();
        let mut cut = false;
        let mut ended = false;
        while !cut && !ended {
            // A page is fetched only while there is budget, or while nothing was started yet.
            if (self.budget_spent() && listing.walk.started > 0) || self.reached_stop {
                cut = true;
                continue;
            }
            match pages.next(self).await? {
                NextPage::End => ended = true,
                NextPage::Page(page) => {
                    if listing.hold(page) {
                        self.take_held(&mut listing, level);
                        // Start what is ready, in order, as budget and concurrency allow.
                        cut = !self
                            .start_ready(&mut listing.walk, &mut work, level)
                            .await?;
                    }
                }
            }
        }
        // The listing ended while the name to skip through was still looked for: it is gone,
        // and nothing is skipped.
        listing.walk.give_up_search();
        self.take_held(&mut listing, level);
        if ended {
            if let Some(verdict) = std::mem::take(&mut listing.diff).finish() {
                let page = listing.walk.group_page;
                listing.walk.push(Slot::blob(verdict, page));
            }
            cut = !self
                .start_ready(&mut listing.walk, &mut work, level)
                .await?;
        }
        while let Some((index, outcome)) = work.next().await {
            self.settle(&mut listing.walk, index, outcome);
        }
        if !cut {
            return Ok(match from_start {
                true => Listed::Complete(listing.present),
                false => Listed::Partial,
            });
        }
        self.continuation = Some(listing.continuation(self.shard));
        self.last_done = listing.walk.last_done.clone();
        Ok(Listed::Cut)
    }

    /// Deals with the pages held, in order.
    fn take_held(&self, listing: &mut Listing, level: &VaultLevel) {
        for (page_number, entries) in std::mem::take(&mut listing.held) {
            let Listing {
                walk,
                diff,
                present,
                ..
            } = listing;
            self.take_page(walk, diff, present, level, page_number, entries);
        }
    }

    /// Deals with one page's entries in listing order: each name's group (its base and
    /// snapshots) becomes one slot with the diff's verdict, each sub-directory one slot.
    fn take_page(
        &self,
        walk: &mut Walk,
        diff: &mut SnapshotDiff,
        present: &mut Present,
        level: &VaultLevel,
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
        level: &VaultLevel,
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
                    let needs = Needs::of(&verdict, level, self.namespace);
                    if needs.nothing() {
                        walk.mark_started();
                        self.app.progress.did(1);
                        KindCounts::add(&mut self.counts, &needs.present());
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
        KindCounts::add(&mut self.counts, &outcome.counts);
        if let Some(since) = outcome.behind_since {
            self.behind_since = Some(self.behind_since.map_or(since, |oldest| oldest.min(since)));
        }
        if let Some((blob, reason)) = outcome.failure {
            self.notes.fail(&blob, reason);
        }
        for (blob, reason) in outcome.warnings {
            self.notes.warn(&blob, reason);
        }
        walk.done(index);
    }
}

/// What identifies an entry within its listing: a blob's name, or a sub-directory's prefix.
fn entry_identity<T: AsRef<str>>(entry: &ListedEntry<T>) -> &str {
    match entry {
        ListedEntry::Item(item) => item.as_ref(),
        ListedEntry::Directory(sub) => sub.as_str(),
    }
}
