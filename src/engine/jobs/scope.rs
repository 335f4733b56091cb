//! What a job over a container, or over a prefix of it, covers — checked against the lake: the
//! container; or the directory a prefix names; or, for a prefix without a trailing `/` that
//! names a blob, that blob (and the directory of the same name too, when the lake has both). A
//! prefix under which the lake holds nothing is an error that names it: an ingestion pipeline
//! must never be told that data it mistyped is safe.

use futures::TryStreamExt;
use thiserror::Error;

use super::Root;
use crate::{
    app::App,
    core::{
        naming::{self, NamingError},
        shard::directory_prefix,
    },
    storage::{listing::list_directory_names, StorageError},
};

#[derive(Debug, Error)]
pub enum ScopeError {
    #[error(transparent)]
    InvalidContainer(NamingError),
    #[error("invalid prefix: {0}")]
    InvalidPrefix(NamingError),
    #[error("container {0:?} does not exist in SOURCE_STORAGE")]
    ContainerNotFound(String),
    #[error(
        "nothing in container {container:?} under prefix {prefix:?}: no blob has that name and no \
         directory starts with it"
    )]
    NothingUnderPrefix { container: String, prefix: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The roots of a job over `container` (and `prefix`: a directory, `raw/2026/11/` or
/// `raw/2026/11`, or the name of one blob; empty for the whole container).
pub async fn roots(app: &App, container: &str, prefix: &str) -> Result<Vec<Root>, ScopeError> {
    naming::validate_container_name(container).map_err(ScopeError::InvalidContainer)?;
    let lake = app.source.container(container)?;
    if !lake.exists().await? {
        return Err(ScopeError::ContainerNotFound(container.to_owned()));
    }
    let given = prefix.trim_start_matches('/');
    if given.is_empty() {
        return Ok(vec![Root::directory("")]);
    }
    let directory = directory_prefix(given);
    naming::validate_blob_name(&directory).map_err(ScopeError::InvalidPrefix)?;
    let mut roots = Vec::new();
    if lists_anything(app, container, &directory).await? {
        roots.push(Root::directory(&directory));
    }
    if !given.ends_with('/') && lake.blob(given).probe().await?.is_some() {
        roots.push(Root::Blob(given.to_owned()));
    }
    if roots.is_empty() {
        return Err(ScopeError::NothingUnderPrefix {
            container: container.to_owned(),
            prefix: prefix.to_owned(),
        });
    }
    Ok(roots)
}

/// Whether the lake lists anything under `directory`.
async fn lists_anything(app: &App, container: &str, directory: &str) -> Result<bool, StorageError> {
    let lake = app.source.container(container)?;
    let pages = list_directory_names(&lake, Some(directory))?;
    futures::pin_mut!(pages);
    while let Some(page) = pages.try_next().await? {
        if !page.entries.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}
