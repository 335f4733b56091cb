//! Listings, a page at a time: a container with its snapshots (for the diff), a backup container
//! with its metadata (for the backup index), and the containers of an account.

use std::collections::HashMap;

use azure_storage_blob::{
    models::{BlobContainerClientListBlobsOptions, BlobName, ListBlobsIncludeItem},
    BlobContainerClient,
};
use futures::{Stream, StreamExt, TryStreamExt};
use serde::Deserialize;

use super::{StorageError, StorageResultExt};
use crate::core::{diff::ListedBlob, etag::normalize_etag, stamp};

/// The container's blobs and snapshots (under `prefix`, if given), one listing page (up to 5,000
/// entries) per item.
pub fn list_with_snapshots(
    container: &BlobContainerClient,
    container_name: &str,
    prefix: Option<&str>,
) -> Result<impl Stream<Item = Result<Vec<ListedBlob>, StorageError>> + Send + 'static, StorageError>
{
    list_pages(
        container,
        format!("listing container {container_name}"),
        &[ListBlobsIncludeItem::Snapshots],
        prefix,
        listed_blob,
    )
}

fn listed_blob(item: ListedItem, operation: &str) -> Result<Option<ListedBlob>, StorageError> {
    let incomplete = |what: &str| {
        StorageError::other(
            operation.to_owned(),
            format!("the service listed an entry without {what}"),
        )
    };
    let name = item.name(operation)?;
    let properties = item.properties;
    Ok(Some(ListedBlob {
        etag: properties.etag.ok_or_else(|| incomplete("an ETag"))?,
        last_modified: properties
            .last_modified
            .ok_or_else(|| incomplete("a last-modified time"))?,
        content_length: properties.content_length.unwrap_or(0),
        content_md5: properties.content_md5,
        snapshot: item.snapshot.filter(|s| !s.is_empty()),
        name,
    }))
}

/// One snapshot of a blob, with what it takes to back it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSnapshot {
    pub snapshot: String,
    pub etag: String,
    pub last_modified: time::OffsetDateTime,
    pub content_length: u64,
    pub content_md5: Option<Vec<u8>>,
    pub metadata: HashMap<String, String>,
}

/// The newest snapshot of `container_name/name` that carries `etag` (a snapshot keeps the ETag
/// of the version it was taken of), found by listing that one name.
pub async fn find_snapshot(
    container: &BlobContainerClient,
    container_name: &str,
    name: &str,
    etag: &str,
) -> Result<Option<ListedSnapshot>, StorageError> {
    let pages = list_pages(
        container,
        format!("listing the snapshots of {container_name}/{name}"),
        &[
            ListBlobsIncludeItem::Snapshots,
            ListBlobsIncludeItem::Metadata,
        ],
        Some(name),
        |item, operation| {
            let entry_name = item.name(operation)?;
            let (Some(snapshot), Some(etag), Some(last_modified)) = (
                item.snapshot.filter(|s| !s.is_empty()),
                item.properties.etag,
                item.properties.last_modified,
            ) else {
                return Ok(None);
            };
            Ok(Some((
                entry_name,
                ListedSnapshot {
                    snapshot,
                    etag: normalize_etag(&etag).to_owned(),
                    last_modified,
                    content_length: item.properties.content_length.unwrap_or(0),
                    content_md5: item.properties.content_md5,
                    metadata: item.metadata.unwrap_or_default(),
                },
            )))
        },
    )?;
    futures::pin_mut!(pages);
    let mut newest: Option<ListedSnapshot> = None;
    while let Some(page) = pages.try_next().await? {
        for (entry_name, snapshot) in page {
            if entry_name == name
                && snapshot.etag == normalize_etag(etag)
                && newest
                    .as_ref()
                    .is_none_or(|n| n.snapshot < snapshot.snapshot)
            {
                newest = Some(snapshot);
            }
        }
    }
    Ok(newest)
}

/// One backup blob: its name, metadata and content facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedBackup {
    pub name: String,
    pub metadata: HashMap<String, String>,
    pub content_length: u64,
    pub content_md5: Option<Vec<u8>>,
    /// The blob is the destination of a copy that is pending, failed or aborted.
    pub copy_incomplete: bool,
}

impl ListedBackup {
    /// The source ETag the backup is stamped with, when it is complete: the stamp travels with
    /// the copy, so a copy still pending or failed carries one but does not count.
    pub fn stamped_etag(&self) -> Option<&str> {
        if self.copy_incomplete {
            return None;
        }
        stamp::stamped_etag(&self.metadata)
    }
}

/// The blobs of a backup container (under `prefix`, if given) with their metadata, one listing
/// page per item.
pub fn list_backups(
    container: &BlobContainerClient,
    container_name: &str,
    prefix: Option<&str>,
) -> Result<
    impl Stream<Item = Result<Vec<ListedBackup>, StorageError>> + Send + 'static,
    StorageError,
> {
    list_pages(
        container,
        format!("listing backup container {container_name}"),
        &[ListBlobsIncludeItem::Metadata, ListBlobsIncludeItem::Copy],
        prefix,
        |item, operation| {
            Ok(Some(ListedBackup {
                name: item.name(operation)?,
                metadata: item.metadata.unwrap_or_default(),
                content_length: item.properties.content_length.unwrap_or(0),
                copy_incomplete: item
                    .properties
                    .copy_status
                    .as_deref()
                    .is_some_and(|status| status != "success"),
                content_md5: item.properties.content_md5,
            }))
        },
    )
}

