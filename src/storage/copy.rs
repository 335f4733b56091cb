//! The copy of one exact version to another blob: through this worker for small block blobs
//! (a conditional read, then one create-only write carrying the Content-MD5 exactly as stored),
//! else server-side — Copy Blob From URL for block blobs up to 256 MiB, the asynchronous Copy
//! Blob for every other type and size — with the destination's metadata and tags in the same
//! request, so the destination is complete with them or absent.

use std::collections::HashMap;

use azure_core::http::{ClientMethodOptions, Context, RequestContent};
use azure_storage_blob::models::{
    AccessTier, BlobClientDownloadOptions, BlobClientStartCopyFromUrlOptions,
    BlobClientStartCopyFromUrlResultHeaders, BlobClientUploadOptions,
    BlockBlobClientCommitBlockListOptions, BlockBlobClientStageBlockOptions, BlockLookupList,
    CopyStatus,
};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use md5::{Digest, Md5};
use url::Url;

use super::{
    container::names_as_written, metadata_case::keep_case, Blob, BlobState, RequestHeaders,
    StorageError, StorageResultExt,
};
use crate::core::{
    etag::quoted_etag,
    properties::{tags_header, BlobType, ContentHeaders, Tags},
    stamp::COPIED_MD5_KEY,
    version::CopyStatus as VersionCopyStatus,
};

/// The largest source Copy Blob From URL copies synchronously (Azure's limit).
pub const MAX_SYNC_COPY_BYTES: u64 = 256 * 1024 * 1024;

/// What a copy writes beside the bytes, when the service does not carry it from the source.
#[derive(Debug, Clone, Default)]
pub struct CopyAttributes {
    /// The destination's whole metadata (a backup's: the source's own and the stamp).
    pub metadata: HashMap<String, String>,
    /// Index tags for the destination: copies never carry the source's.
    pub tags: Option<Tags>,
    /// The tier to set (a restore puts back the tier the version had).
    pub tier: Option<String>,
    /// The version's Content-MD5 property as stored (from its listing or properties), for a
    /// copy through this worker: a read's own `Content-MD5` header is no such record (Azurite
    /// computes one for a blob that has none).
    pub stored_md5: Option<Vec<u8>>,
    /// Through this worker: record the MD5 of the bytes copied in the metadata (a backup's
    /// stamp does; a restored blob gets only the version's own metadata).
    pub record_md5: bool,
}

/// What a copy did beside the bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    pub state: CopyStart,
    /// Through this worker: the MD5 of the bytes copied.
    pub md5: Option<Vec<u8>>,
    /// The source's stored Content-MD5 does not match its bytes (kept as stored all the same).
    pub md5_mismatch: bool,
    /// The destination's account refused to set tags; the copy was made without them.
    pub tags_refused: bool,
}

/// How a copy request ended at the service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CopyStart {
    /// Complete: the destination holds the source version and the metadata sent.
    #[default]
    Done,
    /// Accepted and still running (the asynchronous path); poll the destination.
    Pending,
}

/// The copy path a server-side copy takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCopy {
    /// Copy Blob From URL: block blobs up to 256 MiB, complete when it answers.
    Sync,
    /// Copy Blob: every blob type and size; it may still be pending when it answers.
    Async,
}

impl ServerCopy {
    /// The path for a source of this type and length: Copy Blob From URL takes committed block
    /// blobs up to 256 MiB only (Azure refuses append and page blobs there).
    pub fn for_source(blob_type: BlobType, length: u64) -> Self {
        if blob_type == BlobType::Block && length <= MAX_SYNC_COPY_BYTES {
            ServerCopy::Sync
        } else {
            ServerCopy::Async
        }
    }
}

