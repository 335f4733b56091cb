//! The set of versions that have a complete backup, built from the backup container's listing
//! so the reconciler never asks per blob.
//!
//! Each version is kept as a 16-byte digest of `(source name, ETag)`: memory grows by one compact
//! entry per backed-up version (about 30 bytes with the table's overhead), never by names.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use super::{etag::normalize_etag, naming::parse_backup_blob_name};

#[derive(Debug, Default)]
pub struct BackupIndex {
    versions: HashSet<[u8; 16]>,
}

impl BackupIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records backup blob `backup_name` if it is complete: its name parses back to a version and
    /// its `source_etag` stamp (written after the copy is verified) agrees. Returns whether it
    /// counted.
    pub fn insert_backup(&mut self, backup_name: &str, stamped_etag: Option<&str>) -> bool {
        let Ok(parsed) = parse_backup_blob_name(backup_name) else {
            return false;
        };
        if stamped_etag.map(normalize_etag) != Some(parsed.etag.as_str()) {
            return false;
        }
        self.versions
            .insert(version_key(&parsed.source_name, &parsed.etag));
        true
    }

    pub fn contains(&self, source_name: &str, etag: &str) -> bool {
        self.versions
            .contains(&version_key(source_name, normalize_etag(etag)))
    }

    pub fn len(&self) -> usize {
        self.versions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }
}

fn version_key(source_name: &str, etag: &str) -> [u8; 16] {
    let mut hasher = Sha256::new();
    hasher.update(source_name.as_bytes());
    // A separator no blob name or ETag contains keeps ("ab","c") apart from ("a","bc").
    hasher.update([0u8]);
    hasher.update(etag.as_bytes());
    let digest = hasher.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::naming::backup_blob_name;
    use time::macros::datetime;

    #[test]
    fn only_complete_backups_count() {
        let when = datetime!(2026-11-24 14:17:34 UTC);
        let name = "dir.v1/a \"b\".csv";
        let backup = backup_blob_name(name, when, "0x1").unwrap();
        let mut index = BackupIndex::new();
        assert!(!index.insert_backup(&backup, None), "not stamped yet");
        assert!(
            !index.insert_backup(&backup, Some("0x2")),
            "stamp disagrees"
        );
        assert!(!index.insert_backup("not-a-backup.csv", Some("0x1")));
        assert!(index.insert_backup(&backup, Some("\"0x1\"")));
        assert!(index.contains(name, "0x1"));
        assert!(index.contains(name, "\"0x1\""));
        assert!(!index.contains(name, "0x2"));
        assert!(!index.contains("dir.v1/a \"b\"", "0x1"));
        assert_eq!(index.len(), 1);
    }
}
