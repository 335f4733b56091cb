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
//! Memory is a few chunks ([`READ_CHUNK_BYTES`](crate::storage::read::READ_CHUNK_BYTES))
//! whatever the blob's size.

/// The options of a request of this copy that makes the destination blob (as
/// [`with_content_headers`](super::with_content_headers)): conditional as the copy was asked,
/// with `headers` as its content headers, `tags` (none when empty), and the fields given.
macro_rules! making {
    ($copy:expr, $options:ident { $($field:ident: $value:expr),* $(,)? }, $headers:expr, $tags:expr) => {
        $crate::storage::copy::with_content_headers!($options {
            if_match: $copy.condition.if_match.clone().map(Into::into),
            if_none_match: $copy.condition.if_none_match.clone().map(Into::into),
            blob_tags_string: Through::tags($tags),
            $($field: $value,)*
        }, $headers)
    };
}

/// The options of the request that creates an append or page blob (as [`making`]): marked
/// incomplete until its last write, with the version's Content-MD5 as stored.
macro_rules! making_incomplete {
    ($copy:expr, $options:ident, $headers:expr, $tags:expr) => {
        making!(
            $copy,
            $options {
                metadata: Some(Through::incomplete()),
                blob_content_md5: $copy.stored_md5(),
            },
            $headers,
            $tags
        )
    };
}

mod append;
mod block;
mod page;

use std::collections::HashMap;

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};

use super::{Copied, CopyAttributes, CopyStart, Overwrite, WriteCondition};
use crate::{
    core::{
        etag::normalize_etag,
        properties::{tags_header, BlobType, Tags},
        stamp::{COPIED_MD5_KEY, INCOMPLETE_KEY},
    },
    storage::{read::ChunkedRead, Blob, StorageError},
};

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

    fn copied(&self, digest: Vec<u8>, tags_refused: bool, etag: Option<String>) -> Copied {
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
            etag,
            copy_id: None,
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

    /// The metadata a blob written in several requests carries until it is complete.
    fn incomplete() -> HashMap<String, String> {
        HashMap::from([(INCOMPLETE_KEY.to_owned(), "true".to_owned())])
    }

    /// The last write of an append or page blob: its metadata, in place of the mark, if it is
    /// still the blob this copy wrote.
    async fn finish(&self, etag: &str, digest: &[u8]) -> Result<Option<String>, StorageError> {
        self.destination
            .set_metadata_etag(&self.final_metadata(digest), etag)
            .await
            .map_err(|e| e.context(self.copying()))
    }

    fn written_etag(&self, etag: Option<azure_core::http::Etag>) -> Result<String, StorageError> {
        etag.map(|e| normalize_etag(e.as_ref()).to_owned())
            .ok_or_else(|| StorageError::other(self.copying(), "the service sent no ETag"))
    }
}
