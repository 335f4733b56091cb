//! Blob-level operations the functions share: reading a blob's state, and a URL another party
//! (the copy engine) can read a blob through.

use std::collections::HashMap;

use azure_storage_blob::{
    models::{BlobClientGetPropertiesResultHeaders, CopyStatus},
    BlobClient,
};
use time::OffsetDateTime;
use url::Url;

use super::{
    sas::{account_sas, AccountSasGrant},
    StorageAccount, StorageAuth, StorageError, StorageResultExt,
};
use crate::core::etag::normalize_etag;

/// What the consumer needs to know about one blob.
#[derive(Debug, Clone)]
pub struct BlobState {
    /// Without quotes.
    pub etag: String,
    pub last_modified: OffsetDateTime,
    pub content_length: u64,
    pub content_md5: Option<Vec<u8>>,
    pub metadata: HashMap<String, String>,
    /// `Some` when the blob is (or was) the destination of a copy.
    pub copy_status: Option<CopyStatus>,
    pub copy_status_description: Option<String>,
}

/// The blob's state, or `None` when it does not exist.
pub async fn blob_state(blob: &BlobClient, what: &str) -> Result<Option<BlobState>, StorageError> {
    let response = match blob.get_properties(None).await {
        Ok(response) => response,
        Err(e) if e.http_status() == Some(azure_core::http::StatusCode::NotFound) => {
            return Ok(None)
        }
        Err(e) => {
            return Err(StorageError::new(
                format!("reading properties of {what}"),
                e,
            ))
        }
    };
    let read = || format!("reading properties of {what}");
    let missing = |field: &str| StorageError::other(read(), format!("the service sent no {field}"));
    Ok(Some(BlobState {
        etag: response
            .etag()
            .during(read)?
            .map(|e| normalize_etag(e.as_ref()).to_owned())
            .ok_or_else(|| missing("ETag"))?,
        last_modified: response
            .last_modified()
            .during(read)?
            .ok_or_else(|| missing("Last-Modified"))?,
        content_length: response.content_length().during(read)?.unwrap_or(0),
        content_md5: response.content_md5().during(read)?,
        metadata: response.metadata().during(read)?,
        copy_status: response.copy_status().during(read)?,
        copy_status_description: response.copy_status_description().during(read)?,
    }))
}

impl StorageAccount {
    /// A URL that lets its holder read `container/blob` until `expiry`, for a server-side copy
    /// from this account: an account SAS signed with the key, or the connection's own SAS.
    pub fn readable_blob_url(
        &self,
        container: &str,
        blob: &str,
        expiry: OffsetDateTime,
    ) -> Result<Url, StorageError> {
        let mut url = self.container(container)?.blob_client(blob).url().clone();
        match &self.connection().auth {
            StorageAuth::SharedKey { account, key } => {
                let sas = account_sas(
                    account,
                    key,
                    AccountSasGrant {
                        services: "b",
                        resource_types: "o",
                        permissions: "r",
                        expiry,
                    },
                );
                url.set_query(Some(sas.secret()));
            }
            // The URL already carries the connection's SAS.
            StorageAuth::Sas { .. } => {}
            StorageAuth::Identity { .. } => {
                return Err(StorageError::other(
                    format!("authorizing a copy from {container}/{blob}"),
                    "the direct copy engine needs a key- or SAS-based SOURCE_STORAGE \
                             connection; with an identity-based one use BACKUP_COPY_ENGINE=adf",
                ))
            }
        }
        Ok(url)
    }
}

/// Polls a copy destination until its copy is no longer pending, or `timeout` passes; returns its
/// final state (`None` when it vanished).
pub async fn wait_for_copy(
    blob: &BlobClient,
    what: &str,
    timeout: std::time::Duration,
    interval: std::time::Duration,
) -> Result<Option<BlobState>, StorageError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let state = blob_state(blob, what).await?;
        let pending = matches!(
            state.as_ref().and_then(|s| s.copy_status.as_ref()),
            Some(CopyStatus::Pending)
        );
        if !pending || tokio::time::Instant::now() >= deadline {
            return Ok(state);
        }
        tokio::time::sleep(interval).await;
    }
}
