//! Blob-level operations the functions share: reading a blob's state, a URL another party (the
//! copy engine) can read exactly one blob through, and the copy of one exact version.

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use azure_core::http::{
    policies::{Policy, PolicyResult},
    ClientMethodOptions, Context, Request, RequestContent,
};
use azure_storage_blob::{
    models::{
        BlobClientDownloadOptions, BlobClientGetPropertiesResultHeaders,
        BlobClientStartCopyFromUrlOptions, BlobClientStartCopyFromUrlResultHeaders,
        BlobClientUploadOptions, BlockBlobClientCommitBlockListOptions,
        BlockBlobClientStageBlockOptions, BlockLookupList, CopyStatus,
    },
    BlobClient,
};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use md5::{Digest, Md5};
use time::OffsetDateTime;
use url::Url;

use super::{
    sas::{read_blob_delegation_sas, read_blob_sas},
    ErrorCode, StorageAccount, StorageAuth, StorageError, StorageResultExt,
};
use crate::core::{
    etag::{normalize_etag, quoted_etag},
    properties::{tags_header, BlobProperties, BlobType, ContentHeaders, Tags},
    stamp::COPIED_MD5_KEY,
};

/// The largest source Copy Blob From URL copies synchronously (Azure's limit).
pub const MAX_SYNC_COPY_BYTES: u64 = 256 * 1024 * 1024;

/// What the consumer needs to know about one blob.
#[derive(Debug, Clone)]
pub struct BlobState {
    /// Without quotes.
    pub etag: String,
    pub last_modified: OffsetDateTime,
    pub content_length: u64,
    pub content_md5: Option<Vec<u8>>,
    pub metadata: HashMap<String, String>,
    /// `Some` when the blob is (or was) the destination of a copy.
    pub copy_status: Option<CopyStatus>,
    /// The URL it was copied from (its signature redacted by the caller's comparison only).
    pub copy_source: Option<String>,
    pub copy_status_description: Option<String>,
    /// `Hot`, `Cool`, `Cold`, `Archive`, ... when the service says (set or inferred).
    pub access_tier: Option<String>,
    /// Type, the tier set on the blob, content headers; `tags` is `None` until read with
    /// [`read_tags`].
    pub properties: BlobProperties,
    /// How many index tags the blob has.
    pub tag_count: u64,
}

impl BlobState {
    /// Whether the blob is the result of a copy from `source` (the same blob or snapshot,
    /// whatever signature authorized it): a copy whose answer was lost, found done.
    pub fn copied_from(&self, source: &Url) -> bool {
        let Some(copied) = self.copy_source.as_deref().and_then(|s| Url::parse(s).ok()) else {
            return false;
        };
        let snapshot = |url: &Url| {
            url.query_pairs()
                .find(|(k, _)| k == "snapshot")
                .map(|(_, v)| v.into_owned())
        };
        copied.host_str() == source.host_str()
            && copied.port_or_known_default() == source.port_or_known_default()
            && copied.path() == source.path()
            && snapshot(&copied) == snapshot(source)
    }

    /// An archived blob cannot be read (or copied) until it is rehydrated.
    pub fn is_archived(&self) -> bool {
        self.access_tier
            .as_deref()
            .is_some_and(|tier| tier.eq_ignore_ascii_case("archive"))
    }

    /// Not the destination of a copy still pending, failed or aborted.
    pub fn copy_complete(&self) -> bool {
        matches!(self.copy_status, None | Some(CopyStatus::Success))
    }

    /// The source ETag a backup is stamped with, when its copy is complete (the stamp travels
    /// with the copy, so one still pending carries it too).
    pub fn complete_stamp(&self) -> Option<&str> {
        if !self.copy_complete() {
            return None;
        }
        crate::core::stamp::stamped_etag(&self.metadata)
    }
}

