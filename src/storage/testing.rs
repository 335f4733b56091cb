//! Test support (feature `test-support`): what the tests, benchmarks and the demo do to an
//! account that the product never does — write a blob of any type with any properties, delete
//! one with its snapshots, set a tier or tags, take a lease and break it, list a container
//! page by page, drain a queue, set the account's soft delete — named for what a test does, so
//! that no test, benchmark or tool outside `storage` speaks to the SDK. Where the product's own
//! operations fit ([`Blob::read`], [`Blob::probe`], [`Blob::take_snapshot`], [`Queue::send`],
//! [`Queue::take`], ...), callers use those.
//!
//! Requests go through the account's own pipeline (its credential, retries and transport), as
//! the product's do. Writes here send metadata names as the SDK sends them (lowercased): a test
//! that needs names written with capitals writes them by raw HTTP, or through the product.
//!
//! Only `cargo test`, `cargo bench` and `lakebackup-devtools` build it: the crate enables the
//! feature for its own tests and benchmarks (a dev-dependency on itself), and the release build
//! never does.

use std::collections::HashMap;

use azure_core::{
    credentials::SecretBytes,
    http::{RequestContent, Url},
};
use azure_storage_blob::{
    models::{
        AccessTier, AppendBlobClientCreateOptions, BlobClientBreakLeaseOptions,
        BlobClientDeleteOptions, BlobClientGetPropertiesResultHeaders, BlobClientUploadOptions,
        BlobContainerClientListBlobsOptions, BlobServiceClientListContainersOptions,
        BlobServiceProperties, BlobTags, BlockBlobClientCommitBlockListOptions, BlockLookupList,
        DeleteSnapshotsOptionType, HttpRange, ListBlobsIncludeItem, PageBlobClientCreateOptions,
        RetentionPolicy,
    },
    BlobClient, BlobContainerClient,
};
use futures::TryStreamExt;

use super::{
    sas::{AccountSasGrant, SasProtocol},
    Blob, Container, StorageAccount, StorageError, StorageResultExt,
};
use crate::core::{
    etag::normalize_etag,
    properties::{tags_header, ContentHeaders, Tags},
};

/// What a test writes with a blob's bytes: its metadata, content headers, index tags, tier and
/// a Content-MD5 to store as given (the service checks none of it against the bytes on Put Block
/// List or a blob's creation).
#[derive(Debug, Clone, Default)]
pub struct NewBlob {
    pub metadata: HashMap<String, String>,
    pub headers: ContentHeaders,
    pub tags: Tags,
    /// `Hot`, `Cool`, `Cold`, `Archive`: set with the write (block blobs only).
    pub tier: Option<String>,
    /// Stored as the blob's Content-MD5 (block blobs only); `None`: Put Blob computes one, Put
    /// Block List stores none.
    pub md5: Option<Vec<u8>>,
}

impl NewBlob {
    pub fn with_metadata<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            metadata: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ..Self::default()
        }
    }

    pub fn with_tags<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            tags: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ..Self::default()
        }
    }

    fn metadata(&self) -> Option<HashMap<String, String>> {
        (!self.metadata.is_empty()).then(|| self.metadata.clone())
    }

    fn tags(&self) -> Option<String> {
        (!self.tags.is_empty()).then(|| tags_header(&self.tags))
    }

    fn tier(&self) -> Option<AccessTier> {
        self.tier.as_deref().and_then(|tier| tier.parse().ok())
    }
}

/// The version an upload wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// Without quotes.
    pub etag: String,
    pub last_modified: time::OffsetDateTime,
}

/// One entry of a listing with snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub snapshot: Option<String>,
    /// Without quotes.
    pub etag: String,
}

/// A blob's lease state, as Get Blob Properties says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    Available,
    Leased,
    Expired,
    Breaking,
    Broken,
}

