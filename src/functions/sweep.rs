//! One pass over a container: the ETag diff judges every base blob as the listing streams by, a
//! rule chosen by the caller says what to repair, and repairs run concurrently up to a bound.
//! The producer and the reconciler are both sweeps; they differ only in their rule.
//!
//! For a blob that needs both, the backup request is queued *before* the snapshot is taken: should
//! the snapshot fail, the next sweep sees no snapshot of that version and does both again (a
//! repeated request is harmless, the consumer is idempotent); the reverse order could leave a
//! snapshot whose backup was never requested.

use azure_storage_blob::{models::BlobClientCreateSnapshotOptions, BlobContainerClient};
use futures::{stream::FuturesUnordered, StreamExt};
use serde::Serialize;
use thiserror::Error;
use tracing::{info, Instrument};

use crate::{
    app::App,
    core::{
        diff::{BaseBlob, BlobVerdict, SnapshotDiff},
        etag::quoted_etag,
        message::BackupRequest,
    },
    storage::{listing::list_with_snapshots, StorageError, StorageResultExt},
};

/// What to do for one base blob.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Repair {
    pub snapshot: bool,
    pub request: bool,
}

/// What a sweep did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepCounts {
    /// Base blobs seen.
    pub blobs: u64,
    pub snapshots_created: u64,
    pub backup_requests: u64,
    /// Blobs that changed or vanished between listing and snapshot; the next sweep takes their
    /// new version.
    pub changed_during_run: u64,
}

#[derive(Debug, Error)]
pub enum SweepError {
    #[error("container {0:?} does not exist")]
    ContainerNotFound(String),
    /// Storage failed part-way; `done` says what had been done before.
    #[error("{source}")]
    Storage {
        source: StorageError,
        done: SweepCounts,
    },
}

enum Repaired {
    Done(Repair),
    /// The request went out, but the blob had changed before its snapshot.
    Changed {
        requested: bool,
    },
}

/// Sweeps `container` of the source account; `rule` decides per verdict. With `dry_run` nothing
/// is written and the counts say what would have been.
pub async fn sweep(
    app: &App,
    container: &str,
    dry_run: bool,
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
    let pages = list_with_snapshots(&client, container, None).map_err(|e| failed(e, &counts))?;
    futures::pin_mut!(pages);

    let mut diff = SnapshotDiff::new();
    let mut in_flight = FuturesUnordered::new();
    let mut failure: Option<StorageError> = None;
    let limit = app.config.snapshot_concurrency;
    let mut listing_done = false;

    while !listing_done {
        let verdicts: Vec<BlobVerdict> = match pages.next().await {
            Some(Ok(page)) => page
                .into_iter()
                .filter_map(|entry| diff.push(entry))
                .collect(),
            Some(Err(error)) if error.has_code("ContainerNotFound") => {
                return Err(SweepError::ContainerNotFound(container.to_owned()))
            }
            Some(Err(error)) => {
                failure = Some(error);
                break;
            }
            None => {
                listing_done = true;
                std::mem::take(&mut diff).finish().into_iter().collect()
            }
        };
        for verdict in verdicts {
            counts.blobs += 1;
            let repair = rule(&verdict);
            if repair == Repair::default() {
                continue;
            }
            if dry_run {
                counts.snapshots_created += u64::from(repair.snapshot);
                counts.backup_requests += u64::from(repair.request);
                continue;
            }
            while in_flight.len() >= limit {
                if let Some(result) = in_flight.next().await {
                    tally(&mut counts, &mut failure, result);
                }
            }
            if failure.is_some() {
                break;
            }
            in_flight.push(repair_blob(app, &client, container, verdict.blob, repair));
        }
        if failure.is_some() {
            break;
        }
    }
    // Finish what is in flight even after a failure, so the counts say exactly what was done.
    while let Some(result) = in_flight.next().await {
        tally(&mut counts, &mut failure, result);
    }
    match failure {
        Some(source) => Err(SweepError::Storage {
            source,
            done: counts,
        }),
        None => Ok(counts),
    }
}

fn tally(
    counts: &mut SweepCounts,
    failure: &mut Option<StorageError>,
    result: Result<Repaired, StorageError>,
) {
    match result {
        Ok(Repaired::Done(repair)) => {
            counts.snapshots_created += u64::from(repair.snapshot);
            counts.backup_requests += u64::from(repair.request);
        }
        Ok(Repaired::Changed { requested }) => {
            counts.backup_requests += u64::from(requested);
            counts.changed_during_run += 1;
        }
        Err(error) => {
            failure.get_or_insert(error);
        }
    }
}

async fn repair_blob(
    app: &App,
    client: &BlobContainerClient,
    container: &str,
    blob: BaseBlob,
    repair: Repair,
) -> Result<Repaired, StorageError> {
    let span = tracing::info_span!("blob", blob = %blob.name, etag = %blob.etag);
    async move {
        if repair.request {
            app.enqueue_backup(&BackupRequest::new(container, &blob.name, &blob.etag))
                .await?;
        }
        if !repair.snapshot {
            return Ok(Repaired::Done(repair));
        }
        // If-Match: the snapshot is of exactly the listed version, or none is taken.
        let result = client
            .blob_client(&blob.name)
            .create_snapshot(Some(BlobClientCreateSnapshotOptions {
                if_match: Some(quoted_etag(&blob.etag).into()),
                ..Default::default()
            }))
            .await
            .during(|| format!("snapshotting {container}/{}", blob.name));
        match result {
            Ok(_) => Ok(Repaired::Done(repair)),
            Err(error) if error.has_code("ConditionNotMet") || error.has_code("BlobNotFound") => {
                info!(reason = ?error.code, "blob changed since it was listed; left for the next run");
                Ok(Repaired::Changed {
                    requested: repair.request,
                })
            }
            Err(error) => Err(error),
        }
    }
    .instrument(span)
    .await
}
