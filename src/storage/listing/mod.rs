//! Listings, a page at a time: a container with its snapshots (for the diff), a backup container
//! with its metadata (for the backup index and the lives of its names), and the containers of an
//! account. Entries come in the service's order, which nothing here compares names against.

use azure_storage_blob::models::{BlobContainerClientListBlobsOptions, ListBlobsIncludeItem};
use futures::{Stream, StreamExt, TryStreamExt};
mod one_name;
mod xml;

pub(in crate::storage) use self::one_name::metadata_as_listed;
pub use self::one_name::{access_as_listed, find_snapshot};

use self::xml::*;

use super::{Container, ErrorCode, StorageAccount, StorageError, StorageResultExt};
use crate::core::{
    etag::normalize_etag,
    version::{CopyStatus, Version},
};

/// Ends a listing quietly where its container does not exist (yet): nothing is listed.
pub fn until_container_missing<T>(
    pages: impl Stream<Item = Result<T, StorageError>>,
) -> impl Stream<Item = Result<T, StorageError>> {
    pages.take_while(|page| {
        std::future::ready(!matches!(page, Err(e) if e.is(ErrorCode::ContainerNotFound)))
    })
}

/// The container's blobs and snapshots (under `prefix`, if given), one listing page (up to 5,000
/// entries) per item.
pub fn list_with_snapshots(
    container: &Container,
    prefix: Option<&str>,
) -> Result<impl Stream<Item = Result<Vec<Version>, StorageError>> + Send + 'static, StorageError> {
    list_pages(
        container,
        format!("listing container {}", container.name()),
        &[
            ListBlobsIncludeItem::Snapshots,
            ListBlobsIncludeItem::Metadata,
        ],
        prefix,
        listed_version_with_metadata,
    )
}

/// One listed entry as a [`Version`]; an entry without an ETag or a time is an error.
fn listed_version(item: ListedItem, operation: &str) -> Result<Option<Version>, StorageError> {
    let incomplete = |what: &str| {
        StorageError::other(
            operation.to_owned(),
            format!("the service listed an entry without {what}"),
        )
    };
    let name = item.name(operation)?;
    let blob_properties = item.blob_properties();
    let properties = item.properties;
    Ok(Some(Version {
        etag: normalize_etag(&properties.etag.ok_or_else(|| incomplete("an ETag"))?).to_owned(),
        last_modified: properties
            .last_modified
            .ok_or_else(|| incomplete("a last-modified time"))?,
        content_length: properties.content_length.unwrap_or(0),
        content_md5: properties.content_md5,
        snapshot: item.snapshot.filter(|s| !s.is_empty()),
        metadata: item.metadata,
        properties: blob_properties,
        // A status this code does not know is no proof of a complete copy.
        copy_status: properties
            .copy_status
            .as_deref()
            .filter(|status| !status.is_empty())
            .map(|status| CopyStatus::parse(status).unwrap_or(CopyStatus::Failed)),
        name,
    }))
}

/// The blobs of a backup container (under `prefix`, if given) with their metadata and copy
/// status, one listing page per item.
pub fn list_backups(
    container: &Container,
    prefix: Option<&str>,
) -> Result<impl Stream<Item = Result<Vec<Version>, StorageError>> + Send + 'static, StorageError> {
    list_pages(
        container,
        format!("listing backup container {}", container.name()),
        &[ListBlobsIncludeItem::Metadata, ListBlobsIncludeItem::Copy],
        prefix,
        listed_version_with_metadata,
    )
}

/// The blobs of a container under `prefix` with their metadata, one listing page per item.
pub fn list_with_metadata(
    container: &Container,
    prefix: &str,
) -> Result<impl Stream<Item = Result<Vec<Version>, StorageError>> + Send + 'static, StorageError> {
    list_pages(
        container,
        format!("listing container {}", container.name()),
        &[ListBlobsIncludeItem::Metadata],
        // An empty prefix is no prefix (sent empty, it breaks the request's signature).
        (!prefix.is_empty()).then_some(prefix),
        listed_version_with_metadata,
    )
}

/// One entry of a listing page, in the service's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListedEntry<T> {
    Item(T),
    /// With a delimiter: a sub-directory (`dir/sub/`).
    Directory(String),
}