impl StorageAccount {
    /// The names of the account's containers, page by page as the service sends them.
    pub async fn container_name_pages(&self) -> Result<Vec<Vec<String>>, StorageError> {
        let operation = || "listing containers".to_owned();
        let service = self.blob_service()?;
        let options = BlobServiceClientListContainersOptions::default();
        let mut pages = service
            .list_containers(Some(options))
            .during(operation)?
            .into_pages();
        let mut names = Vec::new();
        while let Some(page) = pages.try_next().await.during(operation)? {
            let page = page.into_model().during(operation)?;
            names.push(
                page.container_items
                    .into_iter()
                    .filter_map(|c| c.name)
                    .collect(),
            );
        }
        Ok(names)
    }

    /// Turns blob soft delete on with a retention of `days` (Set Blob Service Properties).
    pub async fn enable_blob_soft_delete(&self, days: u32) -> Result<(), StorageError> {
        let operation = || "setting the blob service's properties".to_owned();
        let properties = BlobServiceProperties {
            delete_retention_policy: Some(RetentionPolicy {
                enabled: Some(true),
                days: Some(days as i32),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.blob_service()?
            .set_properties(
                RequestContent::try_from(properties).during(operation)?,
                None,
            )
            .await
            .during(operation)?;
        Ok(())
    }
}

impl Container {
    /// Creates the container; fails when it exists.
    pub async fn create(&self) -> Result<(), StorageError> {
        self.sdk()
            .create(None)
            .await
            .during(|| format!("creating container {}", self.name()))?;
        Ok(())
    }

    /// Deletes the container, with every blob in it.
    pub async fn delete(&self) -> Result<(), StorageError> {
        self.sdk()
            .delete(None)
            .await
            .during(|| format!("deleting container {}", self.name()))?;
        Ok(())
    }

    /// Every entry, snapshots included, in the service's order.
    pub async fn entries(&self) -> Result<Vec<Entry>, StorageError> {
        let operation = || format!("listing {}", self.name());
        let options = BlobContainerClientListBlobsOptions {
            include: Some(vec![ListBlobsIncludeItem::Snapshots]),
            ..Default::default()
        };
        let mut pages = self
            .sdk()
            .list_blobs(Some(options))
            .during(operation)?
            .into_pages();
        let mut entries = Vec::new();
        while let Some(page) = pages.try_next().await.during(operation)? {
            for item in page.into_model().during(operation)?.blob_items {
                let etag = item
                    .properties
                    .and_then(|p| p.etag)
                    .map(|etag| etag.to_string().trim_matches('"').to_owned())
                    .unwrap_or_default();
                entries.push(Entry {
                    name: item.name.unwrap_or_default(),
                    snapshot: item.snapshot.filter(|s| !s.is_empty()),
                    etag,
                });
            }
        }
        Ok(entries)
    }

    /// The names of each page of a plain listing, `maxresults` as asked by the caller (the
    /// service's default when `None`).
    pub async fn name_pages(
        &self,
        maxresults: Option<u32>,
    ) -> Result<Vec<Vec<String>>, StorageError> {
        let operation = || format!("listing {}", self.name());
        let options = BlobContainerClientListBlobsOptions {
            maxresults: maxresults.map(|n| n as i32),
            ..Default::default()
        };
        let mut pages = self
            .sdk()
            .list_blobs(Some(options))
            .during(operation)?
            .into_pages();
        let mut names = Vec::new();
        while let Some(page) = pages.try_next().await.during(operation)? {
            let page = page.into_model().during(operation)?;
            names.push(page.blob_items.into_iter().filter_map(|b| b.name).collect());
        }
        Ok(names)
    }
}

impl Blob {
    fn client(&self) -> &BlobClient {
        self.sdk()
    }

    /// Writes `bytes` as a block blob (Put Blob, or blocks for a large one), replacing what
    /// stands under the name.
    pub async fn upload(&self, bytes: impl Into<Vec<u8>>) -> Result<Uploaded, StorageError> {
        self.upload_with(bytes, &NewBlob::default()).await
    }

    /// As [`Blob::upload`], with `new`'s metadata, headers, tags, tier and stored MD5.
    pub async fn upload_with(
        &self,
        bytes: impl Into<Vec<u8>>,
        new: &NewBlob,
    ) -> Result<Uploaded, StorageError> {
        let headers = new.headers.clone();
        let options = BlobClientUploadOptions {
            metadata: new.metadata(),
            blob_content_type: headers.content_type,
            blob_content_encoding: headers.content_encoding,
            blob_content_language: headers.content_language,
            blob_content_disposition: headers.content_disposition,
            blob_cache_control: headers.cache_control,
            blob_content_md5: new.md5.clone(),
            blob_tags_string: new.tags(),
            tier: new.tier(),
            ..Default::default()
        };
        let what = || format!("uploading {}", self.what());
        let uploaded = self
            .client()
            .upload(RequestContent::from(bytes.into()), Some(options))
            .await
            .during(what)?;
        match (uploaded.etag, uploaded.last_modified) {
            (Some(etag), Some(last_modified)) => Ok(Uploaded {
                etag: normalize_etag(etag.as_ref()).to_owned(),
                last_modified,
            }),
            _ => Err(StorageError::other(
                what(),
                "the service sent no ETag or Last-Modified",
            )),
        }
    }

    /// Writes `blocks` as a block blob: each staged as it comes (a lazy iterator holds one
    /// block at a time), then one Put Block List with `new`'s properties. The service keeps
    /// `new.md5` exactly as given, or none, without checking it.
    pub async fn put_block_list<B: AsRef<[u8]>>(
        &self,
        blocks: impl IntoIterator<Item = B>,
        new: &NewBlob,
    ) -> Result<(), StorageError> {
        let block_blob = self.client().block_blob_client();
        let mut ids = Vec::new();
        for (i, block) in blocks.into_iter().enumerate() {
            let block = block.as_ref();
            let id = format!("block-{i:06}").into_bytes();
            block_blob
                .stage_block(
                    &id,
                    block.len() as u64,
                    RequestContent::from(block.to_vec()),
                    None,
                )
                .await
                .during(|| format!("staging block {i} of {}", self.what()))?;
            ids.push(id);
        }
        let list = BlockLookupList {
            latest: Some(ids),
            ..Default::default()
        };
        let headers = new.headers.clone();
        let options = BlockBlobClientCommitBlockListOptions {
            metadata: new.metadata(),
            blob_content_type: headers.content_type,
            blob_content_encoding: headers.content_encoding,
            blob_content_language: headers.content_language,
            blob_content_disposition: headers.content_disposition,
            blob_cache_control: headers.cache_control,
            blob_content_md5: new.md5.clone(),
            blob_tags_string: new.tags(),
            tier: new.tier(),
            ..Default::default()
        };
        let commit = || format!("committing the block list of {}", self.what());
        block_blob
            .commit_block_list(list.try_into().during(commit)?, Some(options))
            .await
            .during(commit)?;
        Ok(())
    }

    /// Creates an empty append blob with `new`'s metadata, headers and tags.
    pub async fn create_append_blob(&self, new: &NewBlob) -> Result<(), StorageError> {
        let headers = new.headers.clone();
        let options = AppendBlobClientCreateOptions {
            metadata: new.metadata(),
            blob_content_type: headers.content_type,
            blob_content_encoding: headers.content_encoding,
            blob_content_language: headers.content_language,
            blob_content_disposition: headers.content_disposition,
            blob_cache_control: headers.cache_control,
            blob_tags_string: new.tags(),
            ..Default::default()
        };
        self.client()
            .append_blob_client()
            .create(Some(options))
            .await
            .during(|| format!("creating append blob {}", self.what()))?;
        Ok(())
    }

    /// Appends `bytes` to an append blob (Append Block).
    pub async fn append(&self, bytes: &[u8]) -> Result<(), StorageError> {
        self.client()
            .append_blob_client()
            .append_block(
                RequestContent::from(bytes.to_vec()),
                bytes.len() as u64,
                None,
            )
            .await
            .during(|| format!("appending to {}", self.what()))?;
        Ok(())
    }

    /// Creates a page blob of `size` bytes (a multiple of 512), all zeros, with `new`'s
    /// metadata, headers and tags.
    pub async fn create_page_blob(&self, size: u64, new: &NewBlob) -> Result<(), StorageError> {
        let headers = new.headers.clone();
        let options = PageBlobClientCreateOptions {
            metadata: new.metadata(),
            blob_content_type: headers.content_type,
            blob_content_encoding: headers.content_encoding,
            blob_content_language: headers.content_language,
            blob_content_disposition: headers.content_disposition,
            blob_cache_control: headers.cache_control,
            blob_tags_string: new.tags(),
            ..Default::default()
        };
        self.client()
            .page_blob_client()
            .create(size, Some(options))
            .await
            .during(|| format!("creating page blob {}", self.what()))?;
        Ok(())
    }

    /// Writes `bytes` (a multiple of 512) to a page blob at `offset` (Put Page).
    pub async fn put_pages(&self, offset: u64, bytes: &[u8]) -> Result<(), StorageError> {
        let length = bytes.len() as u64;
        self.client()
            .page_blob_client()
            .upload_pages(
                RequestContent::from(bytes.to_vec()),
                length,
                HttpRange::new(offset, length),
                None,
            )
            .await
            .during(|| format!("writing pages of {}", self.what()))?;
        Ok(())
    }

    /// A page blob's valid page ranges, `(start, end)` with `end` exclusive, as the service
    /// lists them.
    pub async fn valid_page_ranges(&self) -> Result<Vec<(u64, u64)>, StorageError> {
        let what = || format!("listing the page ranges of {}", self.what());
        let mut pager = self
            .client()
            .page_blob_client()
            .list_page_ranges(None)
            .during(what)?;
        let mut ranges = Vec::new();
        while let Some(page) = pager.try_next().await.during(what)? {
            for range in page.into_model().during(what)?.page_ranges {
                let (Some(start), Some(end)) = (range.start, range.end) else {
                    continue;
                };
                ranges.push((start as u64, end as u64 + 1));
            }
        }
        Ok(ranges)
    }

    /// Deletes the blob with all its snapshots, as a user deletes a file.
    pub async fn delete_with_snapshots(&self) -> Result<(), StorageError> {
        self.client()
            .delete(Some(BlobClientDeleteOptions {
                delete_snapshots: Some(DeleteSnapshotsOptionType::Include),
                ..Default::default()
            }))
            .await
            .during(|| format!("deleting {} with its snapshots", self.what()))?;
        Ok(())
    }

    /// Sets the blob's access tier (Set Blob Tier): `Hot`, `Cool`, `Cold` or `Archive`.
    pub async fn set_tier(&self, tier: &str) -> Result<(), StorageError> {
        let what = || format!("setting the tier of {} to {tier}", self.what());
        let tier: AccessTier = tier
            .parse()
            .map_err(|_| StorageError::other(what(), "no such tier"))?;
        self.client().set_tier(tier, None).await.during(what)?;
        Ok(())
    }

    /// Replaces the blob's index tags.
    pub async fn set_tags(&self, tags: &Tags) -> Result<(), StorageError> {
        let what = || format!("setting the tags of {}", self.what());
        let tags: BlobTags = tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<HashMap<_, _>>()
            .into();
        self.client()
            .set_tags(tags.try_into().during(what)?, None)
            .await
            .during(what)?;
        Ok(())
    }

    /// Replaces the blob's metadata whatever its version (names lowercased, as the SDK sends
    /// them); the product's [`Blob::set_metadata`] is conditional.
    pub async fn replace_metadata(
        &self,
        metadata: &HashMap<String, String>,
    ) -> Result<(), StorageError> {
        self.client()
            .set_metadata(metadata, None)
            .await
            .during(|| format!("setting the metadata of {}", self.what()))?;
        Ok(())
    }

    /// The blob's lease state; `None` when the service does not say.
    pub async fn lease_state(&self) -> Result<Option<LeaseState>, StorageError> {
        use azure_storage_blob::models::LeaseState as Sdk;
        let what = || format!("reading the lease state of {}", self.what());
        let properties = self.client().get_properties(None).await.during(what)?;
        Ok(properties
            .lease_state()
            .during(what)?
            .map(|state| match state {
                Sdk::Available => LeaseState::Available,
                Sdk::Leased => LeaseState::Leased,
                Sdk::Expired => LeaseState::Expired,
                Sdk::Breaking => LeaseState::Breaking,
                _ => LeaseState::Broken,
            }))
    }

    /// Takes a lease of `seconds` (15 to 60, or -1: infinite) and returns its id; the product's
    /// [`super::lease::HeldLease`] renews and releases its own.
    pub async fn acquire_lease(&self, seconds: i32) -> Result<String, StorageError> {
        use azure_storage_blob::models::BlobClientAcquireLeaseResultHeaders;
        let what = || format!("leasing {}", self.what());
        let response = self
            .client()
            .acquire_lease(seconds, None)
            .await
            .during(what)?;
        response
            .lease_id()
            .during(what)?
            .ok_or_else(|| StorageError::other(what(), "the service sent no lease id"))
    }

    pub async fn release_lease(&self, lease_id: &str) -> Result<(), StorageError> {
        self.client()
            .release_lease(lease_id.to_owned(), None)
            .await
            .during(|| format!("releasing the lease of {}", self.what()))?;
        Ok(())
    }

    /// Breaks the blob's lease at once, as an operator would.
    pub async fn break_lease(&self) -> Result<(), StorageError> {
        self.client()
            .break_lease(Some(BlobClientBreakLeaseOptions {
                break_period: Some(0),
                ..Default::default()
            }))
            .await
            .during(|| format!("breaking the lease of {}", self.what()))?;
        Ok(())
    }

    /// Starts an asynchronous copy (Copy Blob) from `source`, a URL the service can read.
    pub async fn start_copy_from(&self, source: &str) -> Result<(), StorageError> {
        self.client()
            .start_copy_from_url(source.to_owned(), None)
            .await
            .during(|| format!("copying into {}", self.what()))?;
        Ok(())
    }
}

/// Get Container Properties of the container at `url` with no credential but what the URL
/// carries: `Err` holds the service's refusal.
pub async fn container_properties_unsigned(url: &Url) -> Result<(), StorageError> {
    let what = || format!("reading container {url} without a credential");
    BlobContainerClient::new(url.clone(), None, None)
        .during(what)?
        .get_properties(None)
        .await
        .during(what)?;
    Ok(())
}

/// Get Blob Properties of the blob at `url` with no credential but what the URL carries (a
/// SAS): `Err` holds the service's refusal.
pub async fn blob_properties_unsigned(url: &Url) -> Result<(), StorageError> {
    let what = || "reading a blob by its URL alone".to_owned();
    BlobClient::new(url.clone(), None, None)
        .during(what)?
        .get_properties(None)
        .await
        .during(what)?;
    Ok(())
}

/// An account SAS query string (without `?`) signed with `key` (the account key's bytes).
pub fn account_sas(account: &str, key: &[u8], grant: AccountSasGrant<'_>) -> String {
    super::sas::account_sas(account, &SecretBytes::new(key.to_vec()), grant)
        .secret()
        .to_owned()
}

/// A read-only service SAS query string (without `?`) for one blob or snapshot, signed with
/// `key` (the account key's bytes).
pub fn read_blob_sas(
    account: &str,
    key: &[u8],
    container: &str,
    blob: &str,
    snapshot: Option<&str>,
    expiry: time::OffsetDateTime,
    protocol: SasProtocol,
) -> String {
    super::sas::read_blob_sas(
        account,
        &SecretBytes::new(key.to_vec()),
        container,
        blob,
        snapshot,
        expiry,
        protocol,
    )
    .secret()
    .to_owned()
}

/// `instant` as an HTTP date (RFC 7231), as `x-ms-date` and `Date` carry it.
pub fn http_date(instant: time::OffsetDateTime) -> String {
    azure_core::time::to_rfc7231(&instant)
}
