//! The slots of a shard part in the service's listing order — one per name (with its verdict)
//! or sub-directory — and which of them are started and done: where the part's continuation
//! goes on is the first slot not done, found without ever comparing two names.

use std::collections::VecDeque;

use crate::core::diff::BlobVerdict;

/// The slots of a part in listing order: which are ready, started and done, and where the
/// part's continuation would go on.
pub(super) struct Walk {
    /// The listing's entries up to and including this name's run are skipped (done by the part
    /// before).
    skip_through: Option<String>,
    /// The first entry the part before did not deal with: skipping stops before it, so a
    /// `skip_through` deleted since does not make the part redo what came before it.
    resume_at: Option<String>,
    skip: SkipState,
    /// How many distinct names the search for `skip_through` may pass before it gives up.
    search_limit: usize,
    /// Names passed while searching.
    searched: usize,
    /// The last name passed while searching, so a name's run counts once.
    last_searched: Option<String>,
    /// Slots not yet in the done prefix, in listing order, by index.
    pub(super) pending: VecDeque<Slot>,
    /// The index of `pending`'s first slot.
    first_index: usize,
    /// How many of `pending` (from the front) have been started.
    started_in_pending: usize,
    /// Slots started in this part.
    pub(super) started: usize,
    /// The identity of the last slot of the done prefix.
    pub(super) last_done: Option<String>,
    /// The page the diff's open group started on.
    pub(super) group_page: usize,
}

#[derive(Debug, PartialEq, Eq)]
enum SkipState {
    /// Looking for the name to skip through: the listing's pages are held, not dealt with.
    Searching,
    /// Skipping the entries up to the name's run.
    Before,
    /// Inside that name's run (it may go on into the next page).
    InRun,
    Done,
}

/// What the search for the name to skip through says about the pages held so far.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Search {
    /// Not found yet: hold this page too, and list the next.
    Holding,
    /// Deal with the held pages: the entries through the name's run are skipped if it was
    /// found, none if the search gave up.
    Resolved,
}

impl Walk {
    /// A walk that skips the listing's entries through `skip_through`'s run, or up to
    /// `resume_at`, whichever it finds first among the first `search_limit` names listed.
    pub(super) fn new(
        skip_through: Option<String>,
        resume_at: Option<String>,
        search_limit: usize,
    ) -> Self {
        Self {
            resume_at,
            skip: if skip_through.is_some() {
                SkipState::Searching
            } else {
                SkipState::Done
            },
            skip_through,
            search_limit: search_limit.max(1),
            searched: 0,
            last_searched: None,
            pending: VecDeque::new(),
            first_index: 0,
            started_in_pending: 0,
            started: 0,
            last_done: None,
            group_page: 0,
        }
    }

