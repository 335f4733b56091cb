//! Listings, a page at a time: a container with its snapshots (for the diff), a backup container
//! with its metadata (for the backup index), and the containers of an account.

use azure_storage_blob::{
    models::{BlobContainerClientListBlobsOptions, BlobItem, ListBlobsIncludeItem},
    BlobContainerClient,
};
use futures::{Stream, TryStreamExt};

use super::{StorageError, StorageResultExt};
use crate::core::{diff::ListedBlob, naming::META_SOURCE_ETAG};

/// The container's blobs and snapshots, one listing page (up to 5,000 entries) per item.
pub fn list_with_snapshots(
    container: &BlobContainerClient,
    container_name: &str,
) -> Result<impl Stream<Item = Result<Vec<ListedBlob>, StorageError>> + Send + 'static, StorageError>
{
    let options = BlobContainerClientListBlobsOptions {
        include: Some(vec![ListBlobsIncludeItem::Snapshots]),
        ..Default::default()
    };
    let operation = format!("listing container {container_name}");
    let pages = container
        .list_blobs(Some(options))
        .during(|| operation.clone())?
        .into_pages();
    Ok(pages
        .map_err({
            let operation = operation.clone();
            move |e| StorageError::new(operation.clone(), e)
        })
        .and_then(move |page| {
            let operation = operation.clone();
            async move {
                let page = page.into_model().during(|| operation.clone())?;
                page.blob_items
                    .into_iter()
                    .map(|item| listed_blob(item, &operation))
                    .collect()
            }
        }))
}

fn listed_blob(item: BlobItem, operation: &str) -> Result<ListedBlob, StorageError> {
    let incomplete = |what: &str| StorageError {
        operation: operation.to_owned(),
        status: None,
        code: None,
        detail: format!("the service listed an entry without {what}"),
    };
    let name = item.name.ok_or_else(|| incomplete("a name"))?;
    let properties = item.properties.ok_or_else(|| incomplete("properties"))?;
    Ok(ListedBlob {
        etag: properties
            .etag
            .map(|e| e.to_string())
            .ok_or_else(|| incomplete("an ETag"))?,
        last_modified: properties
            .last_modified
            .ok_or_else(|| incomplete("a last-modified time"))?,
        content_length: properties.content_length.unwrap_or(0),
        snapshot: item.snapshot.filter(|s| !s.is_empty()),
        name,
    })
}

/// One backup blob: its name and the `source_etag` it was stamped with, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedBackup {
    pub name: String,
    pub stamped_etag: Option<String>,
}

/// The blobs of a backup container with their metadata, one listing page per item.
pub fn list_backups(
    container: &BlobContainerClient,
    container_name: &str,
) -> Result<
    impl Stream<Item = Result<Vec<ListedBackup>, StorageError>> + Send + 'static,
    StorageError,
> {
    let options = BlobContainerClientListBlobsOptions {
        include: Some(vec![ListBlobsIncludeItem::Metadata]),
        ..Default::default()
    };
    let operation = format!("listing backup container {container_name}");
    let pages = container
        .list_blobs(Some(options))
        .during(|| operation.clone())?
        .into_pages();
    Ok(pages
        .map_err({
            let operation = operation.clone();
            move |e| StorageError::new(operation.clone(), e)
        })
        .and_then(move |page| {
            let operation = operation.clone();
            async move {
                let page = page.into_model().during(|| operation.clone())?;
                Ok(page
                    .blob_items
                    .into_iter()
                    .filter_map(|item| {
                        let stamped_etag = item
                            .metadata
                            .and_then(|m| m.values)
                            .and_then(|mut values| values.remove(META_SOURCE_ETAG));
                        Some(ListedBackup {
                            name: item.name?,
                            stamped_etag,
                        })
                    })
                    .collect())
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
