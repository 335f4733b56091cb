//! The copy of one exact version to another blob: through this worker ([`through`]: reads in
//! bounded chunks pinned to the version's ETag, written with the destination's own requests;
//! small block blobs, and every blob of a connection that cannot sign a one-blob SAS), else
//! server-side — Copy Blob From URL for block blobs up to 256 MiB, the asynchronous Copy Blob
//! for every other type and size — with the destination's metadata and tags in the same
//! request, so the destination is complete with them or absent.

mod through;

pub use through::{copy_version_through, SourceVersion};

/// The SDK options of a request that makes a blob (Put Blob, Put Block List, Create Append or
/// Page Blob: each its own type, with the same field names and no trait in common), carrying
/// `headers` (a [`ContentHeaders`](crate::core::properties::ContentHeaders)) as the blob's
/// content headers, the fields given, and defaults for the rest.
macro_rules! with_content_headers {
    ($options:ident { $($field:ident: $value:expr),* $(,)? }, $headers:expr) => {{
        let headers: $crate::core::properties::ContentHeaders = $headers;
        $options {
            $($field: $value,)*
            blob_content_type: headers.content_type,
            blob_content_encoding: headers.content_encoding,
            blob_content_language: headers.content_language,
            blob_content_disposition: headers.content_disposition,
            blob_cache_control: headers.cache_control,
            ..Default::default()
        }
    }};
}
pub(crate) use with_content_headers;

use std::collections::HashMap;

use azure_core::http::{ClientMethodOptions, Context};
use azure_storage_blob::models::{
    BlobClientStartCopyFromUrlOptions, BlobClientStartCopyFromUrlResultHeaders, CopyStatus,
};
use url::Url;

use super::{
    metadata_case::keep_case, Blob, BlobState, RequestHeaders, StorageError, StorageResultExt,
};
use crate::core::{
    etag::quoted_etag,
    properties::{tags_header, BlobType, Tags},
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
    /// The destination's ETag after this copy's last write, where the service sent one (a
    /// server-side copy still pending: its ETag at the copy's start).
    pub etag: Option<String>,
    /// A server-side copy's id (`x-ms-copy-id`), where the service sent one.
    pub copy_id: Option<String>,
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
            let etag = response.etag().ok().flatten();
            let status = response
                .copy_status()
                .during(|| format!("copying to {what}"))?;
            let etag = etag.map(|e| crate::core::etag::normalize_etag(e.as_ref()).to_owned());
            let copy_id = response.copy_id().ok().flatten();
            Ok((status, etag, copy_id))
        }
    };
    let ((status, etag, copy_id), tags_refused) =
        with_tags(attributes.tags.as_ref(), attempt).await?;
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
        etag,
        copy_id,
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
