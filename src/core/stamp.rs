//! The stamp: the bookkeeping metadata a backup carries to say which source version it holds.
//!
//! It travels in the same request as the copy, so a backup is either complete and stamped or it
//! does not exist. Every bookkeeping key starts with [`STAMP_PREFIX`], so it never collides with a
//! user's own metadata (which the backup keeps) and restore can leave it out. Backups stamped by
//! earlier releases carry `source_*` keys; they are still read.

use std::collections::HashMap;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::{
    etag::normalize_etag,
    properties::{Access, BlobProperties, BlobType},
    version::is_folder_mark,
};

/// What every bookkeeping key starts with (metadata names are case-insensitive in Azure).
pub const STAMP_PREFIX: &str = "lakebackup_";
pub const STAMP_CONTAINER: &str = "lakebackup_container";
/// Percent-encoded: metadata values are ASCII.
pub const STAMP_BLOB: &str = "lakebackup_blob";
pub const STAMP_ETAG: &str = "lakebackup_etag";
/// RFC 3339, with the sub-second part when the service gave one.
pub const STAMP_LAST_MODIFIED: &str = "lakebackup_last_modified";

/// The source's blob type (`BlockBlob`, `AppendBlob`, `PageBlob`): a restore recreates it.
pub const STAMP_BLOB_TYPE: &str = "lakebackup_blob_type";
/// The access tier set on the source version, when one was: a restore sets it again.
pub const STAMP_ACCESS_TIER: &str = "lakebackup_access_tier";

/// The MD5 (base64) of the backup's bytes, recorded when they were read to copy or to verify
/// them; lets `verify --deep` check a backup without reading its source again.
pub const COPIED_MD5_KEY: &str = "lakebackup_md5";
/// In a hierarchical namespace, the version's access control (`core::properties::Access`):
/// owner, owning group, permissions and ACL, as the service says them (ASCII: object ids,
/// `$superuser`, the ACL grammar).
pub const STAMP_OWNER: &str = "lakebackup_owner";
pub const STAMP_GROUP: &str = "lakebackup_group";
pub const STAMP_PERMISSIONS: &str = "lakebackup_permissions";
pub const STAMP_ACL: &str = "lakebackup_acl";
/// `directory` on the backup of a directory of a hierarchical namespace: an empty backup that
/// holds the directory's existence and its access control (ACL with its `default:` entries).
/// Its user metadata leaves out the blob endpoint's folder mark (`hdi_isfolder`), which on a
/// backup account with a namespace would make the backup a directory itself.
pub const STAMP_RESOURCE_TYPE: &str = "lakebackup_resource_type";
const DIRECTORY: &str = "directory";

/// On a blob this worker writes in several requests (an append or page blob copied through the
/// worker: created, then filled, then given its metadata): its bytes are not all there until the
/// last request replaces the metadata and this key with it. Such a blob is no backup and holds no
/// version; whoever finds one under a backup name removes it.
pub const INCOMPLETE_KEY: &str = "lakebackup_incomplete";

/// Whether `metadata` marks a blob still being written through the worker (or left so by a copy
/// that failed).
pub fn is_incomplete(metadata: &HashMap<String, String>) -> bool {
    metadata
        .keys()
        .any(|k| k.eq_ignore_ascii_case(INCOMPLETE_KEY))
}

/// The keys earlier releases stamped after the copy, in the order of the current ones.
const LEGACY_KEYS: [&str; 4] = [
    "source_container",
    "source_blob",
    "source_etag",
    "source_last_modified",
];

/// Everything but letters, digits and `-._~/` is encoded, so the name reads back exactly.
const METADATA_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// The source version a backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub container: String,
    pub blob: String,
    /// Without quotes.
    pub etag: String,
    pub last_modified: OffsetDateTime,
    pub blob_type: BlobType,
    /// The tier set on the source, when one was.
    pub access_tier: Option<String>,
    /// Its access control, in a hierarchical namespace.
    pub access: Option<Access>,
    /// A directory of a hierarchical namespace.
    pub directory: bool,
}

impl Stamp {
    pub fn new(container: &str, blob: &str, etag: &str, last_modified: OffsetDateTime) -> Self {
        Self {
            container: container.to_owned(),
            blob: blob.to_owned(),
            etag: normalize_etag(etag).to_owned(),
            last_modified,
            blob_type: BlobType::Block,
            access_tier: None,
            access: None,
            directory: false,
        }
    }

    /// The stamp of a version with these properties (its type, tier and access control are
    /// recorded).
    pub fn with_properties(mut self, properties: &BlobProperties) -> Self {
        self.blob_type = properties.blob_type;
        self.access_tier = properties.access_tier.clone();
        self.access = properties.access.clone();
        self.directory = properties.directory;
        self
    }

