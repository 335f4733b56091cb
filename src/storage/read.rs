//! Reading a blob in bounded chunks: ranged Get Blob requests of at most [`READ_CHUNK_BYTES`],
//! every one pinned to one ETag (`If-Match`), so a blob of any size is hashed, compared or
//! copied holding a few chunks at most, and a blob that changes during the read fails it
//! (`ConditionNotMet`) rather than mixing two versions. One chunk is fetched ahead, in the
//! background, while the caller works through the current one.

use std::{collections::HashMap, ops::Range};

use azure_core::{
    http::{headers::HeaderName, Etag},
    Bytes,
};
use azure_storage_blob::models::{
    BlobClientDownloadOptions, BlobClientDownloadResult, PageBlobClientListPageRangesOptions,
    PageList,
};
use futures::{stream::BoxStream, StreamExt, TryStreamExt};
use md5::{Digest, Md5};

use super::{Blob, StorageError, StorageResultExt};
use crate::core::{
    etag::{normalize_etag, quoted_etag},
    properties::{BlobType, ContentHeaders},
};

/// The most a ranged read asks for: also the most Put Page and (before service version
/// 2022-11-02) Append Block take in one request.
pub const READ_CHUNK_BYTES: u64 = 4 << 20;

/// The valid page ranges of a page blob, one page of the service's answer at a time.
pub(super) type PageRanges = BoxStream<'static, Result<Vec<Range<u64>>, StorageError>>;

/// Chunks fetched ahead of the one the caller holds.
const READ_AHEAD: usize = 1;

/// Tries of one ranged read whose body was cut off.
const BODY_ATTEMPTS: u32 = 3;

/// A blob being read chunk by chunk, in order: the facts of the version read (from the first
/// answer) and its bytes, [`READ_CHUNK_BYTES`] at a time.
pub struct ChunkedRead {
    /// The version every chunk is read from, without quotes.
    pub etag: String,
    pub length: u64,
    pub metadata: HashMap<String, String>,
    pub headers: ContentHeaders,
    pub blob_type: BlobType,
    what: String,
    read: u64,
    chunks: BoxStream<'static, Result<Bytes, StorageError>>,
}

impl std::fmt::Debug for ChunkedRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkedRead")
            .field("what", &self.what)
            .field("etag", &self.etag)
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

impl ChunkedRead {
    /// The next chunk, or `None` once all `length` bytes were read.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, StorageError> {
        match self.chunks.try_next().await? {
            Some(chunk) => {
                self.read += chunk.len() as u64;
                Ok(Some(chunk))
            }
            None if self.read == self.length => Ok(None),
            None => Err(StorageError::other(
                format!("reading {}", self.what),
                format!("read {} bytes of {}", self.read, self.length),
            )),
        }
    }

    /// The MD5 of the bytes not yet read (all of them, on a fresh read).
    pub async fn md5(mut self) -> Result<Vec<u8>, StorageError> {
        let mut md5 = Md5::new();
        while let Some(chunk) = self.next_chunk().await? {
            md5.update(&chunk);
        }
        Ok(md5.finalize().to_vec())
    }

    /// Whether this read and `other` hold the same bytes, compared chunk by chunk (stopping
    /// at the first difference).
    pub async fn same_bytes(mut self, mut other: ChunkedRead) -> Result<bool, StorageError> {
        if self.length != other.length {
            return Ok(false);
        }
        // Both read in chunks of the same size from offset 0: chunk i of one is chunk i of the
        // other.
        loop {
            let (ours, theirs) = futures::try_join!(self.next_chunk(), other.next_chunk())?;
            match (ours, theirs) {
                (None, None) => return Ok(true),
                (Some(a), Some(b)) if a == b => {}
                _ => return Ok(false),
            }
        }
    }
}

