//! The shard: the unit of work at lake scale. One shard is one directory level of one container
//! (or one name of it), from a continuation on: `(job, container, prefix, marker)`, and the work
//! it does there — one kind of work with that kind's options ([`ShardWork`]; the job engine's
//! registry says which kinds there are). It does its work on the blobs at its own level, queues
//! each sub-directory as a new shard (the fan-out) and, when its time budget is spent, queues
//! its own continuation. Built with serde like the backup request; its id in the job's ledger is
//! its exact position. Pure.
//!
//! A backup continuation says where to go on by the service's own marker and the identity of the
//! last entry dealt with, never by comparing names: the service lists in an order of its own (UTF-16
//! code units on flat accounts, path segment by segment with a hierarchical namespace), which no
//! byte-wise comparison reproduces.
//!
//! The message's JSON is the same as earlier releases wrote: the position's fields, `kind`
//! (absent for backup), and the kind's options as that kind writes them.

mod ids;
mod message;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::naming::{self, NamingError};
use ids::hex_id;
pub use ids::{directory_prefix, is_job_id, new_job_id};
pub use message::{read_options, write_options, UNNAMED_KIND};

/// The work a shard does: one kind of work, with its options. The job engine's registry
/// implements it for the one enum of the kinds there are.
pub trait ShardWork: Clone + std::fmt::Debug + PartialEq + Send + Sync {
    /// The kind's name in messages, the ledger and statuses (`backup`, `restore`, ...).
    fn kind(&self) -> &'static str;

    /// Writes the kind's options into the shard's JSON object (its `kind` is written beside).
    fn write(&self, object: &mut Map<String, Value>);

    /// Reads the work of the kind named `kind` (absent: the first kind, backup) from the shard's
    /// JSON object.
    fn read(kind: Option<&str>, object: &Map<String, Value>) -> Result<Self, String>;
}

/// One directory level of a container, from `marker` on, and the work done there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard<W> {
    /// The job this shard belongs to (every shard a root shard fans out into carries its id).
    pub job: String,
    pub container: String,
    /// The directory: empty for the container's root, else ending in `/`.
    pub prefix: String,
    /// Where the listing goes on; absent at the start of the directory.
    pub marker: Option<String>,
    /// Which part of the directory this is: 0 for its start, n for its n-th continuation.
    pub part: u32,
    /// The name (a blob's, or a sub-directory's) of the last entry the previous part dealt
    /// with, on the first pages listed from `marker`: the entries up to and including that name's
    /// run are skipped. Found by equality, never by order; when the listing no longer holds it,
    /// nothing is skipped (redoing is harmless, every step is idempotent). A part that plans its
    /// whole level in its own name order (restore, verify, prune) goes on after this name in
    /// that order (no marker): the order is its own, never the service's.
    pub after: Option<String>,
    /// With `after`: the first entry the previous part did not deal with, found by equality:
    /// skipping stops before it, so an `after` deleted since does not make a part redo the
    /// entries before it.
    pub resume_at: Option<String>,
    /// What is left of the directory: its listing, or only its deletions.
    pub phase: Phase,
    /// The one name of the directory this shard is narrowed to (a job over one blob): only that
    /// name is dealt with; nothing is fanned out.
    pub only: Option<String>,
    /// What the shard does there.
    pub work: W,
}

/// What a shard part does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// List the directory level and repair what it shows.
    #[default]
    Listing,
    /// The listing was spread over several parts, or the deletions did not fit the budget: list
    /// the whole level again, names only, and record which backed-up names it no longer holds.
    Deletions,
}

impl Phase {
    fn is_listing(&self) -> bool {
        *self == Phase::Listing
    }
}

impl<W: ShardWork> Shard<W> {
    /// The first shard of a job over `container` (or just its directory `prefix`).
    pub fn root(job: &str, container: &str, prefix: &str, work: W) -> Self {
        Self {
            job: job.to_owned(),
            container: container.to_owned(),
            prefix: prefix.to_owned(),
            marker: None,
            part: 0,
            after: None,
            resume_at: None,
            phase: Phase::Listing,
            only: None,
            work,
        }
    }

