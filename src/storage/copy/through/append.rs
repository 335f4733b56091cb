//! An append blob copied through the worker: created conditionally and marked incomplete, filled
//! with Append Block, each `If-Match` the ETag the previous write left, then given its metadata.

use azure_core::Bytes;
use azure_storage_blob::models::{
    AppendBlobClientAppendBlockOptions, AppendBlobClientAppendBlockResultHeaders,
    AppendBlobClientCreateOptions, AppendBlobClientCreateResultHeaders,
};
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
    storage::{StorageError, StorageResultExt},
};

impl Through<'_> {
    pub(super) async fn append(&self) -> Result<Copied, StorageError> {
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
        let written = self.finish(&etag, &digest).await?;
        Ok(self.copied(digest, refused, written))
    }

    async fn create_append(
        &self,
        headers: &ContentHeaders,
        tags: Option<&Tags>,
    ) -> Result<String, StorageError> {
        let options =
            making_incomplete!(self, AppendBlobClientCreateOptions, headers.clone(), tags);
        let created = self
            .destination
            .sdk()
            .append_blob_client()
            .create(Some(options))
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
}
