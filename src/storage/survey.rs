//! What an account, a container and a queue say about their own set-up, for `lakebackup doctor`:
//! whether the account answers (at the account, or in one container, for a role or SAS that
//! reaches no further), its blob soft delete (its namespace is `storage::namespace`'s), a
//! container's immutability policy or legal hold, a queue's depth. Each is one read-only request.

use azure_core::http::{PageIterator, Response, StatusCode, XmlFormat};
use azure_storage_blob::models::{
    BlobContainerClientGetPropertiesResultHeaders, BlobContainerClientListBlobsOptions,
    BlobServiceClientListContainersOptions, ListContainersResponse,
};
use azure_storage_queue::models::QueueClientGetPropertiesResultHeaders;
use futures::TryStreamExt;

use super::{Container, Queue, StorageAccount, StorageError, StorageResultExt};

/// How an account's blob service is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobServiceSetup {
    /// Blob soft delete: its retention in days when on, `None` when off.
    pub blob_soft_delete_days: Option<u32>,
}

/// What a container's properties say protects its blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerProtection {
    /// A time-based retention policy (WORM), locked or not.
    pub immutability_policy: bool,
    pub legal_hold: bool,
    /// Version-level immutability (immutable storage with versioning).
    pub version_level_worm: bool,
}

impl StorageAccount {
    /// Whether the account answers this connection's credentials at the account: one container
    /// of one page (List Containers, which a role assigned on a container, or a SAS of one
    /// container or without `srt=s`, may not do).
    pub async fn reach(&self) -> Result<(), StorageError> {
        let operation = || "listing containers".to_owned();
        self.container_pages(operation)?
            .try_next()
            .await
            .during(operation)?;
        Ok(())
    }

    /// List Containers, one container a page.
    pub(super) fn container_pages(
        &self,
        operation: impl Fn() -> String + Copy,
    ) -> Result<PageIterator<Response<ListContainersResponse, XmlFormat>>, StorageError> {
        let pager = self
            .blob_service()?
            .list_containers(Some(BlobServiceClientListContainersOptions {
                maxresults: Some(1),
                ..Default::default()
            }))
            .during(operation)?;
        Ok(pager.into_pages())
    }

    /// The blob service's properties (Get Blob Service Properties).
    pub async fn blob_service_setup(&self) -> Result<BlobServiceSetup, StorageError> {
        let operation = || "reading the blob service's properties".to_owned();
        let properties = self
            .blob_service()?
            .get_properties(None)
            .await
            .during(operation)?
            .into_model()
            .during(operation)?;
        let soft_delete = properties
            .delete_retention_policy
            .filter(|policy| policy.enabled == Some(true))
            .map(|policy| policy.days.unwrap_or_default().max(0) as u32);
        Ok(BlobServiceSetup {
            blob_soft_delete_days: soft_delete,
        })
    }
}

impl Container {
    /// Whether the account answers this connection's credentials in this container: List Blobs
    /// of one entry under the doctor's reserved prefix, which lists nothing (the request a
    /// container-scoped role or a container SAS with `l` is allowed; 404 `ContainerNotFound`
    /// when it does not exist).
    pub async fn reach(&self) -> Result<(), StorageError> {
        let operation = || format!("listing blobs of {}", self.name());
        let mut pages = self
            .sdk()
            .list_blobs(Some(BlobContainerClientListBlobsOptions {
                prefix: Some(super::PROBE_PREFIX.to_owned()),
                maxresults: Some(1),
                ..Default::default()
            }))
            .during(operation)?
            .into_pages();
        pages.try_next().await.during(operation)?;
        Ok(())
    }

    /// What protects the container's blobs from deletion and overwrites; `None` when the
    /// container does not exist.
    pub async fn protection(&self) -> Result<Option<ContainerProtection>, StorageError> {
        let operation = || format!("reading container {}", self.name());
        let response = match self.sdk().get_properties(None).await {
            Ok(response) => response,
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => return Ok(None),
            Err(e) => return Err(StorageError::new(operation(), e)),
        };
        Ok(Some(ContainerProtection {
            immutability_policy: response
                .has_immutability_policy()
                .during(operation)?
                .unwrap_or(false),
            legal_hold: response
                .has_legal_hold()
                .during(operation)?
                .unwrap_or(false),
            version_level_worm: response
                .is_immutable_storage_with_versioning_enabled()
                .during(operation)?
                .unwrap_or(false),
        }))
    }
}

impl Queue {
    /// How many messages the queue holds (the service's approximate count, never lower than
    /// the real one); `None` when the queue does not exist.
    pub async fn depth(&self) -> Result<Option<u64>, StorageError> {
        let operation = || format!("reading queue {}", self.name());
        let response = match self.sdk().get_properties(None).await {
            Ok(response) => response,
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => return Ok(None),
            Err(e) => return Err(StorageError::new(operation(), e)),
        };
        let count = response.approximate_messages_count().during(operation)?;
        Ok(Some(count.unwrap_or(0).max(0) as u64))
    }
}
