//! Protecting one listed blob in a backup part: what it needs ([`Needs`]: a backup, a snapshot,
//! the record of its return), done with a few attempts where the service was busy, and what it
//! came to ([`SlotOutcome`]). A blob that cannot be protected is named, never a blocker.
//!
//! On a lake with a hierarchical namespace no snapshot is taken: a file that moved on since it
//! was listed has its version now backed up instead (pinned to that version's ETag), and one
//! that moves on again meanwhile is left to the next pass and named in a warning.

use std::{borrow::Cow, time::Duration};

use tracing::{info, warn, Instrument};

use super::BackupCounts;
use crate::{
    app::App,
    core::{diff::BlobVerdict, version::Version},
    engine::{
        backup::{self, BackupError, BackupOutcome},
        lives, protect,
        protect::{CopiedNote, Moving, Protected},
        vault::VaultLevel,
    },
    storage::{Namespace, StorageError},
};

/// What one blob needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Needs {
    backup: bool,
    snapshot: bool,
    /// Its version's life was recorded ended, and here it is again.
    revival: bool,
    /// Its version has a complete backup, with another access control (an ACL change keeps
    /// the ETag): backed up again, as seen now.
    access_changed: bool,
    /// What the listed entry is.
    path: PathKind,
}

/// What a listed entry is to a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathKind {
    File,
    /// A directory of a hierarchical namespace: a version of its own (its access control).
    Directory,
    /// A directory placeholder (`hdi_isfolder`) on a flat lake: not data, left alone as ever.
    FlatPlaceholder,
}

impl Needs {
    pub(super) fn of(verdict: &BlobVerdict, level: &VaultLevel, namespace: Namespace) -> Self {
        let blob = &verdict.blob;
        let hierarchical = namespace.is_hierarchical();
        let path = match (blob.is_directory_placeholder(), hierarchical) {
            (false, _) => PathKind::File,
            (true, true) => PathKind::Directory,
            (true, false) => PathKind::FlatPlaceholder,
        };
        if path == PathKind::FlatPlaceholder {
            return Needs {
                backup: false,
                snapshot: false,
                revival: false,
                access_changed: false,
                path,
            };
        }
        let access = blob.properties.access.as_ref();
        let backed_up = level.index.contains(&blob.name, &blob.etag);
        let with_access = level
            .index
            .contains_with_access(&blob.name, &blob.etag, access);
        Needs {
            backup: !with_access,
            snapshot: verdict.needs_snapshot && !hierarchical && path == PathKind::File,
            revival: level.lives.ended_now(&blob.name, &blob.etag),
            access_changed: backed_up && !with_access,
            path,
        }
    }

    pub(super) fn nothing(&self) -> bool {
        !(self.backup || self.snapshot || self.revival)
    }

    /// What an entry that needs nothing counts toward.
    pub(super) fn present(&self) -> BackupCounts {
        match self.path {
            PathKind::File => BackupCounts {
                blobs: 1,
                backups_present: 1,
                ..Default::default()
            },
            PathKind::Directory => BackupCounts {
                directories: 1,
                ..Default::default()
            },
            PathKind::FlatPlaceholder => BackupCounts::default(),
        }
    }
}

/// What protecting one blob did.
#[derive(Default)]
pub(super) struct SlotOutcome {
    pub(super) counts: BackupCounts,
    pub(super) failure: Option<(String, String)>,
    pub(super) warnings: Vec<(String, String)>,
    /// The listed version's Last-Modified, when it needed a backup and this part left it
    /// without one (failed, archived, requested from ADF, left to the next pass): the RPO.
    pub(super) behind_since: Option<time::OffsetDateTime>,
}

impl SlotOutcome {
    /// Counts what backing up the listed version came to; whether the blob moved on since it
    /// was listed (its version now is then protected instead).
    fn note_backup(&mut self, blob: &str, protected: Protected) -> bool {
        match protected {
            Protected::Copied(copied) => {
                self.counts.backups_copied = 1;
                self.note_copy(blob, copied);
            }
            Protected::Present => self.counts.backups_present = 1,
            Protected::Requested => self.counts.backup_requests = 1,
            Protected::Archived => {
                self.counts.archived = 1;
                self.warnings.push((
                    blob.to_owned(),
                    "it is in the archive tier: not readable, so not backed up, until it is \
                     rehydrated"
                        .into(),
                ));
            }
            Protected::Moved(reason) => {
                info!(reason, "moved on since it was listed");
                return true;
            }
        }
        false
    }

