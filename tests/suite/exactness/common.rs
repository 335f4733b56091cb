//! What the exactness tests check a lake and its backups with: the blobs' bytes, the stamped
//! backups, the versions left without a backup or a snapshot, tags; and deleting a blob as a user
//! does.

use std::collections::BTreeMap;

use lakebackup::{core::naming, storage::Container};

use crate::support;

pub use support::contents;

/// Per source name, its stamped backups in `vault`: (backup name, the source ETag it holds).
pub async fn stamped_backups(vault: &Container) -> BTreeMap<String, Vec<(String, String)>> {
    let mut backups: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    if !vault.exists().await.unwrap() {
        return backups;
    }
    for (name, _) in support::list_all(vault).await {
        let Ok(parsed) = naming::parse_backup_blob_name(&name) else {
            continue;
        };
        let (_, _, metadata) = support::properties(vault, &name).await;
        if metadata.get("lakebackup_etag").map(String::as_str) == Some(parsed.etag.as_str()) {
            backups
                .entry(parsed.source_name)
                .or_default()
                .push((name, parsed.etag));
        }
    }
    backups
}

/// The names whose current version lacks a stamped backup holding its bytes, or a snapshot.
pub async fn unprotected(lake: &Container, vault: &Container) -> Vec<String> {
    let entries = support::list_versions(lake).await;
    let backups = stamped_backups(vault).await;
    let mut gaps = Vec::new();
    for (name, snapshot, etag) in &entries {
        if snapshot.is_some() {
            continue;
        }
        if !entries
            .iter()
            .any(|(n, s, e)| n == name && s.is_some() && e == etag)
        {
            gaps.push(format!("{name}: no snapshot of {etag}"));
        }
        let backup = backups
            .get(name)
            .and_then(|versions| versions.iter().find(|(_, e)| e == etag));
        match backup {
            None => gaps.push(format!("{name}: no backup of {etag}")),
            Some((backup, _)) => {
                if support::download(vault, backup).await != support::download(lake, name).await {
                    gaps.push(format!("{name}: its backup {backup} holds other bytes"));
                }
            }
        }
    }
    gaps
}

/// The backup of the current version of `name`.
pub async fn backup_of_current(lake: &Container, vault: &Container, name: &str) -> String {
    let (etag, _, _) = support::properties(lake, name).await;
    stamped_backups(vault)
        .await
        .remove(name)
        .unwrap_or_default()
        .into_iter()
        .find(|(_, version)| *version == etag)
        .map(|(backup, _)| backup)
        .unwrap_or_else(|| panic!("{name}: no stamped backup of its current version {etag}"))
}

pub async fn tags(container: &Container, name: &str) -> BTreeMap<String, String> {
    container
        .blob(name)
        .tags()
        .await
        .unwrap_or_else(|e| panic!("tags of {name}: {e}"))
}

/// Deletes a blob with its snapshots, as a user deletes a file.
pub async fn delete(container: &Container, name: &str) {
    support::delete_with_snapshots(container, name).await
}
