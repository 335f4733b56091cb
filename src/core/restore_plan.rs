//! Restore decisions, pure: which version of a blob was current at an instant, and whether the
//! blob in the target needs it written back.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{etag::normalize_etag, naming, version::Version};

/// Where a restore takes its versions from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RestoreFrom {
    /// The source container's own snapshots (same account).
    Snapshots,
    /// The backup container in the backup account; also brings back deleted blobs.
    Backup,
}

/// What a restore job does, carried by each of its shards: where from, as of when, into what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreOptions {
    pub from: RestoreFrom,
    /// The instant (RFC 3339); absent: the newest versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    /// The container written to; absent: in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_container: Option<String>,
    /// The caller wrote into the account of its `RESTORE_TARGET_STORAGE` rather than the
    /// lake's. Which account that is, `target_account` says.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub to_account: bool,
    /// The account written to, as its blob endpoint URL (never a credential): a worker writes
    /// only into exactly this account, the lake's own included, and refuses the shard where it
    /// has no connection to it. Absent in the shards of earlier releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_account: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Where MD5s cannot prove two blobs equal, compare their bytes before writing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify_content: bool,
    /// Only names that start with this (the user's prefix, which may end inside a name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter: String,
    /// The lake's account the job reads (its URL, never a credential): a worker of another lake
    /// refuses the shard. Absent in an earlier release's shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lake_account: Option<String>,
    /// The backup account a restore from backups reads, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_account: Option<String>,
    /// When the job started (RFC 3339, to the nanosecond): a target blob that holds its chosen
    /// version and was written since was written by this job — by a delivery that died before it
    /// recorded it — and is reported restored, not unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_started: Option<String>,
    /// The filter is one blob's whole name (`restore --blob`): that name only — never another
    /// name it is a prefix of (`a.csv.old`), nor a directory of that name (`a.csv/x`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exact: bool,
}

impl RestoreOptions {
    /// The instant as a time; `None` for the newest versions (or an instant that does not
    /// parse, which [`RestoreOptions::validate`] refuses).
    pub fn instant(&self) -> Option<OffsetDateTime> {
        let text = self.as_of.as_deref()?;
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
    }

    /// When the job started, as a time.
    pub fn job_started_at(&self) -> Option<OffsetDateTime> {
        let text = self.job_started.as_deref()?;
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
    }

    /// The container written to, for a job over lake container `container`.
    pub fn target_container<'a>(&'a self, container: &'a str) -> &'a str {
        self.to_container.as_deref().unwrap_or(container)
    }

    /// Where the restore of lake container `container` writes, as its job's status shows it;
    /// `None` for a shard of an earlier release, which named no account.
    pub fn target(&self, container: &str) -> Option<RestoreTarget> {
        Some(RestoreTarget {
            account: self.target_account.clone()?,
            container: self.target_container(container).to_owned(),
            prefix: self.filter.clone(),
        })
    }

    /// Whether the restore covers the blob `name`.
    pub fn in_scope(&self, name: &str) -> bool {
        if self.exact {
            name == self.filter
        } else {
            name.starts_with(&self.filter)
        }
    }

    /// Whether the job fans out to sub-directory `sub` of a level: never for one blob, whose
    /// directory is the job's root; else where [`filter_reaches`] it.
    pub fn reaches(&self, sub: &str) -> bool {
        !self.exact && filter_reaches(&self.filter, sub)
    }

    /// The prefix a level of `directory` is listed with, in `{c}bak` (`backups`) or in the lake
    /// and the target: [`level_prefix`]; for one blob, its own name, or in `{c}bak` the
    /// `{stem}_` its backups and records of lives start with.
    pub fn level_prefix(&self, directory: &str, backups: bool) -> String {
        match (self.exact, backups) {
            (true, true) => naming::backup_name_prefix(&self.filter),
            (true, false) => self.filter.clone(),
            (false, _) => level_prefix(directory, &self.filter),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.as_of.is_some() && self.instant().is_none() {
            return Err(format!(
                "the restore's instant {:?} is not RFC 3339",
                self.as_of
            ));
        }
        Ok(())
    }
}

/// Where a restore writes: the account (its blob endpoint URL, never a credential), the
/// container, and the prefix every name it writes starts with (empty: any name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreTarget {
    pub account: String,
    pub container: String,
    pub prefix: String,
}

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
/// is a second's start, so such a write was certainly not before the job). A delivery that died
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