    /// Counts what protecting a blob that moved on came to.
    fn note_moving(&mut self, blob: &str, moving: Moving) {
        match moving {
            Moving::Snapshotted(copied) => {
                self.counts.snapshots_created = 1;
                if let Some(copied) = copied {
                    self.counts.backups_copied = 1;
                    self.note_copy(blob, copied);
                }
            }
            Moving::Gone => self.counts.backups_skipped = 1,
            Moving::BackedUpNow(Protected::Moved(reason)) => {
                self.counts.backups_skipped = 1;
                self.warnings.push((
                    blob.to_owned(),
                    format!(
                        "it changed again while its newer version was copied ({reason}): left \
                         to the next pass (a hierarchical namespace takes no snapshots)"
                    ),
                ));
            }
            Moving::BackedUpNow(protected) => {
                self.note_backup(blob, protected);
            }
        }
    }

    fn note_copy(&mut self, blob: &str, copied: CopiedNote) {
        if copied.md5_mismatch {
            self.counts.md5_mismatches = 1;
            self.warnings.push((
                blob.to_owned(),
                "its stored Content-MD5 does not match its bytes: the bytes were backed up as \
                 the lake holds them, with the stored MD5 as is"
                    .into(),
            ));
        }
        if copied.tags_refused {
            self.warnings.push((
                blob.to_owned(),
                "its tags are not on its backup: the backup account refused to set tags (it \
                 takes Storage Blob Data Owner, or the blob tags/write action)"
                    .into(),
            ));
        }
    }
}

/// The warning of a job whose lake would not show blob index tags.
pub(super) const TAGS_REFUSED: &str =
    "blob index tags are not backed up: the lake refused to list them to \
     this identity (reading tags takes Storage Blob Data Owner, a role with the blob tags/read \
     action, or a SAS with the t permission); set BACKUP_TAGS=false to say that is intended";

/// Attempts at a blob whose protection failed for a reason that may pass (the service busy or
/// unreachable), within the slot, before it is reported.
const BLOB_ATTEMPTS: u32 = 3;

/// Protects one blob: its backup (copied, or requested for ADF), then its snapshot — taken even
/// when the backup failed, since it is then the version's only copy — and the record of its
/// life seen again.
pub(super) async fn protect_blob(
    app: &App,
    container: &str,
    verdict: BlobVerdict,
    needs: Needs,
) -> SlotOutcome {
    let span = tracing::info_span!("blob", blob = %verdict.blob.name, etag = %verdict.blob.etag);
    let mut outcome = protect_listed(app, container, &verdict, needs)
        .instrument(span)
        .await;
    let backed_up = outcome.counts.backups_copied + outcome.counts.backups_present > 0;
    if needs.backup && outcome.counts.blobs > 0 && !backed_up {
        outcome.behind_since = Some(verdict.blob.last_modified);
    }
    outcome
}

async fn protect_listed(
    app: &App,
    container: &str,
    verdict: &BlobVerdict,
    needs: Needs,
) -> SlotOutcome {
    let blob = &verdict.blob;
    let mut outcome = SlotOutcome::default();
    match needs.path {
        // A flat lake's `hdi_isfolder` blobs are left alone, as ever.
        PathKind::FlatPlaceholder => return outcome,
        PathKind::Directory => return protect_directory(app, container, blob, needs).await,
        PathKind::File => {}
    }
    outcome.counts.blobs = 1;
    if blob.properties.customer_key {
        outcome.counts.failed = 1;
        outcome.failure = Some((
            blob.name.clone(),
            "it is encrypted with a customer-provided key, which this worker does not hold: \
             neither backed up nor snapshotted"
                .into(),
        ));
        warn!("encrypted with a customer-provided key; cannot be protected");
        return outcome;
    }
    let mut failed = Vec::new();
    // The blob changed since it was listed (an append log, a writer at work): its listed
    // version is gone, so the version it has now is protected instead.
    let mut moved = false;
    let blob = &*as_seen(blob, &needs);
    if needs.backup {
        match retried(|| protect::back_up_listed(app, container, blob)).await {
            Ok(protected) => moved = outcome.note_backup(&blob.name, protected),
            Err(reason) => failed.push(format!("backup: {reason}")),
        }
    } else {
        outcome.counts.backups_present = 1;
    }
    if needs.snapshot && !moved {
        match retried(|| protect::snapshot_version(app, container, &blob.name, &blob.etag)).await {
            Ok(true) => outcome.counts.snapshots_created = 1,
            Ok(false) => moved = true,
            Err(reason) => failed.push(format!("snapshot: {reason}")),
        }
    }
    // On a hierarchical namespace, its version now backed up without a snapshot.
    if moved {
        match retried(|| protect::protect_moving(app, container, &blob.name)).await {
            Ok(moving) => outcome.note_moving(&blob.name, moving),
            Err(reason) => failed.push(format!("its version now: {reason}")),
        }
    }
    if needs.revival {
        match retried(|| lives::record_revival(app, container, &blob.name, &blob.etag)).await {
            Ok(new) => outcome.counts.revivals_recorded = u64::from(new),
            Err(reason) => failed.push(format!("recording its return: {reason}")),
        }
    }
    if !failed.is_empty() {
        let reason = failed.join("; ");
        warn!(
            reason,
            "blob not protected; the rest of the directory goes on"
        );
        outcome.counts.failed = 1;
        outcome.failure = Some((blob.name.clone(), reason));
    }
    outcome
}

