//! What only a listing of one name tells: a snapshot that holds a given version, and a version's
//! metadata names as written or its access control (Get Blob Properties lowercases the one and
//! does not give the other). One listing request each, narrowed to the name.

use std::collections::HashMap;

use azure_storage_blob::models::ListBlobsIncludeItem;
use futures::TryStreamExt;

use super::{
    list_pages, list_scoped_pages, listed_version_with_metadata, until_container_missing,
    ListingScope,
};
use crate::{
    core::{etag::normalize_etag, properties::Access, version::Version},
    storage::{Container, StorageError},
};

/// The newest snapshot of `name` in `container` that carries `etag` (a snapshot keeps the ETag
/// of the version it was taken of), found by listing that one name.
pub async fn find_snapshot(
    container: &Container,
    name: &str,
    etag: &str,
) -> Result<Option<Version>, StorageError> {
    let pages = list_pages(
        container,
        format!("listing the snapshots of {}/{name}", container.name()),
        &[
            ListBlobsIncludeItem::Snapshots,
            ListBlobsIncludeItem::Metadata,
        ],
        Some(name),
        listed_version_with_metadata,
    )?;
    futures::pin_mut!(pages);
    let mut newest: Option<Version> = None;
    while let Some(page) = pages.try_next().await? {
        for version in page {
            let Some(snapshot) = &version.snapshot else {
                continue;
            };
            if version.name == name
                && version.etag == normalize_etag(etag)
                && newest
                    .as_ref()
                    .is_none_or(|n| n.snapshot.as_ref() < Some(snapshot))
            {
                newest = Some(version);
            }
        }
    }
    Ok(newest)
}

/// The metadata of blob `name` (or of its snapshot `snapshot`) as a listing shows it — names as
/// written, which response headers cannot carry — when the listing shows it at version `etag`;
/// `None` when it shows another version or none. Lists one directory level by the name as its
/// prefix: one request, unless siblings sharing the prefix fill pages before it.
pub(in crate::storage) async fn metadata_as_listed(
    container: &Container,
    name: &str,
    snapshot: Option<&str>,
    etag: &str,
) -> Result<Option<HashMap<String, String>>, StorageError> {
    let mut include = vec![ListBlobsIncludeItem::Metadata];
    if snapshot.is_some() {
        include.push(ListBlobsIncludeItem::Snapshots);
    }
    let what = format!("listing the metadata of {}/{name}", container.name());
    let listed = listed_entry(container, what, &include, false, name, snapshot).await?;
    Ok(listed
        .filter(|version| version.etag == normalize_etag(etag))
        .map(|version| version.metadata_or_empty()))
}

/// The access control of path `name` of a hierarchical namespace (owner, group, permissions,
/// ACL) as a listing shows it (`include=permissions`), when the listing shows it at version
/// `etag`; `None` when it shows another version, none, or no access control. One request, as
/// [`metadata_as_listed`]: what Get Blob Properties cannot say.
pub async fn access_as_listed(
    container: &Container,
    name: &str,
    etag: &str,
) -> Result<Option<Access>, StorageError> {
    let what = format!("listing the access control of {}/{name}", container.name());
    let include = [ListBlobsIncludeItem::Metadata];
    let listed = listed_entry(container, what, &include, true, name, None).await?;
    Ok(listed
        .filter(|version| version.etag == normalize_etag(etag))
        .and_then(|version| version.properties.access))
}

/// The entry of exactly `name` (at `snapshot`, or the base blob) that a listing narrowed to the
/// name shows, if any; `permissions` asks for its access control too.
async fn listed_entry(
    container: &Container,
    operation: String,
    include: &[ListBlobsIncludeItem],
    permissions: bool,
    name: &str,
    snapshot: Option<&str>,
) -> Result<Option<Version>, StorageError> {
    let pages = list_scoped_pages(
        container,
        operation,
        include,
        ListingScope {
            prefix: Some(name),
            one_level: true,
            permissions,
            ..Default::default()
        },
        listed_version_with_metadata,
    )?;
    let pages = until_container_missing(pages);
    futures::pin_mut!(pages);
    while let Some(page) = pages.try_next().await? {
        let found = page
            .into_items()
            .into_iter()
            .find(|version| version.name == name && version.snapshot.as_deref() == snapshot);
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}