    /// The first part of a listing of the container's root level (a job over the whole
    /// container): where the container's root directory itself is dealt with, once a pass.
    pub fn starts_container(&self) -> bool {
        self.prefix.is_empty()
            && self.part == 0
            && self.only.is_none()
            && self.phase == Phase::Listing
    }

    /// The shard over the one blob `name`, of `work`.
    pub fn one_blob(job: &str, container: &str, name: &str, work: W) -> Self {
        let directory = naming::directory_of(name).unwrap_or("");
        Self {
            only: Some(name.to_owned()),
            ..Self::root(job, container, directory, work)
        }
    }

    /// The shard of sub-directory `prefix` (as listed under this one), of the same work.
    pub fn child(&self, prefix: &str) -> Self {
        Self::root(&self.job, &self.container, prefix, self.work.clone())
    }

    /// The rest of this directory, listed from `marker` (`None`: from its start), the first
    /// pages' entries through `after`'s run skipped.
    pub fn continuation(&self, marker: Option<&str>, after: Option<&str>) -> Self {
        Self {
            marker: marker.map(str::to_owned),
            part: self.part.saturating_add(1),
            after: after.map(str::to_owned),
            resume_at: None,
            ..self.clone()
        }
    }

    /// This continuation, going on at `resume_at`: the first entry its part did not deal with.
    pub fn resuming_at(self, resume_at: Option<String>) -> Self {
        Self { resume_at, ..self }
    }

    /// The part that records the directory's deletions (its listing is done).
    pub fn deletions(&self) -> Self {
        Self {
            marker: None,
            after: None,
            resume_at: None,
            phase: Phase::Deletions,
            part: self.part.saturating_add(1),
            ..self.clone()
        }
    }

    /// The start of the level this shard lists: its directory, or its one blob's name.
    pub fn listing_prefix(&self) -> &str {
        self.only.as_deref().unwrap_or(&self.prefix)
    }

    fn validate(&self) -> Result<(), NamingError> {
        naming::validate_container_name(&self.container)?;
        if !self.prefix.is_empty() {
            naming::validate_blob_name(&self.prefix)?;
        }
        if let Some(name) = &self.only {
            naming::validate_blob_name(name)?;
            if naming::directory_of(name).unwrap_or("") != self.prefix {
                return Err(NamingError::InvalidBlob {
                    name: name.clone(),
                    reason: "is not directly in the shard's directory",
                });
            }
        }
        Ok(())
    }

    /// The shard's id within its job: its exact position — the directory, which part of it, of
    /// which kind of work, and where a continuation goes on (its marker and the last entry before
    /// it, its phase) — so a shard queued twice (a retried parent) is one entry, not two, and
    /// two continuations that go on from different places are two.
    pub fn id(&self) -> String {
        let mut hash = self.part_hash();
        if let Some(marker) = &self.marker {
            hash.update(b"\0marker\0");
            hash.update(marker.as_bytes());
        }
        if let Some(after) = &self.after {
            hash.update(b"\0after\0");
            hash.update(after.as_bytes());
        }
        if self.phase == Phase::Deletions {
            hash.update(b"\0deletions");
        }
        hex_id(hash)
    }

    /// The id an earlier release gave a continuation (its directory part, without its position),
    /// when it differs from [`Shard::id`]: a job in flight across an upgrade has its
    /// continuations entered under these.
    pub fn legacy_id(&self) -> Option<String> {
        let positioned =
            self.marker.is_some() || self.after.is_some() || self.phase == Phase::Deletions;
        positioned.then(|| hex_id(self.part_hash()))
    }

    fn part_hash(&self) -> Sha256 {
        let mut hash = Sha256::new();
        for part in [
            self.container.as_bytes(),
            b"\0",
            self.prefix.as_bytes(),
            b"\0",
            self.part.to_string().as_bytes(),
        ] {
            hash.update(part);
        }
        if let Some(name) = &self.only {
            hash.update(b"\0only\0");
            hash.update(name.as_bytes());
        }
        let kind = self.work.kind();
        if kind != "backup" {
            hash.update(b"\0kind\0");
            hash.update(kind.as_bytes());
        }
        hash
    }
}

#[cfg(test)]
mod tests;
