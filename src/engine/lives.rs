//! Records of lives, written beside a name's backups: a version seen deleted (d1, d2, …) and seen
//! again (r1, …), each create-only, each after the previous one was listed, with the time it was
//! seen. The shards write them from complete listings, the events function from a deletion's
//! time; markers of earlier releases are moved here.

use time::OffsetDateTime;
use tracing::{info, warn};

use crate::{
    app::App,
    core::naming,
    core::{
        life::{Change, Record},
        restore_plan::written_by,
    },
    engine::vault::{LegacyMarker, Names, VaultLevel},
    storage::{ErrorCode, StorageError},
};

/// Records that `name` holds version `etag` again, though its life was recorded ended (an
/// undelete); `false` when it was recorded already.
pub async fn record_revival(
    app: &App,
    container: &str,
    name: &str,
    etag: &str,
) -> Result<bool, StorageError> {
    // The name's records as they stand now say which comes next.
    let level = VaultLevel::of_name(app, container, name).await?;
    let Some(record) = level.lives.next_revival(name, etag) else {
        return Ok(false);
    };
    let seen = OffsetDateTime::now_utc().max(
        level
            .lives
            .last_seen(name, etag)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    );
    app.vault_of(container)?.write_record(&record, seen).await
}

/// Moves a marker of an earlier release beside its backups — the first deletion of its life,
/// with its time, and, when the lake holds that very version now (undeleted since), its return
/// now — then removes it where the service lets it (an immutable container keeps it; it is read
/// as what it is). Failures are logged: the next pass tries again.
pub async fn migrate_legacy_marker(app: &App, container: &str, legacy: &LegacyMarker) {
    let seen = legacy.seen.unwrap_or_else(OffsetDateTime::now_utc);
    if let Err(error) = move_marker(app, container, &legacy.name, &legacy.etag, seen).await {
        warn!(%error, marker = legacy.marker.name, "could not move a legacy deletion marker");
        return;
    }
    let removed = async {
        app.vault_of(container)?
            .blob(&legacy.marker.name)
            .delete(Some(&legacy.marker.etag))
            .await
    }
    .await;
    match removed {
        Ok(()) => info!(marker = legacy.marker.name, "legacy deletion marker moved"),
        Err(error) => info!(%error, marker = legacy.marker.name, "legacy marker kept"),
    }
}

/// The shard of the name's own directory may have run before the marker was moved, and would
/// not have known that the life had ended: so the lake is read here.
async fn move_marker(
    app: &App,
    container: &str,
    name: &str,
    etag: &str,
    seen: OffsetDateTime,
) -> Result<(), StorageError> {
    let vault = app.vault_of(container)?;
    let deletion = Record::new(name, etag, Change::Deleted, 1);
    vault.write_record(&deletion, seen).await?;
    if lives_on(app, container, name, etag).await? {
        let revival = Record::new(name, etag, Change::Revived, 1);
        let again = OffsetDateTime::now_utc().max(seen);
        vault.write_record(&revival, again).await?;
    }
    Ok(())
}

/// Whether the lake holds version `etag` of `name` now. Read, never guessed: an error is an
/// error, not "absent".
async fn lives_on(
    app: &App,
    container: &str,
    name: &str,
    etag: &str,
) -> Result<bool, StorageError> {
    match app.source.container(container)?.blob(name).probe().await {
        Ok(state) => Ok(state.is_some_and(|state| state.etag() == etag)),
        Err(e) if e.is(ErrorCode::ContainerNotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

/// What recording a deletion found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// The life of version `etag` ended at the deletion's time (`new`: this call recorded it).
    Recorded { etag: String, new: bool },
    /// Nothing to record, and why.
    Nothing(String),
}

/// The end of the life of the version the lake held when `name` was deleted at `deleted_at` —
/// the newest backed-up version certainly written before then — recorded with that time.
/// Deletions are reported late and twice: one older than that life's last record changes
/// nothing, and a version the lake holds again now is recorded as seen again at once.
pub async fn record_deletion(
    app: &App,
    container: &str,
    name: &str,
    deleted_at: OffsetDateTime,
) -> Result<Deletion, StorageError> {
    let vault = app.vault_of(container)?;
    let mut backups = Vec::new();
    let prefix = naming::backup_name_prefix(name);
    let lives = VaultLevel::list(app, container, &prefix, Names::Exactly(name), false, |b| {
        backups.push(b)
    })
    .await?
    .lives;
    let ended = backups
        .iter()
        .filter(|b| written_by(b.written) <= deleted_at)
        .max_by_key(|b| (b.written, b.backup.name.clone()));
    let Some(ended) = ended else {
        return Ok(Deletion::Nothing(
            "no version of the blob backed up before it was deleted: no life to end".into(),
        ));
    };
    let (etag, written) = (ended.parsed.etag.clone(), &ended.written);
    // (The same deletion again finds its own record: that is no later one.)
    if lives
        .last_seen(name, &etag)
        .is_some_and(|last| last > deleted_at)
    {
        return Ok(Deletion::Nothing(
            "the life's last record is newer than the event: a late event".into(),
        ));
    }
    let lives_on = lives_on(app, container, name, &etag).await?;
    let mut new = false;
    if let Some(deletion) = lives.next_deletion(name, &etag) {
        let seen = deleted_at.max(*written);
        new = vault.write_record(&deletion, seen).await?;
        if lives_on {
            // Deleted at the event's time, and here again now (undeleted): both are true.
            let mut after = lives.clone();
            after.insert(&deletion, Some(seen));
            if let Some(revival) = after.next_revival(name, &etag) {
                let again = OffsetDateTime::now_utc().max(seen);
                vault.write_record(&revival, again).await?;
            }
        }
    }
    Ok(Deletion::Recorded { etag, new })
}
