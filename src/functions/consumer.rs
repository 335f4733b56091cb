//! `QueueCreateBlobBackupADFv2`: turn one backup request into one immutable backup version.
//!
//! A request names `(container, blob_name, etag)`. The version is copied — directly (through
//! the worker for small versions, server-side for the rest) or by an ADF pipeline run — to its
//! own backup name. The direct copy carries the stamp (bookkeeping metadata, beside the source's
//! own) in its one write, so a backup is complete and stamped at once or does not exist. An ADF copy is judged before it is stamped.
//!
//! When the blob has moved on, the request is not simply "outdated": a backup already under that
//! version's name is settled first (waited for, verified and stamped, or removed when it holds
//! another version), and a version that lives on in a snapshot is backed up from the snapshot.
//!
//! Outcomes: a message that can never succeed (not the contract, invalid names) is moved to the
//! poison queue unchanged and the invocation succeeds; a transient failure fails the invocation so
//! the host retries it. No path drops a request silently.

use crate::storage::ErrorCode;
use std::{collections::HashMap, sync::Arc, time::Duration};

use azure_storage_blob::{
    models::{BlobClientDeleteOptions, BlobClientSetMetadataOptions, CopyStatus},
    BlobClient,
};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use futures::TryStreamExt;
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;
use time::OffsetDateTime;
use tracing::{info, warn, Instrument};

use crate::{
    adf::{AdfError, PipelineParameters},
    app::{App, CopyEngine},
    core::{
        etag::{normalize_etag, quoted_etag},
        message::BackupRequest,
        naming,
        properties::{BlobProperties, BlobType},
        stamp::Stamp,
    },
    storage::{
        blobs::{
            blob_state, copy_version, copy_version_through, is_tags_refusal, read_tags,
            wait_for_copy, BlobState, Copied, CopyAttributes, CopyStart, ServerCopy,
        },
        lease::HeldLease,
        listing::{find_snapshot, list_backups},
        StorageError, StorageResultExt,
    },
};

pub const FUNCTION_NAME: &str = "QueueCreateBlobBackupADFv2";

/// How long a request waits for another invocation's lease on the same blob before it is put
/// back on the queue.
const LEASE_WAIT: Duration = Duration::from_secs(30);
/// How long a deferred request stays invisible.
const DEFER_DELAY: Duration = Duration::from_secs(30);
/// After this many deferrals a busy blob fails like any other failure (and can end poisoned):
/// a lease held for hours is not another invocation's copy.
const MAX_DEFERRALS: u32 = 30;

/// One queue message as the trigger delivers it.
#[derive(Debug, Clone)]
pub struct QueueDelivery {
    /// The message text, decoded from the queue's base64 by the host.
    pub text: String,
    /// The text exactly as it was on the queue, when the caller has it (`lakebackup run`): the
    /// poison copy is then byte-identical.
    pub raw: Option<String>,
    pub message_id: String,
    pub dequeue_count: u64,
}

impl QueueDelivery {
    /// The message as it stood on the queue: the text received, or else the decoded text
    /// encoded again as the queue trigger expects (base64).
    pub fn as_queued(&self) -> String {
        self.raw
            .clone()
            .unwrap_or_else(|| BASE64.encode(&self.text))
    }
}

/// What happened to a request; the invocation's return value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ConsumerOutcome {
    BackedUp {
        backup_container: String,
        backup_name: String,
        /// Set when the blob had moved on and the version was copied from its snapshot.
        #[serde(skip_serializing_if = "Option::is_none")]
        from_snapshot: Option<String>,
        /// The source's stored Content-MD5 does not match its bytes: the bytes were backed up
        /// as the lake holds them, the MD5 property as stored.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        md5_mismatch: bool,
        /// The backup account refused to set the blob's tags: they are not on the backup.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        tags_refused: bool,
    },
    AlreadyBackedUp {
        backup_container: String,
        backup_name: String,
    },
    Outdated {
        reason: String,
    },
    /// The source is in the archive tier: it cannot be read until it is rehydrated.
    Archived {
        tier: String,
        reason: String,
    },
    /// Another invocation holds the lease on this blob; the request was put back on the queue.
    Deferred {
        reason: String,
        deferrals: u32,
    },
    Poisoned {
        reason: String,
    },
}

/// A failure worth retrying: the invocation fails and the host tries again.
#[derive(Debug, Error)]
pub enum ConsumerError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Adf(#[from] AdfError),
    #[error("copy of {what} did not complete: {detail}")]
    Copy { what: String, detail: String },
    /// The request can never succeed (the backup name would break Azure's limits).
    #[error("{what} cannot be backed up: {reason}")]
    Unusable { what: String, reason: String },
}

