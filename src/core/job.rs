//! A job's progress, derived from an append-only ledger: one "queued" entry per shard put on the
//! queue and one "finished" (or "failed") entry per shard that ended, each keyed by the shard's
//! id. Nothing is ever counted up in place, so instances never fight over a counter; the status
//! is whatever the entries add up to. The arithmetic knows no kind of work: a shard's counts are
//! named numbers ([`Counts`]), each kind with its own names ([`BackupCounts`] for backup). Pure.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::shard::{Phase, Shard, WorkKind};

/// What one shard did, as named numbers, whatever its kind of work; summed over a job's shards
/// for its totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Counts(BTreeMap<String, u64>);

/// The one count every kind keeps: units of work (blobs) that could not be done, named in the
/// notes. A job with any ends failed.
pub const FAILED: &str = "failed";

/// A restore's count of blobs it could not restore (its name in the restore's summary since
/// before restores were jobs).
pub const ERRORS: &str = "errors";

/// The units of work a job's counts say were not done, whatever its kind.
pub fn not_done(counts: &Counts) -> u64 {
    counts.get(FAILED) + counts.get(ERRORS)
}

/// What a restore counts, per blob.
pub const RESTORE_COUNTS: [&str; 6] = [
    "restored",
    "unchanged",
    "missing_version",
    "deleted",
    "changed_since_plan",
    ERRORS,
];

/// What a verify counts, per current blob of the lake. `failed`: blobs with any gap (no
/// backup, no snapshot, a backup that does not match, one that could not be checked), each
/// named in the notes, so a job that found one ends failed.
pub const VERIFY_COUNTS: [&str; 8] = [
    "blobs",
    "backed_up",
    "without_backup",
    "without_snapshot",
    "checked",
    "mismatched",
    "unchecked",
    FAILED,
];

/// What a prune counts, per backup version and snapshot (and their bytes).
pub const PRUNE_COUNTS: [&str; 8] = [
    "versions_kept",
    "versions_deleted",
    "snapshots_kept",
    "snapshots_deleted",
    "bytes_freed",
    "bytes_kept",
    "refused",
    ERRORS,
];

impl Counts {
    /// Counts with every one of `names` at zero (a status shows them all).
    pub fn zero(names: &[&str]) -> Self {
        Self(names.iter().map(|name| ((*name).to_owned(), 0)).collect())
    }

    /// Each count by name, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &u64)> {
        self.0.iter()
    }

    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    pub fn set(&mut self, name: &str, value: u64) {
        self.0.insert(name.to_owned(), value);
    }

    pub fn add(&mut self, other: &Counts) {
        for (name, value) in &other.0 {
            *self.0.entry(name.clone()).or_default() += value;
        }
    }

    /// As blob metadata (names are valid C# identifiers, values decimal), so a listing of the
    /// ledger carries every count without reading a blob.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        self.0
            .iter()
            .map(|(name, value)| (name.clone(), value.to_string()))
            .collect()
    }

    /// Reads counts back from metadata: every key with a decimal value, lowercased (metadata
    /// names are case-blind); others are not counts.
    pub fn from_metadata(metadata: &HashMap<String, String>) -> Self {
        Self(
            metadata
                .iter()
                .filter_map(|(key, value)| Some((key.to_ascii_lowercase(), value.parse().ok()?)))
                .collect(),
        )
    }
}

/// The names of the counts a kind of work keeps, in the order a status shows them.
pub fn count_names(kind: WorkKind) -> &'static [&'static str] {
    match kind {
        WorkKind::Backup => &BackupCounts::FIELDS,
        WorkKind::Restore => &RESTORE_COUNTS,
        WorkKind::Verify => &VERIFY_COUNTS,
        WorkKind::Prune => &PRUNE_COUNTS,
    }
}

/// What one backup shard did, in numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BackupCounts {
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
    /// Blobs whose backup or snapshot failed: named, with the reason, in the job's ledger. The
    /// rest of their directory went on.
    pub failed: u64,
    /// Blobs whose stored Content-MD5 does not match their bytes: backed up all the same (the
    /// bytes as the lake holds them, the MD5 property as stored), and named in the ledger.
    pub md5_mismatches: u64,
    /// Names seen again with a version whose deletion had been recorded (an undelete).
    pub revivals_recorded: u64,
}

impl BackupCounts {
    pub const FIELDS: [&'static str; 14] = [
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
        "failed",
        "md5_mismatches",
        "revivals_recorded",
    ];

