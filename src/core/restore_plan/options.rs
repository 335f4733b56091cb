//! What a restore job is asked to do, carried by each of its shards: where it takes versions
//! from, as of when, into which account and container, and over which names — with the
//! prefixes a level of the job is listed with, narrowed to what its filter can match.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::core::naming;

/// Where a restore takes its versions from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
