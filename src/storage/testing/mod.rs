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
//! never does. A blob's operations are in `blobs`; an account's and a container's here.

mod blobs;

use std::collections::HashMap;

use azure_core::{
    credentials::SecretBytes,
    http::{RequestContent, Url},
};
use azure_storage_blob::{
    models::{
        AccessTier, BlobContainerClientListBlobsOptions, BlobServiceClientListContainersOptions,
        BlobServiceProperties, ListBlobsIncludeItem, ListBlobsResponse, RetentionPolicy,
    },
    BlobClient, BlobContainerClient,
};
use futures::TryStreamExt;

use super::{
    sas::{AccountSasGrant, ReadBlobSas},
    Container, StorageAccount, StorageError, StorageResultExt,
};
#[cfg(doc)]
use super::{Blob, Queue};
use crate::core::properties::{tags_header, ContentHeaders, Tags};

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
        let options = BlobContainerClientListBlobsOptions {
            include: Some(vec![ListBlobsIncludeItem::Snapshots]),
            ..Default::default()
        };
        let mut entries = Vec::new();
        for page in self.listing_pages(options).await? {
            for item in page.blob_items {
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
        let options = BlobContainerClientListBlobsOptions {
            maxresults: maxresults.map(|n| n as i32),
            ..Default::default()
        };
        let pages = self.listing_pages(options).await?;
        Ok(pages
            .into_iter()
            .map(|page| page.blob_items.into_iter().filter_map(|b| b.name).collect())
            .collect())
    }

    /// Every page of a listing with `options`, in the service's order.
    async fn listing_pages(
        &self,
        options: BlobContainerClientListBlobsOptions<'_>,
    ) -> Result<Vec<ListBlobsResponse>, StorageError> {
        let operation = || format!("listing {}", self.name());
        let mut pages = self
            .sdk()
            .list_blobs(Some(options))
            .during(operation)?
            .into_pages();
        let mut models = Vec::new();
        while let Some(page) = pages.try_next().await.during(operation)? {
            models.push(page.into_model().during(operation)?);
        }
        Ok(models)
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

/// A read-only service SAS query string (without `?`) for `grant`'s blob or snapshot, signed
/// with `key` (the account key's bytes).
pub fn read_blob_sas(grant: ReadBlobSas<'_>, key: &[u8]) -> String {
    grant
        .signed_with_account_key(&SecretBytes::new(key.to_vec()))
        .secret()
        .to_owned()
}

/// `instant` as an HTTP date (RFC 7231), as `x-ms-date` and `Date` carry it.
pub fn http_date(instant: time::OffsetDateTime) -> String {
    azure_core::time::to_rfc7231(&instant)
}