/// Handles one delivery.
pub async fn consume(
    app: &App,
    delivery: &QueueDelivery,
) -> Result<ConsumerOutcome, ConsumerError> {
    let span = tracing::info_span!(
        "consumer",
        function = FUNCTION_NAME,
        message_id = %delivery.message_id,
        dequeue_count = delivery.dequeue_count,
    );
    async {
        let request = match parse_request(&delivery.text) {
            Ok(request) => request,
            Err(reason) => return poison(app, delivery, reason).await,
        };
        let span =
            tracing::info_span!("blob", container = %request.container, blob = %request.blob_name);
        match back_up(app, &request).instrument(span).await {
            Ok(outcome) => Ok(outcome),
            Err(Failure::Rejected(reason)) => poison(app, delivery, reason).await,
            Err(Failure::Retry(error)) => {
                warn!(error = %error, "backup failed; the host will retry the message");
                Err(error)
            }
        }
    }
    .instrument(span)
    .await
}

/// Backs up one version now, in this invocation (a shard copying what it found): the
/// consumer's own path, without a queue message. A request that can never succeed is an error.
pub async fn back_up_now(
    app: &App,
    request: &BackupRequest,
) -> Result<ConsumerOutcome, ConsumerError> {
    match back_up(app, request).await {
        Ok(outcome) => Ok(outcome),
        Err(Failure::Retry(error)) => Err(error),
        Err(Failure::Rejected(reason)) => Err(ConsumerError::Unusable {
            what: format!("{}/{}", request.container, request.blob_name),
            reason,
        }),
    }
}

/// Backs up the current version of a blob a shard has just listed: the listing already says the
/// version (ETag, time, length, the source's metadata) and that no stamped backup of it exists,
/// so it is copied at once, in one request carrying the stamp. Anything a condition refuses
/// (the blob changed, a backup appeared) goes the consumer's whole way, from the facts.
pub async fn back_up_listed(
    app: &App,
    container: &str,
    blob: &crate::core::diff::BaseBlob,
) -> Result<ConsumerOutcome, ConsumerError> {
    let request = BackupRequest::new(container, &blob.name, &blob.etag);
    let Some(metadata) = &blob.metadata else {
        return back_up_now(app, &request).await;
    };
    let unusable = |reason: String| ConsumerError::Unusable {
        what: format!("{container}/{}", blob.name),
        reason,
    };
    let backup_container =
        naming::backup_container_name(container, &app.config.backup_container_suffix)
            .map_err(|e| unusable(e.to_string()))?;
    let job = Job {
        app,
        request: &request,
        etag: request.etag.clone(),
        backup_container,
    };
    let version = Version {
        last_modified: blob.last_modified,
        content_length: blob.content_length,
        content_md5: blob.content_md5.clone(),
        metadata: metadata.clone(),
        properties: blob.properties.clone(),
        snapshot: None,
    };
    let copied = async {
        let name = job.backup_name(&version)?;
        app.ensure_backup_container(&job.backup_container).await?;
        let backup = job.backup_client(&name)?;
        job.copy_direct(&backup, name, &version).await
    }
    .await;
    match copied {
        Ok(outcome) => Ok(outcome),
        // The blob changed or went since it was listed, or a backup appeared: decided again
        // from the facts.
        Err(Failure::Retry(ConsumerError::Storage(e)))
            if is_condition_conflict(&e) || e.is(ErrorCode::BlobNotFound) =>
        {
            back_up_now(app, &request).await
        }
        Err(Failure::Retry(error)) => Err(error),
        Err(Failure::Rejected(reason)) => Err(unusable(reason)),
    }
}

/// The service refused to read the source: it is in the archive tier (found only at the copy
/// when the tier changed after it was read).
fn archived_refused(error: &StorageError) -> ConsumerOutcome {
    ConsumerOutcome::Archived {
        tier: "Archive".into(),
        reason: format!("the service refused to copy an archived blob ({error})"),
    }
}

enum Failure {
    /// The request can never succeed: poison it.
    Rejected(String),
    /// Worth retrying.
    Retry(ConsumerError),
}

impl<E: Into<ConsumerError>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure::Retry(error.into())
    }
}