    fn fields(&self) -> [u64; 14] {
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
            self.failed,
            self.md5_mismatches,
            self.revivals_recorded,
        ]
    }

    fn from_fields(f: [u64; 14]) -> Self {
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
            failed: f[11],
            md5_mismatches: f[12],
            revivals_recorded: f[13],
        }
    }

    pub fn add(&mut self, other: &BackupCounts) {
        let (mine, theirs) = (self.fields(), other.fields());
        *self = Self::from_fields(std::array::from_fn(|i| mine[i] + theirs[i]));
    }

    /// As the named counts of a job's ledger.
    pub fn to_counts(&self) -> Counts {
        Counts(
            Self::FIELDS
                .iter()
                .zip(self.fields())
                .map(|(name, value)| ((*name).to_owned(), value))
                .collect(),
        )
    }

    /// Read back from named counts; a missing one is 0.
    pub fn from_counts(counts: &Counts) -> Self {
        Self::from_fields(Self::FIELDS.map(|name| counts.get(name)))
    }
}

/// A shard's id within its job: its exact position — the directory, which part of it, of which
/// kind of work, and where a continuation goes on (its marker and the last entry before it, its
/// phase) — so a shard queued twice (a retried parent) is one entry, not two, and two
/// continuations that go on from different places are two.
pub fn shard_id(shard: &Shard) -> String {
    let mut hash = part_hash(shard);
    if let Some(marker) = &shard.marker {
        hash.update(b"\0marker\0");
        hash.update(marker.as_bytes());
    }
    if let Some(after) = &shard.after {
        hash.update(b"\0after\0");
        hash.update(after.as_bytes());
    }
    if shard.phase == Phase::Deletions {
        hash.update(b"\0deletions");
    }
    hex_id(hash)
}

/// The id an earlier release gave a continuation (its directory part, without its position),
/// when it differs from [`shard_id`]: a job in flight across an upgrade has its continuations
/// entered under these.
pub fn legacy_shard_id(shard: &Shard) -> Option<String> {
    let positioned =
        shard.marker.is_some() || shard.after.is_some() || shard.phase == Phase::Deletions;
    positioned.then(|| hex_id(part_hash(shard)))
}

fn part_hash(shard: &Shard) -> Sha256 {
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
    if let Some(name) = &shard.only {
        hash.update(b"\0only\0");
        hash.update(name.as_bytes());
    }
    if shard.kind != WorkKind::Backup {
        hash.update(b"\0kind\0");
        hash.update(shard.kind.as_str().as_bytes());
    }
    hash
}

fn hex_id(hash: Sha256) -> String {
    hash.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One blob a shard could not protect, or protected with a warning: named in the job's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobNote {
    pub blob: String,
    /// What went wrong (or what is wrong with the blob), in words.
    pub reason: String,
}

/// What a finished shard leaves in its ledger entry besides its counts: the blobs it could not
/// protect (or otherwise do its work on) and those it warns about, at most [`NOTES_PER_SHARD`]
/// of each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notes {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<BlobNote>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<BlobNote>,
}

/// How many failures (and warnings) one shard names; its counts hold the rest.
pub const NOTES_PER_SHARD: usize = 100;

impl Notes {
    pub fn is_empty(&self) -> bool {
        self.failures.is_empty() && self.warnings.is_empty()
    }

    pub fn fail(&mut self, blob: &str, reason: impl Into<String>) {
        if self.failures.len() < NOTES_PER_SHARD {
            self.failures.push(BlobNote {
                blob: blob.to_owned(),
                reason: reason.into(),
            });
        }
    }

    pub fn warn(&mut self, blob: &str, reason: impl Into<String>) {
        let note = BlobNote {
            blob: blob.to_owned(),
            reason: reason.into(),
        };
        if self.warnings.len() < NOTES_PER_SHARD && !self.warnings.contains(&note) {
            self.warnings.push(note);
        }
    }

    /// Adds `other`'s notes, each once (a warning about the whole lake comes from every shard).
    pub fn extend(&mut self, other: Notes) {
        for note in other.failures {
            if !self.failures.contains(&note) {
                self.failures.push(note);
            }
        }
        for note in other.warnings {
            if !self.warnings.contains(&note) {
                self.warnings.push(note);
            }
        }
    }
}

/// One entry of a job's ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerEntry {
    Queued {
        shard: String,
    },
    Finished {
        shard: String,
        counts: Counts,
        notes: Notes,
    },
    /// The shard gave up for good (its message went to the poison queue).
    Failed {
        shard: String,
        reason: String,
    },
    /// The shard's last allowed delivery started, and must end by `deadline` (the invocation's
    /// timeout): a shard that has neither finished nor failed by then was killed or timed out,
    /// and the host poisons its message without telling anyone.
    LastAttempt {
        shard: String,
        deadline: OffsetDateTime,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    /// Every shard queued has finished, and every blob it judged is protected.
    Done,
    /// Every shard queued has ended, and a shard failed for good or a blob could not be
    /// protected: named in `failures`.
    Failed,
}

