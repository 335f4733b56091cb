//! Rights tried without changing anything, for `lakebackup doctor`: an identity's role, or a
//! key, says what it allows only by what the service answers. Each [`Right`] is tried with the
//! very operation lakebackup performs, aimed where that operation cannot change anything: a blob
//! under a reserved name with a random suffix (`lakebackup-doctor-probe/…`, which no one writes),
//! conditional on an ETag no blob has; a queue of such a name; Create Container or Create Queue
//! on one that exists. Nothing is ever created.
//!
//! How an answer is read (Azure Storage REST documentation): the service authorizes a request
//! before it looks at the resource, so a refusal is 403 — `AuthorizationPermissionMismatch`, or
//! `AuthorizationFailure` ("Shared access signature error codes"; "Authorize access to blobs
//! using Microsoft Entra ID") — whether or not the blob exists, and a request that was allowed
//! meets the missing resource: 404 `BlobNotFound` or `ContainerNotFound` ("Blob Storage error
//! codes": Set Blob Metadata, Snapshot Blob, Delete Blob, Lease Blob, Get/Set Blob Tags, Get
//! Blob Properties of a blob that does not exist), 404 `QueueNotFound` ("Queue Storage error
//! codes": Put Message, Get Messages, Delete Message, Update Message on a queue that does not
//! exist), 412 `ConditionNotMet` (the ETag condition), 409 `ContainerAlreadyExists` (Create
//! Container on an existing container; a container deleted meanwhile answers 409
//! `ContainerBeingDeleted`, so none can be created by it), 204 or 409 `QueueAlreadyExists`
//! (Create Queue on an existing queue, by whether its metadata matched). Anything else cannot
//! say, and is reported as such.

use azure_core::http::RequestContent;
use azure_storage_blob::models::{
    BlobClientAcquireLeaseOptions, BlobClientCreateSnapshotOptions, BlobClientDeleteOptions,
    BlobClientSetMetadataOptions, BlobClientSetTagsOptions, BlobContainerClientListBlobsOptions,
    BlobServiceClientListContainersOptions, BlobTags,
};
use azure_storage_queue::models::{QueueClientReceiveMessagesOptions, QueueMessage};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{
    sas_grant::{Right, SasGrant, SasGrantError},
    StorageAccount, StorageAuth, StorageError, StorageResultExt,
};

/// Where probe blobs are named: no product blob is ever written under it.
pub const PROBE_PREFIX: &str = "lakebackup-doctor-probe/";
/// Queues a probe names start so.
pub const PROBE_QUEUE_PREFIX: &str = "lakebackup-doctor-probe-";
/// The condition of every probe that could change a blob: no blob's ETag is this.
const NO_SUCH_ETAG: &str = "\"lakebackup-doctor-no-such-etag\"";

/// What trying a right found.
#[derive(Debug)]
pub enum Probed {
    /// The service let the request through: what it answered (a missing resource, a condition).
    Allowed(String),
    /// Refused with 403: the error, with its code.
    Refused(StorageError),
    /// Failed another way (unreachable, busy, an answer that says nothing of the right).
    Inconclusive(StorageError),
    /// Not tried: why it could not be without changing something.
    NotTried(&'static str),
}

/// Where the rights of one connection are tried.
#[derive(Debug, Clone, Default)]
pub struct ProbeSite {
    /// The container the product works in (it need not exist: the service then answers 404
    /// `ContainerNotFound`, after the role was checked).
    pub container: String,
    /// A container that exists, for Create Container.
    pub existing_container: Option<String>,
    /// A queue that exists, for Create Queue.
    pub existing_queue: Option<String>,
}

/// A name no one else uses: the time, the process and a counter, hashed.
fn unique_suffix() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hash = Sha256::new();
    hash.update(
        OffsetDateTime::now_utc()
            .unix_timestamp_nanos()
            .to_le_bytes(),
    );
    hash.update(std::process::id().to_le_bytes());
    hash.update(
        COUNTER
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_le_bytes(),
    );
    hash.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What an operation that was let through, or refused, says of the right.
fn judged<T>(answer: Result<T, StorageError>) -> Probed {
    match answer {
        Ok(_) => Probed::Allowed("it succeeded".into()),
        Err(e) if e.status == Some(403) => Probed::Refused(e),
        Err(e) if matches!(e.status, Some(404 | 409 | 412)) => {
            let code = match &e.code {
                Some(super::ErrorCode::Other(code)) => code.clone(),
                Some(code) => format!("{code:?}"),
                None => String::new(),
            };
            Probed::Allowed(format!("answered {} {code}", e.status.unwrap_or_default()))
        }
        Err(e) => Probed::Inconclusive(e),
    }
}

impl StorageAccount {
    /// What the connection's SAS grants, read from its fields; `None` without a SAS.
    pub fn sas_grant(&self) -> Option<Result<SasGrant, SasGrantError>> {
        match &self.connection().auth {
            StorageAuth::Sas { query } => Some(SasGrant::parse(query.secret())),
            _ => None,
        }
    }