    /// The backup's whole metadata: the source's own (any bookkeeping-shaped key dropped) plus
    /// the stamp.
    pub fn backup_metadata(
        &self,
        source_metadata: &HashMap<String, String>,
    ) -> HashMap<String, String> {
        // A user's own key in the bookkeeping namespace is kept, escaped, so the lake keeps
        // every name it can use.
        let mut metadata: HashMap<String, String> = source_metadata
            .iter()
            .filter(|(k, v)| !(self.directory && is_folder_mark(k, v)))
            .map(|(k, v)| match is_stamp_key(k) {
                true => (format!("{USER_KEY_PREFIX}{k}"), v.clone()),
                false => (k.clone(), v.clone()),
            })
            .collect();
        metadata.extend([
            (STAMP_CONTAINER.to_owned(), self.container.clone()),
            (
                STAMP_BLOB.to_owned(),
                utf8_percent_encode(&self.blob, METADATA_ENCODE).to_string(),
            ),
            (STAMP_ETAG.to_owned(), self.etag.clone()),
            (
                STAMP_LAST_MODIFIED.to_owned(),
                self.last_modified
                    .to_offset(time::UtcOffset::UTC)
                    .format(&Rfc3339)
                    .unwrap_or_default(),
            ),
            (
                STAMP_BLOB_TYPE.to_owned(),
                self.blob_type.as_str().to_owned(),
            ),
        ]);
        if let Some(tier) = &self.access_tier {
            metadata.insert(STAMP_ACCESS_TIER.to_owned(), tier.clone());
        }
        if let Some(access) = &self.access {
            metadata.extend([
                (STAMP_OWNER.to_owned(), access.owner.clone()),
                (STAMP_GROUP.to_owned(), access.group.clone()),
                (STAMP_PERMISSIONS.to_owned(), access.permissions.clone()),
                (STAMP_ACL.to_owned(), access.acl.clone()),
            ]);
        }
        if self.directory {
            metadata.insert(STAMP_RESOURCE_TYPE.to_owned(), DIRECTORY.to_owned());
        }
        metadata
    }
}

/// Azure's limit on a blob's metadata: names and values together, 8 KiB.
pub const METADATA_LIMIT_BYTES: usize = 8 * 1024;

/// The size of `metadata` as Azure counts it against [`METADATA_LIMIT_BYTES`]: every name and
/// value, in bytes.
pub fn metadata_bytes(metadata: &HashMap<String, String>) -> usize {
    metadata.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// A backup whose metadata (the version's own, and the stamp with its access control) would
/// pass Azure's 8 KiB: it is never written (the service would refuse it, or keep it without
/// what makes it a backup).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "its backup's metadata would be {total} bytes, over Azure's limit of 8 KiB ({limit} bytes):      its own user metadata is {user} bytes, its access control (owner, group, permissions,      ACL) {access} bytes and the rest of the stamp {stamp} bytes; it is not backed up (a backup      without its access control would restore it wrongly): shorten its metadata or its ACL",
    limit = METADATA_LIMIT_BYTES
)]
pub struct MetadataTooLarge {
    pub total: usize,
    pub user: usize,
    pub access: usize,
    pub stamp: usize,
}

impl Stamp {
    /// [`Stamp::backup_metadata`], refused where it would pass Azure's 8 KiB limit.
    pub fn checked_backup_metadata(
        &self,
        source_metadata: &HashMap<String, String>,
    ) -> Result<HashMap<String, String>, MetadataTooLarge> {
        let metadata = self.backup_metadata(source_metadata);
        let total = metadata_bytes(&metadata);
        if total <= METADATA_LIMIT_BYTES {
            return Ok(metadata);
        }
        let access_keys = [STAMP_OWNER, STAMP_GROUP, STAMP_PERMISSIONS, STAMP_ACL];
        let (mut access, mut stamp, mut user) = (0, 0, 0);
        for (key, value) in &metadata {
            let size = key.len() + value.len();
            match key.as_str() {
                k if access_keys.contains(&k) => access += size,
                k if is_stamp_key(k) && !k.starts_with(USER_KEY_PREFIX) => stamp += size,
                _ => user += size,
            }
        }
        Err(MetadataTooLarge {
            total,
            user,
            access,
            stamp,
        })
    }
}

/// Where a backup keeps a user's own metadata key that starts with [`STAMP_PREFIX`].
const USER_KEY_PREFIX: &str = "lakebackup_user_";

fn is_stamp_key(key: &str) -> bool {
    key.len() >= STAMP_PREFIX.len() && key[..STAMP_PREFIX.len()].eq_ignore_ascii_case(STAMP_PREFIX)
}