/// Protects one directory of a hierarchical namespace: its version (existence and access
/// control) backed up, and the record of its return.
async fn protect_directory(
    app: &App,
    container: &str,
    listed: &Version,
    needs: Needs,
) -> SlotOutcome {
    let mut outcome = SlotOutcome::default();
    outcome.counts.directories = 1;
    let directory = &*as_seen(listed, &needs);
    let mut failed = Vec::new();
    if needs.backup {
        match retried(|| backup::back_up_directory(app, container, directory)).await {
            Ok(BackupOutcome::BackedUp { .. }) => outcome.counts.directory_backups = 1,
            Ok(_) => {}
            Err(reason) => failed.push(format!("backup: {reason}")),
        }
    }
    if needs.revival {
        match retried(|| lives::record_revival(app, container, &listed.name, &listed.etag)).await {
            Ok(new) => outcome.counts.revivals_recorded = u64::from(new),
            Err(reason) => failed.push(format!("recording its return: {reason}")),
        }
    }
    if !failed.is_empty() {
        let reason = failed.join("; ");
        warn!(reason, "directory not protected; the rest goes on");
        outcome.counts.failed = 1;
        outcome.failure = Some((listed.name.clone(), reason));
    }
    outcome
}

/// The version to back up: as listed, or, when only its access control changed (its bytes were
/// backed up under this ETag, and an ACL change moves no time the service keeps), as seen now.
fn as_seen<'a>(blob: &'a Version, needs: &Needs) -> Cow<'a, Version> {
    if !needs.access_changed {
        return Cow::Borrowed(blob);
    }
    Cow::Owned(Version {
        last_modified: seen_at(),
        ..blob.clone()
    })
}

/// Now, to the second (a backup's name keeps seconds).
pub(super) fn seen_at() -> time::OffsetDateTime {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

/// Runs `attempt` until it succeeds, fails for good, or [`BLOB_ATTEMPTS`] are spent.
async fn retried<T, E, F, Fut>(mut attempt: F) -> Result<T, String>
where
    E: Into<Failure>,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut pause = Duration::from_millis(500);
    for tries in 1..=BLOB_ATTEMPTS {
        match attempt().await.map_err(Into::into) {
            Ok(done) => return Ok(done),
            Err(Failure::Passing(reason)) if tries < BLOB_ATTEMPTS => {
                info!(reason, tries, "failed; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(Failure::Passing(reason) | Failure::Lasting(reason)) => return Err(reason),
        }
    }
    unreachable!("the last attempt returns")
}

/// Why a step for one blob failed.
enum Failure {
    /// The service was busy or could not be reached: worth another attempt.
    Passing(String),
    /// It will fail the same way again.
    Lasting(String),
}

impl From<StorageError> for Failure {
    fn from(error: StorageError) -> Self {
        if error.is_transient() {
            Failure::Passing(error.to_string())
        } else {
            Failure::Lasting(error.to_string())
        }
    }
}

impl From<BackupError> for Failure {
    fn from(error: BackupError) -> Self {
        match error {
            BackupError::Storage(e) => e.into(),
            BackupError::Adf(e) => Failure::Passing(e.to_string()),
            other => Failure::Lasting(other.to_string()),
        }
    }
}
