//! Rights tried without changing anything, for `lakebackup doctor`: an identity's role, or a
//! key, says what it allows only by what the service answers. Each [`Right`] is tried with the
//! very operation lakebackup performs, aimed where that operation cannot change anything: a blob
//! under a reserved name with a random suffix (`lakebackup-doctor-probe/…`, which no one writes),
//! in the container lakebackup works in, conditional on an ETag no blob has; a message of the
//! real work queue that no queue holds (a random id); Create Container or Create Queue on one
//! that exists. Nothing is ever created.
//!
//! A role may be assigned on one container or one queue (or carry a condition on its path), so a
//! right is tried where lakebackup uses it, by name, never on a container or queue of another
//! name. Where no harmless request on the real queue exists (Put Message adds a message, Get
//! Messages takes one) the right is inferred from the RBAC actions the harmless ones need, or
//! said not tried (see `doctor::rights`).
//!
//! How an answer is read (Azure Storage REST documentation): the service authorizes a request
//! before it looks at the resource, and a request that was allowed meets the missing resource:
//! 404 `BlobNotFound` or `ContainerNotFound` ("Blob Storage error codes": Set Blob Metadata,
//! Snapshot Blob, Delete Blob, Lease Blob, Get/Set Blob Tags, Get Blob Properties of a blob that
//! does not exist), 404 `QueueNotFound` or `MessageNotFound` ("Queue Storage error codes": Put
//! Message, Get Messages, Delete Message, Update Message), 412 `ConditionNotMet` (the ETag
//! condition), 409 `ContainerAlreadyExists` (Create Container on an existing container; a
//! container deleted meanwhile answers 409 `ContainerBeingDeleted`, so none can be created by it),
//! 204 or 409 `QueueAlreadyExists` (Create Queue on an existing queue, by whether its metadata
//! matched). A refusal is 403, and only some of its codes say a right is missing
//! ("Shared access signature error codes"; "Authorize access to blobs using Microsoft Entra
//! ID"): `AuthorizationPermissionMismatch` (a role without the action, a SAS without the
//! permission), `AuthorizationServiceMismatch` and `AuthorizationResourceTypeMismatch` (an
//! account SAS not signed for the service or resource type). Every other 403 refuses the request
//! for another reason — `AuthorizationFailure` (the account's network rules, or another rule),
//! `AuthorizationSourceIPMismatch`, `AuthorizationProtocolMismatch`, `AuthenticationFailed` (a
//! signature or token not accepted), `AccountIsDisabled` — and says nothing of the right: it is
//! reported as such ([`Probed::Blocked`]). Anything else cannot say, and is reported as such.

mod queue;
mod verdict;

use azure_core::http::RequestContent;
use azure_storage_blob::{
    models::{
        BlobClientAcquireLeaseOptions, BlobClientCreateSnapshotOptions, BlobClientDeleteOptions,
        BlobClientSetMetadataOptions, BlobClientSetTagsOptions,
        BlobContainerClientListBlobsOptions, BlobTags,
    },
    BlobClient,
};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{
    sas_grant::{Right, SasGrant, SasGrantError},
    StorageAccount, StorageAuth, StorageError, StorageResultExt,
};
pub use queue::QueueProbe;
use verdict::judged;
pub use verdict::{Probed, Refusal};

/// Where probe blobs are named: no product blob is ever written under it.
pub const PROBE_PREFIX: &str = "lakebackup-doctor-probe/";
/// Queues a probe names start so.
pub const PROBE_QUEUE_PREFIX: &str = "lakebackup-doctor-probe-";
/// The condition of every probe that could change a blob: no blob's ETag is this.
const NO_SUCH_ETAG: &str = "\"lakebackup-doctor-no-such-etag\"";

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

impl StorageAccount {
    /// What the connection's SAS grants, read from its fields; `None` without a SAS.
    pub fn sas_grant(&self) -> Option<Result<SasGrant, SasGrantError>> {
        match &self.connection().auth {
            StorageAuth::Sas { query } => Some(SasGrant::parse(query.secret())),
            _ => None,
        }
    }

    /// Tries the blob `right` in `container` by an operation that changes nothing.
    pub async fn probe_blob(&self, right: Right, container: &str) -> Probed {
        judged(self.try_blob_right(right, container).await)
    }

    /// Tries Create Container on `existing`, a container that exists.
    pub async fn probe_create_container(&self, existing: &str) -> Probed {
        judged(self.try_create_container(existing).await)
    }

