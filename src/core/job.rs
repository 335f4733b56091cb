//! A job's progress, derived from an append-only ledger: one "queued" entry per shard put on the
//! queue and one "finished" (or "failed") entry per shard that ended, each keyed by the shard's
//! id. Nothing is ever counted up in place, so instances never fight over a counter; the status
//! is whatever the entries add up to. Pure.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::shard::Shard;

/// What one shard did, in numbers; summed over a job's shards for its totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ShardCounts {
    /// Base blobs judged.
    pub blobs: u64,
    pub snapshots_created: u64,
    /// Versions copied by the shard (direct engine).
    pub backups_copied: u64,
    /// Per-blob requests queued (ADF engine).
    pub backup_requests: u64,
    /// Versions whose complete backup was already there.
    pub backups_present: u64,
    /// Sources in the archive tier: not readable until rehydrated.
    pub archived: u64,
    /// Other outcomes of a copy (outdated, a name too long to back up).
    pub backups_skipped: u64,
    pub subdirectories_queued: u64,
    /// Blobs with backups found gone from the lake, whose deletion marker this shard wrote.
    pub deletions_recorded: u64,
    /// Backup versions and snapshots the retention policy no longer keeps, deleted by the shard.
    pub versions_pruned: u64,
    pub snapshots_pruned: u64,
}

impl ShardCounts {
    const FIELDS: [&'static str; 11] = [
        "blobs",
        "snapshots_created",
        "backups_copied",
        "backup_requests",
        "backups_present",
        "archived",
        "backups_skipped",
        "subdirectories_queued",
        "deletions_recorded",
        "versions_pruned",
        "snapshots_pruned",
    ];

    fn fields(&self) -> [u64; 11] {
        [
            self.blobs,
            self.snapshots_created,
            self.backups_copied,
            self.backup_requests,
            self.backups_present,
            self.archived,
            self.backups_skipped,
            self.subdirectories_queued,
            self.deletions_recorded,
            self.versions_pruned,
            self.snapshots_pruned,
        ]
    }

    fn from_fields(f: [u64; 11]) -> Self {
        Self {
            blobs: f[0],
            snapshots_created: f[1],
            backups_copied: f[2],
            backup_requests: f[3],
            backups_present: f[4],
            archived: f[5],
            backups_skipped: f[6],
            subdirectories_queued: f[7],
            deletions_recorded: f[8],
            versions_pruned: f[9],
            snapshots_pruned: f[10],
        }
    }

    pub fn add(&mut self, other: &ShardCounts) {
        let (mine, theirs) = (self.fields(), other.fields());
        *self = Self::from_fields(std::array::from_fn(|i| mine[i] + theirs[i]));
    }

    /// As blob metadata (names are valid C# identifiers, values decimal), so a listing of the
    /// ledger carries every count without reading a blob.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        Self::FIELDS
            .iter()
            .zip(self.fields())
            .map(|(name, value)| ((*name).to_owned(), value.to_string()))
            .collect()
    }

    /// Reads counts back from metadata; a missing or garbled value counts as 0.
    pub fn from_metadata(metadata: &HashMap<String, String>) -> Self {
        let lookup = |name: &str| {
            metadata
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .and_then(|(_, value)| value.parse().ok())
                .unwrap_or(0)
        };
        Self::from_fields(Self::FIELDS.map(lookup))
    }
}

/// A shard's id within its job: the same directory part always gets the same id, so a shard
/// queued twice (a retried parent) is one entry, not two.
pub fn shard_id(shard: &Shard) -> String {
    let mut hash = Sha256::new();
    for part in [
        shard.container.as_bytes(),
        b"\0",
        shard.prefix.as_bytes(),
        b"\0",
        shard.part.to_string().as_bytes(),
    ] {
        hash.update(part);
    }
    hash.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One entry of a job's ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerEntry {
    Queued {
        shard: String,
    },
    Finished {
        shard: String,
        counts: ShardCounts,
    },
    /// The shard gave up for good (its message went to the poison queue).
    Failed {
        shard: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    /// Every shard queued has finished.
    Done,
    /// Every shard queued has ended, and at least one of them failed for good.
    Failed,
}

/// A job's progress as its ledger says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobProgress {
    #[serde(rename = "status")]
    pub state: JobState,
    pub shards_queued: u64,
    pub shards_finished: u64,
    pub shards_failed: u64,
    #[serde(flatten)]
    pub totals: ShardCounts,
}

