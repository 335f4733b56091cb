//! A container of one account, as the engines see it: a named thing with the operations the
//! product performs on it, each conditional where it must be, every failure a [`StorageError`];
//! its blobs are [`Blob`]s. The SDK's client stays behind it.

use std::sync::Arc;

use azure_core::http::StatusCode;
use azure_storage_blob::BlobContainerClient;
use time::OffsetDateTime;

use super::{Blob, StorageError};
use crate::core::life::{record_metadata, Record};

/// One container of one account.
#[derive(Clone)]
pub struct Container {
    client: Arc<BlobContainerClient>,
    name: String,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Container({})", self.name)
    }
}

impl Container {
    pub(super) fn new(client: BlobContainerClient, name: &str) -> Self {
        Self {
            client: Arc::new(client),
            name: name.to_owned(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The SDK's client: for the rest of `storage`, never outside it.
    pub(in crate::storage) fn sdk(&self) -> &BlobContainerClient {
        &self.client
    }

    /// Blob `name` of this container.
    pub fn blob(&self, name: &str) -> Blob {
        Blob::new(self.client.blob_client(name), self.clone(), name)
    }

    pub async fn exists(&self) -> Result<bool, StorageError> {
        match self.client.get_properties(None).await {
            Ok(_) => Ok(true),
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => Ok(false),
            Err(e) => Err(StorageError::new(
                format!("reading container {}", self.name),
                e,
            )),
        }
    }

    /// The container's ETag (unquoted) and Last-Modified (Get Container Properties); `None`
    /// when it does not exist.
    pub async fn etag_and_modified(
        &self,
    ) -> Result<Option<(String, time::OffsetDateTime)>, StorageError> {
        use azure_storage_blob::models::BlobContainerClientGetPropertiesResultHeaders as _;
        let what = || format!("reading container {}", self.name);
        let response = match self.client.get_properties(None).await {
            Ok(response) => response,
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => return Ok(None),
            Err(e) => return Err(StorageError::new(what(), e)),
        };
        let etag = response.etag().ok().flatten();
        let modified = response.last_modified().ok().flatten();
        match (etag, modified) {
            (Some(etag), Some(modified)) => Ok(Some((
                crate::core::etag::normalize_etag(etag.as_ref()).to_owned(),
                modified,
            ))),
            _ => Err(StorageError::other(
                what(),
                "the answer had no ETag or Last-Modified",
            )),
        }
    }

    /// Creates the container unless it exists already (another instance may have just made it).
    pub async fn create_if_missing(&self) -> Result<(), StorageError> {
        match self.client.create(None).await {
            Ok(_) => Ok(()),
            Err(e) if e.http_status() == Some(StatusCode::Conflict) => Ok(()),
            Err(e) => Err(StorageError::new(
                format!("creating container {}", self.name),
                e,
            )),
        }
    }

    /// Writes one record of a life beside its name's backups, create-only; `false` when it was
    /// there already (or cannot be named: the name would be too long for Azure, which is
    /// logged).
    pub async fn write_record(
        &self,
        record: &Record,
        seen: OffsetDateTime,
    ) -> Result<bool, StorageError> {
        let name = match record.blob_name() {
            Ok(name) => name,
            Err(error) => {
                tracing::warn!(blob = record.name, %error, "the record's name would be too long; not recorded");
                return Ok(false);
            }
        };
        let written = self
            .blob(&name)
            .create(Vec::new(), record_metadata(seen))
            .await
            .map_err(|e| {
                e.context(format!(
                    "recording a change of {}/{}",
                    self.name, record.name
                ))
            })?;
        if written {
            tracing::info!(
                blob = record.name,
                life = record.life,
                change = ?record.change,
                sequence = record.sequence,
                "life recorded"
            );
        }
        Ok(written)
    }
}
