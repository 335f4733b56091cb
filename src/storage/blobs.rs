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
        BlobClientUploadOptions, CopyStatus,
    },
    BlobClient,
};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use md5::{Digest, Md5};
use time::OffsetDateTime;
use url::Url;

use super::{
    sas::{read_blob_delegation_sas, read_blob_sas},
    StorageAccount, StorageAuth, StorageError, StorageResultExt,
};
use crate::core::{
    etag::{normalize_etag, quoted_etag},
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
    pub copy_status_description: Option<String>,
    /// `Hot`, `Cool`, `Cold`, `Archive`, ... when the service says.
    pub access_tier: Option<String>,
}

impl BlobState {
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
        copy_status_description: response.copy_status_description().during(read)?,
        access_tier: response.access_tier().during(read)?,
    }))
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

/// How a copy request ended at the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyStart {
    /// Complete: the destination holds the source version and the metadata sent.
    Done,
    /// Accepted and still running (the asynchronous path); poll the destination.
    Pending,
}

/// Copies the version `source_etag` of the blob at `source_url` to `destination`, with
/// `metadata`, in one request: synchronously (Copy Blob From URL) when `sync`, else as an
/// asynchronous Copy Blob. The source condition refuses any other version, and
/// `If-None-Match: *` refuses to overwrite anything at the destination.
pub async fn copy_version(
    destination: &BlobClient,
    source_url: &Url,
    source_etag: &str,
    metadata: HashMap<String, String>,
    sync: bool,
    what: &str,
) -> Result<CopyStart, StorageError> {
    let mut context = Context::new();
    if sync {
        context.insert(RequestHeaders(vec![("x-ms-requires-sync", "true".into())]));
    }
    let response = destination
        .start_copy_from_url(
            source_url.to_string(),
            Some(BlobClientStartCopyFromUrlOptions {
                source_if_match: Some(quoted_etag(source_etag).into()),
                if_none_match: Some("*".into()),
                metadata: Some(metadata),
                method_options: ClientMethodOptions { context },
                ..Default::default()
            }),
        )
        .await
        .during(|| format!("copying to {what}"))?;
    let status = response
        .copy_status()
        .during(|| format!("copying to {what}"))?;
    Ok(match status {
        Some(CopyStatus::Success) => CopyStart::Done,
        _ if sync => {
            return Err(StorageError::other(
                format!("copying to {what}"),
                format!("a synchronous copy answered with copy status {status:?}"),
            ))
        }
        _ => CopyStart::Pending,
    })
}

/// Copies the version `source_etag` of `source` to `destination` through this process: one read
/// conditional on that ETag, then one write with `If-None-Match: *` carrying the stamp, the
/// source's content properties and the MD5 of the bytes read, so the backup is complete and
/// stamped or absent, as with a server-side copy. Meant for small blobs, where two requests cost
/// less than a server-side copy (the service reads the source once more to check the copy's
/// authorization) and need no SAS. Returns the MD5 of the bytes copied.
///
/// Bytes that do not match the source's own MD5 or the version's length are never written.
pub async fn copy_version_through(
    source: &BlobClient,
    destination: &BlobClient,
    source_etag: &str,
    length: u64,
    mut metadata: HashMap<String, String>,
    what_source: &str,
    what: &str,
) -> Result<Vec<u8>, StorageError> {
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
    let source_md5 = properties
        .blob_content_md5
        .or(properties.content_md5)
        .filter(|md5| !md5.is_empty());
    if let Some(expected) = &source_md5 {
        if *expected != digest {
            return Err(StorageError::other(
                read(),
                "the bytes read do not match the source's Content-MD5",
            ));
        }
    }
    // (The SDK reads in ranges, every one conditional on the ETag: the response's own length
    // is only its first range's.)
    if length != bytes.len() as u64 {
        return Err(StorageError::other(
            read(),
            format!("read {} bytes of {length}", bytes.len()),
        ));
    }
    metadata.insert(COPIED_MD5_KEY.to_owned(), BASE64.encode(&digest));
    destination
        .upload(
            RequestContent::from(bytes.to_vec()),
            Some(BlobClientUploadOptions {
                if_none_match: Some("*".into()),
                metadata: Some(metadata),
                blob_content_md5: source_md5,
                blob_content_type: properties.content_type,
                blob_content_encoding: properties.content_encoding,
                blob_content_language: properties.content_language,
                blob_content_disposition: properties.content_disposition,
                blob_cache_control: properties.cache_control,
                ..Default::default()
            }),
        )
        .await
        .during(|| format!("copying to {what}"))?;
    Ok(digest)
}

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
