//! Listing a container with its snapshots, a page at a time, as the diff consumes it.

use azure_storage_blob::{
    models::{BlobContainerClientListBlobsOptions, BlobItem, ListBlobsIncludeItem},
    BlobContainerClient,
};
use futures::{Stream, TryStreamExt};

use super::{StorageError, StorageResultExt};
use crate::core::diff::ListedBlob;

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
