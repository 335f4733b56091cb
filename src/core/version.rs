//! One version of one blob, as the service describes it: the one type for the facts of a
//! version, whether it was listed (with or without its snapshots), read with Get Blob
//! Properties, or found in a backup's listing. The diff, the copy, restore's plan, pruning and
//! verify all read it; adding a fact means adding it here. Pure.

use std::collections::HashMap;

use time::OffsetDateTime;

use super::{
    naming::{parse_backup_blob_name, ParsedBackupName},
    properties::BlobProperties,
    stamp,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub name: String,
    /// `Some(id)` for a snapshot of the blob, `None` for the blob itself.
    pub snapshot: Option<String>,
    /// Without quotes.
    pub etag: String,
    /// To the second, as the service reports it (a stamp may carry a finer one).
    pub last_modified: OffsetDateTime,
    pub content_length: u64,
    /// The Content-MD5 as stored, when the blob has one (Put Blob computes one, a block list
    /// does not; an empty one is none).
    pub content_md5: Option<Vec<u8>>,
    /// The blob's user metadata, when it was read (`None`: not asked for).
    pub metadata: Option<HashMap<String, String>>,
    /// Type, tier, content headers, tags (when read), a customer key.
    pub properties: BlobProperties,
    /// The state of the copy the blob is (or was) the destination of; `None` when it never was
    /// one, or the listing did not say.
    pub copy_status: Option<CopyStatus>,
}

/// The state of a copy, as the destination blob reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyStatus {
    Pending,
    Success,
    Aborted,
    Failed,
}

impl CopyStatus {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "pending" => Some(Self::Pending),
            "success" => Some(Self::Success),
            "aborted" => Some(Self::Aborted),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

impl Version {
    /// The version's user metadata, or none when it was not read.
    pub fn metadata_or_empty(&self) -> HashMap<String, String> {
        self.metadata.clone().unwrap_or_default()
    }

    /// Whether the version is a directory of a hierarchical namespace (listed as one, or an
    /// empty blob marked `hdi_isfolder`, as the blob endpoint shows a directory), not data.
    pub fn is_directory_placeholder(&self) -> bool {
        self.properties.directory
            || (self.content_length == 0
                && self
                    .metadata
                    .as_ref()
                    .is_some_and(|metadata| metadata.iter().any(|(k, v)| is_folder_mark(k, v))))
    }
}

/// The metadata the blob endpoint marks a directory of a hierarchical namespace with.
pub const FOLDER_MARK: &str = "hdi_isfolder";

/// Whether `key: value` is [`FOLDER_MARK`] set (names are case-blind).
pub fn is_folder_mark(key: &str, value: &str) -> bool {
    key.eq_ignore_ascii_case(FOLDER_MARK) && value.eq_ignore_ascii_case("true")
}

impl Version {
    /// As a directory of a hierarchical namespace: marked so, its user metadata without the
    /// folder mark (the blob endpoint's way of saying directory, which the mark now says).
    pub fn as_directory(mut self) -> Version {
        self.properties.directory = true;
        if let Some(metadata) = &mut self.metadata {
            metadata.retain(|k, v| !is_folder_mark(k, v));
        }
        self
    }
}

impl Version {
    /// Not the destination of a copy still pending, failed or aborted: its bytes are all there.
    pub fn copy_complete(&self) -> bool {
        matches!(self.copy_status, None | Some(CopyStatus::Success))
    }

    /// The source ETag this backup is stamped with, when its copy is complete (the stamp travels
    /// with the copy, so one still pending or failed carries it too, but does not count).
    pub fn stamped_etag(&self) -> Option<&str> {
        if !self.copy_complete() {
            return None;
        }
        stamp::stamped_etag(self.metadata.as_ref()?)
    }

    /// Read as a backup: the source version it holds completely — its parsed name and when the
    /// version was written (the stamp's full time, else the name's second) — or `None` for a
    /// blob that is not a backup or not a complete, stamped one.
    pub fn as_complete_backup(&self) -> Option<(ParsedBackupName, OffsetDateTime)> {
        let parsed = parse_backup_blob_name(&self.name).ok()?;
        if self.stamped_etag() != Some(parsed.etag.as_str()) {
            return None;
        }
        let written = self
            .metadata
            .as_ref()
            .and_then(stamp::stamped_last_modified)
            .unwrap_or(parsed.last_modified);
        Some((parsed, written))
    }
}

impl AsRef<str> for Version {
    /// The entry's name, which identifies it in its listing (with its snapshot, if any).
    fn as_ref(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
pub(crate) fn sample(name: &str, etag: &str) -> Version {
    Version {
        name: name.to_owned(),
        snapshot: None,
        etag: etag.to_owned(),
        last_modified: time::macros::datetime!(2026-11-24 12:00 UTC),
        content_length: 1,
        content_md5: None,
        metadata: None,
        properties: BlobProperties::default(),
        copy_status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_placeholder_is_an_empty_blob_marked_so() {
        let mut folder = sample("raw/2026", "0x1");
        folder.content_length = 0;
        folder.metadata = Some(HashMap::from([("hdi_isfolder".into(), "true".into())]));
        assert!(folder.is_directory_placeholder());
        folder.content_length = 3;
        assert!(!folder.is_directory_placeholder());
        assert!(!sample("raw/a.csv", "0x1").is_directory_placeholder());
    }
}