impl Blob {
    /// Opens a read of the blob (of version `if_match` only, when given; else of the version
    /// the first answer names, which pins the rest): the first chunk is read at once, the rest
    /// as the caller asks for them.
    pub async fn read_chunks(&self, if_match: Option<&str>) -> Result<ChunkedRead, StorageError> {
        let what = self.what();
        let first_range = 0..READ_CHUNK_BYTES;
        let first = self
            .ranged_download(if_match, first_range.clone())
            .await
            .during(|| format!("reading {what}"))?;
        let properties = &first.properties;
        let etag = properties
            .etag
            .as_ref()
            .map(|e| normalize_etag(e.as_ref()).to_owned())
            .or_else(|| if_match.map(|e| normalize_etag(e).to_owned()))
            .ok_or_else(|| {
                StorageError::other(format!("reading {what}"), "the service sent no ETag")
            })?;
        // A ranged answer says the whole length in Content-Range; an empty blob's (read without
        // a range: Azure refuses any range of it) says it in Content-Length.
        let length = first
            .headers
            .get_optional_str(&HeaderName::from_static("content-range"))
            .and_then(total_of_content_range)
            .or(properties.content_length)
            .unwrap_or(0);
        let headers = ContentHeaders {
            content_type: properties.content_type.clone(),
            content_encoding: properties.content_encoding.clone(),
            content_language: properties.content_language.clone(),
            content_disposition: properties.content_disposition.clone(),
            cache_control: properties.cache_control.clone(),
        }
        .normalized();
        let blob_type = match properties.blob_type {
            Some(azure_storage_blob::models::BlobType::AppendBlob) => BlobType::Append,
            Some(azure_storage_blob::models::BlobType::PageBlob) => BlobType::Page,
            _ => BlobType::Block,
        };
        let metadata = properties.metadata.clone();
        let expected = first_range.end.min(length);
        let first_chunk = collect(first, expected)
            .await
            .during(|| format!("reading {what}"))?;
        let rest = self.chunks_of(&etag, chunk_ranges(expected..length));
        let chunks = futures::stream::once(async move { Ok(first_chunk) })
            .filter(|chunk| {
                let empty = matches!(chunk, Ok(bytes) if bytes.is_empty());
                std::future::ready(!empty)
            })
            .chain(rest)
            .boxed();
        Ok(ChunkedRead {
            etag,
            length,
            metadata,
            headers,
            blob_type,
            what,
            read: 0,
            chunks,
        })
    }

