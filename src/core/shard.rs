//! The shard: the unit of work at lake scale. One shard is one directory level of one container,
//! from a continuation marker on: `(job, kind, container, prefix, marker)`. It does its kind of
//! work on the blobs at its own level, queues each sub-directory as a new shard (the fan-out)
//! and, when its time budget is spent, queues its own continuation. Built with serde like the
//! backup request. Pure.
//!
//! A backup continuation says where to go on by the service's own marker and the identity of the
//! last entry dealt with, never by comparing names: the service lists in an order of its own (UTF-16
//! code units on flat accounts, path segment by segment with a hierarchical namespace), which no
//! byte-wise comparison reproduces.

use serde::{Deserialize, Serialize};

use super::{
    naming::{self, NamingError},
    restore_plan::RestoreOptions,
    retention::RetentionPolicy,
};

/// The kinds of work a job does, directory by directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkKind {
    /// Snapshot and back up every version that lacks it; record the lives that ended (and,
    /// in a reconciliation, prune).
    #[default]
    Backup,
    /// Write back, for each blob of the level, the version current at an instant.
    Restore,
    /// Check that each current blob of the level has a complete backup of its current version
    /// and a snapshot of it (and, deep, that the backup holds its bytes). Writes nothing but
    /// the MD5 a deep check computed, into the backup's stamp.
    Verify,
    /// Delete the backup versions and snapshots of the level the retention policy no longer
    /// keeps.
    Prune,
}

impl WorkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkKind::Backup => "backup",
            WorkKind::Restore => "restore",
            WorkKind::Verify => "verify",
            WorkKind::Prune => "prune",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "backup" => Some(WorkKind::Backup),
            "restore" => Some(WorkKind::Restore),
            "verify" => Some(WorkKind::Verify),
            "prune" => Some(WorkKind::Prune),
            _ => None,
        }
    }

    fn is_backup(&self) -> bool {
        *self == WorkKind::Backup
    }
}

/// One directory level of a container, from `marker` on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// The job this shard belongs to (every shard a root shard fans out into carries its id).
    pub job: String,
    /// What the job does (absent: backup, as every shard of earlier releases).
    #[serde(default, skip_serializing_if = "WorkKind::is_backup")]
    pub kind: WorkKind,
    pub container: String,
    /// The directory: empty for the container's root, else ending in `/`.
    #[serde(default)]
    pub prefix: String,
    /// Where the listing goes on; absent at the start of the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
    /// Which part of the directory this is: 0 for its start, n for its n-th continuation. It
    /// names the part in the job's ledger (a marker may differ between retries; the part does
    /// not).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub part: u32,
    /// The name (a blob's, or a sub-directory's) of the last entry the previous part dealt
    /// with, on the first page listed from `marker`: that page's entries up to and including
    /// that name's run are skipped. Found by equality, never by order; when the page no longer
    /// holds it, nothing is skipped (redoing is harmless, every step is idempotent). A restore
    /// part, which lists its whole level and plans it in its own name order, goes on after
    /// this name in that order (no marker): the order is its own, never the service's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// With `after`: the first entry the previous part did not deal with, found by equality:
    /// skipping stops before it, so an `after` deleted since does not make a part redo the
    /// page's entries before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_at: Option<String>,
    /// What is left of the directory: its listing, or only its deletions.
    #[serde(default, skip_serializing_if = "Phase::is_listing")]
    pub phase: Phase,
    /// A reconciliation's shard: it also prunes what the retention policy no longer keeps
    /// (a producer's job, which ingestion waits for, does not). Inherited by the shards it
    /// spawns.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prune: bool,
    /// A job over one blob of the directory (a producer `prefix` that names a blob): only that
    /// name is backed up and snapshotted; nothing is fanned out, judged gone or pruned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<String>,
    /// A restore's shard: what the restore does (present exactly when `kind` is `restore`).
    /// Inherited by the shards it spawns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<Box<RestoreOptions>>,
    /// A verify shard's options (present exactly when `kind` is `verify`). Inherited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyOptions>,
    /// A prune shard's options (present exactly when `kind` is `prune`). Inherited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruning: Option<PruneOptions>,
}

/// What a verify job checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyOptions {
    /// Only names starting with it (empty: every name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter: String,
    /// Also read each backup's bytes and check them against the version.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deep: bool,
}

/// What a prune job deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneOptions {
    /// Only names starting with it (empty: every name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter: String,
    /// Say what would be deleted; delete nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// The instant (Unix seconds) the retention policy is judged at: one for the whole job, so
    /// that every part of a level judges it alike (a version written since is kept).
    pub judged_at: i64,
    /// The policy the job was started with (`RETENTION_*` where it started): the workers' own
    /// settings never decide what a prune deletes.
    pub policy: RetentionPolicy,
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

fn is_zero(part: &u32) -> bool {
    *part == 0
}

impl Shard {
    /// The first shard of a job over `container` (or just its directory `prefix`).
    pub fn root(job: &str, container: &str, prefix: &str) -> Self {
        Self {
            job: job.to_owned(),
            kind: WorkKind::Backup,
            container: container.to_owned(),
            prefix: prefix.to_owned(),
            marker: None,
            part: 0,
            after: None,
            resume_at: None,
            phase: Phase::Listing,
            prune: false,
            only: None,
            restore: None,
            verify: None,
            pruning: None,
        }
    }

    /// The root shard of a restore job over `container`'s directory `prefix`.
    pub fn restore_root(job: &str, container: &str, prefix: &str, options: RestoreOptions) -> Self {
        Self {
            kind: WorkKind::Restore,
            restore: Some(Box::new(options)),
            ..Self::root(job, container, prefix)
        }
    }

