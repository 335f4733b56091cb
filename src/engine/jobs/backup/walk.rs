//! The slots of a shard part in the service's listing order — one per name (with its verdict)
//! or sub-directory — and which of them are started and done: where the part's continuation
//! goes on is the first slot not done, found without ever comparing two names.

use std::collections::VecDeque;

use crate::core::diff::BlobVerdict;

/// The slots of a part in listing order: which are ready, started and done, and where the
/// part's continuation would go on.
pub(super) struct Walk {
    /// Entries of the first page up to and including this name's run are skipped.
    skip_through: Option<String>,
    skip: SkipState,
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
    /// The first page has not been seen yet.
    Unknown,
    /// Skipping the first page's entries up to the name's run.
    Before,
    /// Inside that name's run (it may go on into the next page).
    InRun,
    Done,
}

impl Walk {
    pub(super) fn new(skip_through: Option<String>) -> Self {
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
    pub(super) fn find_skip<'e>(&mut self, mut identities: impl Iterator<Item = &'e str>) {
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
    pub(super) fn skips(&mut self, identity: &str) -> bool {
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