    /// Tries Get User Delegation Key (an identity's, valid ten minutes).
    pub async fn probe_delegation_key(&self) -> Probed {
        let until = OffsetDateTime::now_utc() + time::Duration::minutes(10);
        judged(self.delegation_key(until).await)
    }

    /// Tries `probe` on `queue`, a queue lakebackup uses.
    pub async fn probe_queue(&self, probe: QueueProbe, queue: &str) -> Probed {
        judged(self.try_queue(probe, queue).await)
    }

    /// Tries `right` (sending or deleting messages) on a queue of a reserved random name, which
    /// does not exist: allowed only to a role that reaches queues of any name.
    pub async fn probe_queue_elsewhere(&self, right: Right) -> Probed {
        let name = format!("{PROBE_QUEUE_PREFIX}{}", &unique_suffix()[..24]);
        match right {
            Right::SendMessages => judged(self.try_send(&name).await),
            Right::DeleteMessages => judged(self.try_queue(QueueProbe::DeleteMessage, &name).await),
            _ => Probed::NotTried("not a right tried on another queue"),
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

    /// A blob operation on a blob that does not exist, conditional where it could write.
    async fn try_blob_right(&self, right: Right, container: &str) -> Result<(), StorageError> {
        let name = format!("{PROBE_PREFIX}{}", unique_suffix());
        let container = self.container(container)?;
        let blob = container.blob(&name);
        let client = blob.sdk();
        let operation = || format!("trying to {} in {}", right.describe(), container.name());
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
            Right::ReadTags => {
                client.get_tags(None).await.during(operation)?;
            }
            _ => try_blob_write(client, right, operation).await?,
        }
        Ok(())
    }

    /// The first container the account lists (one page of one), if any.
    pub async fn first_container(&self) -> Result<Option<String>, StorageError> {
        let operation = || "listing containers".to_owned();
        let mut pages = self.container_pages(operation)?;
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

/// A blob operation that could write, conditional on an ETag no blob has, on a blob that does
/// not exist.
async fn try_blob_write(
    client: &BlobClient,
    right: Right,
    operation: impl Fn() -> String + Copy,
) -> Result<(), StorageError> {
    let no_such_etag = || Some(NO_SUCH_ETAG.to_owned().into());
    match right {
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

#[cfg(test)]
mod tests {
    use super::{queue::no_such_message, *};
    use crate::storage::ErrorCode;

    #[test]
    fn a_403_refuses_and_a_missing_resource_allows() {
        let refused = StorageError::refused("x", 403, ErrorCode::AuthorizationPermissionMismatch);
        assert!(matches!(judged::<()>(Err(refused)), Probed::Refused(_)));
        for code in [
            "AuthorizationServiceMismatch",
            "AuthorizationResourceTypeMismatch",
        ] {
            let refused = StorageError::refused("x", 403, ErrorCode::Other(code.into()));
            assert!(
                matches!(judged::<()>(Err(refused)), Probed::Refused(_)),
                "{code}"
            );
        }
        for (status, code) in [
            (404, ErrorCode::BlobNotFound),
            (404, ErrorCode::Other("QueueNotFound".into())),
            (404, ErrorCode::Other("MessageNotFound".into())),
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
    fn a_refusal_for_another_reason_is_no_missing_right() {
        for (status, code, says) in [
            (403, ErrorCode::AuthorizationFailure, "network rules"),
            (
                403,
                ErrorCode::Other("AuthorizationSourceIPMismatch".into()),
                "sip",
            ),
            (
                403,
                ErrorCode::Other("AuthorizationProtocolMismatch".into()),
                "spr=https",
            ),
            (
                403,
                ErrorCode::Other("AuthenticationFailed".into()),
                "not accepted",
            ),
            (
                401,
                ErrorCode::Other("InvalidAuthenticationInfo".into()),
                "not accepted",
            ),
            (
                403,
                ErrorCode::Other("AccountIsDisabled".into()),
                "disabled",
            ),
            (
                403,
                ErrorCode::Other("SomethingNew".into()),
                "without naming",
            ),
        ] {
            let error = StorageError::refused("x", status, code.clone());
            match judged::<()>(Err(error)) {
                Probed::Blocked(e, why) => {
                    assert!(why.contains(says), "{code:?}: {why}");
                    assert_eq!(e.refusal(), Some(Refusal::Other(why)));
                }
                other => panic!("{code:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn message_ids_no_queue_holds_are_shaped_as_the_services() {
        let (a, b) = (no_such_message(), no_such_message());
        assert_ne!(a, b);
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
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
