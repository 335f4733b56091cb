//! The copy of one exact version through this worker: its bytes read in bounded chunks, every
//! read pinned to the version's ETag, and written with the destination's own requests, so no
//! copy source (and no credential) is recorded on the destination. Small block blobs go this way
//! because two requests cost less than a server-side copy; every blob of a connection that
//! cannot sign a one-blob SAS (a SAS connection) goes this way whatever its type and size.
//!
//! - A block blob: one Put Blob when it fits one chunk and its stored Content-MD5 is its bytes'
//!   (Put Blob would invent an MD5 or refuse a wrong one); else Put Block per chunk, then one
//!   Put Block List carrying the metadata, content headers, tags, tier and the Content-MD5
//!   exactly as stored (absent stays absent). The commit is the one write that makes the blob,
//!   conditional as asked (`If-None-Match: *` or `If-Match`): complete, or not there.
//! - An append or page blob cannot be made in one request: it is created (conditional as asked,
//!   with its content headers, stored MD5 and tags, and metadata marking it incomplete,
//!   [`INCOMPLETE_KEY`]), filled with Append Block / Put Page (pages only where the source has
//!   valid ranges, so sparse pages stay sparse), each write `If-Match` the ETag the previous one
//!   left, and finally given its metadata, which removes the mark. Anything in between — a
//!   failure, another writer — leaves a marked blob that no reader counts.
//!
//! Memory is a few chunks ([`READ_CHUNK_BYTES`]) whatever the blob's size.

use std::collections::HashMap;

use azure_core::Bytes;
use azure_storage_blob::models::{
    AccessTier, AppendBlobClientAppendBlockOptions, AppendBlobClientAppendBlockResultHeaders,
    AppendBlobClientCreateOptions, AppendBlobClientCreateResultHeaders, BlobClientUploadOptions,
    BlockBlobClientCommitBlockListOptions, BlockBlobClientStageBlockOptions, BlockLookupList,
    HttpRange, PageBlobClientCreateOptions, PageBlobClientCreateResultHeaders,
    PageBlobClientUploadPagesOptions, PageBlobClientUploadPagesResultHeaders,
};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use futures::TryStreamExt;
use md5::{Digest, Md5};

use super::{with_tags, Copied, CopyAttributes, CopyStart, Overwrite, WriteCondition};
use crate::{
    core::{
        etag::{normalize_etag, quoted_etag},
        properties::{tags_header, BlobType, ContentHeaders, Tags},
        stamp::{COPIED_MD5_KEY, INCOMPLETE_KEY},
    },
    storage::{
        container::names_as_written,
        read::{chunk_ranges, ChunkedRead, READ_CHUNK_BYTES},
        Blob, StorageError, StorageResultExt,
    },
};

/// Azure's limit on the blocks of one block blob.
const MAX_BLOCKS: u64 = 50_000;

/// The version a copy through the worker reads: what the caller knows of it.
#[derive(Debug, Clone, Copy)]
pub struct SourceVersion<'a> {
    pub etag: &'a str,
    pub length: u64,
    pub blob_type: BlobType,
}

/// Copies the version `version` of `source` to `destination` through this process, with
/// `attributes`, the source's content headers and its Content-MD5 exactly as stored — absent
/// when it has none, and as stored when it does not match the bytes (reported, never a reason
/// to refuse). The destination's condition is `overwrite`'s, on its one creating write. Bytes
/// whose length is not the version's are never written.
pub async fn copy_version_through(
    source: &Blob,
    destination: &Blob,
    version: SourceVersion<'_>,
    attributes: &CopyAttributes,
    overwrite: Overwrite<'_>,
) -> Result<Copied, StorageError> {
    let copy = Through {
        source,
        destination,
        version,
        attributes,
        condition: WriteCondition::of(overwrite),
        what: destination.what(),
    };
    match version.blob_type {
        BlobType::Block => copy.block().await,
        BlobType::Append => copy.append().await,
        BlobType::Page => copy.page().await,
    }
}

/// One copy through the worker under way.
struct Through<'a> {
    source: &'a Blob,
    destination: &'a Blob,
    version: SourceVersion<'a>,
    attributes: &'a CopyAttributes,
    condition: WriteCondition,
    what: String,
}

