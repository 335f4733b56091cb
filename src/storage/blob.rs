//! One blob (or one snapshot of it), as the engines see it: the product's operations on it, every
//! one conditional where it must be, every failure a [`StorageError`], every answer a type of the
//! core ([`Version`] for the facts of a version). The SDK's client stays behind it.

use std::{collections::HashMap, sync::Arc};

use azure_core::http::{RequestContent, StatusCode};
use azure_storage_blob::{
    models::{
        BlobClientCreateSnapshotOptions, BlobClientCreateSnapshotResultHeaders,
        BlobClientDeleteOptions, BlobClientDownloadOptions, BlobClientGetPropertiesOptions,
        BlobClientGetPropertiesResultHeaders, BlobClientSetMetadataOptions,
        BlobClientUploadOptions,
    },
    BlobClient,
};
use url::Url;

mod state;

pub use self::state::BlobState;
use super::container::Container;
use super::{ErrorCode, StorageError, StorageResultExt};
use crate::core::{
    etag::{normalize_etag, quoted_etag},
    properties::{BlobProperties, BlobType, ContentHeaders, Tags},
    version::{CopyStatus, Version},
};

/// One blob (or one snapshot of it) of one container.
#[derive(Clone)]
pub struct Blob {
    client: Arc<BlobClient>,
    container: Container,
    name: String,
    snapshot: Option<String>,
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blob({})", self.what())
    }
}

/// A blob read in full.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub bytes: Vec<u8>,
    /// Without quotes.
    pub etag: String,
    /// Names lowercased (HTTP header names): for reading, never for writing back.
    pub metadata: HashMap<String, String>,
}

/// A snapshot just taken: its id and the ETag of the version it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub snapshot: String,
    pub etag: String,
}

impl Blob {
    pub(super) fn new(client: BlobClient, container: Container, name: &str) -> Self {
        Blob {
            client: Arc::new(client),
            container,
            name: name.to_owned(),
            snapshot: None,
        }
    }

