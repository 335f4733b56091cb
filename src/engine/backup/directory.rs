//! A directory of a hierarchical namespace backed up: an empty backup blob, named as any
//! version is (`{stem}_{time}_{etag}`), stamped as a directory with its owner, group,
//! permissions and ACL (its `default:` entries included), written create-only in one request,
//! so it is complete and stamped at once or does not exist. Nothing is read from the lake but
//! the listing that showed it (a directory has no bytes to pin), and the ADF engine is not
//! involved: there is nothing for a pipeline to copy.

use super::*;

/// Backs up the listed directory `listed` of `container` (its access control as listed, or
/// listed now at its ETag when the listing did not say it).
pub async fn back_up_directory(
    app: &App,
    container: &str,
    listed: &Version,
) -> Result<BackupOutcome, BackupError> {
    let request = BackupRequest::new(container, &listed.name, &listed.etag);
    let backup = VersionBackup::new(app, &request, &listed.etag)?;
    let directory = backup.with_access(listed.clone().as_directory()).await?;
    let name = backup.backup_name(&directory)?;
    app.ensure_backup_container(&backup.backup_container)
        .await?;
    let metadata = backup.backup_metadata(&directory)?;
    let destination = backup.backup_blob(&name)?;
    if destination.create(Vec::new(), metadata).await? {
        info!(backup = name, "directory backed up");
        return Ok(BackupOutcome::BackedUp {
            backup_container: backup.backup_container.clone(),
            backup_name: name,
            from_snapshot: None,
            md5_mismatch: false,
            tags_refused: false,
        });
    }
    // Something stands under the name: this very version's backup when it is stamped with
    // it (a redelivery); anything else is no backup, and is left alone and reported.
    match destination.state().await? {
        Some(state) if state.version.stamped_etag() == Some(backup.etag.as_str()) => {
            Ok(backup.already(name))
        }
        _ => Err(BackupError::Copy {
            what: format!("{container}/{}", listed.name),
            detail: format!("{name} stands in the backup container and is not its backup"),
        }),
    }
}

/// The root directory of `container` (a hierarchical namespace's `/`: its owner, group,
/// permissions, access and default ACL) as a directory version named `""`, read with Get
/// Access Control on the file system's root, at the ETag and Last-Modified that answer gives
/// (the file system's where it gives none).
/// The root is not listed (List Blobs shows what is under it), so this is its one reading.
pub async fn root_directory(app: &App, container: &str) -> Result<Version, StorageError> {
    let what = || format!("reading the root directory of {container}");
    let root = app
        .source
        .get_access_control(container, "")
        .await?
        .ok_or_else(|| StorageError::other(what(), "the service says it does not exist"))?;
    // Named by the ETag and Last-Modified Get Access Control answers with; where it has
    // none, by the file system's (Get Container Properties): the root is the file system's.
    let (etag, last_modified) = match (root.etag.is_empty(), root.last_modified) {
        (false, Some(at)) => (root.etag, at),
        _ => app
            .source
            .container(container)?
            .etag_and_modified()
            .await?
            .ok_or_else(|| StorageError::other(what(), "its file system does not exist"))?,
    };
    Ok(Version {
        name: String::new(),
        snapshot: None,
        etag,
        last_modified,
        content_length: 0,
        content_md5: None,
        metadata: Some(Default::default()),
        properties: crate::core::properties::BlobProperties {
            access: Some(root.access),
            directory: true,
            ..Default::default()
        },
        copy_status: None,
    })
}
