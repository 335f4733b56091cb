//! `QueueCreateBlobBackupADFv2`: turn one backup request into one immutable backup version.
//!
//! A request names `(container, blob_name, etag)`. It is outdated when the source blob is gone or
//! has another ETag (a newer request or the reconciler covers the newer version). Otherwise the
//! version is copied — by an ADF pipeline run or a direct server-side copy — to its own backup
//! name, verified, and stamped with metadata saying where it came from.
//!
//! Outcomes: a message that can never succeed (not the contract, invalid names) is moved to the
//! poison queue unchanged and the invocation succeeds; a transient failure fails the invocation so
//! the host retries it. No path drops a request silently.

use std::{collections::HashMap, sync::Arc};

use azure_storage_blob::{
    models::{BlobClientDeleteOptions, BlobClientStartCopyFromUrlOptions, CopyStatus},
    BlobClient,
};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tracing::{info, warn, Instrument};

use crate::{
    adf::{AdfError, PipelineParameters},
    app::{App, CopyEngine},
    core::{
        etag::{normalize_etag, quoted_etag},
        message::BackupRequest,
        naming::{
            self, META_SOURCE_BLOB, META_SOURCE_CONTAINER, META_SOURCE_ETAG,
            META_SOURCE_LAST_MODIFIED,
        },
    },
    storage::{
        blobs::{blob_state, wait_for_copy, BlobState},
        lease::HeldLease,
        StorageError, StorageResultExt,
    },
};

pub const FUNCTION_NAME: &str = "QueueCreateBlobBackupADFv2";

/// Everything but letters, digits and `-._~/` is encoded, so the name reads back exactly.
const METADATA_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// One queue message as the trigger delivers it.
#[derive(Debug, Clone)]
pub struct QueueDelivery {
    /// The message text, decoded from the queue's base64 by the host.
    pub text: String,
    pub message_id: String,
    pub dequeue_count: u64,
}

/// What happened to a request; the invocation's return value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ConsumerOutcome {
    BackedUp {
        backup_container: String,
        backup_name: String,
    },
    AlreadyBackedUp {
        backup_container: String,
        backup_name: String,
    },
    Outdated {
        reason: String,
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
    app.poison(&delivery.text).await?;
    warn!(reason, "message moved to the poison queue unchanged");
    Ok(ConsumerOutcome::Poisoned { reason })
}

async fn back_up(app: &App, request: &BackupRequest) -> Result<ConsumerOutcome, Failure> {
    let etag = normalize_etag(&request.etag);
    let backup_container =
        naming::backup_container_name(&request.container, &app.config.backup_container_suffix)
            .map_err(|e| Failure::Rejected(e.to_string()))?;
    let source_what = format!("{}/{}", request.container, request.blob_name);
    let source = Arc::new(
        app.source
            .container(&request.container)?
            .blob_client(&request.blob_name),
    );
    let state = match blob_state(&source, &source_what).await? {
        Some(state) if state.etag == etag => state,
        Some(state) => {
            return Ok(outdated(format!(
                "the blob changed: its ETag is now {}, not {etag}",
                state.etag
            )))
        }
        None => return Ok(outdated("the blob no longer exists".into())),
    };
    let backup_name = naming::backup_blob_name(&request.blob_name, state.last_modified, etag)
        .map_err(|e| Failure::Rejected(e.to_string()))?;
    let job = CopyJob {
        app,
        request,
        source,
        source_what,
        state,
        backup_container,
        backup_name,
    };
    Ok(job.run().await?)
}

fn outdated(reason: String) -> ConsumerOutcome {
    info!(
        reason,
        "request outdated; a newer request or the reconciler covers the new version"
    );
    ConsumerOutcome::Outdated { reason }
}

/// One version on its way to the backup account.
struct CopyJob<'a> {
    app: &'a App,
    request: &'a BackupRequest,
    source: Arc<BlobClient>,
    source_what: String,
    state: BlobState,
    backup_container: String,
    backup_name: String,
}

/// What an existing backup blob turned out to be.
enum Existing {
    /// Complete, as it stands now.
    Complete(BlobState),
    Absent,
}