/// The start every name in scope of `filter` shares with its backups: the filter with its last
/// segment cut before its last `.` (a backup is named `{stem}_{time}_{etag}{ext}`, so a filter
/// reaching into a name's extension is no prefix of its backups' names).
pub fn stem_prefix(filter: &str) -> &str {
    let segment_start = filter.rfind('/').map_or(0, |i| i + 1);
    match filter[segment_start..].rfind('.') {
        Some(dot) => &filter[..segment_start + dot],
        None => filter,
    }
}

/// Whether sub-directory `sub` can hold names under `filter`: it lies under the filter, or the
/// filter reaches into it. A job narrowed by a filter fans out to these only.
pub fn filter_reaches(filter: &str, sub: &str) -> bool {
    sub.starts_with(filter) || filter.starts_with(sub)
}

/// The prefix one directory level of a restore is listed with (with `/` as the delimiter): the
/// directory itself, narrowed to what `filter` can match where the filter reaches below it —
/// its next segment on a level above the filter's own, its [`stem_prefix`] on the filter's own
/// level. What is listed is still checked against the filter.
pub fn level_prefix(directory: &str, filter: &str) -> String {
    let Some(rest) = filter
        .strip_prefix(directory)
        .filter(|rest| !rest.is_empty())
    else {
        return directory.to_owned();
    };
    match rest.find('/') {
        Some(end) => format!("{directory}{}", &rest[..end]),
        None => stem_prefix(filter).to_owned(),
    }
}

