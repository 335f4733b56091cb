//! A job's progress, derived from an append-only ledger: one "queued" entry per shard put on the
//! queue and one "finished" (or "failed") entry per shard that ended, each keyed by the shard's
//! id ([`super::shard::Shard::id`]). Nothing is ever counted up in place, so instances never
//! fight over a counter; the status is whatever the entries add up to. The arithmetic knows no
//! kind of work: a shard's counts are named numbers ([`Counts`]), and whether a kind's counts
//! say units were not done is the caller's to tell. Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use super::counts::Counts;

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
    /// Adds the ledger up at `now`; `not_done` says how many units a shard's counts say were
    /// not done (its kind's). A shard finished twice (run again after a crash) counts
    /// once, with the counts of its last entry; an entry for a shard never queued still counts
    /// as work done. A shard whose last delivery passed its deadline without ending failed.
    pub fn from_ledger(
        entries: impl IntoIterator<Item = LedgerEntry>,
        now: OffsetDateTime,
        not_done: impl Fn(&Counts) -> u64,
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

/// How long a recorded reason may be once percent-encoded: Azure allows a blob 8 KiB of
/// metadata, names and values together, and a reason shares it.
pub const MAX_ENCODED_REASON: usize = 4_096;

/// `reason` percent-encoded for a metadata value (headers are ASCII), cut at a character so that
/// the encoding is at most [`MAX_ENCODED_REASON`] bytes: a character outside ASCII takes up to
/// 12, so a count of characters bounds nothing.
pub fn encoded_reason(reason: &str) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let mut encoded = String::new();
    let mut buffer = [0u8; 4];
    for c in reason.chars() {
        let piece = utf8_percent_encode(c.encode_utf8(&mut buffer), NON_ALPHANUMERIC).to_string();
        if encoded.len() + piece.len() > MAX_ENCODED_REASON {
            break;
        }
        encoded.push_str(&piece);
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_cut_by_its_encoded_length_at_a_character() {
        let long: String = "数据 ✗ 🦀".repeat(1_000);
        let encoded = encoded_reason(&long);
        assert!(encoded.len() <= MAX_ENCODED_REASON, "{}", encoded.len());
        assert!(encoded.len() > MAX_ENCODED_REASON - 12);
        let decoded = percent_encoding::percent_decode_str(&encoded)
            .decode_utf8()
            .unwrap();
        assert!(long.starts_with(decoded.as_ref()));
        assert_eq!(encoded_reason("short: ok"), "short%3A%20ok");
    }

    fn counts(blobs: u64, failed: u64) -> Counts {
        let mut counts = Counts::default();
        counts.set("blobs", blobs);
        counts.set("failed", failed);
        counts
    }

    /// A kind whose units not done are its `failed` count.
    fn failures_of(counts: &Counts) -> u64 {
        counts.get("failed")
    }

    #[test]
    fn a_job_is_done_when_every_queued_shard_has_finished() {
        use LedgerEntry::*;
        let q = |s: &str| Queued { shard: s.into() };
        let f = |s: &str, n| Finished {
            shard: s.into(),
            counts: counts(n, 0),
            notes: Notes::default(),
        };
        let now = time::macros::datetime!(2026-11-28 12:00 UTC);
        let failed_for = |s: &str| Failed {
            shard: s.into(),
            reason: "listing failed".into(),
        };
        let running = JobProgress::from_ledger([q("root"), f("root", 2), q("a")], now, failures_of);
        assert_eq!(running.state, JobState::Running);
        assert_eq!((running.shards_queued, running.shards_finished), (2, 1));
        assert_eq!(running.totals.get("blobs"), 2);

        // Order does not matter, and a shard finished twice counts once.
        let done = JobProgress::from_ledger(
            [f("a", 5), f("root", 2), q("a"), q("root"), f("a", 5)],
            now,
            failures_of,
        );
        assert_eq!(done.state, JobState::Done);
        assert_eq!(done.totals.get("blobs"), 7);

        let failed = JobProgress::from_ledger(
            [q("root"), f("root", 1), q("a"), failed_for("a")],
            now,
            failures_of,
        );
        assert_eq!(failed.state, JobState::Failed);
        assert_eq!(failed.shards_failed, 1);
        assert!(failed.failures[0].reason.contains("listing failed"));
        // A failure later made good by a run that finished is not a failure.
        let healed =
            JobProgress::from_ledger([q("a"), failed_for("a"), f("a", 1)], now, failures_of);
        assert_eq!(healed.state, JobState::Done);
        assert_eq!(healed.shards_failed, 0);
        assert_eq!(
            JobProgress::from_ledger([], now, failures_of).state,
            JobState::Done
        );
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
        let still_running =
            JobProgress::from_ledger([queued.clone(), attempt(5)], now, failures_of);
        assert_eq!(still_running.state, JobState::Running);
        let killed = JobProgress::from_ledger([queued.clone(), attempt(-1)], now, failures_of);
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
            failures_of,
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
                    counts: counts(3, 1),
                    notes,
                },
            ],
            now,
            failures_of,
        );
        assert_eq!(progress.state, JobState::Failed);
        assert_eq!(progress.failures[0].blob, "raw/cpk.bin");
        assert_eq!(progress.warnings[0].blob, "raw/bad-md5.csv");
    }
}