impl Through<'_> {
    fn copying(&self) -> String {
        format!("copying to {}", self.what)
    }

    fn reading(&self) -> String {
        format!("reading {} to copy it to {}", self.source.what(), self.what)
    }

    /// The version's Content-MD5 as stored (an empty one is none).
    fn stored_md5(&self) -> Option<Vec<u8>> {
        self.attributes
            .stored_md5
            .clone()
            .filter(|md5| !md5.is_empty())
    }

    fn tags(tags: Option<&Tags>) -> Option<String> {
        tags.filter(|t| !t.is_empty()).map(tags_header)
    }

    /// Reads are pinned to the version, so the length can differ only if the caller's facts
    /// were wrong: nothing is written then.
    fn check_read(&self, length: u64, blob_type: BlobType) -> Result<(), StorageError> {
        if length != self.version.length || blob_type != self.version.blob_type {
            return Err(StorageError::other(
                self.reading(),
                format!(
                    "the source is a {} of {length} bytes, the version a {} of {}",
                    blob_type.as_str(),
                    self.version.blob_type.as_str(),
                    self.version.length
                ),
            ));
        }
        Ok(())
    }

    /// The destination's whole metadata once complete: the caller's, and the MD5 of the bytes
    /// when it is to be recorded.
    fn final_metadata(&self, digest: &[u8]) -> HashMap<String, String> {
        let mut metadata = self.attributes.metadata.clone();
        if self.attributes.record_md5 {
            metadata.insert(COPIED_MD5_KEY.to_owned(), BASE64.encode(digest));
        }
        metadata
    }

    fn copied(&self, digest: Vec<u8>, tags_refused: bool) -> Copied {
        let md5_mismatch = self.stored_md5().is_some_and(|stored| stored != digest);
        if md5_mismatch {
            tracing::warn!(
                source = self.source.what(),
                "the stored Content-MD5 does not match the bytes: copied as the source holds them"
            );
        }
        Copied {
            state: CopyStart::Done,
            md5: Some(digest),
            md5_mismatch,
            tags_refused,
        }
    }

    async fn open(&self) -> Result<ChunkedRead, StorageError> {
        let read = self
            .source
            .read_chunks(Some(self.version.etag))
            .await
            .map_err(|e| e.context(self.reading()))?;
        self.check_read(read.length, read.blob_type)?;
        Ok(read)
    }

    async fn block(&self) -> Result<Copied, StorageError> {
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
                let ((), refused) = with_tags(self.attributes.tags.as_ref(), put).await?;
                return Ok(self.copied(digest, refused));
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
        let ((), refused) = with_tags(self.attributes.tags.as_ref(), commit).await?;
        Ok(self.copied(digest, refused))
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
    ) -> Result<(), StorageError> {
        let length = bytes.len();
        let headers = headers.clone();
        self.destination
            .sdk()
            .upload(
                bytes.into(),
                Some(BlobClientUploadOptions {
                    if_match: self.condition.if_match.clone().map(Into::into),
                    if_none_match: self.condition.if_none_match.clone().map(Into::into),
                    method_options: names_as_written(metadata),
                    metadata: Some(metadata.clone()),
                    blob_content_md5: Some(md5.to_vec()),
                    blob_content_type: headers.content_type,
                    blob_content_encoding: headers.content_encoding,
                    blob_content_language: headers.content_language,
                    blob_content_disposition: headers.content_disposition,
                    blob_cache_control: headers.cache_control,
                    blob_tags_string: Self::tags(tags),
                    tier: self.tier(),
                    // One request whatever the size: the SDK would otherwise split larger content.
                    partition_size: std::num::NonZero::new(length.max(1) as u64),
                    ..Default::default()
                }),
            )
            .await
            .during(|| self.copying())?;
        Ok(())
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
    ) -> Result<(), StorageError> {
        let headers = headers.clone();
        let list = BlockLookupList {
            latest: Some(blocks),
            ..Default::default()
        };
        self.destination
            .sdk()
            .block_blob_client()
            .commit_block_list(
                list.try_into().during(|| self.copying())?,
                Some(BlockBlobClientCommitBlockListOptions {
                    if_match: self.condition.if_match.clone().map(Into::into),
                    if_none_match: self.condition.if_none_match.clone().map(Into::into),
                    method_options: names_as_written(metadata),
                    metadata: Some(metadata.clone()),
                    blob_content_md5: md5,
                    blob_content_type: headers.content_type,
                    blob_content_encoding: headers.content_encoding,
                    blob_content_language: headers.content_language,
                    blob_content_disposition: headers.content_disposition,
                    blob_cache_control: headers.cache_control,
                    blob_tags_string: Self::tags(tags),
                    tier: self.tier(),
                    ..Default::default()
                }),
            )
            .await
            .during(|| self.copying())?;
        Ok(())
    }

    async fn append(&self) -> Result<Copied, StorageError> {
        let mut read = self.open().await?;
        let headers = read.headers.clone();
        let create = |tags| self.create_append(&headers, tags);
        let (mut etag, refused) = with_tags(self.attributes.tags.as_ref(), create).await?;
        let mut md5 = Md5::new();
        let mut offset = 0u64;
        while let Some(chunk) = read.next_chunk().await? {
            md5.update(&chunk);
            let length = chunk.len() as u64;
            etag = self.append_block(chunk, offset, &etag).await?;
            offset += length;
        }
        let digest = md5.finalize().to_vec();
        self.finish(&etag, &digest).await?;
        Ok(self.copied(digest, refused))
    }

    /// The metadata a blob written in several requests carries until it is complete.
    fn incomplete() -> HashMap<String, String> {
        HashMap::from([(INCOMPLETE_KEY.to_owned(), "true".to_owned())])
    }

    /// The last write of an append or page blob: its metadata, in place of the mark, if it is
    /// still the blob this copy wrote.
    async fn finish(&self, etag: &str, digest: &[u8]) -> Result<(), StorageError> {
        self.destination
            .set_metadata(&self.final_metadata(digest), etag)
            .await
            .map_err(|e| e.context(self.copying()))
    }

    async fn create_append(
        &self,
        headers: &ContentHeaders,
        tags: Option<&Tags>,
    ) -> Result<String, StorageError> {
        let headers = headers.clone();
        let created = self
            .destination
            .sdk()
            .append_blob_client()
            .create(Some(AppendBlobClientCreateOptions {
                if_match: self.condition.if_match.clone().map(Into::into),
                if_none_match: self.condition.if_none_match.clone().map(Into::into),
                metadata: Some(Self::incomplete()),
                blob_content_md5: self.stored_md5(),
                blob_content_type: headers.content_type,
                blob_content_encoding: headers.content_encoding,
                blob_content_language: headers.content_language,
                blob_content_disposition: headers.content_disposition,
                blob_cache_control: headers.cache_control,
                blob_tags_string: Self::tags(tags),
                ..Default::default()
            }))
            .await
            .during(|| self.copying())?;
        self.written_etag(created.etag().during(|| self.copying())?)
    }

    /// Append Block at `offset`, if the blob is still the one this copy left with `etag`.
    async fn append_block(
        &self,
        chunk: Bytes,
        offset: u64,
        etag: &str,
    ) -> Result<String, StorageError> {
        let appended = self
            .destination
            .sdk()
            .append_blob_client()
            .append_block(
                chunk.clone().into(),
                chunk.len() as u64,
                Some(AppendBlobClientAppendBlockOptions {
                    if_match: Some(quoted_etag(etag).into()),
                    append_position: Some(offset as i64),
                    transactional_content_md5: Some(Md5::digest(&chunk).to_vec()),
                    ..Default::default()
                }),
            )
            .await
            .during(|| self.copying())?;
        self.written_etag(appended.etag().during(|| self.copying())?)
    }

    fn written_etag(&self, etag: Option<azure_core::http::Etag>) -> Result<String, StorageError> {
        etag.map(|e| normalize_etag(e.as_ref()).to_owned())
            .ok_or_else(|| StorageError::other(self.copying(), "the service sent no ETag"))
    }

    async fn page(&self) -> Result<Copied, StorageError> {
        let source_etag = self.version.etag;
        let state = self
            .source
            .state_if_match(source_etag)
            .await
            .map_err(|e| e.context(self.reading()))?
            .ok_or_else(|| StorageError::other(self.reading(), "the source is gone"))?;
        let length = state.version.content_length;
        self.check_read(length, state.version.properties.blob_type)?;
        let headers = state.version.properties.headers;
        let create = |tags| self.create_page(length, &headers, tags);
        let (mut etag, refused) = with_tags(self.attributes.tags.as_ref(), create).await?;
        let mut md5 = Md5::new();
        let mut position = 0u64;
        let mut pages = self.source.page_ranges(source_etag)?;
        while let Some(ranges) = pages
            .try_next()
            .await
            .map_err(|e| e.context(self.reading()))?
        {
            for range in ranges {
                if range.start < position || range.end > length {
                    return Err(StorageError::other(
                        self.reading(),
                        format!("a page range {range:?} out of order or beyond {length} bytes"),
                    ));
                }
                hash_zeros(&mut md5, range.start - position);
                let mut chunks = self
                    .source
                    .chunks_of(source_etag, chunk_ranges(range.clone()));
                let mut at = range.start;
                while let Some(chunk) = chunks.try_next().await? {
                    md5.update(&chunk);
                    let written = chunk.len() as u64;
                    etag = self.put_page(chunk, at, &etag).await?;
                    at += written;
                }
                position = range.end;
            }
        }
        hash_zeros(&mut md5, length - position);
        let digest = md5.finalize().to_vec();
        self.finish(&etag, &digest).await?;
        Ok(self.copied(digest, refused))
    }

    async fn create_page(
        &self,
        length: u64,
        headers: &ContentHeaders,
        tags: Option<&Tags>,
    ) -> Result<String, StorageError> {
        let headers = headers.clone();
        let created = self
            .destination
            .sdk()
            .page_blob_client()
            .create(
                length,
                Some(PageBlobClientCreateOptions {
                    if_match: self.condition.if_match.clone().map(Into::into),
                    if_none_match: self.condition.if_none_match.clone().map(Into::into),
                    metadata: Some(Self::incomplete()),
                    blob_content_md5: self.stored_md5(),
                    blob_content_type: headers.content_type,
                    blob_content_encoding: headers.content_encoding,
                    blob_content_language: headers.content_language,
                    blob_content_disposition: headers.content_disposition,
                    blob_cache_control: headers.cache_control,
                    blob_tags_string: Self::tags(tags),
                    ..Default::default()
                }),
            )
            .await
            .during(|| self.copying())?;
        self.written_etag(created.etag().during(|| self.copying())?)
    }

    /// Put Page of `chunk` at `offset`, if the blob is still the one this copy left with `etag`.
    async fn put_page(
        &self,
        chunk: Bytes,
        offset: u64,
        etag: &str,
    ) -> Result<String, StorageError> {
        let length = chunk.len() as u64;
        let written = self
            .destination
            .sdk()
            .page_blob_client()
            .upload_pages(
                chunk.clone().into(),
                length,
                HttpRange::new(offset, length),
                Some(PageBlobClientUploadPagesOptions {
                    if_match: Some(quoted_etag(etag).into()),
                    transactional_content_md5: Some(Md5::digest(&chunk).to_vec()),
                    ..Default::default()
                }),
            )
            .await
            .during(|| self.copying())?;
        self.written_etag(written.etag().during(|| self.copying())?)
    }
}

/// The size of each block of a block blob of `length` bytes: a chunk, or as many chunks as keep
/// it within Azure's 50,000 blocks.
fn block_size(length: u64) -> u64 {
    let chunks_per_block = length
        .div_ceil(MAX_BLOCKS)
        .div_ceil(READ_CHUNK_BYTES)
        .max(1);
    chunks_per_block * READ_CHUNK_BYTES
}

/// Adds `count` zero bytes to `md5` (the pages a page blob never wrote read as zeros).
fn hash_zeros(md5: &mut Md5, mut count: u64) {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    while count > 0 {
        let n = count.min(ZEROS.len() as u64) as usize;
        md5.update(&ZEROS[..n]);
        count -= n as u64;
    }
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

    #[test]
    fn zeros_hash_as_zeros() {
        let mut md5 = Md5::new();
        hash_zeros(&mut md5, 200_000);
        assert_eq!(
            md5.finalize().to_vec(),
            Md5::digest(vec![0u8; 200_000]).to_vec()
        );
    }
}