impl JobProgress {
    /// Adds the ledger up. A shard finished twice (run again after a crash) counts once, with
    /// the counts of its last entry; an entry for a shard never queued still counts as work done.
    pub fn from_ledger(entries: impl IntoIterator<Item = LedgerEntry>) -> Self {
        let mut queued = BTreeSet::new();
        let mut finished: BTreeMap<String, ShardCounts> = BTreeMap::new();
        let mut failed = BTreeSet::new();
        for entry in entries {
            match entry {
                LedgerEntry::Queued { shard } => {
                    queued.insert(shard);
                }
                LedgerEntry::Finished { shard, counts } => {
                    finished.insert(shard, counts);
                }
                LedgerEntry::Failed { shard } => {
                    failed.insert(shard);
                }
            }
        }
        failed.retain(|shard| !finished.contains_key(shard));
        let ended = |shard: &String| finished.contains_key(shard) || failed.contains(shard);
        let state = if !queued.iter().all(ended) {
            JobState::Running
        } else if failed.is_empty() {
            JobState::Done
        } else {
            JobState::Failed
        };
        let mut totals = ShardCounts::default();
        for counts in finished.values() {
            totals.add(counts);
        }
        Self {
            state,
            shards_queued: queued.len() as u64,
            shards_finished: finished.len() as u64,
            shards_failed: failed.len() as u64,
            totals,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(blobs: u64, snapshots: u64) -> ShardCounts {
        ShardCounts {
            blobs,
            snapshots_created: snapshots,
            ..Default::default()
        }
    }

    #[test]
    fn ids_name_a_directory_part_and_nothing_else() {
        let root = Shard::root("job-1", "lake", "");
        let again = Shard::root("job-2", "lake", "");
        assert_eq!(
            shard_id(&root),
            shard_id(&again),
            "the job is not part of it"
        );
        let next = root.continuation(Some("marker-a"), None);
        assert_ne!(shard_id(&root), shard_id(&next));
        assert_eq!(
            shard_id(&next),
            shard_id(&root.continuation(Some("marker-b"), Some("x"))),
            "a retried shard's continuation is the same part whatever its marker"
        );
        assert_ne!(shard_id(&root.child("a/")), shard_id(&root));
        assert_eq!(shard_id(&root).len(), 32);
    }

    #[test]
    fn counts_round_trip_through_metadata_and_add_up() {
        let mut a = counts(3, 2);
        a.backups_copied = 1;
        let metadata = a.to_metadata();
        assert_eq!(ShardCounts::from_metadata(&metadata), a);
        let upper: HashMap<_, _> = metadata
            .into_iter()
            .map(|(k, v)| (k.to_uppercase(), v))
            .collect();
        assert_eq!(ShardCounts::from_metadata(&upper), a, "keys are case-blind");
        a.add(&counts(4, 1));
        assert_eq!((a.blobs, a.snapshots_created), (7, 3));
    }

    #[test]
    fn a_job_is_done_when_every_queued_shard_has_finished() {
        use LedgerEntry::*;
        let q = |s: &str| Queued { shard: s.into() };
        let f = |s: &str, n| Finished {
            shard: s.into(),
            counts: counts(n, n),
        };
        let running = JobProgress::from_ledger([q("root"), f("root", 2), q("a")]);
        assert_eq!(running.state, JobState::Running);
        assert_eq!((running.shards_queued, running.shards_finished), (2, 1));
        assert_eq!(running.totals.blobs, 2);

        // Order does not matter, and a shard finished twice counts once.
        let done =
            JobProgress::from_ledger([f("a", 5), f("root", 2), q("a"), q("root"), f("a", 5)]);
        assert_eq!(done.state, JobState::Done);
        assert_eq!(done.totals.blobs, 7);

        let failed = JobProgress::from_ledger([
            q("root"),
            f("root", 1),
            q("a"),
            Failed { shard: "a".into() },
        ]);
        assert_eq!(failed.state, JobState::Failed);
        assert_eq!(failed.shards_failed, 1);
        // A failure later made good by a run that finished is not a failure.
        let healed = JobProgress::from_ledger([q("a"), Failed { shard: "a".into() }, f("a", 1)]);
        assert_eq!(healed.state, JobState::Done);
        assert_eq!(healed.shards_failed, 0);
        assert_eq!(JobProgress::from_ledger([]).state, JobState::Done);
    }
}
