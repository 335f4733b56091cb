//! Test support for one blob: writes of every type with any properties (Put Blob, a block list,
//! an append blob, a page blob), deletion with snapshots, tier, tags and metadata set as a user
//! sets them, leases taken and broken, a copy started.

use std::collections::HashMap;

use azure_core::http::RequestContent;
use azure_storage_blob::{
    models::{
        AccessTier, AppendBlobClientCreateOptions, BlobClientBreakLeaseOptions,
        BlobClientDeleteOptions, BlobClientGetPropertiesResultHeaders, BlobClientUploadOptions,
        BlobTags, BlockBlobClientCommitBlockListOptions, BlockLookupList,
        DeleteSnapshotsOptionType, HttpRange, PageBlobClientCreateOptions,
    },
    BlobClient,
};
use futures::TryStreamExt;

use super::{LeaseState, NewBlob, Uploaded};
use crate::{
    core::{etag::normalize_etag, properties::Tags},
    storage::{copy::with_content_headers, Blob, StorageError, StorageResultExt},
};

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
        let options = with_content_headers!(
            BlobClientUploadOptions {
                metadata: new.metadata(),
                blob_content_md5: new.md5.clone(),
                blob_tags_string: new.tags(),
                tier: new.tier(),
            },
            new.headers.clone()
        );
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
        let options = with_content_headers!(
            BlockBlobClientCommitBlockListOptions {
                metadata: new.metadata(),
                blob_content_md5: new.md5.clone(),
                blob_tags_string: new.tags(),
                tier: new.tier(),
            },
            new.headers.clone()
        );
        let commit = || format!("committing the block list of {}", self.what());
        block_blob
            .commit_block_list(list.try_into().during(commit)?, Some(options))
            .await
            .during(commit)?;
        Ok(())
    }

    /// Creates an empty append blob with `new`'s metadata, headers and tags.
    pub async fn create_append_blob(&self, new: &NewBlob) -> Result<(), StorageError> {
        let options = with_content_headers!(
            AppendBlobClientCreateOptions {
                metadata: new.metadata(),
                blob_tags_string: new.tags(),
            },
            new.headers.clone()
        );
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
        let options = with_content_headers!(
            PageBlobClientCreateOptions {
                metadata: new.metadata(),
                blob_tags_string: new.tags(),
            },
            new.headers.clone()
        );
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
    /// [`crate::storage::lease::HeldLease`] renews and releases its own.
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
