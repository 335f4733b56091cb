//! The ETag diff: which base blobs of a container need a snapshot of their current version.
//!
//! A base blob needs a snapshot when none of its snapshots carries its current ETag (a snapshot's
//! ETag is the base blob's ETag at the moment it was taken). The diff consumes one container's
//! listing, snapshots included, entry by entry and keeps only the current name's entries: memory
//! is bounded by one blob's snapshots, not by the container.
//!
//! A listing keeps all entries of one name together (whatever order the service sorts names in,
//! which the diff never compares); *within* a name the order of the base blob and its snapshots
//! is not relied on (Azure lists snapshots oldest first and the
//! base last, Azurite interleaves the base among them). Should a name ever reappear apart from its
//! group, the diff errs on the safe side: the base is judged against the snapshots it was seen
//! with, which at worst takes one snapshot too many and never skips one.

use std::collections::HashSet;

use super::{etag::normalize_etag, version::Version};

/// The diff's answer for one base blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobVerdict {
    /// The base blob's current version.
    pub blob: Version,
    /// No snapshot carries the current ETag.
    pub needs_snapshot: bool,
    /// How many snapshots the blob has.
    pub snapshots: usize,
}

/// Streaming diff over one container's listing; feed it entries with [`SnapshotDiff::push`] and
/// close it with [`SnapshotDiff::finish`].
#[derive(Debug, Default)]
pub struct SnapshotDiff {
    group: Option<NameGroup>,
}

#[derive(Debug)]
struct NameGroup {
    name: String,
    base: Option<Version>,
    snapshot_etags: HashSet<String>,
    snapshots: usize,
}

impl SnapshotDiff {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next listing entry; returns the verdict on the previous name once its group is
    /// complete.
    pub fn push(&mut self, entry: Version) -> Option<BlobVerdict> {
        let finished = match &self.group {
            Some(group) if group.name == entry.name => None,
            _ => self.group.take().and_then(NameGroup::verdict),
        };
        let group = self.group.get_or_insert_with(|| NameGroup {
            name: entry.name.clone(),
            base: None,
            snapshot_etags: HashSet::new(),
            snapshots: 0,
        });
        let etag = normalize_etag(&entry.etag).to_owned();
        match entry.snapshot {
            Some(_) => {
                group.snapshots += 1;
                group.snapshot_etags.insert(etag);
            }
            None => group.base = Some(Version { etag, ..entry }),
        }
        finished
    }

    /// The name whose entries the diff is gathering, if any.
    pub fn current_name(&self) -> Option<&str> {
        self.group.as_ref().map(|group| group.name.as_str())
    }

    /// Ends the listing; returns the verdict on the last name, if it has a base blob.
    pub fn finish(self) -> Option<BlobVerdict> {
        self.group.and_then(NameGroup::verdict)
    }
}

impl NameGroup {
    /// `None` for a name with snapshots only: its base blob was deleted, nothing to snapshot.
    fn verdict(self) -> Option<BlobVerdict> {
        let blob = self.base?;
        Some(BlobVerdict {
            needs_snapshot: !self.snapshot_etags.contains(&blob.etag),
            snapshots: self.snapshots,
            blob,
        })
    }
}

/// Runs the diff over a whole listing (for callers that already hold one, and for tests).
pub fn diff_listing(entries: impl IntoIterator<Item = Version>) -> Vec<BlobVerdict> {
    let mut diff = SnapshotDiff::new();
    let mut verdicts: Vec<BlobVerdict> = entries.into_iter().filter_map(|e| diff.push(e)).collect();
    verdicts.extend(diff.finish());
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(name: &str, etag: &str) -> Version {
        crate::core::version::sample(name, etag)
    }

    fn snap(name: &str, etag: &str, at: &str) -> Version {
        Version {
            snapshot: Some(at.into()),
            ..base(name, etag)
        }
    }

    fn needs(verdicts: &[BlobVerdict]) -> Vec<(&str, bool)> {
        verdicts
            .iter()
            .map(|v| (v.blob.name.as_str(), v.needs_snapshot))
            .collect()
    }

    #[test]
    fn new_changed_and_unchanged_blobs() {
        let listing = vec![
            base("a-new", "0x1"),
            snap("b-changed", "0x1", "t1"),
            base("b-changed", "0x2"),
            snap("c-same", "0x1", "t1"),
            snap("c-same", "0x3", "t2"),
            base("c-same", "0x3"),
        ];
        assert_eq!(
            needs(&diff_listing(listing)),
            [("a-new", true), ("b-changed", true), ("c-same", false)]
        );
    }

    #[test]
    fn verdict_does_not_depend_on_order_within_a_name() {
        // Every order Azure or Azurite may list base and snapshots in gives the same answer.
        let group = [
            snap("x", "0x1", "t1"),
            snap("x", "0x2", "t2"),
            base("x", "\"0x2\""),
            snap("x", "0x3", "t3"),
        ];
        let orders: [[usize; 4]; 6] = [
            [0, 1, 2, 3],
            [2, 0, 1, 3],
            [0, 2, 1, 3],
            [3, 2, 1, 0],
            [1, 3, 0, 2],
            [0, 1, 3, 2],
        ];
        for order in orders {
            let listing = order.iter().map(|&i| group[i].clone());
            let verdicts = diff_listing(listing);
            assert_eq!(needs(&verdicts), [("x", false)], "order {order:?}");
            assert_eq!(verdicts[0].snapshots, 3);
            assert_eq!(verdicts[0].blob.etag, "0x2");
        }
        let changed = [
            snap("x", "0x1", "t1"),
            base("x", "0x9"),
            snap("x", "0x2", "t2"),
        ];
        assert_eq!(needs(&diff_listing(changed)), [("x", true)]);
    }

    #[test]
    fn deleted_base_with_snapshots_yields_nothing() {
        let listing = vec![snap("gone", "0x1", "t1"), base("kept", "0x5")];
        assert_eq!(needs(&diff_listing(listing)), [("kept", true)]);
    }

    #[test]
    fn quoted_and_unquoted_etags_compare_equal() {
        let listing = vec![snap("q", "\"0x7\"", "t1"), base("q", "0x7")];
        assert_eq!(needs(&diff_listing(listing)), [("q", false)]);
    }

    #[test]
    fn a_name_seen_apart_from_its_group_never_skips_a_snapshot() {
        let listing = vec![snap("x", "0x1", "t1"), base("y", "0x1"), base("x", "0x1")];
        assert_eq!(needs(&diff_listing(listing)), [("y", true), ("x", true)]);
    }

    #[test]
    fn memory_holds_one_group_at_a_time() {
        let mut diff = SnapshotDiff::new();
        for i in 0..1000 {
            diff.push(snap(&format!("n{i:04}"), "0x1", "t"));
            diff.push(base(&format!("n{i:04}"), "0x1"));
            assert!(diff.group.as_ref().unwrap().snapshot_etags.len() <= 1);
        }
    }
}
