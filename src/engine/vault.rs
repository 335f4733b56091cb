//! What the backup side holds for one directory level of a lake container, or for one name:
//! the one type every kind of job reads `{c}bak` through ([`VaultLevel`]). One listing of the
//! `{c}bak` level, whatever the number of versions: the complete backups (as a
//! [`BackupIndex`], and for a caller that asks, each one as a [`BackupVersion`]), per source name
//! the newest backed-up version, the lives recorded, the markers of earlier releases still to be
//! moved, and the level's sub-directories. Only complete, stamped backups are versions: anything
//! else is neither a kept copy nor a version to restore.

use std::collections::{HashMap, HashSet};

use futures::{Stream, TryStreamExt};
use time::OffsetDateTime;

use crate::{
    app::App,
    core::{
        backup_index::BackupIndex,
        life::{self, Lives, Record},
        naming::{self, ParsedBackupName},
        properties::Access,
        stamp,
        version::Version,
    },
    storage::{
        listing::{list_backup_directory, until_container_missing, ListedEntry, ListingPage},
        StorageError,
    },
};

/// One complete, stamped backup of a version: the backup blob as listed, what its name says,
/// and when its version was written (the stamp's full time, else the name's second).
#[derive(Debug, Clone)]
pub struct BackupVersion {
    pub backup: Version,
    pub parsed: ParsedBackupName,
    pub written: OffsetDateTime,
}

/// A deletion marker of an earlier release (`.lakebackup-deleted/{name}@{etag}`), to be moved
/// beside the backups as the first deletion of its life.
#[derive(Debug, Clone)]
pub struct LegacyMarker {
    /// The marker blob.
    pub marker: Version,
    /// The name and ETag of the life it ended.
    pub name: String,
    pub etag: String,
    /// When the deletion was seen.
    pub seen: Option<OffsetDateTime>,
}

/// Which source names of a level are in scope.
#[derive(Debug, Clone, Copy)]
pub enum Names<'a> {
    /// Every name starting with it.
    Prefix(&'a str),
    /// That one name.
    Exactly(&'a str),
}

impl Names<'_> {
    fn admits(&self, name: &str) -> bool {
        match self {
            Names::Prefix(prefix) => name.starts_with(prefix),
            Names::Exactly(exact) => name == *exact,
        }
    }
}

/// One directory level of `{c}bak` (or the part of it that holds some names).
#[derive(Debug, Default)]
pub struct VaultLevel {
    /// The backup container.
    pub container: String,
    pub index: BackupIndex,
    /// Per source name, when its newest backed-up version was written, and its ETag.
    pub newest: HashMap<String, (OffsetDateTime, String)>,
    pub lives: Lives,
    pub legacy_markers: Vec<LegacyMarker>,
    /// Its sub-directories: one the lake no longer has is visited all the same.
    pub subdirectories: HashSet<String>,
    /// At the root of `{c}bak`: the complete backups of the lake's root directory (a
    /// hierarchical namespace's `/`, the directory whose name is empty:
    /// `_{time}_{etag}`). The root is no name of the level: it is never "gone", never handed
    /// to a lister, never pruned; it is in the index.
    pub root: Vec<BackupVersion>,
}

impl BackupVersion {
    /// The access control (owner, group, permissions, ACL) its stamp records, if any.
    pub fn recorded_access(&self) -> Option<Access> {
        self.backup
            .metadata
            .as_ref()
            .and_then(stamp::stamped_access)
    }
}

impl VaultLevel {
    /// The newest complete backup of the lake's root directory (by when its version was
    /// written, then by name, as a restore orders versions): the one a restore to now brings
    /// back.
    pub fn newest_root(&self) -> Option<&BackupVersion> {
        self.root
            .iter()
            .max_by(|a, b| (a.written, &a.backup.name).cmp(&(b.written, &b.backup.name)))
    }

    /// Whether anything is backed up here that the lake might have lost.
    pub fn has_names(&self) -> bool {
        !self.newest.is_empty() || !self.subdirectories.is_empty()
    }

    /// Directory `directory` (empty for the root, else ending in `/`) of `container`'s backups.
    pub async fn of_directory(
        app: &App,
        container: &str,
        directory: &str,
    ) -> Result<Self, StorageError> {
        Self::list(app, container, directory, Names::Prefix(""), false, |_| {}).await
    }

    /// The backups and records of the one name `name` (listed by its backup names' prefix).
    pub async fn of_name(app: &App, container: &str, name: &str) -> Result<Self, StorageError> {
        let prefix = naming::backup_name_prefix(name);
        let mut level =
            Self::list(app, container, &prefix, Names::Exactly(name), false, |_| {}).await?;
        level.subdirectories.clear();
        Ok(level)
    }