/// One page of a listing, with what a caller needs to go on from it.
#[derive(Debug, Clone)]
pub struct ListingPage<T> {
    /// Blobs and sub-directories, in the order the service listed them.
    pub entries: Vec<ListedEntry<T>>,
    /// Where the next page starts; `None` on the last page.
    pub next_marker: Option<String>,
}

impl<T> ListingPage<T> {
    /// The blobs of the page, in order.
    pub fn items(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().filter_map(|entry| match entry {
            ListedEntry::Item(item) => Some(item),
            ListedEntry::Directory(_) => None,
        })
    }

    /// The sub-directories of the page, in order.
    pub fn directories(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().filter_map(|entry| match entry {
            ListedEntry::Directory(sub) => Some(sub.as_str()),
            ListedEntry::Item(_) => None,
        })
    }

    /// The page's blobs, without its sub-directories.
    pub fn into_items(self) -> Vec<T> {
        self.entries
            .into_iter()
            .filter_map(|entry| match entry {
                ListedEntry::Item(item) => Some(item),
                ListedEntry::Directory(_) => None,
            })
            .collect()
    }
}

/// How much of a container to list, and where from.
#[derive(Debug, Clone, Default)]
pub struct ListingScope<'a> {
    pub prefix: Option<&'a str>,
    /// List one directory level (`/`): sub-directories come back as prefixes.
    pub one_level: bool,
    pub marker: Option<&'a str>,
    pub page_size: Option<i32>,
    /// Ask for each blob's index tags too (it takes the right to read them).
    pub tags: bool,
    /// Ask for the state of the copy each blob is the destination of.
    pub copy: bool,
    /// Ask for each path's owner, group, permissions and ACL (`include=permissions`, service
    /// version 2020-06-12 and later; a hierarchical namespace only).
    pub permissions: bool,
}

/// One directory level of a container with snapshots, a page at a time, from `scope.marker`.
pub fn list_directory_with_snapshots(
    container: &Container,
    scope: ListingScope<'_>,
) -> Result<
    impl Stream<Item = Result<ListingPage<Version>, StorageError>> + Send + 'static,
    StorageError,
> {
    // The metadata (and tags) too: a shard copies with the source's own metadata and the stamp
    // in one request, without reading the blob first.
    list_level(container, scope, true)
}

/// One directory level of a container without snapshots, with metadata (and, with
/// `scope.tags`, index tags), a page at a time: what a restore's target holds.
pub fn list_directory(
    container: &Container,
    scope: ListingScope<'_>,
) -> Result<
    impl Stream<Item = Result<ListingPage<Version>, StorageError>> + Send + 'static,
    StorageError,
> {
    list_level(container, scope, false)
}

/// One directory level with metadata, and with snapshots and tags as asked.
fn list_level(
    container: &Container,
    scope: ListingScope<'_>,
    snapshots: bool,
) -> Result<
    impl Stream<Item = Result<ListingPage<Version>, StorageError>> + Send + 'static,
    StorageError,
> {
    let mut include = Vec::new();
    if snapshots {
        include.push(ListBlobsIncludeItem::Snapshots);
    }
    include.push(ListBlobsIncludeItem::Metadata);
    if scope.tags {
        include.push(ListBlobsIncludeItem::Tags);
    }
    if scope.copy {
        include.push(ListBlobsIncludeItem::Copy);
    }
    list_scoped_pages(
        container,
        format!("listing container {}", container.name()),
        &include,
        ListingScope {
            one_level: true,
            ..scope
        },
        listed_version_with_metadata,
    )
}

/// The names (and sub-directories) of one directory level, every page: which names the level
/// holds, and nothing else.
pub fn list_directory_names(
    container: &Container,
    prefix: Option<&str>,
) -> Result<
    impl Stream<Item = Result<ListingPage<String>, StorageError>> + Send + 'static,
    StorageError,
> {
    list_scoped_pages(
        container,
        format!("listing container {}", container.name()),
        &[],
        ListingScope {
            prefix,
            one_level: true,
            ..Default::default()
        },
        |item, operation| item.name(operation).map(Some),
    )
}