    /// The bytes in `range` of version `etag` (one request; at most [`READ_CHUNK_BYTES`]). A
    /// body cut off on the way is read again: the service's retries cover the request, not
    /// its body.
    pub(super) async fn read_range(
        &self,
        etag: &str,
        range: Range<u64>,
    ) -> Result<Bytes, StorageError> {
        let what = || format!("reading {} at {}..{}", self.what(), range.start, range.end);
        let expected = range.end - range.start;
        let mut attempt = 1;
        loop {
            let read = async {
                let downloaded = self.ranged_download(Some(etag), range.clone()).await?;
                collect(downloaded, expected).await
            };
            match read.await.during(what) {
                Err(e) if e.is_transient() && attempt < BODY_ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "a ranged read failed; reading it again");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// The valid page ranges of page blob version `etag`, a page of the service's answer at a
    /// time, in order; adjacent ranges are joined. (The pages never written read as zeros and
    /// need not be read or written.)
    pub(super) fn page_ranges(&self, etag: &str) -> Result<PageRanges, StorageError> {
        let what = format!("listing the page ranges of {}", self.what());
        let pages = self
            .sdk()
            .page_blob_client()
            .list_page_ranges(Some(PageBlobClientListPageRangesOptions {
                if_match: Some(Etag::from(quoted_etag(etag))),
                ..Default::default()
            }))
            .during(|| what.clone())?;
        Ok(pages
            .map(move |page| {
                let what = what.clone();
                let list: PageList = page.during(|| what.clone())?.into_model().during(|| what)?;
                Ok(joined(list.page_ranges.iter().filter_map(|r| {
                    Some(r.start?.max(0) as u64..r.end?.max(0) as u64 + 1)
                })))
            })
            .boxed())
    }

    /// `range` of the blob, in chunks of at most [`READ_CHUNK_BYTES`], every one pinned to
    /// `etag`; one chunk fetched ahead in the background.
    pub(super) fn chunks_of(
        &self,
        etag: &str,
        ranges: Vec<Range<u64>>,
    ) -> BoxStream<'static, Result<Bytes, StorageError>> {
        let (blob, etag) = (self.clone(), etag.to_owned());
        futures::stream::iter(ranges)
            .map(move |range| {
                let (blob, etag) = (blob.clone(), etag.clone());
                Background(tokio::spawn(
                    async move { blob.read_range(&etag, range).await },
                ))
            })
            .buffered(READ_AHEAD + 1)
            .boxed()
    }

    /// One Get Blob of `range`: one request, however long the range (the SDK would otherwise
    /// split it and read the parts in parallel).
    async fn ranged_download(
        &self,
        if_match: Option<&str>,
        range: Range<u64>,
    ) -> azure_core::Result<BlobClientDownloadResult> {
        let length = usize::try_from(range.end - range.start)
            .ok()
            .and_then(std::num::NonZero::new)
            .unwrap_or(std::num::NonZero::<usize>::MIN);
        self.sdk()
            .download(Some(BlobClientDownloadOptions {
                if_match: if_match.map(|etag| Etag::from(quoted_etag(etag))),
                range: Some(range.into()),
                parallel: Some(std::num::NonZero::<usize>::MIN),
                partition_size: Some(length),
                ..Default::default()
            }))
            .await
    }
}

/// A chunk fetched on a task of its own, so it arrives while the caller works; the task is
/// cancelled when the read is dropped.
struct Background(tokio::task::JoinHandle<Result<Bytes, StorageError>>);

impl std::future::Future for Background {
    type Output = Result<Bytes, StorageError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|e| Err(StorageError::other("reading a chunk", e.to_string())))
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The answer's body, which must be `expected` bytes long, in one buffer of that size.
async fn collect(downloaded: BlobClientDownloadResult, expected: u64) -> azure_core::Result<Bytes> {
    let mut bytes = Vec::with_capacity(expected as usize);
    let mut body = downloaded.body;
    while let Some(piece) = body.try_next().await? {
        if (bytes.len() + piece.len()) as u64 > expected {
            return Err(short_or_long(bytes.len() + piece.len(), expected));
        }
        bytes.extend_from_slice(&piece);
    }
    if bytes.len() as u64 != expected {
        return Err(short_or_long(bytes.len(), expected));
    }
    Ok(Bytes::from(bytes))
}

fn short_or_long(got: usize, expected: u64) -> azure_core::Error {
    azure_core::Error::with_message(
        azure_core::error::ErrorKind::Io,
        format!("the answer held {got} bytes or more, the range {expected}"),
    )
}

/// `range` cut into consecutive ranges of at most [`READ_CHUNK_BYTES`], in order.
pub(super) fn chunk_ranges(range: Range<u64>) -> Vec<Range<u64>> {
    let mut ranges = Vec::new();
    let mut start = range.start;
    while start < range.end {
        let end = range.end.min(start + READ_CHUNK_BYTES);
        ranges.push(start..end);
        start = end;
    }
    ranges
}

/// `ranges` in order, each joined with the next where one ends where the next starts.
fn joined(ranges: impl IntoIterator<Item = Range<u64>>) -> Vec<Range<u64>> {
    let mut joined: Vec<Range<u64>> = Vec::new();
    for range in ranges {
        match joined.last_mut() {
            Some(last) if last.end == range.start => last.end = range.end,
            _ => joined.push(range),
        }
    }
    joined
}

/// The whole length in a `Content-Range` header (`bytes 0-4194303/12345678`).
fn total_of_content_range(value: &str) -> Option<u64> {
    value.rsplit_once('/')?.1.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_blob_in_bounded_consecutive_chunks() {
        assert!(chunk_ranges(0..0).is_empty());
        assert_eq!(chunk_ranges(0..1), vec![Range { start: 0, end: 1 }]);
        let chunk = READ_CHUNK_BYTES;
        assert_eq!(
            chunk_ranges(0..chunk),
            vec![Range {
                start: 0,
                end: chunk
            }]
        );
        assert_eq!(
            chunk_ranges(chunk..3 * chunk + 7),
            [
                chunk..2 * chunk,
                2 * chunk..3 * chunk,
                3 * chunk..3 * chunk + 7
            ]
        );
        let big = 10 * chunk + 512;
        let ranges = chunk_ranges(512..big);
        assert!(ranges
            .iter()
            .all(|r| r.end - r.start <= chunk && r.end > r.start));
        assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!((ranges[0].start, ranges.last().unwrap().end), (512, big));
    }

    #[test]
    fn adjacent_page_ranges_are_joined() {
        assert_eq!(
            joined([0..512, 512..1024, 2048..4096, 4096..4608, 8192..8704]),
            [0..1024, 2048..4608, 8192..8704]
        );
        assert!(joined([]).is_empty());
    }

    #[test]
    fn content_range_gives_the_whole_length() {
        assert_eq!(
            total_of_content_range("bytes 0-4194303/12345678"),
            Some(12_345_678)
        );
        assert_eq!(total_of_content_range("bytes 0-0/1"), Some(1));
        assert_eq!(total_of_content_range("bytes */0"), Some(0));
        assert_eq!(total_of_content_range("bytes 0-1/*"), None);
    }
}