    /// Lists the level of `container`'s backups that `listing_prefix` starts (a directory, or
    /// narrower), with the backups' tags when `tags`: the names in scope of `names` are read,
    /// and each of their complete backups is handed to `each` (a restore keeps the one of its
    /// instant, a prune all of them) as it is listed.
    pub async fn list(
        app: &App,
        container: &str,
        listing_prefix: &str,
        names: Names<'_>,
        tags: bool,
        mut each: impl FnMut(BackupVersion),
    ) -> Result<Self, StorageError> {
        let vault = app.vault_of(container)?;
        let pages = until_container_missing(list_backup_directory(
            &vault,
            (!listing_prefix.is_empty()).then_some(listing_prefix),
            tags,
        )?);
        let mut level = VaultLevel {
            container: vault.name().to_owned(),
            ..Default::default()
        };
        // Per name: (written, backup name) of its newest backup, and its ETag. Versions written
        // in one second are ordered by backup name, as restore orders them (the name ends in
        // the ETag, and Azure's ETags grow with time), so a deletion is recorded for the very
        // version restore would choose.
        let mut newest: HashMap<String, ((OffsetDateTime, String), String)> = HashMap::new();
        level
            .read(pages, names, |version| {
                level_newest(&mut newest, &version);
                each(version);
            })
            .await?;
        level.newest = newest
            .into_iter()
            .map(|(name, ((written, _), etag))| (name, (written, etag)))
            .collect();
        Ok(level)
    }

    /// Reads the level's pages: sub-directories, records of lives and legacy markers kept here,
    /// each complete backup in scope indexed and handed on.
    async fn read(
        &mut self,
        pages: impl Stream<Item = Result<ListingPage<Version>, StorageError>>,
        names: Names<'_>,
        mut each: impl FnMut(BackupVersion),
    ) -> Result<(), StorageError> {
        futures::pin_mut!(pages);
        while let Some(page) = pages.try_next().await? {
            for entry in page.entries {
                let backup = match entry {
                    ListedEntry::Directory(sub) => {
                        self.subdirectories.insert(sub);
                        continue;
                    }
                    ListedEntry::Item(backup) => backup,
                };
                if let Some(version) = self.take_entry(backup, names) {
                    let access = version
                        .backup
                        .metadata
                        .as_ref()
                        .and_then(stamp::stamped_access);
                    self.index.insert_backup_with_access(
                        &version.backup.name,
                        version.backup.stamped_etag(),
                        access.as_ref(),
                    );
                    if version.parsed.source_name.is_empty() {
                        self.root.push(version);
                        continue;
                    }
                    each(version);
                }
            }
        }
        Ok(())
    }

    /// One entry of the level: a record of a life or a legacy marker is kept here; a complete
    /// backup of a name in scope is handed back; anything else is no version.
    fn take_entry(&mut self, backup: Version, names: Names<'_>) -> Option<BackupVersion> {
        let metadata = backup.metadata.clone().unwrap_or_default();
        if let Some(record) = Record::parse(&backup.name) {
            if names.admits(&record.name) {
                let seen = life::seen_in(&metadata, life::SEEN_KEY);
                self.lives.insert(&record, seen);
            }
            return None;
        }
        if let Some((name, etag)) = life::parse_legacy_marker(&backup.name) {
            let legacy = stamp::stamped_etag(&metadata).is_none()
                && backup.content_length == 0
                && metadata
                    .keys()
                    .any(|k| k.eq_ignore_ascii_case(life::LEGACY_SEEN_KEY));
            if legacy {
                self.legacy_markers.push(LegacyMarker {
                    name: name.to_owned(),
                    etag: etag.to_owned(),
                    seen: life::seen_in(&metadata, life::LEGACY_SEEN_KEY),
                    marker: backup,
                });
                return None;
            }
        }
        // Only complete backups: the stamp is written once the copy is verified.
        let (parsed, written) = backup.as_complete_backup()?;
        names.admits(&parsed.source_name).then_some(BackupVersion {
            backup,
            parsed,
            written,
        })
    }
}

fn level_newest(
    newest: &mut HashMap<String, ((OffsetDateTime, String), String)>,
    version: &BackupVersion,
) {
    let key = (version.written, version.backup.name.clone());
    match newest.get_mut(&version.parsed.source_name) {
        Some((slot, _)) if *slot >= key => {}
        Some(entry) => *entry = (key, version.parsed.etag.clone()),
        None => {
            newest.insert(
                version.parsed.source_name.clone(),
                (key, version.parsed.etag.clone()),
            );
        }
    }
}