/// The value of stamp field `index` (container, blob, etag, last modified): the current key, or
/// the legacy one on a backup stamped by an earlier release.
fn stamped_value(metadata: &HashMap<String, String>, index: usize) -> Option<&str> {
    let current = [STAMP_CONTAINER, STAMP_BLOB, STAMP_ETAG, STAMP_LAST_MODIFIED][index];
    let found = |key: &str| {
        metadata
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    };
    if metadata.keys().any(|k| is_stamp_key(k)) {
        found(current)
    } else {
        found(LEGACY_KEYS[index])
    }
}

/// The source ETag a backup is stamped with; `None` on an unstamped (incomplete) backup.
pub fn stamped_etag(metadata: &HashMap<String, String>) -> Option<&str> {
    stamped_value(metadata, 2).map(normalize_etag)
}

/// The full last-modified time of the source version, when the stamp carries one.
pub fn stamped_last_modified(metadata: &HashMap<String, String>) -> Option<OffsetDateTime> {
    stamped_value(metadata, 3).and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
}

/// The stamp key `key`'s value, on a current stamp.
fn stamp_field<'a>(metadata: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    metadata
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// The blob type the stamp records; a stamp from before types were recorded held a block blob
/// (the only kind backed up then kept its type).
pub fn stamped_blob_type(metadata: &HashMap<String, String>) -> BlobType {
    stamp_field(metadata, STAMP_BLOB_TYPE)
        .and_then(BlobType::parse)
        .unwrap_or_default()
}

/// The access control of the source version (a hierarchical namespace's), when the stamp
/// records one.
pub fn stamped_access(metadata: &HashMap<String, String>) -> Option<Access> {
    Some(Access {
        owner: stamp_field(metadata, STAMP_OWNER)?.to_owned(),
        group: stamp_field(metadata, STAMP_GROUP)?.to_owned(),
        permissions: stamp_field(metadata, STAMP_PERMISSIONS)?.to_owned(),
        acl: stamp_field(metadata, STAMP_ACL)?.to_owned(),
    })
}

/// Whether the stamp holds a directory of a hierarchical namespace.
pub fn stamped_directory(metadata: &HashMap<String, String>) -> bool {
    stamp_field(metadata, STAMP_RESOURCE_TYPE).is_some_and(|t| t.eq_ignore_ascii_case(DIRECTORY))
}

/// The access tier the source version had set, when the stamp records one.
pub fn stamped_access_tier(metadata: &HashMap<String, String>) -> Option<String> {
    stamp_field(metadata, STAMP_ACCESS_TIER).map(str::to_owned)
}

