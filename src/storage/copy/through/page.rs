//! A page blob copied through the worker: created conditionally and marked incomplete, filled
//! with Put Page only where the source has valid ranges (sparse pages stay sparse, and hash as
//! zeros), each `If-Match` the ETag the previous write left, then given its metadata.

use azure_core::Bytes;
use azure_storage_blob::models::{
    HttpRange, PageBlobClientCreateOptions, PageBlobClientCreateResultHeaders,
    PageBlobClientUploadPagesOptions, PageBlobClientUploadPagesResultHeaders,
};
use futures::TryStreamExt;
use md5::{Digest, Md5};

use super::{
    super::{with_tags, Copied},
    Through,
};
use crate::{
    core::{
        etag::quoted_etag,
        properties::{ContentHeaders, Tags},
    },
    storage::{read::chunk_ranges, StorageError, StorageResultExt},
};

impl Through<'_> {
    pub(super) async fn page(&self) -> Result<Copied, StorageError> {
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
        let written = self.finish(&etag, &digest).await?;
        Ok(self.copied(digest, refused, written))
    }

    async fn create_page(
        &self,
        length: u64,
        headers: &ContentHeaders,
        tags: Option<&Tags>,
    ) -> Result<String, StorageError> {
        let options = making_incomplete!(self, PageBlobClientCreateOptions, headers.clone(), tags);
        let created = self
            .destination
            .sdk()
            .page_blob_client()
            .create(length, Some(options))
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
    fn zeros_hash_as_zeros() {
        let mut md5 = Md5::new();
        hash_zeros(&mut md5, 200_000);
        assert_eq!(
            md5.finalize().to_vec(),
            Md5::digest(vec![0u8; 200_000]).to_vec()
        );
    }
}