/// Like [`listed_version`], for a listing that asked for metadata: a blob listed without any
/// has none (Azurite leaves the element out), which is not the same as "not asked for".
fn listed_version_with_metadata(
    item: ListedItem,
    operation: &str,
) -> Result<Option<Version>, StorageError> {
    Ok(listed_version(item, operation)?.map(|version| Version {
        metadata: Some(version.metadata.unwrap_or_default()),
        ..version
    }))
}

/// One directory level of a backup container with metadata (and, with `tags`, the backups'
/// tags), every page.
pub fn list_backup_directory(
    container: &Container,
    prefix: Option<&str>,
    tags: bool,
) -> Result<
    impl Stream<Item = Result<ListingPage<Version>, StorageError>> + Send + 'static,
    StorageError,
> {
    let mut include = vec![ListBlobsIncludeItem::Metadata, ListBlobsIncludeItem::Copy];
    if tags {
        include.push(ListBlobsIncludeItem::Tags);
    }
    list_scoped_pages(
        container,
        format!("listing backup container {}", container.name()),
        &include,
        ListingScope {
            prefix,
            one_level: true,
            ..Default::default()
        },
        listed_version_with_metadata,
    )
}

/// A blob listing as a stream of pages, each entry turned into `T` by `convert` (`None` skips
/// it), the next page prefetched.
fn list_pages<T: Send + 'static>(
    container: &Container,
    operation: String,
    include: &[ListBlobsIncludeItem],
    prefix: Option<&str>,
    convert: fn(ListedItem, &str) -> Result<Option<T>, StorageError>,
) -> Result<impl Stream<Item = Result<Vec<T>, StorageError>> + Send + 'static, StorageError> {
    let scope = ListingScope {
        prefix,
        ..Default::default()
    };
    Ok(
        list_scoped_pages(container, operation, include, scope, convert)?
            .map_ok(ListingPage::into_items),
    )
}

/// Like [`list_pages`], within `scope`, with each page's prefixes and next marker.
fn list_scoped_pages<T: Send + 'static>(
    container: &Container,
    operation: String,
    include: &[ListBlobsIncludeItem],
    scope: ListingScope<'_>,
    convert: fn(ListedItem, &str) -> Result<Option<T>, StorageError>,
) -> Result<impl Stream<Item = Result<ListingPage<T>, StorageError>> + Send + 'static, StorageError>
{
    let tags_listed = include.contains(&ListBlobsIncludeItem::Tags);
    let mut context = azure_core::http::Context::new();
    if scope.one_level {
        context.insert(super::RequestQuery(vec![("delimiter", "/".into())]));
    }
    if scope.permissions {
        // The SDK's `include` has no `permissions`: added to the request's own.
        context.insert(super::IncludeAlso("permissions"));
    }
    let options = BlobContainerClientListBlobsOptions {
        // An empty `include=` would be signed as one and refused.
        include: (!include.is_empty()).then(|| include.to_vec()),
        prefix: scope.prefix.map(str::to_owned),
        marker: scope.marker.map(str::to_owned),
        maxresults: scope.page_size,
        method_options: azure_core::http::pager::PagerOptions {
            context,
            ..Default::default()
        },
        ..Default::default()
    };
    let pages = prefetched(
        container
            .sdk()
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
                let mut listed = ListingPage {
                    entries: Vec::with_capacity(page.blobs.entries.len()),
                    next_marker: page.next_marker.filter(|m| !m.is_empty()),
                };
                for entry in page.blobs.entries {
                    match entry {
                        RawEntry::Blob(mut item) => {
                            item.tags_listed = tags_listed;
                            listed
                                .entries
                                .extend(convert(*item, &operation)?.map(ListedEntry::Item))
                        }
                        RawEntry::BlobPrefix(prefix) => listed.entries.push(
                            ListedEntry::Directory(decoded_name(prefix.name.as_ref(), &operation)?),
                        ),
                    }
                }
                Ok(listed)
            }
        }))
}

/// The names of every container of `account`.
pub async fn list_container_names(account: &StorageAccount) -> Result<Vec<String>, StorageError> {
    let operation = || "listing containers".to_owned();
    let mut pages = account
        .blob_service()?
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