    /// `container/name` (and the snapshot), for messages.
    pub fn what(&self) -> String {
        match &self.snapshot {
            Some(id) => format!("{}/{} (snapshot {id})", self.container.name(), self.name),
            None => format!("{}/{}", self.container.name(), self.name),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn container(&self) -> &str {
        self.container.name()
    }

    /// The snapshot this addresses, if any.
    pub fn snapshot(&self) -> Option<&str> {
        self.snapshot.as_deref()
    }

    /// The SDK's client: for the rest of `storage`, never outside it.
    pub(in crate::storage) fn sdk(&self) -> &Arc<BlobClient> {
        &self.client
    }

    /// The blob's URL (without any signature of the caller's).
    pub(super) fn url(&self) -> &Url {
        self.client.url()
    }

    /// The blob's state now, or `None` when it does not exist, with its metadata names as they
    /// were written. Get Blob Properties carries metadata in `x-ms-meta-*` headers, whose names
    /// reach this process lowercased: a blob with metadata is listed too (one more request),
    /// and its metadata taken from the listing, at the same ETag.
    pub async fn state(&self) -> Result<Option<BlobState>, StorageError> {
        // A blob that changes between the two reads is read again; one that keeps changing is
        // an error (the caller's retry decides).
        for _ in 0..3 {
            let Some(mut state) = self.probe().await? else {
                return Ok(None);
            };
            if state.metadata().is_empty() {
                return Ok(Some(state));
            }
            let listed = super::listing::metadata_as_listed(
                &self.container,
                &self.name,
                self.snapshot.as_deref(),
                state.etag(),
            )
            .await?;
            if let Some(metadata) = listed {
                state.version.metadata = Some(metadata);
                return Ok(Some(state));
            }
        }
        Err(StorageError::other(
            format!("reading properties of {}", self.what()),
            "the blob kept changing between reading its properties and listing its metadata",
        ))
    }

    /// The blob's state now from Get Blob Properties alone (one request), or `None` when it
    /// does not exist. Its metadata names are lowercased (HTTP header names): enough to read a
    /// stamp or see whether there is any, never to write back — [`Blob::state`] has them as
    /// written.
    pub async fn probe(&self) -> Result<Option<BlobState>, StorageError> {
        self.state_of(None).await
    }

    /// The blob's state if it is still version `etag` (`ConditionNotMet` if it is another), or
    /// `None` when it does not exist; metadata names lowercased, as [`Blob::probe`]'s.
    pub async fn state_if_match(&self, etag: &str) -> Result<Option<BlobState>, StorageError> {
        self.state_of(Some(etag)).await
    }

    async fn state_of(&self, if_match: Option<&str>) -> Result<Option<BlobState>, StorageError> {
        let read = || format!("reading properties of {}", self.what());
        let options = BlobClientGetPropertiesOptions {
            if_match: if_match.map(|etag| quoted_etag(etag).into()),
            ..Default::default()
        };
        let response = match self.client.get_properties(Some(options)).await {
            Ok(response) => response,
            // The blob, or its whole container, is not there.
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => return Ok(None),
            Err(e) => return Err(StorageError::new(read(), e)),
        };
        let missing =
            |field: &str| StorageError::other(read(), format!("the service sent no {field}"));
        let copy_status = response.copy_status().during(read)?.map(copy_status_of);
        let version = Version {
            name: self.name.clone(),
            snapshot: self.snapshot.clone(),
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
            content_md5: response
                .content_md5()
                .during(read)?
                .filter(|md5| !md5.is_empty()),
            metadata: Some(response.metadata().during(read)?),
            properties: BlobProperties {
                blob_type: match response.blob_type().during(read)? {
                    Some(azure_storage_blob::models::BlobType::AppendBlob) => BlobType::Append,
                    Some(azure_storage_blob::models::BlobType::PageBlob) => BlobType::Page,
                    _ => BlobType::Block,
                },
                // A tier the account's default gave is not the blob's own.
                access_tier: match response.access_tier_inferred().during(read)? {
                    Some(true) => None,
                    _ => response.access_tier().during(read)?,
                },
                headers: ContentHeaders {
                    content_type: response.content_type().during(read)?,
                    content_encoding: response.content_encoding().during(read)?,
                    content_language: response.content_language().during(read)?,
                    content_disposition: response.content_disposition().during(read)?,
                    cache_control: response.cache_control().during(read)?,
                }
                .normalized(),
                tags: None,
                customer_key: response
                    .encryption_key_sha256()
                    .during(read)?
                    .is_some_and(|sha| !sha.is_empty()),
                // Get Blob Properties does not say it.
                access: None,
                // A directory says it only by its folder mark (`Version::is_directory_placeholder`).
                directory: false,
            },
            copy_status,
        };
        Ok(Some(BlobState {
            version,
            copy_source: response.copy_source().during(read)?,
            copy_id: response.copy_id().during(read)?,
            copy_status_description: response.copy_status_description().during(read)?,
            access_tier: response.access_tier().during(read)?,
            tag_count: response.tag_count().during(read)?.unwrap_or(0).max(0) as u64,
        }))
    }

    /// The blob's index tags.
    pub async fn tags(&self) -> Result<Tags, StorageError> {
        let read = || format!("reading the tags of {}", self.what());
        let tags = self
            .client
            .get_tags(None)
            .await
            .during(read)?
            .into_model()
            .during(read)?;
        Ok(tags
            .blob_tag_set
            .unwrap_or_default()
            .into_iter()
            .filter_map(|tag| Some((tag.key?, tag.value.unwrap_or_default())))
            .collect())
    }

    /// The blob's snapshot `id`.
    pub fn at_snapshot(&self, id: &str) -> Result<Blob, StorageError> {
        let client = self
            .client
            .with_snapshot(id)
            .during(|| format!("addressing a snapshot of {}", self.what()))?;
        Ok(Blob {
            client: Arc::new(client),
            container: self.container.clone(),
            name: self.name.clone(),
            snapshot: Some(id.to_owned()),
        })
    }

    /// Takes a snapshot, of exactly version `if_match` when given.
    pub async fn take_snapshot(&self, if_match: Option<&str>) -> Result<Taken, StorageError> {
        let what = || format!("snapshotting {}", self.what());
        let response = self
            .client
            .create_snapshot(Some(BlobClientCreateSnapshotOptions {
                if_match: if_match.map(|etag| quoted_etag(etag).into()),
                ..Default::default()
            }))
            .await
            .during(what)?;
        let etag = response
            .etag()
            .during(what)?
            .map(|etag| normalize_etag(etag.as_ref()).to_owned());
        let snapshot = response.snapshot().during(what)?;
        match (snapshot, etag) {
            (Some(snapshot), Some(etag)) => Ok(Taken { snapshot, etag }),
            _ => Err(StorageError::other(
                what(),
                "the service answered without the snapshot's id or ETag",
            )),
        }
    }

    /// Deletes the blob (or snapshot), only if it is still version `if_match` when given. A
    /// blob with snapshots is refused (`SnapshotsPresent`): snapshots are never deleted with it.
    pub async fn delete(&self, if_match: Option<&str>) -> Result<(), StorageError> {
        self.client
            .delete(Some(BlobClientDeleteOptions {
                if_match: if_match.map(|etag| quoted_etag(etag).into()),
                ..Default::default()
            }))
            .await
            .during(|| format!("deleting {}", self.what()))?;
        Ok(())
    }

    /// Replaces the blob's metadata, only if it is still version `if_match`.
    pub async fn set_metadata(
        &self,
        metadata: &HashMap<String, String>,
        if_match: &str,
    ) -> Result<(), StorageError> {
        self.set_metadata_etag(metadata, if_match).await.map(drop)
    }

    /// [`Blob::set_metadata`], answering with the blob's ETag after it (where the service
    /// sent one).
    pub async fn set_metadata_etag(
        &self,
        metadata: &HashMap<String, String>,
        if_match: &str,
    ) -> Result<Option<String>, StorageError> {
        let response = self
            .client
            .set_metadata(
                metadata,
                Some(BlobClientSetMetadataOptions {
                    if_match: Some(quoted_etag(if_match).into()),
                    method_options: names_as_written(metadata),
                    ..Default::default()
                }),
            )
            .await
            .during(|| format!("setting the metadata of {}", self.what()))?;
        let etag = response
            .headers()
            .get_optional_str(&azure_core::http::headers::ETAG);
        Ok(etag.map(|e| normalize_etag(e).to_owned()))
    }

    /// The blob's bytes (of version `if_match` only, when given), with its ETag and metadata
    /// (names lowercased, as [`Blob::probe`]'s), in one buffer: for small blobs of the product's
    /// own (ledger entries). Anything that hashes, compares or copies a user's blob reads it in
    /// chunks ([`Blob::read_chunks`]).
    pub async fn read(&self, if_match: Option<&str>) -> Result<Downloaded, StorageError> {
        let what = || format!("reading {}", self.what());
        let downloaded = self
            .client
            .download(Some(BlobClientDownloadOptions {
                if_match: if_match.map(|etag| quoted_etag(etag).into()),
                ..Default::default()
            }))
            .await
            .during(what)?;
        let etag = downloaded
            .properties
            .etag
            .as_ref()
            .map(|e| normalize_etag(e.as_ref()).to_owned())
            .unwrap_or_default();
        let metadata = downloaded.properties.metadata.clone();
        let bytes = downloaded.body.collect().await.during(what)?;
        Ok(Downloaded {
            bytes: bytes.to_vec(),
            etag,
            metadata,
        })
    }

    /// Writes `bytes` with `metadata` as a new blob, only if none stands under the name; `false`
    /// when one does.
    pub async fn create(
        &self,
        bytes: Vec<u8>,
        metadata: HashMap<String, String>,
    ) -> Result<bool, StorageError> {
        let written = self
            .client
            .upload(
                RequestContent::from(bytes),
                Some(BlobClientUploadOptions {
                    if_none_match: Some("*".into()),
                    method_options: names_as_written(&metadata),
                    metadata: Some(metadata),
                    ..Default::default()
                }),
            )
            .await
            .during(|| format!("writing {}", self.what()));
        match written {
            Ok(_) => Ok(true),
            // An immutable container may refuse a create-only write onto an existing blob with its
            // policy rather than the condition: either way the blob is there.
            Err(e) if e.is(ErrorCode::BlobAlreadyExists) || e.is_immutable() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes `bytes` with `metadata` over the blob, only if it is still version `if_match`;
    /// `false` when it is another version (or was deleted) by now.
    pub async fn replace_if_match(
        &self,
        bytes: Vec<u8>,
        metadata: HashMap<String, String>,
        if_match: &str,
    ) -> Result<bool, StorageError> {
        let written = self
            .client
            .upload(
                RequestContent::from(bytes),
                Some(BlobClientUploadOptions {
                    if_match: Some(quoted_etag(if_match).into()),
                    method_options: names_as_written(&metadata),
                    metadata: Some(metadata),
                    ..Default::default()
                }),
            )
            .await
            .during(|| format!("writing {}", self.what()));
        match written {
            Ok(_) => Ok(true),
            Err(e) if e.is(ErrorCode::ConditionNotMet) || e.is(ErrorCode::BlobNotFound) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes `bytes` with `metadata`, replacing whatever stands under the name.
    pub async fn put(
        &self,
        bytes: Vec<u8>,
        metadata: HashMap<String, String>,
    ) -> Result<(), StorageError> {
        self.client
            .upload(
                RequestContent::from(bytes),
                Some(BlobClientUploadOptions {
                    method_options: names_as_written(&metadata),
                    metadata: Some(metadata),
                    ..Default::default()
                }),
            )
            .await
            .during(|| format!("writing {}", self.what()))?;
        Ok(())
    }
}

/// The core's word for the SDK's copy status.
fn copy_status_of(status: azure_storage_blob::models::CopyStatus) -> CopyStatus {
    match status {
        azure_storage_blob::models::CopyStatus::Pending => CopyStatus::Pending,
        azure_storage_blob::models::CopyStatus::Success => CopyStatus::Success,
        azure_storage_blob::models::CopyStatus::Aborted => CopyStatus::Aborted,
        _ => CopyStatus::Failed,
    }
}

/// The options of a call that writes `metadata`: its names go out as written.
pub(super) fn names_as_written(
    metadata: &HashMap<String, String>,
) -> azure_core::http::ClientMethodOptions<'static> {
    let mut context = azure_core::http::Context::new();
    super::metadata_case::keep_case(&mut context, metadata);
    azure_core::http::ClientMethodOptions { context }
}