impl CopyJob<'_> {
    async fn run(self) -> Result<ConsumerOutcome, ConsumerError> {
        self.app
            .ensure_backup_container(&self.backup_container)
            .await?;
        let backup = self
            .app
            .backup
            .container(&self.backup_container)?
            .blob_client(&self.backup_name);
        if let Existing::Complete(existing) = self.settle_existing(&backup).await? {
            self.stamp(&backup, &existing).await?;
            info!(backup = self.backup_name, "version already backed up");
            return Ok(ConsumerOutcome::AlreadyBackedUp {
                backup_container: self.backup_container,
                backup_name: self.backup_name,
            });
        }
        let copied = match self.app.config.copy_engine {
            CopyEngine::Direct => self.copy_direct(&backup).await?,
            CopyEngine::Adf => self.copy_with_adf(&backup).await?,
        };
        if let Some(outcome) = copied {
            return Ok(outcome);
        }
        let landed = self.verify(&backup).await?;
        self.stamp(&backup, &landed).await?;
        info!(backup = self.backup_name, "version backed up");
        Ok(ConsumerOutcome::BackedUp {
            backup_container: self.backup_container,
            backup_name: self.backup_name,
        })
    }

    fn backup_what(&self) -> String {
        format!("{}/{}", self.backup_container, self.backup_name)
    }

    /// Waits out a copy another invocation has in flight; removes a failed or wrong-length one.
    async fn settle_existing(&self, backup: &BlobClient) -> Result<Existing, ConsumerError> {
        let what = self.backup_what();
        let config = &self.app.config;
        let waited = wait_for_copy(
            backup,
            &what,
            config.copy_timeout,
            config.copy_poll_interval,
        )
        .await?;
        let Some(existing) = waited else {
            return Ok(Existing::Absent);
        };
        match existing.copy_status {
            Some(CopyStatus::Pending) => {
                return Err(ConsumerError::Copy {
                    what,
                    detail: "a copy to it is still pending".into(),
                })
            }
            Some(CopyStatus::Failed | CopyStatus::Aborted) => {}
            _ if existing.content_length == self.state.content_length => {
                return Ok(Existing::Complete(existing))
            }
            _ => {}
        }
        warn!(
            backup = what,
            status = ?existing.copy_status,
            length = existing.content_length,
            "removing an incomplete backup before copying again"
        );
        backup
            .delete(Some(BlobClientDeleteOptions {
                if_match: Some(quoted_etag(&existing.etag).into()),
                ..Default::default()
            }))
            .await
            .during(|| format!("removing incomplete backup {what}"))?;
        Ok(Existing::Absent)
    }

    /// Server-side copy of exactly the requested version: the source condition refuses any
    /// other, and `If-None-Match: *` refuses to overwrite a backup that appeared meanwhile.
    async fn copy_direct(
        &self,
        backup: &BlobClient,
    ) -> Result<Option<ConsumerOutcome>, ConsumerError> {
        let expiry =
            OffsetDateTime::now_utc() + self.app.config.copy_timeout + time::Duration::minutes(15);
        let source_url = self.app.source.readable_blob_url(
            &self.request.container,
            &self.request.blob_name,
            expiry,
        )?;
        let started = backup
            .start_copy_from_url(
                source_url.to_string(),
                Some(BlobClientStartCopyFromUrlOptions {
                    source_if_match: Some(quoted_etag(&self.state.etag).into()),
                    if_none_match: Some("*".into()),
                    ..Default::default()
                }),
            )
            .await;
        if let Err(e) = started {
            let error = StorageError::new(format!("copying to {}", self.backup_what()), e);
            if !(error.is_status(azure_core::http::StatusCode::PreconditionFailed)
                || error.is_status(azure_core::http::StatusCode::Conflict))
            {
                return Err(error.into());
            }
            // Either the source changed or another invocation created the backup first.
            return match self.settle_existing(backup).await? {
                Existing::Complete(_) => Ok(None),
                Existing::Absent => Ok(Some(outdated(format!(
                    "the blob changed before it could be copied ({})",
                    error.code.unwrap_or_default()
                )))),
            };
        }
        match self.settle_existing(backup).await? {
            Existing::Complete(_) => Ok(None),
            Existing::Absent => Err(ConsumerError::Copy {
                what: self.backup_what(),
                detail: "the copy failed and its result was removed".into(),
            }),
        }
    }

    /// Triggers the pipeline and follows its run, holding a lease on the source throughout when
    /// lease mode is on; the lease is released on every path.
    async fn copy_with_adf(
        &self,
        backup: &BlobClient,
    ) -> Result<Option<ConsumerOutcome>, ConsumerError> {
        let Some(adf) = &self.app.adf else {
            return Err(ConsumerError::Copy {
                what: self.backup_what(),
                detail: "the ADF engine is selected but not configured".into(),
            });
        };
        let lease = if self.app.config.use_lease {
            match HeldLease::acquire(self.source.clone(), &self.state.etag, &self.source_what).await
            {
                Ok(lease) => Some(lease),
                Err(e) if e.is_status(azure_core::http::StatusCode::PreconditionFailed) => {
                    return Ok(Some(outdated(
                        "the blob changed before it could be leased".into(),
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        let parameters = PipelineParameters {
            container: self.request.container.clone(),
            container_backup: self.backup_container.clone(),
            blob_name: self.request.blob_name.clone(),
            blob_name_backup: self.backup_name.clone(),
        };
        let run = async {
            let run_id = adf.create_run(&parameters).await?;
            adf.wait_for_run(&run_id).await
        }
        .await;
        let released = match lease {
            Some(lease) => lease.release().await,
            None => Ok(()),
        };
        run?;
        released?;
        if !self.app.config.use_lease {
            // Unleased, ADF copies whatever is current when it runs: make sure that was still
            // this version, or the backup would hold newer content under this version's name.
            let now = blob_state(&self.source, &self.source_what).await?;
            if now.as_ref().map(|s| s.etag.as_str()) != Some(self.state.etag.as_str()) {
                backup.delete(None).await.during(|| {
                    format!(
                        "removing a backup of the wrong version {}",
                        self.backup_what()
                    )
                })?;
                return Ok(Some(outdated(
                    "the blob changed while the pipeline copied it; its copy was removed".into(),
                )));
            }
        }
        Ok(None)
    }

    /// The backup exists and has the source version's length; returns its state.
    async fn verify(&self, backup: &BlobClient) -> Result<BlobState, ConsumerError> {
        let what = self.backup_what();
        match blob_state(backup, &what).await? {
            Some(state) if state.content_length == self.state.content_length => Ok(state),
            Some(state) => Err(ConsumerError::Copy {
                what,
                detail: format!(
                    "it has {} bytes, the source version {}",
                    state.content_length, self.state.content_length
                ),
            }),
            None => Err(ConsumerError::Copy {
                what,
                detail: "the copy reported success but the backup does not exist".into(),
            }),
        }
    }

    /// Writes where the backup came from into its metadata, unless `current` (the backup's
    /// state as just read) already says so.
    async fn stamp(&self, backup: &BlobClient, current: &BlobState) -> Result<(), ConsumerError> {
        let metadata = source_metadata(self.request, &self.state);
        let what = self.backup_what();
        if metadata
            .iter()
            .all(|(k, v)| current.metadata.get(k) == Some(v))
        {
            return Ok(());
        }
        backup
            .set_metadata(&metadata, None)
            .await
            .during(|| format!("stamping metadata on {what}"))?;
        Ok(())
    }
}

fn source_metadata(request: &BackupRequest, state: &BlobState) -> HashMap<String, String> {
    HashMap::from([
        (META_SOURCE_CONTAINER.to_owned(), request.container.clone()),
        (
            META_SOURCE_BLOB.to_owned(),
            utf8_percent_encode(&request.blob_name, METADATA_ENCODE).to_string(),
        ),
        (META_SOURCE_ETAG.to_owned(), state.etag.clone()),
        (
            META_SOURCE_LAST_MODIFIED.to_owned(),
            state
                .last_modified
                .format(&Rfc3339)
                .unwrap_or_else(|_| state.last_modified.to_string()),
        ),
    ])
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

    #[test]
    fn metadata_names_the_source_in_ascii() {
        let request = BackupRequest::new("lake", "dir/ünï cødé \"q\".csv", "0x1");
        let state = BlobState {
            etag: "0x1".into(),
            last_modified: time::macros::datetime!(2026-11-24 14:17:34 UTC),
            content_length: 3,
            content_md5: None,
            metadata: HashMap::new(),
            copy_status: None,
            copy_status_description: None,
        };
        let metadata = source_metadata(&request, &state);
        let encoded = &metadata[META_SOURCE_BLOB];
        assert!(encoded.is_ascii());
        assert_eq!(
            percent_encoding::percent_decode_str(encoded)
                .decode_utf8()
                .unwrap(),
            request.blob_name
        );
        assert_eq!(metadata[META_SOURCE_LAST_MODIFIED], "2026-11-24T14:17:34Z");
    }
}
