//! A block blob copied through the worker: one Put Blob when it fits one chunk and its stored
//! Content-MD5 is its bytes'; else Put Block per block (a chunk, or as many chunks as keep it
//! within Azure's 50,000 blocks), then one conditional Put Block List that makes the blob with
//! its metadata, content headers, tags, tier and Content-MD5 exactly as stored.

use std::collections::HashMap;

use azure_core::Bytes;
use azure_storage_blob::models::{
    AccessTier, BlobClientUploadOptions, BlockBlobClientCommitBlockListOptions,
    BlockBlobClientStageBlockOptions, BlockLookupList,
};
use md5::{Digest, Md5};

use super::{
    super::{with_tags, Copied},
    Through,
};
use crate::{
    core::properties::{ContentHeaders, Tags},
    storage::{
        blob::names_as_written,
        read::{ChunkedRead, READ_CHUNK_BYTES},
        StorageError, StorageResultExt,
    },
};

impl Through<'_> {
    pub(super) async fn block(&self) -> Result<Copied, StorageError> {
        let mut read = self.open().await?;
        let headers = read.headers.clone();
        let stored_md5 = self.stored_md5();
        let (blocks, digest) = if read.length <= READ_CHUNK_BYTES {
            let bytes = read.next_chunk().await?.unwrap_or_default();
            let digest = Md5::digest(&bytes).to_vec();
            if stored_md5.as_deref() == Some(digest.as_slice()) {
                // Put Blob checks the MD5 it is given against the bytes: here they agree.
                let metadata = self.final_metadata(&digest);
                let put = |tags| self.put_blob(bytes.clone(), &metadata, &headers, &digest, tags);
                let (written, refused) = with_tags(self.attributes.tags.as_ref(), put).await?;
                return Ok(self.copied(digest, refused, written));
            }
            let blocks = match bytes.is_empty() {
                true => Vec::new(),
                false => vec![self.stage(0, bytes).await?],
            };
            (blocks, digest)
        } else {
            self.stage_blocks(&mut read).await?
        };
        // A block list stores the MD5 it is given, or none.
        let metadata = self.final_metadata(&digest);
        let commit = |tags| {
            self.commit(
                blocks.clone(),
                &metadata,
                &headers,
                stored_md5.clone(),
                tags,
            )
        };
        let (written, refused) = with_tags(self.attributes.tags.as_ref(), commit).await?;
        Ok(self.copied(digest, refused, written))
    }

    /// Stages the read's bytes as blocks (chunk-sized, or as many chunks per block as keep
    /// the blob within Azure's 50,000 blocks); their ids in order and the MD5 of all bytes.
    async fn stage_blocks(
        &self,
        read: &mut ChunkedRead,
    ) -> Result<(Vec<Vec<u8>>, Vec<u8>), StorageError> {
        let block_size = block_size(read.length);
        let mut md5 = Md5::new();
        let mut blocks = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = read.next_chunk().await? {
            md5.update(&chunk);
            if block_size == READ_CHUNK_BYTES {
                blocks.push(self.stage(blocks.len(), chunk).await?);
                continue;
            }
            pending.extend_from_slice(&chunk);
            if pending.len() as u64 >= block_size {
                let block = Bytes::from(std::mem::take(&mut pending));
                blocks.push(self.stage(blocks.len(), block).await?);
            }
        }
        if !pending.is_empty() {
            blocks.push(self.stage(blocks.len(), Bytes::from(pending)).await?);
        }
        Ok((blocks, md5.finalize().to_vec()))
    }

    /// Put Block. Fixed ids: a block staged twice (a retried copy of the same version) is the
    /// same block.
    async fn stage(&self, index: usize, block: Bytes) -> Result<Vec<u8>, StorageError> {
        let id = format!("lakebackup-{index:08}").into_bytes();
        let md5 = Md5::digest(&block).to_vec();
        self.destination
            .sdk()
            .block_blob_client()
            .stage_block(
                &id,
                block.len() as u64,
                block.into(),
                Some(BlockBlobClientStageBlockOptions {
                    transactional_content_md5: Some(md5),
                    ..Default::default()
                }),
            )
            .await
            .during(|| self.copying())?;
        Ok(id)
    }

    /// One conditional Put Blob.
    async fn put_blob(
        &self,
        bytes: Bytes,
        metadata: &HashMap<String, String>,
        headers: &ContentHeaders,
        md5: &[u8],
        tags: Option<&Tags>,
    ) -> Result<Option<String>, StorageError> {
        let options = making!(
            self,
            BlobClientUploadOptions {
                method_options: names_as_written(metadata),
                metadata: Some(metadata.clone()),
                blob_content_md5: Some(md5.to_vec()),
                tier: self.tier(),
                // One request whatever the size: the SDK would otherwise split larger content.
                partition_size: std::num::NonZero::new(bytes.len().max(1) as u64),
            },
            headers.clone(),
            tags
        );
        let response = self
            .destination
            .sdk()
            .upload(bytes.into(), Some(options))
            .await
            .during(|| self.copying())?;
        Ok(written_etag(response.etag))
    }

    fn tier(&self) -> Option<AccessTier> {
        self.attributes.tier.as_deref().and_then(|t| t.parse().ok())
    }

    /// The conditional Put Block List carrying the MD5 exactly as given (or none): the service
    /// stores it without checking it against the bytes.
    async fn commit(
        &self,
        blocks: Vec<Vec<u8>>,
        metadata: &HashMap<String, String>,
        headers: &ContentHeaders,
        md5: Option<Vec<u8>>,
        tags: Option<&Tags>,
    ) -> Result<Option<String>, StorageError> {
        let list = BlockLookupList {
            latest: Some(blocks),
            ..Default::default()
        };
        let options = making!(
            self,
            BlockBlobClientCommitBlockListOptions {
                method_options: names_as_written(metadata),
                metadata: Some(metadata.clone()),
                blob_content_md5: md5,
                tier: self.tier(),
            },
            headers.clone(),
            tags
        );
        let response = self
            .destination
            .sdk()
            .block_blob_client()
            .commit_block_list(list.try_into().during(|| self.copying())?, Some(options))
            .await
            .during(|| self.copying())?;
        Ok(written_etag(
            response
                .headers()
                .get_optional_as(&azure_core::http::headers::ETAG)
                .ok()
                .flatten(),
        ))
    }
}