    /// The root shard of a verify job over `container`'s directory `prefix`.
    pub fn verify_root(job: &str, container: &str, prefix: &str, options: VerifyOptions) -> Self {
        Self {
            kind: WorkKind::Verify,
            verify: Some(options),
            ..Self::root(job, container, prefix)
        }
    }

    /// The root shard of a prune job over `container`'s directory `prefix`.
    pub fn prune_root(job: &str, container: &str, prefix: &str, options: PruneOptions) -> Self {
        Self {
            kind: WorkKind::Prune,
            pruning: Some(options),
            ..Self::root(job, container, prefix)
        }
    }

    /// The job over the one blob `name`.
    pub fn one_blob(job: &str, container: &str, name: &str) -> Self {
        let directory = naming::directory_of(name).unwrap_or("");
        Self {
            only: Some(name.to_owned()),
            ..Self::root(job, container, directory)
        }
    }

    /// The root shard of a reconciliation, which prunes as it goes.
    pub fn reconciliation(job: &str, container: &str) -> Self {
        Self {
            prune: true,
            ..Self::root(job, container, "")
        }
    }

    /// The shard of sub-directory `prefix` (as listed under this one), of the same work.
    pub fn child(&self, prefix: &str) -> Self {
        Self {
            prune: self.prune,
            kind: self.kind,
            restore: self.restore.clone(),
            verify: self.verify.clone(),
            pruning: self.pruning.clone(),
            ..Self::root(&self.job, &self.container, prefix)
        }
    }

    /// The rest of this directory, listed from `marker` (`None`: from its start), the first
    /// page's entries through `after`'s run skipped.
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

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a struct of strings always serializes")
    }

    /// Reads and checks a shard message.
    pub fn parse(text: &str) -> Result<Self, String> {
        let shard: Shard = serde_json::from_str(text.trim()).map_err(|e| {
            format!("not a shard {{\"job\",\"container\",\"prefix\",\"marker\"}}: {e}")
        })?;
        shard.validate().map_err(|e| e.to_string())?;
        shard.check_work()?;
        if !is_job_id(&shard.job) {
            return Err(format!(
                "the shard's job id {:?} is not 1 to 64 letters, digits, '-' and '_'",
                shard.job
            ));
        }
        Ok(shard)
    }

    /// A shard carries the options of its own kind of work, and no other's.
    fn check_work(&self) -> Result<(), String> {
        let carried = (
            self.restore.is_some(),
            self.verify.is_some(),
            self.pruning.is_some(),
        );
        let expected = match self.kind {
            WorkKind::Backup => (false, false, false),
            WorkKind::Restore => (true, false, false),
            WorkKind::Verify => (false, true, false),
            WorkKind::Prune => (false, false, true),
        };
        if carried != expected {
            return Err(format!(
                "a {} shard carries the options of its own kind of work, and no other's",
                self.kind.as_str()
            ));
        }
        if let Some(options) = &self.restore {
            options.validate()?;
            if let Some(target) = &options.to_container {
                naming::validate_container_name(target).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
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
}

/// Whether `job` has the shape of a job id (it names blobs in the job's ledger).
pub fn is_job_id(job: &str) -> bool {
    (1..=64).contains(&job.len())
        && job
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A job id unique enough to tell jobs apart: the start time, in nanoseconds, in hex.
pub fn new_job_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("job-{nanos:x}")
}

/// A directory prefix as a user may give it: `raw/2026` and `raw/2026/` both mean the directory.
pub fn directory_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_start_matches('/');
    if trimmed.is_empty() || trimmed.ends_with('/') {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_round_trip_and_fan_out() {
        let root = Shard::root("job-1", "lake", "");
        assert_eq!(
            root.to_json(),
            r#"{"job":"job-1","container":"lake","prefix":""}"#
        );
        let child = root.child("raw/\"q\" 2026/");
        let next = child.continuation(Some("2!84!MDAwMDQ2"), Some("raw/x"));
        assert_eq!(Shard::parse(&next.to_json()).unwrap(), next);
        let pruning = Shard::reconciliation("job-2", "lake").child("a/");
        assert!(pruning.prune && pruning.continuation(None, Some("a/x")).prune);
        assert!(pruning.to_json().contains(r#""prune":true"#));
        assert_eq!(next.job, "job-1");
        let deletions = next.deletions();
        assert_eq!(
            (deletions.phase, deletions.part, deletions.marker.as_deref()),
            (Phase::Deletions, 2, None)
        );
        assert_eq!(Shard::parse(&deletions.to_json()).unwrap(), deletions);
        let one = Shard::one_blob("job-3", "lake", "raw/a.csv");
        assert_eq!(
            (one.prefix.as_str(), one.listing_prefix()),
            ("raw/", "raw/a.csv")
        );
        assert_eq!(Shard::parse(&one.to_json()).unwrap(), one);
        let mut stray = one.clone();
        stray.prefix = "other/".into();
        assert!(Shard::parse(&stray.to_json()).is_err());
        assert_eq!(next.prefix, "raw/\"q\" 2026/");
        assert_eq!(
            (
                child.part,
                next.part,
                next.continuation(None, Some("raw/y")).part
            ),
            (0, 1, 2)
        );
        for bad in [
            "nope",
            r#"{"job":"j","container":"Bad!","prefix":""}"#,
            r#"{"job":" ","container":"lake","prefix":""}"#,
            r#"{"job":"../x","container":"lake","prefix":""}"#,
        ] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_prefixes_name_directories() {
        assert_eq!(directory_prefix(""), "");
        assert_eq!(directory_prefix("raw/2026"), "raw/2026/");
        assert_eq!(directory_prefix("/raw/2026/"), "raw/2026/");
    }
}
