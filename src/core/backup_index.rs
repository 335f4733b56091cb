//! The set of versions that have a complete backup, built from the backup container's listing
//! so the reconciler never asks per blob.
//!
//! Each version is kept as a 16-byte digest of `(source name, ETag)`: memory grows by one compact
//! entry per backed-up version (about 30 bytes with the table's overhead), never by names. For a
//! version whose backups record its access control (a hierarchical namespace's), the access its
//! newest backup records is kept beside it, by the instant in the backup's name (never by listing
//! order): an ACL change leaves the ETag as it was and is a version to back up all the same, and
//! an ACL changed back (A, B, then A again) is one too, since a restore brings back the newest.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use super::{etag::normalize_etag, naming::parse_backup_blob_name, properties::Access};

#[derive(Debug, Default)]
pub struct BackupIndex {
    versions: HashSet<[u8; 16]>,
    /// Per version, the instant of its newest backup that records access control, and that
    /// access (as a digest with the version).
    newest_access: HashMap<[u8; 16], (i64, [u8; 16])>,
}

impl BackupIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records backup blob `backup_name` if it is complete: its name parses back to a version and
    /// its `source_etag` stamp (written after the copy is verified) agrees. Returns whether it
    /// counted.
    pub fn insert_backup(&mut self, backup_name: &str, stamped_etag: Option<&str>) -> bool {
        self.insert_backup_with_access(backup_name, stamped_etag, None)
    }

    /// As [`BackupIndex::insert_backup`], for a backup whose stamp records its version's access
    /// control: the version counts with it too.
    pub fn insert_backup_with_access(
        &mut self,
        backup_name: &str,
        stamped_etag: Option<&str>,
        access: Option<&Access>,
    ) -> bool {
        let Ok(parsed) = parse_backup_blob_name(backup_name) else {
            return false;
        };
        if stamped_etag.map(normalize_etag) != Some(parsed.etag.as_str()) {
            return false;
        }
        let version = version_key(&parsed.source_name, &parsed.etag, None);
        self.versions.insert(version);
        if access.is_some() {
            let with_access = version_key(&parsed.source_name, &parsed.etag, access);
            let seen = (parsed.last_modified.unix_timestamp(), with_access);
            // The newest wins; two of one second are told apart by their digest, so the
            // outcome never depends on the order they were listed in.
            let newest = self.newest_access.entry(version).or_insert(seen);
            if seen > *newest {
                *newest = seen;
            }
        }
        true
    }

    pub fn contains(&self, source_name: &str, etag: &str) -> bool {
        self.versions
            .contains(&version_key(source_name, normalize_etag(etag), None))
    }

    /// Whether the newest complete backup of this version that records access control records
    /// exactly this one (`None`: whatever it records, as [`BackupIndex::contains`]).
    pub fn contains_with_access(
        &self,
        source_name: &str,
        etag: &str,
        access: Option<&Access>,
    ) -> bool {
        let etag = normalize_etag(etag);
        let version = version_key(source_name, etag, None);
        match access {
            None => self.versions.contains(&version),
            Some(access) => {
                self.newest_access.get(&version).map(|(_, digest)| *digest)
                    == Some(version_key(source_name, etag, Some(access)))
            }
        }
    }

    pub fn len(&self) -> usize {
        self.versions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }
}

fn version_key(source_name: &str, etag: &str, access: Option<&Access>) -> [u8; 16] {
    let mut hasher = Sha256::new();
    hasher.update(source_name.as_bytes());
    // A separator no blob name or ETag contains keeps ("ab","c") apart from ("a","bc").
    hasher.update([0u8]);
    hasher.update(etag.as_bytes());
    if let Some(access) = access {
        for part in [
            &access.owner,
            &access.group,
            &access.permissions,
            &access.acl,
        ] {
            hasher.update([0u8]);
            hasher.update(part.as_bytes());
        }
    }
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

    #[test]
    fn a_version_counts_with_its_access_control_only_when_a_backup_records_that_one() {
        let when = datetime!(2026-11-24 14:17:34 UTC);
        let access = |acl: &str| Access {
            owner: "$superuser".into(),
            group: "g".into(),
            permissions: "rw-r-----".into(),
            acl: acl.into(),
        };
        let (old, new) = (
            access("user::rw-,group::r--,other::---"),
            access("user::rw-,group::---,other::---"),
        );
        let mut index = BackupIndex::new();
        let backup = backup_blob_name("a.csv", when, "0x1").unwrap();
        assert!(index.insert_backup_with_access(&backup, Some("0x1"), Some(&old)));
        assert!(index.contains("a.csv", "0x1"));
        assert!(index.contains_with_access("a.csv", "0x1", Some(&old)));
        assert!(!index.contains_with_access("a.csv", "0x1", Some(&new)));
        assert!(index.contains_with_access("a.csv", "0x1", None));
        // A backup that records no access control holds the bytes, not an ACL.
        let legacy = backup_blob_name("b.csv", when, "0x2").unwrap();
        assert!(index.insert_backup(&legacy, Some("0x2")));
        assert!(!index.contains_with_access("b.csv", "0x2", Some(&old)));
    }

    #[test]
    fn an_acl_changed_back_counts_by_the_newest_backup_whatever_the_listing_order() {
        let access = |acl: &str| Access {
            owner: "o".into(),
            group: "g".into(),
            permissions: "rw-------".into(),
            acl: acl.into(),
        };
        let (a, b) = (access("user::rw-"), access("user::r--"));
        // Backed up with A, then B (an ACL-only change), the ETag the same throughout.
        let first = backup_blob_name("f.csv", datetime!(2026-11-24 10:00:00 UTC), "0x1").unwrap();
        let second = backup_blob_name("f.csv", datetime!(2026-11-24 11:00:00 UTC), "0x1").unwrap();
        for order in [[(&first, &a), (&second, &b)], [(&second, &b), (&first, &a)]] {
            let mut index = BackupIndex::new();
            for (name, acl) in order {
                assert!(index.insert_backup_with_access(name, Some("0x1"), Some(acl)));
            }
            // Now A again: the newest backup records B, so A is a version to back up.
            assert!(!index.contains_with_access("f.csv", "0x1", Some(&a)));
            assert!(index.contains_with_access("f.csv", "0x1", Some(&b)));
        }
    }
}