/// The ETag a write answered with, unquoted.
fn written_etag(etag: Option<azure_core::http::Etag>) -> Option<String> {
    etag.map(|e| crate::core::etag::normalize_etag(e.as_ref()).to_owned())
}

/// Azure's limit on the blocks of one block blob.
const MAX_BLOCKS: u64 = 50_000;

/// The size of each block of a block blob of `length` bytes: a chunk, or as many chunks as keep
/// it within Azure's 50,000 blocks.
fn block_size(length: u64) -> u64 {
    let chunks_per_block = length
        .div_ceil(MAX_BLOCKS)
        .div_ceil(READ_CHUNK_BYTES)
        .max(1);
    chunks_per_block * READ_CHUNK_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_chunks_until_the_block_count_would_exceed_azures() {
        assert_eq!(block_size(0), READ_CHUNK_BYTES);
        assert_eq!(block_size(1), READ_CHUNK_BYTES);
        assert_eq!(block_size(MAX_BLOCKS * READ_CHUNK_BYTES), READ_CHUNK_BYTES);
        let bigger = MAX_BLOCKS * READ_CHUNK_BYTES + 1;
        assert_eq!(block_size(bigger), 2 * READ_CHUNK_BYTES);
        for length in [bigger, 5 << 40, 190 << 40] {
            let size = block_size(length);
            assert_eq!(size % READ_CHUNK_BYTES, 0);
            assert!(length.div_ceil(size) <= MAX_BLOCKS, "{length}");
        }
    }
}