    /// Looks for the name to skip through among a page's entries. A continuation lists again
    /// from the marker of the page where its first slot not done was listed, but that listing
    /// need not end its first page where the first part's did: snapshots this job took, and
    /// blobs written since, add entries, so the name may be on a later page. It is looked for
    /// over the first `search_limit` names (more than one page of the part before could hold);
    /// past them — the name is gone, or far behind new entries — nothing is skipped, and
    /// redoing is harmless. Found or not, the held pages are then dealt with in order.
    pub(super) fn search<'e>(&mut self, identities: impl Iterator<Item = &'e str>) -> Search {
        if self.skip != SkipState::Searching {
            return Search::Resolved;
        }
        let target = self.skip_through.as_deref().unwrap_or_default();
        for identity in identities {
            if identity == target || self.resume_at.as_deref() == Some(identity) {
                self.skip = SkipState::Before;
                return Search::Resolved;
            }
            if self.last_searched.as_deref() != Some(identity) {
                self.searched += 1;
                self.last_searched = Some(identity.to_owned());
            }
        }
        if self.searched >= self.search_limit {
            self.give_up_search();
            return Search::Resolved;
        }
        Search::Holding
    }

    /// The listing ended, or the search went too far, without finding the name: nothing is
    /// skipped.
    pub(super) fn give_up_search(&mut self) {
        if self.skip == SkipState::Searching {
            self.skip = SkipState::Done;
        }
    }

    /// Whether to skip this entry (see [`Walk::search`]).
    pub(super) fn skips(&mut self, identity: &str) -> bool {
        let target = self.skip_through.as_deref().unwrap_or_default();
        match self.skip {
            SkipState::Searching | SkipState::Done => false,
            SkipState::Before if self.resume_at.as_deref() == Some(identity) => {
                self.skip = SkipState::Done;
                false
            }
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

    pub(super) fn push(&mut self, slot: Slot) {
        self.pending.push_back(slot);
    }

    pub(super) fn slot(&self, index: usize) -> &Slot {
        &self.pending[index - self.first_index]
    }

    pub(super) fn next_to_start(&self) -> Option<usize> {
        (self.started_in_pending < self.pending.len())
            .then_some(self.first_index + self.started_in_pending)
    }

    pub(super) fn mark_started(&mut self) {
        self.started_in_pending += 1;
        self.started += 1;
    }

    pub(super) fn done(&mut self, index: usize) {
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
pub(super) struct Slot {
    identity: String,
    /// The page its first entry was listed on.
    pub(super) page: usize,
    pub(super) work: SlotWork,
    done: bool,
}

pub(super) enum SlotWork {
    Directory(String),
    Blob(Box<BlobVerdict>),
}

impl Slot {
    /// The name, or the sub-directory's prefix.
    pub(super) fn identity(&self) -> &str {
        &self.identity
    }

    pub(super) fn blob(verdict: BlobVerdict, page: usize) -> Self {
        Slot {
            identity: verdict.blob.name.clone(),
            page,
            work: SlotWork::Blob(Box::new(verdict)),
            done: false,
        }
    }

    pub(super) fn directory(sub: String, page: usize) -> Self {
        Slot {
            identity: sub.clone(),
            page,
            work: SlotWork::Directory(sub),
            done: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which of `pages` (entry identities) a part that skips through `after`, looking for it
    /// among `limit` names, deals with.
    fn walked(after: Option<&str>, limit: usize, pages: &[&[&str]]) -> Vec<String> {
        walked_to(after, None, limit, pages)
    }

    /// [`walked`], with the first entry the part before did not deal with.
    fn walked_to(
        after: Option<&str>,
        resume_at: Option<&str>,
        limit: usize,
        pages: &[&[&str]],
    ) -> Vec<String> {
        let mut walk = Walk::new(
            after.map(str::to_owned),
            resume_at.map(str::to_owned),
            limit,
        );
        let mut held: Vec<&str> = Vec::new();
        let mut kept = Vec::new();
        for page in pages {
            held.extend(page.iter());
            if walk.search(page.iter().copied()) == Search::Holding {
                continue;
            }
            for identity in held.drain(..) {
                if !walk.skips(identity) {
                    kept.push(identity.to_owned());
                }
            }
        }
        walk.give_up_search();
        for identity in held.drain(..) {
            if !walk.skips(identity) {
                kept.push(identity.to_owned());
            }
        }
        kept
    }

    #[test]
    fn a_continuation_skips_by_identity_never_by_order() {
        // The service's order is its own: "😀" before "｡" here, as UTF-16 sorts them.
        let page: &[&str] = &["a", "😀", "😀", "｡", "z/"];
        assert_eq!(walked(Some("😀"), 10, &[page]), ["｡", "z/"]);
        assert_eq!(walked(None, 10, &[page]).len(), 5);
        // The name is not in the listing (it is gone): nothing is skipped, and redoing is
        // harmless.
        assert_eq!(walked(Some("gone"), 10, &[page]).len(), 5);
        // A name's run spilling over into the next page is skipped there too, and no further.
        assert_eq!(
            walked(Some("😀"), 10, &[&["a", "😀"], &["😀", "b", "😀"]]),
            ["b", "😀"]
        );
        // Snapshots taken since push the name onto a later page: it is found there, and the
        // names before it (done by the part before) are skipped.
        assert_eq!(
            walked(Some("c"), 10, &[&["a", "a", "b"], &["b", "c", "c"], &["d"]]),
            ["d"]
        );
        // Past the limit of names, the search gives up and nothing is skipped.
        assert_eq!(
            walked(Some("x"), 2, &[&["a", "b"], &["c", "x"], &["y"]]),
            ["a", "b", "c", "x", "y"]
        );
        // The last name done is gone: the first not done ends the skipping.
        assert_eq!(
            walked_to(Some("c"), Some("d"), 10, &[&["a", "b"], &["d", "e"]]),
            ["d", "e"]
        );
        // Both there: the first not done comes right after the last done's run.
        assert_eq!(
            walked_to(Some("c"), Some("d"), 10, &[&["a", "c", "c"], &["d"]]),
            ["d"]
        );
        // A name's snapshots count once toward the limit.
        assert_eq!(
            walked(Some("c"), 2, &[&["a", "a", "a"], &["b", "c"], &["d"]]),
            ["d"]
        );
    }

    #[test]
    fn the_done_prefix_ends_before_the_first_slot_not_done() {
        let mut walk = Walk::new(None, None, 1);
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
