//! A survey of one container for `lakebackup reconcile --dry-run`: the ETag diff judges every
//! base blob as the listing streams by, and a rule chosen by the caller says what a pass would
//! repair. Nothing is written, so the counts are exact: they say what the shards would do.

use futures::StreamExt;
use serde::Serialize;
use thiserror::Error;

use crate::{
    app::App,
    core::diff::{BlobVerdict, SnapshotDiff},
    storage::{listing::list_with_snapshots, ErrorCode, StorageError},
};

/// What a pass would do for one base blob.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Repair {
    pub snapshot: bool,
    pub request: bool,
}

/// What a pass would do over a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepCounts {
    /// Base blobs seen.
    pub blobs: u64,
    pub snapshots_created: u64,
    pub backup_requests: u64,
}

#[derive(Debug, Error)]
pub enum SweepError {
    #[error("container {0:?} does not exist")]
    ContainerNotFound(String),
    /// Storage failed part-way; `done` says what had been judged before.
    #[error("{source}")]
    Storage {
        source: StorageError,
        done: SweepCounts,
    },
}

/// Surveys `container` of the source account; `rule` decides per verdict.
pub async fn survey(
    app: &App,
    container: &str,
    mut rule: impl FnMut(&BlobVerdict) -> Repair,
) -> Result<SweepCounts, SweepError> {
    let mut counts = SweepCounts::default();
    let failed = |source, counts: &SweepCounts| SweepError::Storage {
        source,
        done: counts.clone(),
    };
    let client = app
        .source
        .container(container)
        .map_err(|e| failed(e, &counts))?;
    let pages = list_with_snapshots(&client, None).map_err(|e| failed(e, &counts))?;
    futures::pin_mut!(pages);
    let mut diff = SnapshotDiff::new();
    loop {
        let (verdicts, last): (Vec<BlobVerdict>, bool) = match pages.next().await {
            Some(Ok(page)) => (
                page.into_iter()
                    .filter_map(|entry| diff.push(entry))
                    .collect(),
                false,
            ),
            Some(Err(error)) if error.is(ErrorCode::ContainerNotFound) => {
                return Err(SweepError::ContainerNotFound(container.to_owned()))
            }
            Some(Err(error)) => return Err(failed(error, &counts)),
            None => (
                std::mem::take(&mut diff).finish().into_iter().collect(),
                true,
            ),
        };
        for verdict in verdicts {
            counts.blobs += 1;
            let repair = rule(&verdict);
            counts.snapshots_created += u64::from(repair.snapshot);
            counts.backup_requests += u64::from(repair.request);
        }
        if last {
            return Ok(counts);
        }
    }
}