/// How many failures and warnings a job's status names; its counts hold the rest.
pub const NOTES_PER_STATUS: usize = 100;

/// A job's progress as its ledger says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobProgress {
    #[serde(rename = "status")]
    pub state: JobState,
    pub shards_queued: u64,
    pub shards_finished: u64,
    pub shards_failed: u64,
    #[serde(flatten)]
    pub totals: Counts,
    /// Why shards failed, and which blobs could not be protected and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<BlobNote>,
    /// Blobs protected with a warning (a stored MD5 that does not match the bytes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<BlobNote>,
}

impl JobProgress {
    /// Adds the ledger up at `now`. A shard finished twice (run again after a crash) counts
    /// once, with the counts of its last entry; an entry for a shard never queued still counts
    /// as work done. A shard whose last delivery passed its deadline without ending failed.
    pub fn from_ledger(
        entries: impl IntoIterator<Item = LedgerEntry>,
        now: OffsetDateTime,
    ) -> Self {
        let mut queued = BTreeSet::new();
        let mut finished: BTreeMap<String, (Counts, Notes)> = BTreeMap::new();
        let mut failed: BTreeMap<String, String> = BTreeMap::new();
        let mut last_attempts: BTreeMap<String, OffsetDateTime> = BTreeMap::new();
        for entry in entries {
            match entry {
                LedgerEntry::Queued { shard } => {
                    queued.insert(shard);
                }
                LedgerEntry::Finished {
                    shard,
                    counts,
                    notes,
                } => {
                    finished.insert(shard, (counts, notes));
                }
                LedgerEntry::Failed { shard, reason } => {
                    failed.insert(shard, reason);
                }
                LedgerEntry::LastAttempt { shard, deadline } => {
                    last_attempts.insert(shard, deadline);
                }
            }
        }
        for (shard, deadline) in last_attempts {
            if deadline < now && !finished.contains_key(&shard) {
                failed.entry(shard).or_insert_with(|| {
                    "its last allowed delivery did not end within the invocation's timeout: the \
                     worker was stopped or the shard ran out of time, and the host gave it up"
                        .to_owned()
                });
            }
        }
        failed.retain(|shard, _| !finished.contains_key(shard));
        let ended = |shard: &String| finished.contains_key(shard) || failed.contains_key(shard);
        let mut totals = Counts::default();
        let (mut failures, mut warnings) = (Vec::new(), Vec::new());
        for (shard, reason) in &failed {
            failures.push(BlobNote {
                blob: String::new(),
                reason: format!("shard {shard} failed: {reason}"),
            });
        }
        for (counts, notes) in finished.values() {
            totals.add(counts);
            for note in &notes.failures {
                if !failures.contains(note) && failures.len() < NOTES_PER_STATUS {
                    failures.push(note.clone());
                }
            }
            for note in &notes.warnings {
                if !warnings.contains(note) && warnings.len() < NOTES_PER_STATUS {
                    warnings.push(note.clone());
                }
            }
        }
        failures.truncate(NOTES_PER_STATUS);
        warnings.truncate(NOTES_PER_STATUS);
        let state = if !queued.iter().all(ended) {
            JobState::Running
        } else if failed.is_empty() && not_done(&totals) == 0 {
            JobState::Done
        } else {
            JobState::Failed
        };
        Self {
            state,
            shards_queued: queued.len() as u64,
            shards_finished: finished.len() as u64,
            shards_failed: failed.len() as u64,
            totals,
            failures,
            warnings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(blobs: u64, snapshots: u64) -> Counts {
        BackupCounts {
            blobs,
            snapshots_created: snapshots,
            ..Default::default()
        }
        .to_counts()
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
        let next = root.continuation(Some("marker-a"), Some("x"));
        assert_ne!(shard_id(&root), shard_id(&next));
        assert_eq!(
            shard_id(&next),
            shard_id(&root.continuation(Some("marker-a"), Some("x"))),
            "the same position is the same part"
        );
        for elsewhere in [
            root.continuation(Some("marker-b"), Some("x")),
            root.continuation(Some("marker-a"), Some("y")),
            root.continuation(Some("marker-a"), None),
            root.deletions(),
        ] {
            assert_ne!(
                shard_id(&next),
                shard_id(&elsewhere),
                "a continuation from another position is another part: {elsewhere:?}"
            );
        }
        assert_ne!(shard_id(&root.child("a/")), shard_id(&root));
        assert_eq!(shard_id(&root).len(), 32);
        // An earlier release named a continuation by its part alone.
        assert_eq!(legacy_shard_id(&root), None);
        let legacy = legacy_shard_id(&next).unwrap();
        assert_ne!(legacy, shard_id(&next));
        assert_eq!(
            Some(legacy),
            legacy_shard_id(&root.continuation(Some("marker-b"), None))
        );
    }

    #[test]
    fn counts_round_trip_through_metadata_and_add_up() {
        let mut typed = BackupCounts::from_counts(&counts(3, 2));
        typed.backups_copied = 1;
        let mut a = typed.to_counts();
        let metadata = a.to_metadata();
        assert_eq!(Counts::from_metadata(&metadata), a);
        let upper: HashMap<_, _> = metadata
            .into_iter()
            .map(|(k, v)| (k.to_uppercase(), v))
            .collect();
        assert_eq!(Counts::from_metadata(&upper), a, "keys are case-blind");
        a.add(&counts(4, 1));
        assert_eq!((a.get("blobs"), a.get("snapshots_created")), (7, 3));
        assert_eq!(BackupCounts::from_counts(&a).backups_copied, 1);
        let garbled = HashMap::from([("blobs".into(), "many".into())]);
        assert_eq!(Counts::from_metadata(&garbled).get("blobs"), 0);
    }

    #[test]
    fn a_job_is_done_when_every_queued_shard_has_finished() {
        use LedgerEntry::*;
        let q = |s: &str| Queued { shard: s.into() };
        let f = |s: &str, n| Finished {
            shard: s.into(),
            counts: counts(n, n),
            notes: Notes::default(),
        };
        let now = time::macros::datetime!(2026-11-28 12:00 UTC);
        let failed_for = |s: &str| Failed {
            shard: s.into(),
            reason: "listing failed".into(),
        };
        let running = JobProgress::from_ledger([q("root"), f("root", 2), q("a")], now);
        assert_eq!(running.state, JobState::Running);
        assert_eq!((running.shards_queued, running.shards_finished), (2, 1));
        assert_eq!(running.totals.get("blobs"), 2);

        // Order does not matter, and a shard finished twice counts once.
        let done =
            JobProgress::from_ledger([f("a", 5), f("root", 2), q("a"), q("root"), f("a", 5)], now);
        assert_eq!(done.state, JobState::Done);
        assert_eq!(done.totals.get("blobs"), 7);

        let failed =
            JobProgress::from_ledger([q("root"), f("root", 1), q("a"), failed_for("a")], now);
        assert_eq!(failed.state, JobState::Failed);
        assert_eq!(failed.shards_failed, 1);
        assert!(failed.failures[0].reason.contains("listing failed"));
        // A failure later made good by a run that finished is not a failure.
        let healed = JobProgress::from_ledger([q("a"), failed_for("a"), f("a", 1)], now);
        assert_eq!(healed.state, JobState::Done);
        assert_eq!(healed.shards_failed, 0);
        assert_eq!(JobProgress::from_ledger([], now).state, JobState::Done);
    }

    #[test]
    fn a_shard_whose_last_delivery_never_ended_fails_its_job() {
        use LedgerEntry::*;
        let now = time::macros::datetime!(2026-11-28 12:00 UTC);
        let attempt = |minutes: i64| LastAttempt {
            shard: "a".into(),
            deadline: now + time::Duration::minutes(minutes),
        };
        let queued = Queued { shard: "a".into() };
        let still_running = JobProgress::from_ledger([queued.clone(), attempt(5)], now);
        assert_eq!(still_running.state, JobState::Running);
        let killed = JobProgress::from_ledger([queued.clone(), attempt(-1)], now);
        assert_eq!(killed.state, JobState::Failed);
        assert!(killed.failures[0].reason.contains("did not end"));
        let finished_late = JobProgress::from_ledger(
            [
                queued,
                attempt(-1),
                Finished {
                    shard: "a".into(),
                    counts: Counts::default(),
                    notes: Notes::default(),
                },
            ],
            now,
        );
        assert_eq!(finished_late.state, JobState::Done);
    }

    #[test]
    fn a_blob_that_could_not_be_protected_fails_the_job_by_name() {
        use LedgerEntry::*;
        let now = time::macros::datetime!(2026-11-28 12:00 UTC);
        let mut notes = Notes::default();
        notes.fail("raw/cpk.bin", "encrypted with a customer-provided key");
        notes.warn("raw/bad-md5.csv", "stored Content-MD5 does not match");
        let progress = JobProgress::from_ledger(
            [
                Queued { shard: "a".into() },
                Finished {
                    shard: "a".into(),
                    counts: BackupCounts {
                        blobs: 3,
                        failed: 1,
                        md5_mismatches: 1,
                        ..Default::default()
                    }
                    .to_counts(),
                    notes,
                },
            ],
            now,
        );
        assert_eq!(progress.state, JobState::Failed);
        assert_eq!(progress.failures[0].blob, "raw/cpk.bin");
        assert_eq!(progress.warnings[0].blob, "raw/bad-md5.csv");
    }
}
