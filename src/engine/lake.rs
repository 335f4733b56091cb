//! What the lake holds for one directory level: each name's base blob and snapshots, grouped by
//! name (by equality, never by listing order), and the level's sub-directories. The lake's twin
//! of [`super::vault::VaultLevel`]; the restore, verify and prune kinds read a level through it.
//! A hierarchical namespace's directory (a placeholder blob) is never a version of a file; it is
//! listed as a version of its own only where access control is asked for.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};

use crate::{
    core::version::Version,
    storage::{
        listing::{list_directory_with_snapshots, ListingScope},
        Container, ErrorCode, StorageError,
    },
};

/// One directory level of a lake container, with snapshots.
#[derive(Debug, Default)]
pub struct LakeLevel {
    /// Each name in scope, with its base blob and snapshots.
    pub names: BTreeMap<String, Vec<Version>>,
    /// The level's sub-directories (ending in `/`), all of them.
    pub subdirectories: Vec<String>,
}

/// Whether a container that does not exist is an error or holds nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    Fails,
    IsEmpty,
}

impl LakeLevel {
    /// Lists the level `listing_prefix` names (its directory, or narrower: the directory and a
    /// filter), keeping the names `in_scope` says.
    pub async fn list(
        container: &Container,
        listing_prefix: &str,
        missing: Missing,
        in_scope: impl Fn(&str) -> bool,
    ) -> Result<LakeLevel, StorageError> {
        Self::list_with_access(container, listing_prefix, missing, false, in_scope).await
    }

    /// As [`LakeLevel::list`], with each path's access control (owner, group, permissions,
    /// ACL: a hierarchical namespace's, read in bulk with the listing) when `access` — and then
    /// with the namespace's directories too, each a version of its own (its access control).
    pub async fn list_with_access(
        container: &Container,
        listing_prefix: &str,
        missing: Missing,
        access: bool,
        in_scope: impl Fn(&str) -> bool,
    ) -> Result<LakeLevel, StorageError> {
        let pages = list_directory_with_snapshots(
            container,
            ListingScope {
                prefix: (!listing_prefix.is_empty()).then_some(listing_prefix),
                permissions: access,
                ..Default::default()
            },
        )?;
        let pages = pages.take_while(move |page| {
            let missing_is_empty = missing == Missing::IsEmpty
                && matches!(page, Err(e) if e.is(ErrorCode::ContainerNotFound));
            std::future::ready(!missing_is_empty)
        });
        futures::pin_mut!(pages);
        let mut level = LakeLevel::default();
        while let Some(page) = pages.try_next().await? {
            level
                .subdirectories
                .extend(page.directories().map(str::to_owned));
            for entry in page.into_items() {
                let keep = access || !entry.is_directory_placeholder();
                if in_scope(&entry.name) && keep {
                    level
                        .names
                        .entry(entry.name.clone())
                        .or_default()
                        .push(entry);
                }
            }
        }
        Ok(level)
    }
}
