//! On a lake with a hierarchical namespace, each current file's access control (owner, group,
//! permissions, ACL, listed in bulk with the level) against the one its backup recorded: the
//! newest complete backup of its current version, the one a restore to now brings back. An ACL
//! change keeps the ETag, so a backup of the right bytes may hold another access control.

use std::collections::HashMap;

use time::OffsetDateTime;

use crate::{
    core::{etag::normalize_etag, properties::Access, stamp, version::Version},
    engine::vault::BackupVersion,
};

/// A version: its source name and ETag (unquoted).
type VersionKey = (String, String);

/// Where a backup stands among its version's: when it was written, then its name.
type BackupOrder = (OffsetDateTime, String);

/// Per version, its newest complete backup's order and the access control its stamp records
/// (`None`: it records none).
#[derive(Debug, Default)]
pub(super) struct RecordedAccess {
    newest: HashMap<VersionKey, (BackupOrder, Option<Access>)>,
}

impl RecordedAccess {
    /// Keeps `backup`'s access control when it is its version's newest backup so far (versions
    /// written in one second ordered by backup name, as restore orders them).
    pub(super) fn note(&mut self, backup: &BackupVersion) {
        let key = (
            backup.parsed.source_name.clone(),
            normalize_etag(&backup.parsed.etag).to_owned(),
        );
        let order = (backup.written, backup.backup.name.clone());
        if self
            .newest
            .get(&key)
            .is_some_and(|(newest, _)| *newest >= order)
        {
            return;
        }
        let access = backup
            .backup
            .metadata
            .as_ref()
            .and_then(stamp::stamped_access);
        self.newest.insert(key, (order, access));
    }

    /// What differs between `blob`'s access control as listed and the one its version's
    /// backup recorded, in words; `None` when they are equal, or when there is nothing to
    /// compare (no backup of the version, no access control listed).
    pub(super) fn differs(&self, blob: &Version) -> Option<String> {
        let now = blob.properties.access.as_ref()?;
        let key = (blob.name.clone(), normalize_etag(&blob.etag).to_owned());
        let (_, recorded) = self.newest.get(&key)?;
        differs_from(now, recorded.as_ref())
    }
}

/// What differs between access control `now` and `recorded` (a backup's; `None`: it records
/// none), in words; `None` when they are equal.
pub(super) fn differs_from(now: &Access, recorded: Option<&Access>) -> Option<String> {
    let Some(recorded) = recorded else {
        return Some(
            "its backup records no access control (owner, group, permissions, ACL): a restore \
             would not bring it back"
                .into(),
        );
    };
    let fields = [
        ("owner", &now.owner, &recorded.owner),
        ("group", &now.group, &recorded.group),
        ("permissions", &now.permissions, &recorded.permissions),
        ("ACL", &now.acl, &recorded.acl),
    ];
    let differing: Vec<String> = fields
        .iter()
        .filter(|(_, now, recorded)| now != recorded)
        .map(|(what, now, recorded)| format!("{what} {now} (its backup records {recorded})"))
        .collect();
    (!differing.is_empty()).then(|| {
        format!(
            "its access control differs from its backup's: {}",
            differing.join("; ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::naming::{backup_blob_name, parse_backup_blob_name};
    use time::macros::datetime;

    fn access(acl: &str) -> Access {
        Access {
            owner: "o-1".into(),
            group: "g-1".into(),
            permissions: "rw-r-----".into(),
            acl: acl.into(),
        }
    }

    fn version(name: &str, etag: &str, metadata: HashMap<String, String>) -> Version {
        Version {
            name: name.into(),
            snapshot: None,
            etag: etag.into(),
            last_modified: datetime!(2026-01-01 00:00 UTC),
            content_length: 0,
            content_md5: None,
            metadata: Some(metadata),
            properties: Default::default(),
            copy_status: None,
        }
    }

    /// A complete backup of `a.csv` at ETag `0x1`, written at `written`, recording `recorded`.
    fn backup(written: OffsetDateTime, recorded: Option<&Access>) -> BackupVersion {
        let name = backup_blob_name("a.csv", written, "0x1").unwrap();
        let metadata = recorded
            .map(|a| {
                HashMap::from([
                    (stamp::STAMP_OWNER.to_owned(), a.owner.clone()),
                    (stamp::STAMP_GROUP.to_owned(), a.group.clone()),
                    (stamp::STAMP_PERMISSIONS.to_owned(), a.permissions.clone()),
                    (stamp::STAMP_ACL.to_owned(), a.acl.clone()),
                ])
            })
            .unwrap_or_default();
        BackupVersion {
            parsed: parse_backup_blob_name(&name).unwrap(),
            backup: version(&name, "0xb", metadata),
            written,
        }
    }

    fn current(access: Access) -> Version {
        let mut blob = version("a.csv", "\"0x1\"", HashMap::new());
        blob.properties.access = Some(access);
        blob
    }

    #[test]
    fn the_newest_backup_of_the_version_is_the_one_compared() {
        let (old, new) = (access("user::rw-,other::---"), access("user::rw-,other::r--"));
        let mut recorded = RecordedAccess::default();
        // Listed newest first: order never decides.
        recorded.note(&backup(datetime!(2026-01-02 00:00 UTC), Some(&new)));
        recorded.note(&backup(datetime!(2026-01-01 00:00 UTC), Some(&old)));
        assert_eq!(recorded.differs(&current(new.clone())), None);
        let detail = recorded.differs(&current(old)).unwrap();
        assert!(detail.contains("ACL user::rw-,other::--- (its backup records user::rw-,other::r--)"));
        assert!(!detail.contains("owner"), "{detail}");
    }

    #[test]
    fn a_backup_recording_no_access_differs_and_no_backup_is_not_compared() {
        let mut recorded = RecordedAccess::default();
        assert_eq!(recorded.differs(&current(access("user::rw-"))), None);
        recorded.note(&backup(datetime!(2026-01-01 00:00 UTC), None));
        let detail = recorded.differs(&current(access("user::rw-"))).unwrap();
        assert!(detail.contains("records no access control"), "{detail}");
    }
}