/// One listing page, reading only what the functions use: the SDK's full model costs about a
/// kilobyte per entry, which at 5,000 entries a page dominated the reconciler's memory.
#[derive(Deserialize)]
struct ListedPage {
    #[serde(rename = "Blobs", default)]
    blobs: ListedItems,
}

#[derive(Default, Deserialize)]
struct ListedItems {
    #[serde(rename = "Blob", default)]
    items: Vec<ListedItem>,
}

#[derive(Deserialize)]
struct ListedItem {
    #[serde(rename = "Name", default)]
    name: Option<BlobName>,
    #[serde(rename = "Snapshot", default)]
    snapshot: Option<String>,
    #[serde(rename = "Properties", default)]
    properties: ListedProperties,
    #[serde(rename = "Metadata", default)]
    metadata: Option<HashMap<String, String>>,
}

#[derive(Default, Deserialize)]
struct ListedProperties {
    #[serde(rename = "Etag", default)]
    etag: Option<String>,
    #[serde(
        rename = "Last-Modified",
        default,
        with = "azure_core::time::rfc7231::option"
    )]
    last_modified: Option<time::OffsetDateTime>,
    #[serde(rename = "Content-Length", default)]
    content_length: Option<u64>,
    #[serde(rename = "Content-MD5", default, deserialize_with = "base64_bytes")]
    content_md5: Option<Vec<u8>>,
    #[serde(rename = "CopyStatus", default)]
    copy_status: Option<String>,
}

impl ListedItem {
    /// The blob name, percent-decoded when the service marked it `Encoded` (names with
    /// characters XML cannot carry).
    fn name(&self, operation: &str) -> Result<String, StorageError> {
        let missing =
            || StorageError::other(operation, "the service listed an entry without a name");
        let name = self.name.as_ref().ok_or_else(missing)?;
        let content = name.content.clone().ok_or_else(missing)?;
        if !name.encoded.unwrap_or_default() {
            return Ok(content);
        }
        percent_encoding::percent_decode_str(&content)
            .decode_utf8()
            .map(|decoded| decoded.into_owned())
            .map_err(|_| StorageError::other(operation, "an encoded blob name is not UTF-8"))
    }
}

fn base64_bytes<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<u8>>, D::Error> {
    use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
    let text = Option::<String>::deserialize(deserializer)?;
    // Azure lists a blob without an MD5 as an empty `<Content-MD5 />`: that is no digest at all.
    Ok(text
        .and_then(|t| BASE64.decode(t.trim()).ok())
        .filter(|digest| !digest.is_empty()))
}

/// A blob listing as a stream of pages, each entry turned into `T` by `convert` (`None` skips
/// it), the next page prefetched.
fn list_pages<T: Send + 'static>(
    container: &BlobContainerClient,
    operation: String,
    include: &[ListBlobsIncludeItem],
    prefix: Option<&str>,
    convert: fn(ListedItem, &str) -> Result<Option<T>, StorageError>,
) -> Result<impl Stream<Item = Result<Vec<T>, StorageError>> + Send + 'static, StorageError> {
    let options = BlobContainerClientListBlobsOptions {
        include: Some(include.to_vec()),
        prefix: prefix.map(str::to_owned),
        ..Default::default()
    };
    let pages = prefetched(
        container
            .list_blobs(Some(options))
            .during(|| operation.clone())?
            .into_pages(),
    );
    let failed = operation.clone();
    Ok(pages
        .map_err(move |e| StorageError::new(failed.clone(), e))
        .and_then(move |page| {
            let operation = operation.clone();
            async move {
                let body = page.into_body();
                let page: ListedPage =
                    azure_core::xml::from_xml(&body).during(|| operation.clone())?;
                drop(body);
                let mut entries = Vec::with_capacity(page.blobs.items.len());
                for item in page.blobs.items {
                    entries.extend(convert(item, &operation)?);
                }
                Ok(entries)
            }
        }))
}

/// The names of every container of the account behind `service`.
pub async fn list_container_names(
    service: &azure_storage_blob::BlobServiceClient,
) -> Result<Vec<String>, StorageError> {
    let operation = || "listing containers".to_owned();
    let mut pages = service
        .list_containers(None)
        .during(operation)?
        .into_pages();
    let mut names = Vec::new();
    while let Some(page) = pages.try_next().await.during(operation)? {
        let page = page.into_model().during(operation)?;
        names.extend(page.container_items.into_iter().filter_map(|c| c.name));
    }
    Ok(names)
}

/// Fetches the next page while the caller parses and works through the current one: listing
/// time is then the service's, not the service's plus ours. At most two pages are held.
fn prefetched<T: Send + 'static>(
    pages: impl Stream<Item = T> + Send + 'static,
) -> impl Stream<Item = T> + Send + 'static {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        futures::pin_mut!(pages);
        while let Some(page) = pages.next().await {
            if sender.send(page).await.is_err() {
                break; // the caller stopped listening
            }
        }
    });
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|page| (page, receiver))
    })
}