/// Metadata names are case-insensitive in Azure; values are compared exactly. A name whose
/// case alone differs is no difference: Azure matches names case-insensitively, and backups
/// made before names kept their case hold them lowercased, so comparing case would rewrite —
/// and lowercase — blobs that hold the version. Whatever a restore writes, it writes with the
/// version's names as they were written.
fn same_metadata(a: &HashMap<String, String>, b: &HashMap<String, String>) -> bool {
    let lower = |m: &HashMap<String, String>| -> std::collections::BTreeMap<String, String> {
        m.iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect()
    };
    lower(a) == lower(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_level_is_listed_as_narrowly_as_the_filter_allows() {
        assert_eq!(stem_prefix("raw/a.cs"), "raw/a");
        assert_eq!(stem_prefix("raw/v1.2/x"), "raw/v1.2/x");
        assert_eq!(stem_prefix("raw/"), "raw/");
        assert_eq!(level_prefix("", ""), "");
        assert_eq!(level_prefix("raw/", "raw/"), "raw/");
        assert_eq!(level_prefix("raw/", "raw/2026-11-2"), "raw/2026-11-2");
        assert_eq!(level_prefix("raw/", "raw/report.cs"), "raw/report");
        assert_eq!(level_prefix("", "raw/v1.2/x"), "raw");
        assert_eq!(level_prefix("raw/", "raw/v1.2/x"), "raw/v1.2");
        // Below the filter's directory the whole level is in scope.
        assert_eq!(level_prefix("raw/2026/", "raw/20"), "raw/2026/");
        // Astral and CJK names are cut on characters, never inside one.
        assert_eq!(level_prefix("日本/", "日本/🦀.cs"), "日本/🦀");
    }

    #[test]
    fn a_restore_names_its_target_and_an_earlier_release_shard_names_none() {
        let earlier: RestoreOptions =
            serde_json::from_str(r#"{"from":"backup","to_account":true,"filter":"dir/"}"#).unwrap();
        assert_eq!(earlier.target_account, None);
        assert_eq!(earlier.target("lake"), None);
        let named = RestoreOptions {
            target_account: Some("https://x.blob.core.windows.net".into()),
            to_container: Some("copy".into()),
            ..earlier
        };
        let text = serde_json::to_string(&named).unwrap();
        assert_eq!(
            serde_json::from_str::<RestoreOptions>(&text).unwrap(),
            named
        );
        assert_eq!(
            named.target("lake"),
            Some(RestoreTarget {
                account: "https://x.blob.core.windows.net".into(),
                container: "copy".into(),
                prefix: "dir/".into(),
            })
        );
    }

    #[test]
    fn one_blob_is_that_name_only_and_a_prefix_is_every_name_it_starts() {
        let options = |filter: &str, exact| RestoreOptions {
            from: RestoreFrom::Backup,
            as_of: None,
            to_container: None,
            to_account: false,
            dry_run: false,
            verify_content: false,
            filter: filter.into(),
            exact,
            target_account: None,
            lake_account: None,
            backup_account: None,
            job_started: None,
        };
        let blob = options("raw/a.csv", true);
        assert!(blob.in_scope("raw/a.csv"));
        assert!(!blob.in_scope("raw/a.csv.old"));
        assert!(!blob.in_scope("raw/a.csv/x"));
        assert!(!blob.reaches("raw/a.csv/"));
        assert_eq!(blob.level_prefix("raw/", true), "raw/a_");
        assert_eq!(blob.level_prefix("raw/", false), "raw/a.csv");
        let prefix = options("raw/a.csv", false);
        for name in ["raw/a.csv", "raw/a.csv.old", "raw/a.csv/x"] {
            assert!(prefix.in_scope(name), "{name}");
        }
        assert!(prefix.reaches("raw/a.csv/"));
        assert_eq!(prefix.level_prefix("raw/", true), "raw/a");
        // Shards queued before `exact` existed read as prefixes.
        let old: RestoreOptions =
            serde_json::from_str(r#"{"from":"backup","filter":"raw/a.csv"}"#).unwrap();
        assert_eq!(old, prefix);
        assert!(!serde_json::to_string(&prefix).unwrap().contains("exact"));
    }

    use crate::core::properties::BlobProperties;

    fn blob(etag: &str, at: OffsetDateTime, md5: u8) -> Version {
        Version {
            etag: etag.into(),
            last_modified: at,
            content_length: 10,
            content_md5: Some(vec![md5]),
            metadata: Some(HashMap::new()),
            ..crate::core::version::sample("raw/a.csv", etag)
        }
    }

    fn version(etag: &str, at: OffsetDateTime, md5: u8, source: VersionSource) -> Restorable {
        Restorable {
            version: blob(etag, at, md5),
            source,
        }
    }

    /// A target blob with these facts.
    fn target(etag: &str, md5: Option<u8>) -> Version {
        Version {
            content_md5: md5.map(|m| vec![m]),
            ..blob(etag, datetime!(2026-11-25 10:00 UTC), 0)
        }
    }

    fn history() -> Vec<Restorable> {
        vec![
            version(
                "0x1",
                datetime!(2026-11-20 10:00 UTC),
                1,
                VersionSource::Snapshot("s1".into()),
            ),
            version(
                "0x2",
                datetime!(2026-11-21 10:00 UTC),
                2,
                VersionSource::Snapshot("s2".into()),
            ),
            version(
                "0x3",
                datetime!(2026-11-22 10:00 UTC),
                3,
                VersionSource::Base,
            ),
        ]
    }

    #[test]
    fn the_version_current_at_an_instant_is_chosen() {
        let versions = history();
        let at = |t| version_at(&versions, Some(t)).map(|r| r.version.etag.as_str());
        assert_eq!(at(datetime!(2026-11-19 00:00 UTC)), None);
        // Listed as 10:00:00, it may have been written up to 10:00:00.999999999.
        assert_eq!(at(datetime!(2026-11-20 10:00 UTC)), None);
        assert_eq!(at(datetime!(2026-11-20 10:00:00.5 UTC)), None);
        assert_eq!(at(datetime!(2026-11-20 10:00:01 UTC)), Some("0x1"));
        assert_eq!(at(datetime!(2026-11-21 23:00 UTC)), Some("0x2"));
        assert_eq!(at(datetime!(2026-12-01 00:00 UTC)), Some("0x3"));
        assert_eq!(version_at(&versions, None).unwrap().version.etag, "0x3");
        // An exact time (with a fraction) is compared as it is.
        let exact = [version(
            "0x4",
            datetime!(2026-11-20 10:00:00.25 UTC),
            4,
            VersionSource::Snapshot("s4".into()),
        )];
        assert_eq!(
            version_at(&exact, Some(datetime!(2026-11-20 10:00:00.2 UTC))),
            None
        );
        assert!(version_at(&exact, Some(datetime!(2026-11-20 10:00:00.25 UTC))).is_some());
    }

    #[test]
    fn the_lakes_own_version_is_the_version_of_an_instant_it_was_written_by() {
        let backup_of = |etag: &str, at, md5| {
            version(
                etag,
                at,
                md5,
                VersionSource::Backup {
                    name: format!("a_{etag}.csv"),
                    etag: format!("b{etag}"),
                },
            )
        };
        let backed_up = backup_of("0x1", datetime!(2026-11-20 10:00 UTC), 1);
        // Written after the last backup pass, before the instant: it stays, unbacked or not.
        let lake_now = blob("0x2", datetime!(2026-11-21 10:00 UTC), 2);
        let at = |t| {
            version_with_lake(Some(backed_up.clone()), Some(lake_now.clone()), t)
                .map(|r| (r.version.etag, r.source == VersionSource::Base))
        };
        assert_eq!(
            at(Some(datetime!(2026-11-22 00:00 UTC))),
            Some(("0x2".into(), true))
        );
        // Without an instant, the newest version is the lake's own.
        assert_eq!(at(None), Some(("0x2".into(), true)));
        // Written after the instant: the backup's version is the instant's.
        assert_eq!(
            at(Some(datetime!(2026-11-20 12:00 UTC))),
            Some(("0x1".into(), false))
        );
        // Within the second the lake reports, it may have been written after the instant.
        assert_eq!(
            at(Some(datetime!(2026-11-21 10:00:00.5 UTC))),
            Some(("0x1".into(), false))
        );
        // Backed up, the lake's version is read from its backup.
        let its_backup = backup_of("0x2", datetime!(2026-11-21 10:00 UTC), 2);
        let chosen = version_with_lake(Some(its_backup.clone()), Some(lake_now.clone()), None);
        assert_eq!(chosen, Some(its_backup));
        // Two versions in one second, the backup chosen by its name (0x9 > 0x2) not the lake's
        // current one: the lake's own wins the tie.
        let same_second = backup_of("0x9", datetime!(2026-11-21 10:00 UTC), 9);
        let chosen = version_with_lake(Some(same_second), Some(lake_now.clone()), None).unwrap();
        assert_eq!(
            (chosen.version.etag.as_str(), chosen.source),
            ("0x2", VersionSource::Base)
        );
        assert_eq!(
            version_with_lake(None, Some(lake_now), Some(datetime!(2026-11-20 00:00 UTC))),
            None,
            "created after the instant: no version"
        );
    }

    #[test]
    fn a_write_of_this_job_is_told_from_the_lakes_own_version() {
        let original = version(
            "0x1",
            datetime!(2026-11-20 10:00 UTC),
            1,
            VersionSource::Backup {
                name: "a_0x1.csv".into(),
                etag: "b1".into(),
            },
        );
        let started = Some(datetime!(2026-11-25 09:00 UTC));
        // The job wrote it: another ETag, the version's content, written since it started.
        let written = target("0x7", Some(1));
        assert!(written_by_job(Some(&original), Some(&written), started));
        // The lake's own version of that backup (written and backed up since the job started).
        let own = Version {
            last_modified: datetime!(2026-11-25 10:00 UTC),
            ..blob("0x1", datetime!(2026-11-25 10:00 UTC), 1)
        };
        assert!(!written_by_job(Some(&original), Some(&own), started));
        // Written before the job started, or holding other content: not the job's.
        let before = Version {
            last_modified: datetime!(2026-11-25 08:59:59 UTC),
            ..target("0x7", Some(1))
        };
        assert!(!written_by_job(Some(&original), Some(&before), started));
        assert!(!written_by_job(
            Some(&original),
            Some(&target("0x7", Some(9))),
            started
        ));
        assert!(!written_by_job(Some(&original), Some(&written), None));
    }

    #[test]
    fn restore_only_what_differs() {
        let versions = history();
        let old = version_at(&versions, Some(datetime!(2026-11-20 12:00 UTC)));
        let current = target("\"0x3\"", Some(3));
        assert!(matches!(plan(old, Some(&current)), Plan::Restore(r) if r.version.etag == "0x1"));
        assert_eq!(
            plan(version_at(&versions, None), Some(&current)),
            Plan::Unchanged
        );
        let same_bytes_new_etag = target("0x9", Some(1));
        assert_eq!(plan(old, Some(&same_bytes_new_etag)), Plan::Unchanged);
        let unknown_md5 = target("0x9", None);
        assert!(matches!(plan(old, Some(&unknown_md5)), Plan::Restore(_)));
        assert!(
            matches!(plan(old, None), Plan::Restore(_)),
            "deleted blobs come back"
        );
        assert_eq!(plan(None, None), Plan::MissingVersion);
    }

    #[test]
    fn metadata_headers_type_and_tags_count_as_differences() {
        use crate::core::properties::{BlobType, Tags};
        let versions = history();
        let old = version_at(&versions, Some(datetime!(2026-11-20 12:00 UTC))).unwrap();
        let same = target("0x9", Some(1));
        assert_eq!(plan(Some(old), Some(&same)), Plan::Unchanged);
        // Set Blob Metadata made a new ETag over the same bytes: the metadata goes back.
        let relabelled = Version {
            metadata: Some(HashMap::from([("owner".into(), "mallory".into())])),
            ..same.clone()
        };
        assert!(matches!(
            plan(Some(old), Some(&relabelled)),
            Plan::Restore(_)
        ));
        // A name's case alone is no difference (see `same_metadata`).
        let mut key_case = old.clone();
        key_case.version.metadata = Some(HashMap::from([("Owner".into(), "x".into())]));
        let lower = Version {
            metadata: Some(HashMap::from([("owner".into(), "x".into())])),
            ..same.clone()
        };
        assert_eq!(plan(Some(&key_case), Some(&lower)), Plan::Unchanged);
        let unknown_metadata = Version {
            metadata: None,
            ..same.clone()
        };
        assert!(matches!(
            plan(Some(old), Some(&unknown_metadata)),
            Plan::Restore(_)
        ));
        let mut block_now = old.clone();
        block_now.version.properties = BlobProperties {
            blob_type: BlobType::Append,
            ..Default::default()
        };
        assert!(matches!(
            plan(Some(&block_now), Some(&same)),
            Plan::Restore(_)
        ));
        // Tags set since the backup keep the ETag: the blob is the version, and is not rewritten
        // with the tags the backup happened to see.
        let mut tagged = old.clone();
        tagged.version.properties = BlobProperties {
            tags: Some(Tags::from([("k".into(), "v".into())])),
            ..Default::default()
        };
        let retagged_same_etag = Version {
            etag: old.version.etag.clone(),
            properties: BlobProperties {
                tags: Some(Tags::new()),
                ..Default::default()
            },
            ..same.clone()
        };
        assert_eq!(
            plan(Some(&tagged), Some(&retagged_same_etag)),
            Plan::Unchanged
        );
        let retagged_other_etag = Version {
            etag: "0x77".into(),
            ..retagged_same_etag
        };
        assert!(matches!(
            plan(Some(&tagged), Some(&retagged_other_etag)),
            Plan::Restore(_)
        ));
        let no_md5 = Version {
            content_md5: None,
            ..same
        };
        assert!(matches!(plan(Some(old), Some(&no_md5)), Plan::Restore(_)));
    }
}
