//! A deep check of one backup: its bytes read in bounded chunks and hashed as they come, judged
//! against the version's stored MD5, an MD5 an earlier check recorded, or else the source
//! version's own bytes — whose MD5 is then recorded in the backup's stamp, so later checks need
//! only the backup (an immutable backup container or a reader identity refuses the record; the
//! check stands).

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};

use crate::{
    core::{naming, stamp::COPIED_MD5_KEY, version::Version},
    storage::{Blob, Container, ErrorCode, StorageError},
};

/// What a deep check of one backup found.
pub(super) enum Checked {
    Matches,
    /// The backup holds the version's bytes, whose stored MD5 is wrong in the lake itself.
    StoredMd5Mismatch,
    Mismatch(String),
    /// Nothing to compare with: the source moved on and neither it nor an earlier check left an
    /// MD5 (or the check itself failed).
    Unchecked(String),
}

/// Adds the MD5 of the bytes checked to a backup's metadata, only if it is still version
/// `etag`: the one change a backup ever gets. Its metadata is taken with its names as written
/// ([`Blob::state`]; the read's are lowercased), so nothing else of it changes. A backup
/// changed or gone since it was read is left as it is (another check recorded first).
async fn record_checked_md5(backup: &Blob, etag: &str, digest: &[u8]) -> Result<(), StorageError> {
    let Some(state) = backup.state().await? else {
        return Ok(());
    };
    if state.etag() != etag {
        return Ok(());
    }
    let mut stamped = state.metadata().clone();
    stamped.insert(COPIED_MD5_KEY.to_owned(), BASE64.encode(digest));
    backup.set_metadata(&stamped, etag).await
}

/// Reads the backup of `blob`'s current version and checks its bytes: hashed as they are read,
/// in bounded chunks pinned to the backup's ETag, so memory does not grow with the blob.
pub(super) async fn check_bytes(
    source: &Container,
    vault: &Container,
    blob: &Version,
) -> Result<Checked, StorageError> {
    let name = naming::backup_blob_name(&blob.name, blob.last_modified, &blob.etag)
        .map_err(|e| StorageError::other("naming a backup", e.to_string()))?;
    let backup = vault.blob(&name);
    let read = match hash_backup(&backup, blob.content_length).await? {
        Ok(read) => read,
        Err(verdict) => return Ok(verdict),
    };
    let stored = blob.content_md5.clone().filter(|md5| !md5.is_empty());
    if let Some(recorded) = read.recorded {
        // Computed from the bytes when they were copied or first checked.
        return Ok(if recorded != read.digest {
            Checked::Mismatch("its bytes differ from those it was copied with".into())
        } else if stored.as_ref().is_some_and(|stored| *stored != recorded) {
            Checked::StoredMd5Mismatch
        } else {
            Checked::Matches
        });
    }
    if stored.as_ref() == Some(&read.digest) {
        return Ok(Checked::Matches);
    }
    // No MD5 to trust: the stored one is absent, or does not match the backup. The source
    // version's own bytes decide, and their MD5 is recorded so that the next check needs only
    // the backup.
    let original = source.blob(&blob.name);
    let expected = match original.read_chunks(Some(&blob.etag)).await {
        Ok(read) => read.md5().await,
        Err(e) => Err(e),
    };
    match expected {
        Ok(expected) if expected != read.digest => {
            return Ok(Checked::Mismatch(
                "its bytes differ from the version's".into(),
            ))
        }
        Ok(_) => {}
        Err(e) if e.is(ErrorCode::ConditionNotMet) || e.is(ErrorCode::BlobNotFound) => {
            return Ok(Checked::Unchecked(
                "the source changed during the check".into(),
            ));
        }
        Err(e) => return Err(e),
    }
    // An immutable backup container or an identity that may only read refuses the record, and
    // another check may have recorded it first: the check stands, unrecorded.
    if let Err(e) = record_checked_md5(&backup, &read.etag, &read.digest).await {
        if !e.is_immutable() && !e.is(ErrorCode::ConditionNotMet) && !e.is_permission_refusal() {
            return Err(e.context(format!("recording the checked MD5 of {}", backup.what())));
        }
    }
    Ok(match stored {
        Some(_) => Checked::StoredMd5Mismatch,
        None => Checked::Matches,
    })
}

/// A backup read and hashed: its ETag, the MD5 of its bytes, and the MD5 an earlier copy or
/// check recorded in its stamp.
struct HashedBackup {
    etag: String,
    digest: Vec<u8>,
    recorded: Option<Vec<u8>>,
}

/// Reads `backup` in chunks pinned to its ETag and hashes it; a verdict instead when it is gone,
/// changed during the read, or not `length` bytes long.
async fn hash_backup(
    backup: &Blob,
    length: u64,
) -> Result<Result<HashedBackup, Checked>, StorageError> {
    let read = match backup.read_chunks(None).await {
        Ok(read) => read,
        Err(e) if e.is(ErrorCode::BlobNotFound) => {
            return Ok(Err(Checked::Unchecked(
                "the backup vanished during the check".into(),
            )))
        }
        Err(e) => return Err(e),
    };
    if read.length != length {
        return Ok(Err(Checked::Mismatch(format!(
            "{} bytes, the version has {length}",
            read.length
        ))));
    }
    let recorded = read
        .metadata
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(COPIED_MD5_KEY))
        .and_then(|(_, v)| BASE64.decode(v).ok());
    let etag = read.etag.clone();
    match read.md5().await {
        Ok(digest) => Ok(Ok(HashedBackup {
            etag,
            digest,
            recorded,
        })),
        // Pinned to the ETag first read: the backup was replaced or removed meanwhile.
        Err(e) if e.is(ErrorCode::ConditionNotMet) || e.is(ErrorCode::BlobNotFound) => Ok(Err(
            Checked::Unchecked("the backup changed during the check".into()),
        )),
        Err(e) => Err(e),
    }
}
