//! Restore decisions, pure: which version of a blob was current at an instant, and whether the
//! blob in the target needs it written back. What a restore job is asked to do (where from, as
//! of when, into what, over which names) is in [`options`].

use std::collections::HashMap;

use time::OffsetDateTime;

use super::{etag::normalize_etag, version::Version};

mod options;
pub use options::{
    filter_reaches, level_prefix, stem_prefix, RestoreFrom, RestoreOptions, RestoreTarget,
};

/// Where a restorable version lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSource {
    /// The base blob itself (the version in place now).
    Base,
    /// A snapshot of the blob, by its snapshot timestamp.
    Snapshot(String),
    /// A backup blob in the backup container: its name, and its own ETag (a read of it is
    /// pinned to exactly that blob).
    Backup { name: String, etag: String },
}

/// One version of one blob that a restore can write back, and where it lives. Its facts are the
/// version's in the lake: its name, the ETag it had there, when it was written, its user metadata
/// (a backup's without the stamp, which never goes back into the lake; `None` when not read),
/// type, tier, content headers and tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restorable {
    pub version: Version,
    pub source: VersionSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Restore(Box<Restorable>),
    Unchanged,
    /// The blob has no version at or before the instant (it was created later).
    MissingVersion,
    /// The blob's life had ended by the instant: it was seen deleted before it. Not restored.
    Deleted,
}

/// The newest version certainly written at or before `as_of` (the newest of all when `None`).
/// Between versions with the same instant, the base wins, then the later snapshot or backup name.
pub fn version_at(versions: &[Restorable], as_of: Option<OffsetDateTime>) -> Option<&Restorable> {
    let rank = |r: &Restorable| match &r.source {
        VersionSource::Base => (r.version.last_modified, 1, String::new()),
        VersionSource::Snapshot(id) | VersionSource::Backup { name: id, .. } => {
            (r.version.last_modified, 0, id.clone())
        }
    };
    versions
        .iter()
        .filter(|r| as_of.is_none_or(|t| written_by(r.version.last_modified) <= t))
        .max_by_key(|r| rank(r))
}

/// The version of one blob current at `as_of` (the newest when `None`), among the backup
/// version chosen for it and the version the lake holds now. The lake's version is a version
/// too, backed up yet or not: when it was written at or before the instant it *is* the version
/// of the instant, and a restore in place leaves it as it is; it wins a tie within one second,
/// as the base blob does (a backup's name orders one second's versions by ETag, which only
/// Azure makes grow). When the backup chosen is of that very version (its ETag), the backup is
/// the copy read.
pub fn version_with_lake(
    backup_choice: Option<Restorable>,
    lake_now: Option<Version>,
    as_of: Option<OffsetDateTime>,
) -> Option<Restorable> {
    let lake_now = lake_now.map(|version| Restorable {
        version,
        source: VersionSource::Base,
    });
    let versions: Vec<Restorable> = backup_choice.iter().cloned().chain(lake_now).collect();
    let chosen = version_at(&versions, as_of)?;
    match &backup_choice {
        Some(backup)
            if chosen.source == VersionSource::Base
                && normalize_etag(&backup.version.etag) == normalize_etag(&chosen.version.etag) =>
        {
            Some(backup.clone())
        }
        _ => Some(chosen.clone()),
    }
}

/// Whether `target` holds `original` — the version a restore chose from its backups or
/// snapshots, the lake's own set aside — because this restore wrote it: it holds that version's
/// content, under another ETag (a write made it), written at or after `job_started` (Last-Modified
/// is a second's start, so such a write was certainly not before the job; one in the job's first
/// second cannot be told from one just before it — a job before, or another writer — and is not
/// counted the job's: a redo may then report such a write unchanged). A delivery that died
/// before it recorded its writes is redone, and what it wrote is reported restored, not
/// unchanged; a version the lake wrote itself (same ETag) never is.
pub fn written_by_job(
    original: Option<&Restorable>,
    target: Option<&Version>,
    job_started: Option<OffsetDateTime>,
) -> bool {
    let (Some(original), Some(target), Some(started)) = (original, target, job_started) else {
        return false;
    };
    normalize_etag(&target.etag) != normalize_etag(&original.version.etag)
        && target.last_modified >= started
        && plan(Some(original), Some(target)) == Plan::Unchanged
}

/// The latest instant a version with this last-modified time may have been written. Azure
/// reports last-modified times to the second, so a whole second stands for any instant in it:
/// a version written at 12:00:00.7 is listed as 12:00:00 and must not be chosen for
/// 12:00:00.3. A time with a fraction is exact.
pub fn written_by(last_modified: OffsetDateTime) -> OffsetDateTime {
    if last_modified.nanosecond() == 0 {
        last_modified + time::Duration::seconds(1) - time::Duration::nanoseconds(1)
    } else {
        last_modified
    }
}

/// What to do for one blob, given its chosen version and the version the target holds now.
pub fn plan(chosen: Option<&Restorable>, target: Option<&Version>) -> Plan {
    let Some(chosen) = chosen else {
        return Plan::MissingVersion;
    };
    match target {
        Some(target) if holds(target, &chosen.version) => Plan::Unchanged,
        _ => Plan::Restore(Box::new(chosen.clone())),
    }
}

/// Whether `target` already is `version` in everything a restore writes: bytes, user metadata,
/// content headers, type, and the tags and tier where both sides know them. The same ETag is
/// the version itself: its tags and tier may have been set since (that keeps the ETag), but a
/// backup knows only those it had when it was taken, so they are no reason to write it again.
/// Another ETag with the same real MD5 and length vouches for the bytes only.
fn holds(target: &Version, version: &Version) -> bool {
    if normalize_etag(&target.etag) == normalize_etag(&version.etag) {
        return true;
    }
    let properties_match = target
        .properties
        .differences(&version.properties)
        .is_empty();
    let same_bytes = matches!(
        (&target.content_md5, &version.content_md5),
        (Some(a), Some(b)) if a == b && !a.is_empty()
    ) && target.content_length == version.content_length;
    let same_metadata = match (&target.metadata, &version.metadata) {
        (Some(theirs), Some(ours)) => same_metadata(theirs, ours),
        _ => false,
    };
    same_bytes && same_metadata && properties_match
}

/// Whether `target` is `version` in everything but its bytes (user metadata, content headers,
/// type, and tags and tier where both sides know them): once the bytes are proved equal by
/// other means (read and compared), the target holds the version.
pub fn holds_besides_bytes(target: &Version, version: &Version) -> bool {
    let same_metadata = match (&target.metadata, &version.metadata) {
        (Some(theirs), Some(ours)) => same_metadata(theirs, ours),
        _ => false,
    };
    target.content_length == version.content_length
        && same_metadata
        && target
            .properties
            .differences(&version.properties)
            .is_empty()
}

/// Metadata names are case-insensitive in Azure; values are compared exactly. A name whose
/// case alone differs is no difference: Azure matches names case-insensitively, and backups
/// made before names kept their case hold them lowercased, so comparing case would rewrite —
/// and lowercase — blobs that hold the version. Whatever a restore writes, it writes with the
/// version's names as they were written.
pub fn same_metadata(a: &HashMap<String, String>, b: &HashMap<String, String>) -> bool {
    let lower = |m: &HashMap<String, String>| -> std::collections::BTreeMap<String, String> {
        m.iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect()
    };
    lower(a) == lower(b)
}

#[cfg(test)]
mod tests;