/// The blob's state, or `None` when it does not exist.
pub async fn blob_state(blob: &BlobClient, what: &str) -> Result<Option<BlobState>, StorageError> {
    let response = match blob.get_properties(None).await {
        Ok(response) => response,
        Err(e) if e.http_status() == Some(azure_core::http::StatusCode::NotFound) => {
            return Ok(None)
        }
        Err(e) => {
            return Err(StorageError::new(
                format!("reading properties of {what}"),
                e,
            ))
        }
    };
    let read = || format!("reading properties of {what}");
    let missing = |field: &str| StorageError::other(read(), format!("the service sent no {field}"));
    Ok(Some(BlobState {
        etag: response
            .etag()
            .during(read)?
            .map(|e| normalize_etag(e.as_ref()).to_owned())
            .ok_or_else(|| missing("ETag"))?,
        last_modified: response
            .last_modified()
            .during(read)?
            .ok_or_else(|| missing("Last-Modified"))?,
        content_length: response.content_length().during(read)?.unwrap_or(0),
        content_md5: response.content_md5().during(read)?,
        metadata: response.metadata().during(read)?,
        copy_status: response.copy_status().during(read)?,
        copy_source: response.copy_source().during(read)?,
        copy_status_description: response.copy_status_description().during(read)?,
        access_tier: response.access_tier().during(read)?,
        properties: BlobProperties {
            blob_type: match response.blob_type().during(read)? {
                Some(azure_storage_blob::models::BlobType::AppendBlob) => BlobType::Append,
                Some(azure_storage_blob::models::BlobType::PageBlob) => BlobType::Page,
                _ => BlobType::Block,
            },
            access_tier: match response.access_tier_inferred().during(read)? {
                Some(true) => None,
                _ => response.access_tier().during(read)?,
            },
            headers: ContentHeaders {
                content_type: response.content_type().during(read)?,
                content_encoding: response.content_encoding().during(read)?,
                content_language: response.content_language().during(read)?,
                content_disposition: response.content_disposition().during(read)?,
                cache_control: response.cache_control().during(read)?,
            }
            .normalized(),
            tags: None,
            customer_key: response
                .encryption_key_sha256()
                .during(read)?
                .is_some_and(|sha| !sha.is_empty()),
        },
        tag_count: response.tag_count().during(read)?.unwrap_or(0).max(0) as u64,
    }))
}

/// The blob's index tags.
pub async fn read_tags(blob: &BlobClient, what: &str) -> Result<Tags, StorageError> {
    let read = || format!("reading the tags of {what}");
    let tags = blob
        .get_tags(None)
        .await
        .during(read)?
        .into_model()
        .during(read)?;
    Ok(tags
        .blob_tag_set
        .unwrap_or_default()
        .into_iter()
        .filter_map(|tag| Some((tag.key?, tag.value.unwrap_or_default())))
        .collect())
}

impl StorageAccount {
    /// A URL that lets its holder read exactly `container/blob` (or its snapshot `snapshot`)
    /// until `expiry`, for a server-side copy from this account: a read-only SAS for that one
    /// blob, signed with the account key or, keys off, with a user delegation key the account
    /// issued to this app's identity; or the connection's own SAS.
    pub async fn readable_blob_url(
        &self,
        container: &str,
        blob: &str,
        snapshot: Option<&str>,
        expiry: OffsetDateTime,
    ) -> Result<Url, StorageError> {
        let mut client = self.container(container)?.blob_client(blob);
        if let Some(snapshot) = snapshot {
            client = client
                .with_snapshot(snapshot)
                .during(|| format!("addressing a snapshot of {container}/{blob}"))?;
        }
        let mut url = client.url().clone();
        let sas = match &self.connection().auth {
            StorageAuth::SharedKey { account, key } => {
                read_blob_sas(account, key, container, blob, snapshot, expiry)
            }
            // The URL already carries the connection's SAS.
            StorageAuth::Sas { .. } => return Ok(url),
            StorageAuth::Identity { .. } => {
                let account = self.account_name().ok_or_else(|| {
                    StorageError::other(
                        format!("authorizing a copy from {container}/{blob}"),
                        "the blob endpoint names no account",
                    )
                })?;
                let key = self.delegation_key(expiry).await?;
                read_blob_delegation_sas(&account, &key, container, blob, snapshot, expiry)
            }
        };
        let query = match url.query() {
            Some(existing) if !existing.is_empty() => format!("{existing}&{}", sas.secret()),
            _ => sas.secret().to_owned(),
        };
        url.set_query(Some(&query));
        Ok(url)
    }
}