/// Copies the version `source_etag` of the blob at `source_url` to `destination` in one request,
/// with `attributes`: the service carries the blob's type, content headers and Content-MD5 as
/// stored. The source condition refuses any other version, and `If-None-Match: *` (unless
/// `replace` names the ETag the destination must have) refuses to overwrite anything.
pub async fn copy_version(
    destination: &Blob,
    source_url: &Url,
    source_etag: &str,
    attributes: &CopyAttributes,
    path: ServerCopy,
) -> Result<Copied, StorageError> {
    copy_server_side(
        destination,
        source_url,
        Some(source_etag),
        attributes,
        path,
        Overwrite::Never,
    )
    .await
}

/// What a server-side copy may do to the destination.
#[derive(Debug, Clone, Copy)]
pub enum Overwrite<'a> {
    /// Only create it (`If-None-Match: *`).
    Never,
    /// Only replace the blob with this ETag.
    IfMatch(&'a str),
}

/// A server-side copy of the blob at `source_url` (pinned to `source_etag` when given); a write
/// with tags that the destination's account refuses to tag is made again without them.
pub async fn copy_server_side(
    destination: &Blob,
    source_url: &Url,
    source_etag: Option<&str>,
    attributes: &CopyAttributes,
    path: ServerCopy,
    overwrite: Overwrite<'_>,
) -> Result<Copied, StorageError> {
    let what = destination.what();
    let what = what.as_str();
    let attempt = |tags: Option<&Tags>| {
        let mut context = Context::new();
        if path == ServerCopy::Sync {
            context.insert(RequestHeaders(vec![("x-ms-requires-sync", "true".into())]));
        }
        keep_case(&mut context, &attributes.metadata);
        let (if_match, if_none_match) = match overwrite {
            Overwrite::Never => (None, Some("*".into())),
            Overwrite::IfMatch(etag) => (Some(quoted_etag(etag).into()), None),
        };
        let options = BlobClientStartCopyFromUrlOptions {
            source_if_match: source_etag.map(|etag| quoted_etag(etag).into()),
            if_match,
            if_none_match,
            metadata: Some(attributes.metadata.clone()),
            blob_tags_string: tags.filter(|t| !t.is_empty()).map(tags_header),
            tier: attributes.tier.as_deref().and_then(|t| t.parse().ok()),
            method_options: ClientMethodOptions { context },
            ..Default::default()
        };
        async move {
            let response = destination
                .sdk()
                .start_copy_from_url(source_url.to_string(), Some(options))
                .await
                .during(|| format!("copying to {what}"))?;
            response
                .copy_status()
                .during(|| format!("copying to {what}"))
        }
    };
    let (status, tags_refused) = with_tags(attributes.tags.as_ref(), attempt).await?;
    let state = match status {
        Some(CopyStatus::Success) => CopyStart::Done,
        _ if path == ServerCopy::Sync => {
            return Err(StorageError::other(
                format!("copying to {what}"),
                format!("a synchronous copy answered with copy status {status:?}"),
            ))
        }
        _ => CopyStart::Pending,
    };
    Ok(Copied {
        state,
        tags_refused,
        ..Default::default()
    })
}