    /// Tries `right` at `site` by an operation that changes nothing.
    pub async fn probe(&self, right: Right, site: &ProbeSite) -> Probed {
        match right {
            Right::CreateContainers => match &site.existing_container {
                Some(existing) => judged(self.try_create_container(existing).await),
                None => Probed::NotTried("no container exists to try it on without creating one"),
            },
            Right::CreateQueues => match &site.existing_queue {
                Some(existing) => judged(self.try_create_queue(existing).await),
                None => Probed::NotTried("no queue exists to try it on without creating one"),
            },
            Right::DelegationKey => {
                let until = OffsetDateTime::now_utc() + time::Duration::minutes(10);
                judged(self.delegation_key(until).await)
            }
            Right::SendMessages
            | Right::ReceiveMessages
            | Right::DeleteMessages
            | Right::UpdateMessages => judged(self.try_queue_right(right).await),
            _ => judged(self.try_blob_right(right, &site.container).await),
        }
    }

    async fn try_create_container(&self, existing: &str) -> Result<(), StorageError> {
        self.container(existing)?
            .sdk()
            .create(None)
            .await
            .during(|| format!("trying Create Container on {existing}"))?;
        Ok(())
    }

    async fn try_create_queue(&self, existing: &str) -> Result<(), StorageError> {
        self.queue(existing)?
            .sdk()
            .create(None)
            .await
            .during(|| format!("trying Create Queue on {existing}"))?;
        Ok(())
    }

    /// A blob operation on a blob that does not exist, conditional where it could write.
    async fn try_blob_right(&self, right: Right, container: &str) -> Result<(), StorageError> {
        let name = format!("{PROBE_PREFIX}{}", unique_suffix());
        let container = self.container(container)?;
        let blob = container.blob(&name);
        let client = blob.sdk();
        let operation = || format!("trying to {} in {}", right.describe(), container.name());
        let no_such_etag = || Some(NO_SUCH_ETAG.to_owned().into());
        match right {
            Right::ListBlobs => {
                let mut pages = container
                    .sdk()
                    .list_blobs(Some(BlobContainerClientListBlobsOptions {
                        prefix: Some(name.clone()),
                        maxresults: Some(1),
                        ..Default::default()
                    }))
                    .during(operation)?
                    .into_pages();
                pages.try_next().await.during(operation)?;
            }
            Right::ReadBlobs => {
                client.get_properties(None).await.during(operation)?;
            }
            Right::WriteBlobs => {
                let options = BlobClientSetMetadataOptions {
                    if_match: no_such_etag(),
                    ..Default::default()
                };
                let metadata = Default::default();
                client
                    .set_metadata(&metadata, Some(options))
                    .await
                    .during(operation)?;
            }
            Right::Snapshot => {
                let options = BlobClientCreateSnapshotOptions {
                    if_match: no_such_etag(),
                    ..Default::default()
                };
                client
                    .create_snapshot(Some(options))
                    .await
                    .during(operation)?;
            }
            Right::Lease => {
                let options = BlobClientAcquireLeaseOptions {
                    if_match: no_such_etag(),
                    ..Default::default()
                };
                client
                    .acquire_lease(15, Some(options))
                    .await
                    .during(operation)?;
            }
            Right::DeleteBlobs => {
                let options = BlobClientDeleteOptions {
                    if_match: no_such_etag(),
                    ..Default::default()
                };
                client.delete(Some(options)).await.during(operation)?;
            }
            Right::ReadTags => {
                client.get_tags(None).await.during(operation)?;
            }
            Right::WriteTags => {
                let tags: RequestContent<_, _> = BlobTags {
                    blob_tag_set: Some(Vec::new()),
                }
                .try_into()
                .during(operation)?;
                let options = BlobClientSetTagsOptions {
                    if_match: no_such_etag(),
                    ..Default::default()
                };
                client
                    .set_tags(tags, Some(options))
                    .await
                    .during(operation)?;
            }
            _ => return Err(StorageError::other(operation(), "not a blob right")),
        }
        Ok(())
    }

