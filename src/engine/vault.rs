//! What the backup side holds for one directory level of a lake container, or for one name: the
//! complete backups (as a [`BackupIndex`]), per source name the newest backed-up version, the
//! lives recorded, the markers of earlier releases still to be moved, and the level's
//! sub-directories. One listing of the `{c}bak` level, whatever the number of versions.

use std::collections::{HashMap, HashSet};

use time::OffsetDateTime;

use crate::{
    app::App,
    core::{backup_index::BackupIndex, life::Lives, naming},
    storage::{
        listing::{
            each_complete_backup, list_backup_directory, until_container_missing, LegacyMarker,
        },
        StorageError,
    },
};

/// One directory level of `{c}bak` (or the part of it that holds one name).
pub struct BackupLevel {
    /// The backup container.
    pub container: String,
    pub index: BackupIndex,
    /// Per source name, when its newest backed-up version was written, and its ETag.
    pub newest: HashMap<String, (OffsetDateTime, String)>,
    pub lives: Lives,
    pub legacy_markers: Vec<LegacyMarker>,
    /// Its sub-directories: one the lake no longer has is visited all the same.
    pub subdirectories: HashSet<String>,
}

impl BackupLevel {
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
        list_level(app, container, directory, "").await
    }

    /// The backups and records of the one name `name` (listed by its backup names' prefix).
    pub async fn of_name(app: &App, container: &str, name: &str) -> Result<Self, StorageError> {
        let mut level = list_level(app, container, &naming::backup_name_prefix(name), name).await?;
        level.newest.retain(|source, _| source == name);
        level.subdirectories.clear();
        Ok(level)
    }
}

async fn list_level(
    app: &App,
    container: &str,
    listing_prefix: &str,
    names_prefix: &str,
) -> Result<BackupLevel, StorageError> {
    let vault = app.vault_of(container)?;
    let pages = list_backup_directory(
        &vault,
        (!listing_prefix.is_empty()).then_some(listing_prefix),
        false,
    )?;
    let mut index = BackupIndex::new();
    // Per name: (written, backup name) of its newest backup, and its ETag. Versions written in
    // one second are ordered by backup name, as restore orders them (the name ends in the
    // ETag, and Azure's ETags grow with time), so a deletion is recorded for the very version
    // restore would choose.
    let mut newest: HashMap<String, ((OffsetDateTime, String), String)> = HashMap::new();
    let listed = each_complete_backup(
        until_container_missing(pages),
        names_prefix,
        |parsed, written, backup| {
            index.insert_backup(&backup.name, backup.stamped_etag());
            let key = (written, backup.name);
            match newest.get_mut(&parsed.source_name) {
                Some((slot, _)) if *slot >= key => {}
                Some(entry) => *entry = (key, parsed.etag),
                None => {
                    newest.insert(parsed.source_name, (key, parsed.etag));
                }
            }
        },
    )
    .await?;
    Ok(BackupLevel {
        container: vault.name().to_owned(),
        index,
        newest: newest
            .into_iter()
            .map(|(name, ((written, _), etag))| (name, (written, etag)))
            .collect(),
        lives: listed.lives,
        legacy_markers: listed.legacy_markers,
        subdirectories: listed.subdirectories.into_iter().collect(),
    })
}