/// Reads the contract `{"container","blob_name","etag"}`; also accepts it base64-encoded (a
/// message queued with another encoding setting).
fn parse_request(text: &str) -> Result<BackupRequest, String> {
    let parse = |t: &str| serde_json::from_str::<BackupRequest>(t.trim());
    let request = parse(text)
        .or_else(|first| {
            BASE64
                .decode(text.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .and_then(|decoded| parse(&decoded).ok())
                .ok_or(first)
        })
        .map_err(|e| {
            format!("not a backup request {{\"container\",\"blob_name\",\"etag\"}}: {e}")
        })?;
    naming::validate_container_name(&request.container).map_err(|e| e.to_string())?;
    naming::validate_blob_name(&request.blob_name).map_err(|e| e.to_string())?;
    if normalize_etag(&request.etag).is_empty() {
        return Err("the request's etag is empty".into());
    }
    Ok(request)
}

async fn poison(
    app: &App,
    delivery: &QueueDelivery,
    reason: String,
) -> Result<ConsumerOutcome, ConsumerError> {
    app.poison_raw(&delivery.as_queued()).await?;
    warn!(reason, "message moved to the poison queue unchanged");
    Ok(ConsumerOutcome::Poisoned { reason })
}

/// Decides from the facts as they are now; a copy refused by a condition (409/412) means the
/// facts changed under it, so they are read once more.
async fn back_up(app: &App, request: &BackupRequest) -> Result<ConsumerOutcome, Failure> {
    let backup_container =
        naming::backup_container_name(&request.container, &app.config.backup_container_suffix)
            .map_err(|e| Failure::Rejected(e.to_string()))?;
    let job = Job {
        app,
        request,
        etag: normalize_etag(&request.etag).to_owned(),
        backup_container,
    };
    let attempted = match job.attempt().await {
        Err(Failure::Retry(ConsumerError::Storage(e))) if is_condition_conflict(&e) => {
            info!(error = %e, "a condition refused the copy; reading the facts again");
            job.attempt().await
        }
        other => other,
    };
    match attempted {
        Err(Failure::Retry(ConsumerError::Storage(e))) if is_customer_key(&e) => {
            Err(Failure::Rejected(format!(
                "the blob is encrypted with a customer-provided key, which this worker does not \
                 hold: it cannot be read to be backed up ({e})"
            )))
        }
        other => other,
    }
}

fn is_condition_conflict(error: &StorageError) -> bool {
    matches!(error.status, Some(409 | 412))
        && !error.is(ErrorCode::BlobArchived)
        && !is_customer_key(error)
}

/// The blob is encrypted with a key its owner supplies with every request.
fn is_customer_key(error: &StorageError) -> bool {
    error.is(ErrorCode::BlobUsesCustomerSpecifiedEncryption)
}

/// One exact version of a blob, as the copy needs it.
#[derive(Debug, Clone)]
struct Version {
    last_modified: OffsetDateTime,
    content_length: u64,
    content_md5: Option<Vec<u8>>,
    /// The source's own metadata, kept on the backup.
    metadata: HashMap<String, String>,
    /// Its type, tier, content headers and (when read) tags.
    properties: BlobProperties,
    /// `None`: the current blob; `Some`: its snapshot of that id.
    snapshot: Option<String>,
}

/// What an existing blob under a version's backup name turned out to be.
enum Settled {
    /// Complete and stamped as that version.
    Complete,
    Absent,
    /// Unstamped, and nothing can tell which version it holds: left alone, counted by nothing.
    Unverifiable,
}

/// Whether a blob holds a given version, judged by what the service records.
#[derive(Debug, PartialEq, Eq)]
enum Judgement {
    Same,
    Different,
    Unknown,
}

/// `source_unchanged`: the source has carried the version's ETag from before the copy until now,
/// so whatever landed under the version's name was read from that version.
fn judge(landed: &BlobState, version: &Version, source_unchanged: bool) -> Judgement {
    if landed.content_length != version.content_length {
        return Judgement::Different;
    }
    match (&landed.content_md5, &version.content_md5) {
        (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => {
            if a == b {
                Judgement::Same
            } else {
                Judgement::Different
            }
        }
        _ if source_unchanged => Judgement::Same,
        _ => Judgement::Unknown,
    }
}

struct Job<'a> {
    app: &'a App,
    request: &'a BackupRequest,
    /// Without quotes.
    etag: String,
    backup_container: String,
}

impl Job<'_> {
    fn source_what(&self) -> String {
        format!("{}/{}", self.request.container, self.request.blob_name)
    }

    fn source(&self) -> Result<BlobClient, StorageError> {
        Ok(self
            .app
            .source
            .container(&self.request.container)?
            .blob_client(&self.request.blob_name))
    }

    fn stamp(&self, version: &Version) -> Stamp {
        Stamp::new(
            &self.request.container,
            &self.request.blob_name,
            &self.etag,
            version.last_modified,
        )
        .with_properties(&version.properties)
    }

    fn backup_name(&self, version: &Version) -> Result<String, Failure> {
        naming::backup_blob_name(&self.request.blob_name, version.last_modified, &self.etag)
            .map_err(|e| Failure::Rejected(e.to_string()))
    }

    fn backup_client(&self, name: &str) -> Result<BlobClient, StorageError> {
        Ok(self
            .app
            .backup
            .container(&self.backup_container)?
            .blob_client(name))
    }

    fn backup_what(&self, name: &str) -> String {
        format!("{}/{name}", self.backup_container)
    }

    fn backed_up(
        &self,
        name: String,
        from_snapshot: Option<String>,
        copied: &Copied,
    ) -> ConsumerOutcome {
        info!(
            backup = name,
            from_snapshot,
            md5_mismatch = copied.md5_mismatch,
            tags_refused = copied.tags_refused,
            "version backed up"
        );
        ConsumerOutcome::BackedUp {
            backup_container: self.backup_container.clone(),
            backup_name: name,
            from_snapshot,
            md5_mismatch: copied.md5_mismatch,
            tags_refused: copied.tags_refused,
        }
    }

    fn already(&self, name: String) -> ConsumerOutcome {
        info!(backup = name, "version already backed up");
        ConsumerOutcome::AlreadyBackedUp {
            backup_container: self.backup_container.clone(),
            backup_name: name,
        }
    }

    async fn attempt(&self) -> Result<ConsumerOutcome, Failure> {
        let source = self.source()?;
        match blob_state(&source, &self.source_what()).await? {
            Some(state) if state.etag == self.etag => self.back_up_current(source, state).await,
            Some(state) => {
                let reason = format!(
                    "the blob changed: its ETag is now {}, not {}",
                    state.etag, self.etag
                );
                self.back_up_past(reason).await
            }
            None => self.back_up_past("the blob no longer exists".into()).await,
        }
    }

    /// The source still carries the requested version.
    async fn back_up_current(
        &self,
        source: BlobClient,
        state: BlobState,
    ) -> Result<ConsumerOutcome, Failure> {
        let mut properties = state.properties.clone();
        if state.tag_count > 0 && self.app.config.list_tags && !self.app.source.tags_refused() {
            properties.tags = match read_tags(&source, &self.source_what()).await {
                Ok(tags) => Some(tags),
                // Without the right to read tags the version is backed up all the same.
                Err(e) if is_tags_refusal(&e) => {
                    warn!(error = %e, "the lake refused to show the blob's tags: backed up without them");
                    self.app.source.refuse_tags();
                    None
                }
                Err(e) => return Err(e.into()),
            };
        }
        let version = Version {
            last_modified: state.last_modified,
            content_length: state.content_length,
            content_md5: state.content_md5.clone(),
            metadata: state.metadata.clone(),
            properties,
            snapshot: None,
        };
        let name = self.backup_name(&version)?;
        self.app
            .ensure_backup_container(&self.backup_container)
            .await?;
        let backup = self.backup_client(&name)?;
        if let Settled::Complete = self.settle(&backup, &name, Some(&version), true).await? {
            return Ok(self.already(name));
        }
        if state.is_archived() {
            return Ok(archived(&state));
        }
        match self.app.config.copy_engine {
            CopyEngine::Direct => self.copy_direct(&backup, name, &version).await,
            CopyEngine::Adf => {
                self.copy_with_adf(Arc::new(source), &backup, name, &version)
                    .await
            }
        }
    }

    /// The source moved on (or is gone). Settles a backup already under this version's name,
    /// and backs the version up from a snapshot of it when one exists; otherwise it is outdated.
    async fn back_up_past(&self, reason: String) -> Result<ConsumerOutcome, Failure> {
        let container = self.app.source.container(&self.request.container)?;
        let snapshot = match find_snapshot(
            &container,
            &self.request.container,
            &self.request.blob_name,
            &self.etag,
        )
        .await
        {
            Ok(snapshot) => snapshot,
            Err(e) if e.is(ErrorCode::ContainerNotFound) => None,
            Err(e) => return Err(e.into()),
        };
        let version = snapshot.map(|s| Version {
            last_modified: s.last_modified,
            content_length: s.content_length,
            content_md5: s.content_md5,
            metadata: s.metadata,
            properties: s.properties,
            snapshot: Some(s.snapshot),
        });
        let existing = match &version {
            Some(version) => Some(self.backup_name(version)?),
            None => self.find_backup_by_name().await?,
        };
        if let Some(name) = &existing {
            let backup = self.backup_client(name)?;
            match self.settle(&backup, name, version.as_ref(), false).await? {
                Settled::Complete => return Ok(self.already(name.clone())),
                Settled::Absent => {}
                Settled::Unverifiable => {
                    return Ok(outdated(format!(
                        "{reason}; an unstamped copy under its backup name {name} cannot be \
                         verified (no snapshot of the version, or no MD5 to compare), and is \
                         left alone"
                    )))
                }
            }
        }
        match (version, self.app.config.copy_engine) {
            (Some(version), CopyEngine::Direct) => {
                let name = self.backup_name(&version)?;
                self.app
                    .ensure_backup_container(&self.backup_container)
                    .await?;
                let backup = self.backup_client(&name)?;
                self.copy_direct(&backup, name, &version).await
            }
            // The pipeline copies a blob by name; it cannot address a snapshot.
            _ => Ok(outdated(reason)),
        }
    }

    /// A backup of this version whose name is not known from the source any more (no snapshot
    /// of it): listed by the name's prefix, matched by what the name says.
    async fn find_backup_by_name(&self) -> Result<Option<String>, StorageError> {
        let client = self.app.backup.container(&self.backup_container)?;
        let prefix = naming::backup_name_prefix(&self.request.blob_name);
        let pages = list_backups(&client, &self.backup_container, Some(&prefix))?;
        futures::pin_mut!(pages);
        loop {
            match pages.try_next().await {
                Ok(Some(page)) => {
                    if let Some(found) = page.into_iter().find(|b| {
                        naming::parse_backup_blob_name(&b.name).is_ok_and(|p| {
                            p.source_name == self.request.blob_name && p.etag == self.etag
                        })
                    }) {
                        return Ok(Some(found.name));
                    }
                }
                Ok(None) => return Ok(None),
                Err(e) if e.is(ErrorCode::ContainerNotFound) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// The copy destination's state once its copy is no longer pending, or
    /// `COPY_TIMEOUT_SECONDS` has passed.
    async fn wait_for_copy(
        &self,
        backup: &BlobClient,
        what: &str,
    ) -> Result<Option<BlobState>, StorageError> {
        let config = &self.app.config;
        wait_for_copy(backup, what, config.copy_timeout, config.copy_poll_interval).await
    }

    /// What stands under a version's backup name now: a copy still pending is waited for; a
    /// failed one, or one that holds another version, is removed (If-Match on its own ETag);
    /// an unstamped one that holds this version is stamped. `version` is what to judge by
    /// (`None`: only a stamp proves anything); `source_unchanged` as for [`judge`].
    async fn settle(
        &self,
        backup: &BlobClient,
        name: &str,
        version: Option<&Version>,
        source_unchanged: bool,
    ) -> Result<Settled, ConsumerError> {
        let what = self.backup_what(name);
        let waited = self.wait_for_copy(backup, &what).await?;
        let Some(existing) = waited else {
            return Ok(Settled::Absent);
        };
        if existing.copy_status == Some(CopyStatus::Pending) {
            return Err(ConsumerError::Copy {
                what,
                detail: "a copy to it is still pending".into(),
            });
        }
        if !existing.copy_complete() {
            self.remove(backup, &existing, &what, "an incomplete copy")
                .await?;
            return Ok(Settled::Absent);
        }
        if existing.complete_stamp() == Some(self.etag.as_str()) {
            return Ok(Settled::Complete);
        }
        // Unstamped: landed by ADF, or by an earlier release between its copy and its stamp.
        let Some(version) = version else {
            return Ok(Settled::Unverifiable);
        };
        match judge(&existing, version, source_unchanged) {
            Judgement::Same => {
                self.write_stamp(backup, &existing, version, &what).await?;
                Ok(Settled::Complete)
            }
            Judgement::Different => {
                self.remove(backup, &existing, &what, "a copy of another version")
                    .await?;
                Ok(Settled::Absent)
            }
            Judgement::Unknown => Ok(Settled::Unverifiable),
        }
    }

    async fn remove(
        &self,
        backup: &BlobClient,
        existing: &BlobState,
        what: &str,
        why: &str,
    ) -> Result<(), StorageError> {
        warn!(backup = what, status = ?existing.copy_status, length = existing.content_length, why, "removing a backup blob that is not this version");
        match backup
            .delete(Some(BlobClientDeleteOptions {
                if_match: Some(quoted_etag(&existing.etag).into()),
                ..Default::default()
            }))
            .await
        {
            Ok(_) => Ok(()),
            // Changed or removed meanwhile by another invocation: judged again next time.
            Err(e) if e.http_status() == Some(azure_core::http::StatusCode::NotFound) => Ok(()),
            Err(e) => Err(StorageError::new(format!("removing {why} at {what}"), e)),
        }
    }

    /// Stamps a backup judged to hold `version`, only if it is still the blob that was judged.
    async fn write_stamp(
        &self,
        backup: &BlobClient,
        judged: &BlobState,
        version: &Version,
        what: &str,
    ) -> Result<(), StorageError> {
        let metadata = self.stamp(version).backup_metadata(&version.metadata);
        backup
            .set_metadata(
                &metadata,
                Some(BlobClientSetMetadataOptions {
                    if_match: Some(quoted_etag(&judged.etag).into()),
                    ..Default::default()
                }),
            )
            .await
            .during(|| format!("stamping {what}"))?;
        Ok(())
    }

    /// Copies exactly this version with its stamp in one write: a block blob through this worker
    /// up to `COPY_THROUGH_WORKER_MAX_BYTES` (a conditional read, then one create-only write),
    /// else server-side — synchronous for block blobs up to 256 MiB, asynchronous for every
    /// other type and size (the stamp still travels with the request; the backup counts once its
    /// copy status is `success`). The backup keeps the version's type, content headers,
    /// Content-MD5 as stored, metadata and tags.
    async fn copy_direct(
        &self,
        backup: &BlobClient,
        name: String,
        version: &Version,
    ) -> Result<ConsumerOutcome, Failure> {
        let what = self.backup_what(&name);
        let attributes = CopyAttributes {
            metadata: self.stamp(version).backup_metadata(&version.metadata),
            tags: version.properties.tags.clone(),
            tier: None,
            stored_md5: version.content_md5.clone(),
        };
        let blob_type = version.properties.blob_type;
        if blob_type == BlobType::Block
            && version.content_length <= self.app.config.copy_through_max_bytes
        {
            let mut source = self.source()?;
            if let Some(snapshot) = &version.snapshot {
                source = source
                    .with_snapshot(snapshot)
                    .during(|| format!("addressing a snapshot of {}", self.source_what()))?;
            }
            let copied = copy_version_through(
                &source,
                backup,
                &self.etag,
                version.content_length,
                &attributes,
                &self.source_what(),
                &what,
            )
            .await;
            return match copied {
                Ok(copied) => Ok(self.backed_up(name, version.snapshot.clone(), &copied)),
                Err(e) if e.is(ErrorCode::BlobArchived) => Ok(archived_refused(&e)),
                Err(e) => Err(e.into()),
            };
        }
        let source_url = self
            .app
            .source
            .readable_blob_url(
                &self.request.container,
                &self.request.blob_name,
                version.snapshot.as_deref(),
                self.app.copy_source_expiry(),
            )
            .await?;
        let path = ServerCopy::for_source(blob_type, version.content_length);
        let started = copy_version(backup, &source_url, &self.etag, &attributes, path, &what).await;
        match started {
            Ok(copied) if copied.state == CopyStart::Done => {
                Ok(self.backed_up(name, version.snapshot.clone(), &copied))
            }
            Ok(copied) => {
                let landed = self.wait_for_copy(backup, &what).await?;
                match landed {
                    Some(state) if state.copy_status == Some(CopyStatus::Success) => {
                        Ok(self.backed_up(name, version.snapshot.clone(), &copied))
                    }
                    Some(state) if state.copy_status == Some(CopyStatus::Pending) => {
                        Err(Failure::Retry(ConsumerError::Copy {
                            what,
                            detail: format!(
                                "still pending after {}s (COPY_TIMEOUT_SECONDS); it goes on \
                                 server-side and counts once it is complete",
                                self.app.config.copy_timeout.as_secs()
                            ),
                        }))
                    }
                    Some(state) => {
                        self.remove(backup, &state, &what, "a failed copy").await?;
                        Err(Failure::Retry(ConsumerError::Copy {
                            what,
                            detail: format!(
                                "the copy ended {:?}: {}; its result was removed",
                                state.copy_status,
                                state.copy_status_description.unwrap_or_default()
                            ),
                        }))
                    }
                    None => Err(Failure::Retry(ConsumerError::Copy {
                        what,
                        detail: "the copy's destination vanished".into(),
                    })),
                }
            }
            Err(e) if e.is(ErrorCode::BlobArchived) => Ok(archived_refused(&e)),
            Err(e) => Err(e.into()),
        }
    }

    /// Triggers the pipeline and follows its run, holding a lease on the source throughout when
    /// lease mode is on (released on every path; a lost lease abandons and cancels the run).
    /// What landed is then judged against the version before it is stamped.
    async fn copy_with_adf(
        &self,
        source: Arc<BlobClient>,
        backup: &BlobClient,
        name: String,
        version: &Version,
    ) -> Result<ConsumerOutcome, Failure> {
        let what = self.backup_what(&name);
        let Some(adf) = &self.app.adf else {
            return Err(Failure::Retry(ConsumerError::Copy {
                what,
                detail: "the ADF engine is selected but not configured".into(),
            }));
        };
        let lease = if self.app.config.use_lease {
            match self.lease_source(&source, backup, &name).await? {
                Leased::Held(lease) => Some(lease),
                Leased::Done(outcome) => return Ok(outcome),
            }
        } else {
            None
        };
        let parameters = PipelineParameters {
            container: self.request.container.clone(),
            container_backup: self.backup_container.clone(),
            blob_name: self.request.blob_name.clone(),
            blob_name_backup: name.clone(),
        };
        let run = async {
            let run_id = adf.create_run(&parameters).await?;
            match &lease {
                Some(lease) => adf.follow_run(&run_id, lease.lost()).await,
                None => adf.follow_run(&run_id, std::future::pending()).await,
            }
        }
        .await;
        // Judged and stamped while the lease still pins the source, so that a duplicate request
        // waiting for the lease finds the backup complete.
        let judged = match run {
            Ok(()) => self.judge_adf_copy(&source, backup, name, version).await,
            Err(e) => Err(e.into()),
        };
        let released = match lease {
            Some(lease) => lease.release().await,
            None => Ok(()),
        };
        let outcome = judged?;
        released?;
        Ok(outcome)
    }

    async fn judge_adf_copy(
        &self,
        source: &BlobClient,
        backup: &BlobClient,
        name: String,
        version: &Version,
    ) -> Result<ConsumerOutcome, Failure> {
        let what = self.backup_what(&name);
        // ETags never repeat: a source that carries the version's ETag now carried it throughout.
        let now = blob_state(source, &self.source_what()).await?;
        let source_unchanged = now.as_ref().is_some_and(|s| s.etag == self.etag);
        let Some(landed) = blob_state(backup, &what).await? else {
            return Err(Failure::Retry(ConsumerError::Copy {
                what,
                detail: "the pipeline run succeeded but the backup does not exist".into(),
            }));
        };
        match judge(&landed, version, source_unchanged) {
            Judgement::Same => {
                self.write_stamp(backup, &landed, version, &what).await?;
                Ok(self.backed_up(name, None, &Copied::default()))
            }
            Judgement::Different if source_unchanged => {
                self.remove(backup, &landed, &what, "an incomplete copy")
                    .await?;
                Err(Failure::Retry(ConsumerError::Copy {
                    what,
                    detail: format!(
                        "it has {} bytes, the source version {}; it was removed",
                        landed.content_length, version.content_length
                    ),
                }))
            }
            Judgement::Different => {
                self.remove(backup, &landed, &what, "a copy of a newer version")
                    .await?;
                Ok(outdated(
                    "the blob changed while the pipeline copied it; its copy held the newer \
                     version and was removed"
                        .into(),
                ))
            }
            Judgement::Unknown => Ok(outdated(format!(
                "the blob changed while the pipeline copied it, and without an MD5 the copy at \
                 {what} cannot be verified: it is left unstamped, so nothing counts it"
            ))),
        }
    }

    /// Leases the source for the run. A lease held by someone else is usually another invocation
    /// copying the same version: wait for it a little, then put the request back on the queue
    /// rather than fail toward poison.
    async fn lease_source(
        &self,
        source: &Arc<BlobClient>,
        backup: &BlobClient,
        name: &str,
    ) -> Result<Leased, Failure> {
        let deadline = tokio::time::Instant::now() + LEASE_WAIT;
        let mut waited = false;
        loop {
            // After a wait: the holder may have been another invocation that finished this very
            // version (it stamps before it releases).
            if waited && self.stamped_backup_exists(backup, name).await? {
                return Ok(Leased::Done(self.already(name.to_owned())));
            }
            match HeldLease::acquire(source.clone(), &self.etag, &self.source_what()).await {
                Ok(lease) => return Ok(Leased::Held(lease)),
                Err(e) if e.is(ErrorCode::LeaseAlreadyPresent) => {}
                Err(e) => return Err(e.into()),
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            waited = true;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let deferrals = self.request.deferrals + 1;
        if deferrals > MAX_DEFERRALS {
            return Err(Failure::Retry(ConsumerError::Copy {
                what: self.source_what(),
                detail: format!(
                    "the source has been leased by someone else through {MAX_DEFERRALS} deferrals"
                ),
            }));
        }
        let mut again = self.request.clone();
        again.deferrals = deferrals;
        self.app.defer_backup(&again, DEFER_DELAY).await?;
        let reason = format!(
            "the source is leased by another invocation (usually one copying this version); \
             the request was put back on the queue for {}s",
            DEFER_DELAY.as_secs()
        );
        info!(deferrals, "{reason}");
        Ok(Leased::Done(ConsumerOutcome::Deferred {
            reason,
            deferrals,
        }))
    }
}

impl Job<'_> {
    async fn stamped_backup_exists(
        &self,
        backup: &BlobClient,
        name: &str,
    ) -> Result<bool, StorageError> {
        Ok(blob_state(backup, &self.backup_what(name))
            .await?
            .is_some_and(|state| state.complete_stamp() == Some(self.etag.as_str())))
    }
}

enum Leased {
    Held(HeldLease),
    Done(ConsumerOutcome),
}

fn outdated(reason: String) -> ConsumerOutcome {
    info!(
        reason,
        "request outdated; a newer request or the reconciler covers the new version"
    );
    ConsumerOutcome::Outdated { reason }
}

fn archived(state: &BlobState) -> ConsumerOutcome {
    let tier = state.access_tier.clone().unwrap_or_default();
    let reason =
        "the blob is in the archive tier; rehydrate it (or wait for its rehydration) and the \
         next reconciliation backs it up"
            .to_owned();
    warn!(tier, reason, "source archived; not backed up");
    ConsumerOutcome::Archived { tier, reason }
}

/// The message text from a queue trigger's binding value: a string (possibly JSON-quoted once
/// more), or an object the host already parsed.
pub fn message_text(value: &Value) -> String {
    match value {
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::String(inner)) => inner,
            _ => text.clone(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_are_read_from_json_or_base64() {
        let json = r#"{"container":"lake","blob_name":"a \"b\".csv","etag":"0x1"}"#;
        let request = parse_request(json).unwrap();
        assert_eq!(request.blob_name, "a \"b\".csv");
        assert_eq!(parse_request(&BASE64.encode(json)).unwrap(), request);
    }

    #[test]
    fn unusable_requests_say_why() {
        for (text, why) in [
            ("not json", "not a backup request"),
            (r#"{"container":"lake"}"#, "not a backup request"),
            (
                r#"{"container":"Lake!","blob_name":"a","etag":"0x1"}"#,
                "invalid container name",
            ),
            (
                r#"{"container":"lake","blob_name":"","etag":"0x1"}"#,
                "must not be empty",
            ),
            (
                r#"{"container":"lake","blob_name":"a","etag":"\"\""}"#,
                "etag is empty",
            ),
        ] {
            let reason = parse_request(text).unwrap_err();
            assert!(reason.contains(why), "{text}: {reason}");
        }
        let long = json!({"container": "lake", "blob_name": "x".repeat(1025), "etag": "0x1"});
        assert!(parse_request(&long.to_string()).is_err());
    }

    #[test]
    fn binding_values_unwrap_to_the_message_text() {
        let text = r#"{"container":"lake","blob_name":"a","etag":"0x1"}"#;
        assert_eq!(message_text(&json!(text)), text);
        assert_eq!(message_text(&json!(json!(text).to_string())), text);
        let object = json!({"container": "lake"});
        assert_eq!(message_text(&object), object.to_string());
    }

    fn version(length: u64, md5: Option<&[u8]>) -> Version {
        Version {
            last_modified: time::macros::datetime!(2026-11-24 14:17:34 UTC),
            content_length: length,
            content_md5: md5.map(<[u8]>::to_vec),
            metadata: HashMap::new(),
            properties: BlobProperties::default(),
            snapshot: None,
        }
    }

    fn landed(length: u64, md5: Option<&[u8]>) -> BlobState {
        BlobState {
            etag: "0xB".into(),
            last_modified: time::macros::datetime!(2026-11-24 14:17:40 UTC),
            content_length: length,
            content_md5: md5.map(<[u8]>::to_vec),
            metadata: HashMap::new(),
            copy_status: None,
            copy_source: None,
            copy_status_description: None,
            access_tier: None,
            properties: BlobProperties::default(),
            tag_count: 0,
        }
    }

    #[test]
    fn a_landed_copy_is_judged_by_length_and_a_real_md5_only() {
        let md5: &[u8] = b"0123456789abcdef";
        let other: &[u8] = b"fedcba9876543210";
        assert_eq!(
            judge(&landed(3, None), &version(4, None), true),
            Judgement::Different
        );
        assert_eq!(
            judge(&landed(3, Some(md5)), &version(3, Some(md5)), false),
            Judgement::Same
        );
        assert_eq!(
            judge(&landed(3, Some(other)), &version(3, Some(md5)), true),
            Judgement::Different
        );
        // Same length, no digest: only an unchanged source vouches for it.
        assert_eq!(
            judge(&landed(3, None), &version(3, Some(md5)), false),
            Judgement::Unknown
        );
        assert_eq!(
            judge(&landed(3, Some(b"")), &version(3, Some(b"")), false),
            Judgement::Unknown
        );
        assert_eq!(
            judge(&landed(3, None), &version(3, None), true),
            Judgement::Same
        );
    }
}