    /// A queue operation on a queue that does not exist.
    async fn try_queue_right(&self, right: Right) -> Result<(), StorageError> {
        let name = format!("{PROBE_QUEUE_PREFIX}{}", &unique_suffix()[..24]);
        let queue = self.queue(&name)?;
        let client = queue.sdk();
        let operation = || {
            format!(
                "trying to {} (a queue that does not exist)",
                right.describe()
            )
        };
        // Shaped as the service's own: a GUID and a base64 receipt.
        let (id, receipt) = ("00000000-0000-0000-0000-000000000000", "AgAAAAMAAAAAAAAA");
        match right {
            Right::SendMessages => {
                let message: RequestContent<_, _> = QueueMessage {
                    message_text: Some(String::new()),
                }
                .try_into()
                .during(operation)?;
                client.send_message(message, None).await.during(operation)?;
            }
            Right::ReceiveMessages => {
                let options = QueueClientReceiveMessagesOptions {
                    number_of_messages: Some(1),
                    ..Default::default()
                };
                client
                    .receive_messages(Some(options))
                    .await
                    .during(operation)?;
            }
            Right::DeleteMessages => {
                client
                    .delete_message(id, receipt, None)
                    .await
                    .during(operation)?;
            }
            Right::UpdateMessages => {
                client
                    .update_message(id, receipt, 0, None)
                    .await
                    .during(operation)?;
            }
            _ => return Err(StorageError::other(operation(), "not a queue right")),
        }
        Ok(())
    }

    /// The first container the account lists (one page of one), if any.
    pub async fn first_container(&self) -> Result<Option<String>, StorageError> {
        let operation = || "listing containers".to_owned();
        let mut pages = self
            .blob_service()?
            .list_containers(Some(BlobServiceClientListContainersOptions {
                maxresults: Some(1),
                ..Default::default()
            }))
            .during(operation)?
            .into_pages();
        // Azure may answer a page with none and a marker: a second page is enough here.
        for _ in 0..2 {
            match pages.try_next().await.during(operation)? {
                Some(page) => {
                    let names = page.into_model().during(operation)?.container_items;
                    if let Some(name) = names.into_iter().find_map(|c| c.name) {
                        return Ok(Some(name));
                    }
                }
                None => break,
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ErrorCode;

    #[test]
    fn a_403_refuses_and_a_missing_resource_allows() {
        let refused = StorageError::refused("x", 403, ErrorCode::AuthorizationPermissionMismatch);
        assert!(matches!(judged::<()>(Err(refused)), Probed::Refused(_)));
        for (status, code) in [
            (404, ErrorCode::BlobNotFound),
            (404, ErrorCode::Other("QueueNotFound".into())),
            (409, ErrorCode::Other("ContainerAlreadyExists".into())),
            (412, ErrorCode::ConditionNotMet),
        ] {
            let answer = judged::<()>(Err(StorageError::refused("x", status, code.clone())));
            assert!(matches!(answer, Probed::Allowed(_)), "{status} {code:?}");
        }
        let busy = StorageError::refused("x", 503, ErrorCode::Other("ServerBusy".into()));
        assert!(matches!(judged::<()>(Err(busy)), Probed::Inconclusive(_)));
        assert!(matches!(judged(Ok(())), Probed::Allowed(_)));
    }

    #[test]
    fn probe_names_are_reserved_and_unique() {
        let (a, b) = (unique_suffix(), unique_suffix());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        let queue = format!("{PROBE_QUEUE_PREFIX}{}", &a[..24]);
        assert!(
            queue.len() <= 63
                && queue
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        );
    }
}