/// Headers a call adds to its request, carried in the call's context; [`RequestHeadersPolicy`]
/// puts them on. The SDK has no option for some headers (`x-ms-requires-sync`).
#[derive(Debug, Clone, Default)]
pub struct RequestHeaders(pub Vec<(&'static str, String)>);

/// Query parameters a call adds to each of its requests (every page of a listing), likewise:
/// the SDK's listing has no `delimiter`.
#[derive(Debug, Clone, Default)]
pub struct RequestQuery(pub Vec<(&'static str, String)>);

/// Adds a call's [`RequestHeaders`] and [`RequestQuery`]; runs per call, before signing.
#[derive(Debug)]
pub struct RequestHeadersPolicy;

#[async_trait]
impl Policy for RequestHeadersPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        if let Some(RequestHeaders(headers)) = ctx.value::<RequestHeaders>() {
            for (name, value) in headers {
                request.insert_header(*name, value.clone());
            }
        }
        if let Some(RequestQuery(pairs)) = ctx.value::<RequestQuery>() {
            let mut url = request.url().clone();
            {
                let mut query = url.query_pairs_mut();
                for (name, value) in pairs {
                    query.append_pair(name, value);
                }
            }
            *request.url_mut() = url;
        }
        next[0].send(ctx, request, &next[1..]).await
    }
}

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
    destination: &BlobClient,
    source_url: &Url,
    source_etag: &str,
    attributes: &CopyAttributes,
    path: ServerCopy,
    what: &str,
) -> Result<Copied, StorageError> {
    copy_server_side(
        destination,
        source_url,
        Some(source_etag),
        attributes,
        path,
        Overwrite::Never,
        what,
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
    destination: &BlobClient,
    source_url: &Url,
    source_etag: Option<&str>,
    attributes: &CopyAttributes,
    path: ServerCopy,
    overwrite: Overwrite<'_>,
    what: &str,
) -> Result<Copied, StorageError> {
    let attempt = |tags: Option<&Tags>| {
        let mut context = Context::new();
        if path == ServerCopy::Sync {
            context.insert(RequestHeaders(vec![("x-ms-requires-sync", "true".into())]));
        }
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
        Err(e) if tags.is_some_and(|t| !t.is_empty()) && is_tags_refusal(&e) => {
            tracing::warn!(error = %e, "the account refused to set tags: written without them");
            Ok((write(None).await?, true))
        }
        other => Ok((other?, false)),
    }
}

/// The identity may read and write blobs but not their index tags (only Storage Blob Data Owner,
/// or a custom role with the tags actions, or a SAS with `t`, may).
pub fn is_tags_refusal(error: &StorageError) -> bool {
    error.status == Some(403)
        && (error.is(ErrorCode::AuthorizationPermissionMismatch)
            || error.is(ErrorCode::AuthorizationFailure))
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
    source: &BlobClient,
    destination: &BlobClient,
    source_etag: &str,
    length: u64,
    attributes: &CopyAttributes,
    what_source: &str,
    what: &str,
) -> Result<Copied, StorageError> {
    let read = || format!("reading {what_source} to copy it to {what}");
    let downloaded = source
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
    metadata.insert(COPIED_MD5_KEY.to_owned(), BASE64.encode(&digest));
    let write = |tags: Option<&Tags>| {
        let (bytes, metadata, headers, stored_md5) = (
            bytes.to_vec(),
            metadata.clone(),
            headers.clone(),
            stored_md5.clone(),
        );
        let tags = tags.filter(|t| !t.is_empty()).map(tags_header);
        let same_md5 = stored_md5.as_deref() == Some(digest.as_slice());
        async move {
            if same_md5 {
                // Put Blob checks the MD5 it is given against the bytes: here they agree.
                put_blob(
                    destination,
                    bytes,
                    metadata,
                    headers,
                    stored_md5,
                    tags,
                    what,
                )
                .await
            } else {
                // Put Blob would invent an MD5 (or refuse a wrong one); a block list stores the
                // MD5 it is given, or none.
                put_block_list(
                    destination,
                    bytes,
                    metadata,
                    headers,
                    stored_md5,
                    tags,
                    what,
                )
                .await
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

/// One create-only Put Blob.
async fn put_blob(
    destination: &BlobClient,
    bytes: Vec<u8>,
    metadata: HashMap<String, String>,
    headers: ContentHeaders,
    md5: Option<Vec<u8>>,
    tags: Option<String>,
    what: &str,
) -> Result<(), StorageError> {
    let length = bytes.len();
    destination
        .upload(
            RequestContent::from(bytes),
            Some(BlobClientUploadOptions {
                if_none_match: Some("*".into()),
                metadata: Some(metadata),
                blob_content_md5: md5,
                blob_content_type: headers.content_type,
                blob_content_encoding: headers.content_encoding,
                blob_content_language: headers.content_language,
                blob_content_disposition: headers.content_disposition,
                blob_cache_control: headers.cache_control,
                blob_tags_string: tags,
                // One request whatever the size: the SDK would otherwise split larger content.
                partition_size: std::num::NonZero::new(length.max(1) as u64),
                ..Default::default()
            }),
        )
        .await
        .during(|| format!("copying to {what}"))?;
    Ok(())
}

/// Put Block, then a create-only Put Block List carrying the MD5 exactly as given (or none): the
/// service stores it without checking it against the bytes.
async fn put_block_list(
    destination: &BlobClient,
    bytes: Vec<u8>,
    metadata: HashMap<String, String>,
    headers: ContentHeaders,
    md5: Option<Vec<u8>>,
    tags: Option<String>,
    what: &str,
) -> Result<(), StorageError> {
    let block_blob = destination.block_blob_client();
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
                if_none_match: Some("*".into()),
                metadata: Some(metadata),
                blob_content_md5: md5,
                blob_content_type: headers.content_type,
                blob_content_encoding: headers.content_encoding,
                blob_content_language: headers.content_language,
                blob_content_disposition: headers.content_disposition,
                blob_cache_control: headers.cache_control,
                blob_tags_string: tags,
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
    blob: &BlobClient,
    what: &str,
    timeout: std::time::Duration,
    interval: std::time::Duration,
) -> Result<Option<BlobState>, StorageError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let state = blob_state(blob, what).await?;
        let pending = matches!(
            state.as_ref().and_then(|s| s.copy_status.as_ref()),
            Some(CopyStatus::Pending)
        );
        if !pending || tokio::time::Instant::now() >= deadline {
            return Ok(state);
        }
        tokio::time::sleep(interval).await;
    }
}

/// Writes one record of a life beside its name's backups, create-only; `false` when it was there
/// already (or cannot be named: the name would be too long for Azure, which is logged).
pub async fn write_record(
    client: &azure_storage_blob::BlobContainerClient,
    container: &str,
    record: &crate::core::life::Record,
    seen: OffsetDateTime,
) -> Result<bool, StorageError> {
    let name = match record.blob_name() {
        Ok(name) => name,
        Err(error) => {
            tracing::warn!(blob = record.name, %error, "the record's name would be too long; not recorded");
            return Ok(false);
        }
    };
    let written = client
        .blob_client(&name)
        .upload(
            RequestContent::from(Vec::new()),
            Some(BlobClientUploadOptions {
                if_none_match: Some("*".into()),
                metadata: Some(crate::core::life::record_metadata(seen)),
                ..Default::default()
            }),
        )
        .await
        .during(|| format!("recording a change of {container}/{}", record.name));
    match written {
        Ok(_) => {
            tracing::info!(
                blob = record.name,
                life = record.life,
                change = ?record.change,
                sequence = record.sequence,
                "life recorded"
            );
            Ok(true)
        }
        Err(e) if e.is(ErrorCode::BlobAlreadyExists) => Ok(false),
        Err(e) => Err(e),
    }
}