/// Runs `write` with `tags`; when the account refuses tags to this identity (it lacks the
/// tags/write right), runs it again without them and says so.
async fn with_tags<'t, T, F, Fut>(
    tags: Option<&'t Tags>,
    mut write: F,
) -> Result<(T, bool), StorageError>
where
    F: FnMut(Option<&'t Tags>) -> Fut,
    Fut: std::future::Future<Output = Result<T, StorageError>>,
{
    match write(tags).await {
        Err(e) if tags.is_some_and(|t| !t.is_empty()) && e.is_tags_refusal() => {
            tracing::warn!(error = %e, "the account refused to set tags: written without them");
            Ok((write(None).await?, true))
        }
        other => Ok((other?, false)),
    }
}

/// Copies the version `source_etag` of the block blob `source` to `destination` through this
/// process: one read conditional on that ETag, then a create-only write carrying `attributes`,
/// the source's content headers and its Content-MD5 exactly as stored — absent when it has none,
/// and as stored when it does not match the bytes (reported, never a reason to refuse). So the
/// backup is complete and stamped or absent, as with a server-side copy. Meant for small blobs,
/// where two requests cost less than a server-side copy (the service reads the source once more
/// to check the copy's authorization) and need no SAS.
///
/// Bytes whose length is not the version's are never written.
pub async fn copy_version_through(
    source: &Blob,
    destination: &Blob,
    source_etag: &str,
    length: u64,
    attributes: &CopyAttributes,
    overwrite: Overwrite<'_>,
) -> Result<Copied, StorageError> {
    let (what_source, what) = (source.what(), destination.what());
    let what = what.as_str();
    let read = || format!("reading {what_source} to copy it to {what}");
    let downloaded = source
        .sdk()
        .download(Some(BlobClientDownloadOptions {
            if_match: Some(quoted_etag(source_etag).into()),
            ..Default::default()
        }))
        .await
        .during(read)?;
    let properties = downloaded.properties;
    let bytes = downloaded.body.collect().await.during(read)?;
    let digest = Md5::digest(&bytes).to_vec();
    // (The SDK reads in ranges, every one conditional on the ETag: the response's own length
    // is only its first range's.)
    if length != bytes.len() as u64 {
        return Err(StorageError::other(
            read(),
            format!("read {} bytes of {length}", bytes.len()),
        ));
    }
    let stored_md5 = attributes.stored_md5.clone().filter(|md5| !md5.is_empty());
    let md5_mismatch = stored_md5.as_ref().is_some_and(|stored| *stored != digest);
    if md5_mismatch {
        tracing::warn!(
            source = what_source,
            "the stored Content-MD5 does not match the bytes: backed up as the lake holds them"
        );
    }
    let headers = ContentHeaders {
        content_type: properties.content_type,
        content_encoding: properties.content_encoding,
        content_language: properties.content_language,
        content_disposition: properties.content_disposition,
        cache_control: properties.cache_control,
    }
    .normalized();
    let mut metadata = attributes.metadata.clone();
    if attributes.record_md5 {
        metadata.insert(COPIED_MD5_KEY.to_owned(), BASE64.encode(&digest));
    }
    let condition = WriteCondition::of(overwrite);
    let tier = attributes.tier.clone();
    let write = |tags: Option<&Tags>| {
        let (bytes, metadata, headers, stored_md5) = (
            bytes.to_vec(),
            metadata.clone(),
            headers.clone(),
            stored_md5.clone(),
        );
        let written = Written {
            metadata,
            headers,
            md5: stored_md5,
            tags: tags.filter(|t| !t.is_empty()).map(tags_header),
            tier: tier.as_deref().and_then(|t| t.parse().ok()),
            condition: condition.clone(),
        };
        let same_md5 = written.md5.as_deref() == Some(digest.as_slice());
        async move {
            if same_md5 {
                // Put Blob checks the MD5 it is given against the bytes: here they agree.
                put_blob(destination, bytes, written, what).await
            } else {
                // Put Blob would invent an MD5 (or refuse a wrong one); a block list stores the
                // MD5 it is given, or none.
                put_block_list(destination, bytes, written, what).await
            }
        }
    };
    let ((), tags_refused) = with_tags(attributes.tags.as_ref(), write).await?;
    Ok(Copied {
        state: CopyStart::Done,
        md5: Some(digest),
        md5_mismatch,
        tags_refused,
    })
}

/// What the one write of a copy through this worker carries besides the bytes.
struct Written {
    metadata: HashMap<String, String>,
    headers: ContentHeaders,
    md5: Option<Vec<u8>>,
    tags: Option<String>,
    tier: Option<AccessTier>,
    condition: WriteCondition,
}

/// The write's condition on the destination: create-only, or replace exactly one ETag.
#[derive(Clone)]
struct WriteCondition {
    if_match: Option<String>,
    if_none_match: Option<String>,
}

impl WriteCondition {
    fn of(overwrite: Overwrite<'_>) -> Self {
        match overwrite {
            Overwrite::Never => Self {
                if_match: None,
                if_none_match: Some("*".into()),
            },
            Overwrite::IfMatch(etag) => Self {
                if_match: Some(quoted_etag(etag)),
                if_none_match: None,
            },
        }
    }
}

/// One conditional Put Blob.
async fn put_blob(
    destination: &Blob,
    bytes: Vec<u8>,
    written: Written,
    what: &str,
) -> Result<(), StorageError> {
    let length = bytes.len();
    let Written {
        metadata,
        headers,
        md5,
        tags,
        tier,
        condition,
    } = written;
    destination
        .sdk()
        .upload(
            RequestContent::from(bytes),
            Some(BlobClientUploadOptions {
                if_match: condition.if_match.map(Into::into),
                if_none_match: condition.if_none_match.map(Into::into),
                method_options: names_as_written(&metadata),
                metadata: Some(metadata),
                blob_content_md5: md5,
                blob_content_type: headers.content_type,
                blob_content_encoding: headers.content_encoding,
                blob_content_language: headers.content_language,
                blob_content_disposition: headers.content_disposition,
                blob_cache_control: headers.cache_control,
                blob_tags_string: tags,
                tier,
                // One request whatever the size: the SDK would otherwise split larger content.
                partition_size: std::num::NonZero::new(length.max(1) as u64),
                ..Default::default()
            }),
        )
        .await
        .during(|| format!("copying to {what}"))?;
    Ok(())
}

/// Put Block, then a conditional Put Block List carrying the MD5 exactly as given (or none): the
/// service stores it without checking it against the bytes.
async fn put_block_list(
    destination: &Blob,
    bytes: Vec<u8>,
    written: Written,
    what: &str,
) -> Result<(), StorageError> {
    let Written {
        metadata,
        headers,
        md5,
        tags,
        tier,
        condition,
    } = written;
    let block_blob = destination.sdk().block_blob_client();
    let copying = || format!("copying to {what}");
    // Fixed ids: a block staged twice (a retried copy) is the same block.
    let mut blocks = Vec::new();
    for (index, chunk) in bytes.chunks(MAX_BLOCK_BYTES).enumerate() {
        let id = format!("lakebackup-{index:08}").into_bytes();
        block_blob
            .stage_block(
                &id,
                chunk.len() as u64,
                RequestContent::from(chunk.to_vec()),
                Some(BlockBlobClientStageBlockOptions {
                    transactional_content_md5: Some(Md5::digest(chunk).to_vec()),
                    ..Default::default()
                }),
            )
            .await
            .during(copying)?;
        blocks.push(id);
    }
    let list = BlockLookupList {
        latest: Some(blocks),
        ..Default::default()
    };
    block_blob
        .commit_block_list(
            list.try_into().during(copying)?,
            Some(BlockBlobClientCommitBlockListOptions {
                if_match: condition.if_match.map(Into::into),
                if_none_match: condition.if_none_match.map(Into::into),
                method_options: names_as_written(&metadata),
                metadata: Some(metadata),
                blob_content_md5: md5,
                blob_content_type: headers.content_type,
                blob_content_encoding: headers.content_encoding,
                blob_content_language: headers.content_language,
                blob_content_disposition: headers.content_disposition,
                blob_cache_control: headers.cache_control,
                blob_tags_string: tags,
                tier,
                ..Default::default()
            }),
        )
        .await
        .during(copying)?;
    Ok(())
}

/// The largest block staged at once (Azure takes up to 4,000 MiB; this keeps requests small).
const MAX_BLOCK_BYTES: usize = 8 << 20;

/// Polls a copy destination until its copy is no longer pending, or `timeout` passes; returns its
/// final state (`None` when it vanished).
pub async fn wait_for_copy(
    blob: &Blob,
    timeout: std::time::Duration,
    interval: std::time::Duration,
) -> Result<Option<BlobState>, StorageError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let state = blob.probe().await?;
        let pending = state
            .as_ref()
            .is_some_and(|s| s.version.copy_status == Some(VersionCopyStatus::Pending));
        if !pending || tokio::time::Instant::now() >= deadline {
            return Ok(state);
        }
        tokio::time::sleep(interval).await;
    }
}