/// The user's own metadata of a backup: the stamp (current or legacy) left out.
pub fn user_metadata(metadata: &HashMap<String, String>) -> HashMap<String, String> {
    let legacy = !metadata.keys().any(|k| is_stamp_key(k));
    metadata
        .iter()
        .filter_map(|(key, value)| {
            let escaped = key.len() > USER_KEY_PREFIX.len()
                && key[..USER_KEY_PREFIX.len()].eq_ignore_ascii_case(USER_KEY_PREFIX);
            if escaped {
                return Some((key[USER_KEY_PREFIX.len()..].to_owned(), value.clone()));
            }
            let legacy_key = legacy && LEGACY_KEYS.iter().any(|l| key.eq_ignore_ascii_case(l));
            (!(is_stamp_key(key) || legacy_key)).then(|| (key.clone(), value.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn stamp() -> Stamp {
        Stamp::new(
            "lake",
            "dir/ünï cødé \"q\".csv",
            "\"0x1\"",
            datetime!(2026-11-24 14:17:34.25 UTC),
        )
    }

    #[test]
    fn the_stamp_keeps_user_metadata_and_reads_back() {
        let source = HashMap::from([
            ("owner".to_owned(), "team-a".to_owned()),
            ("LakeBackup_etag".to_owned(), "the app's own".to_owned()),
        ]);
        let metadata = stamp().backup_metadata(&source);
        assert_eq!(metadata["owner"], "team-a");
        // A user's key in the stamp's namespace is kept, never taken for the stamp.
        assert_eq!(stamped_etag(&metadata), Some("0x1"));
        assert_eq!(stamped_blob_type(&metadata), BlobType::Block);
        assert_eq!(stamped_access_tier(&metadata), None);
        let append = stamp()
            .with_properties(&BlobProperties {
                blob_type: BlobType::Append,
                access_tier: Some("Cool".into()),
                ..Default::default()
            })
            .backup_metadata(&source);
        assert_eq!(stamped_blob_type(&append), BlobType::Append);
        assert_eq!(stamped_access_tier(&append).as_deref(), Some("Cool"));
        assert!(!user_metadata(&append)
            .keys()
            .any(|k| k.starts_with("lakebackup")));
        assert!(!metadata.contains_key("LakeBackup_etag"));
        assert_eq!(metadata["lakebackup_user_LakeBackup_etag"], "the app's own");
        assert!(metadata[STAMP_BLOB].is_ascii());
        assert_eq!(stamped_etag(&metadata), Some("0x1"));
        assert_eq!(
            stamped_last_modified(&metadata),
            Some(datetime!(2026-11-24 14:17:34.25 UTC))
        );
        assert_eq!(
            user_metadata(&metadata),
            source,
            "the user's metadata, all of it"
        );
    }

    #[test]
    fn legacy_stamps_are_read_and_a_users_source_keys_are_kept() {
        let legacy = HashMap::from([
            ("source_container".to_owned(), "lake".to_owned()),
            ("source_blob".to_owned(), "a.csv".to_owned()),
            ("source_etag".to_owned(), "0x9".to_owned()),
            (
                "source_last_modified".to_owned(),
                "2026-11-24T14:17:34Z".to_owned(),
            ),
        ]);
        assert_eq!(stamped_etag(&legacy), Some("0x9"));
        assert!(user_metadata(&legacy).is_empty());
        // On a current stamp, `source_etag` is the user's own key.
        let mut users = stamp().backup_metadata(&HashMap::new());
        users.insert("source_etag".to_owned(), "mine".to_owned());
        assert_eq!(stamped_etag(&users), Some("0x1"));
        assert_eq!(user_metadata(&users)["source_etag"], "mine");
        assert_eq!(stamped_etag(&HashMap::new()), None);
    }

    #[test]
    fn a_stamp_records_a_hierarchical_namespaces_access_control() {
        let access = Access {
            owner: "$superuser".into(),
            group: "5d0e-g".into(),
            permissions: "rwxr-x--T+".into(),
            acl: "user::rwx,user:5d0e-u1:r-x,group::r-x,mask::r-x,other::---".into(),
        };
        let properties = BlobProperties {
            access: Some(access.clone()),
            ..BlobProperties::default()
        };
        let metadata = stamp()
            .with_properties(&properties)
            .backup_metadata(&HashMap::new());
        assert_eq!(stamped_access(&metadata), Some(access));
        let flat = stamp().backup_metadata(&HashMap::new());
        assert_eq!(stamped_access(&flat), None);
        assert!(!flat.contains_key(STAMP_ACL));
        assert!(!stamped_directory(&flat) && !stamped_directory(&metadata));
    }

    #[test]
    fn a_directorys_backup_is_stamped_so_without_the_folder_mark() {
        let access = Access {
            owner: "$superuser".into(),
            group: "$superuser".into(),
            permissions: "rwxr-x---+".into(),
            acl: "user::rwx,group::r-x,mask::r-x,other::---,default:user::rwx,default:group::r-x,\
                  default:other::---"
                .into(),
        };
        let properties = BlobProperties {
            access: Some(access.clone()),
            directory: true,
            ..BlobProperties::default()
        };
        let source = HashMap::from([
            ("HDI_IsFolder".to_owned(), "true".to_owned()),
            ("team".to_owned(), "a".to_owned()),
        ]);
        let metadata = stamp()
            .with_properties(&properties)
            .backup_metadata(&source);
        assert!(stamped_directory(&metadata));
        assert_eq!(stamped_access(&metadata), Some(access));
        assert_eq!(
            user_metadata(&metadata),
            HashMap::from([("team".to_owned(), "a".to_owned())])
        );
    }

    #[test]
    fn a_backup_whose_metadata_would_pass_8_kib_is_refused_saying_why() {
        let access = Access {
            owner: "5d0e".repeat(9),
            group: "$superuser".into(),
            permissions: "rwxr-x---+".into(),
            acl: "user:5d0e5d0e-5d0e-5d0e-5d0e-5d0e5d0e5d0e:rwx,".repeat(60),
        };
        let properties = BlobProperties {
            access: Some(access.clone()),
            ..Default::default()
        };
        let stamped = stamp().with_properties(&properties);
        let small = HashMap::from([("team".to_owned(), "a".to_owned())]);
        let fits = stamped.checked_backup_metadata(&small).unwrap();
        assert_eq!(stamped_access(&fits), Some(access), "the ACL is kept whole");
        let large = HashMap::from([("notes".to_owned(), "x".repeat(6_000))]);
        let refused = stamped.checked_backup_metadata(&large).unwrap_err();
        assert!(refused.total > METADATA_LIMIT_BYTES);
        assert_eq!(refused.user, "notes".len() + 6_000);
        assert!(refused.access > 2_700, "{refused:?}");
        assert_eq!(refused.total, refused.user + refused.access + refused.stamp);
        let said = refused.to_string();
        assert!(
            said.contains("8 KiB") && said.contains("access control"),
            "{said}"
        );
        // Without its access control the same metadata fits: the limit is the whole's.
        let flat = stamp().checked_backup_metadata(&large).unwrap();
        assert!(metadata_bytes(&flat) <= METADATA_LIMIT_BYTES);
    }
}
