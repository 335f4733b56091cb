//! `HttpSnapshotIncBackupContainerProducer`: snapshot every new or changed blob of one container
//! and queue one backup request per such blob.
//!
//! For each blob the diff marks, the request is queued *before* the snapshot is taken: should the
//! snapshot fail, the next run sees no snapshot of that version and does both again (a repeated
//! request is harmless, the consumer is idempotent); the reverse order could leave a snapshot
//! whose backup was never requested.

use std::time::Instant;

use azure_storage_blob::models::BlobClientCreateSnapshotOptions;
use futures::{stream::FuturesUnordered, StreamExt};
use serde::Serialize;
use thiserror::Error;
use tracing::{info, warn, Instrument};

use crate::{
    app::App,
    core::{
        diff::{BaseBlob, SnapshotDiff},
        etag::quoted_etag,
        message::BackupRequest,
        naming::{self, NamingError},
    },
    storage::{listing::list_with_snapshots, StorageError, StorageResultExt},
};

pub const FUNCTION_NAME: &str = "HttpSnapshotIncBackupContainerProducer";

/// What one run did; the HTTP reply body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProducerSummary {
    pub status: &'static str,
    pub container: String,
    /// Base blobs seen.
    pub blobs: u64,
    pub snapshots_created: u64,
    pub backup_requests: u64,
    /// Blobs that changed or vanished between listing and snapshot; the next run or the
    /// reconciler takes their new version.
    pub changed_during_run: u64,
    pub duration_ms: u64,
}

#[derive(Debug, Error)]
pub enum ProducerError {
    #[error(transparent)]
    InvalidContainer(#[from] NamingError),
    #[error("container {0:?} does not exist in SOURCE_STORAGE")]
    ContainerNotFound(String),
    /// Storage failed part-way; `done` says what had been done before.
    #[error("{source}")]
    Storage {
        source: StorageError,
        done: Box<ProducerSummary>,
    },
}

enum BlobOutcome {
    Snapshotted,
    Changed,
}

/// Runs the producer over `container`.
pub async fn produce(app: &App, container: &str) -> Result<ProducerSummary, ProducerError> {
    naming::validate_container_name(container)?;
    let span = tracing::info_span!("producer", function = FUNCTION_NAME, container);
    run(app, container).instrument(span).await
}

async fn run(app: &App, container: &str) -> Result<ProducerSummary, ProducerError> {
    let started = Instant::now();
    let mut summary = ProducerSummary {
        status: "ok",
        container: container.to_owned(),
        ..Default::default()
    };
    let client = app
        .source
        .container(container)
        .map_err(|source| storage_failure(source, &summary, started))?;
    let pages = list_with_snapshots(&client, container)
        .map_err(|e| storage_failure(e, &summary, started))?;
    futures::pin_mut!(pages);

    let mut diff = SnapshotDiff::new();
    let mut in_flight = FuturesUnordered::new();
    let mut failure: Option<StorageError> = None;
    let limit = app.config.snapshot_concurrency;

    'listing: loop {
        let page = match pages.next().await {
            Some(Ok(page)) => page,
            Some(Err(error)) => {
                if error.has_code("ContainerNotFound") {
                    return Err(ProducerError::ContainerNotFound(container.to_owned()));
                }
                failure = Some(error);
                break;
            }
            None => break,
        };
        let verdicts = page
            .into_iter()
            .filter_map(|entry| diff.push(entry))
            .collect::<Vec<_>>();
        for verdict in verdicts {
            summary.blobs += 1;
            if !verdict.needs_snapshot {
                continue;
            }
            while in_flight.len() >= limit {
                if let Some(result) = in_flight.next().await {
                    if let Err(error) = tally(&mut summary, result) {
                        failure = Some(error);
                        break 'listing;
                    }
                }
            }
            in_flight.push(back_up_and_snapshot(app, &client, container, verdict.blob));
        }
    }
    if failure.is_none() {
        if let Some(verdict) = diff.finish() {
            summary.blobs += 1;
            if verdict.needs_snapshot {
                in_flight.push(back_up_and_snapshot(app, &client, container, verdict.blob));
            }
        }
    }
    // Finish what is in flight even after a failure, so the summary says exactly what was done.
    while let Some(result) = in_flight.next().await {
        if let Err(error) = tally(&mut summary, result) {
            failure.get_or_insert(error);
        }
    }
    summary.duration_ms = started.elapsed().as_millis() as u64;
    match failure {
        Some(source) => {
            warn!(
                error = %source,
                blobs = summary.blobs,
                snapshots_created = summary.snapshots_created,
                backup_requests = summary.backup_requests,
                "producer stopped by a storage failure; work done before it is kept"
            );
            Err(ProducerError::Storage {
                source,
                done: Box::new(summary),
            })
        }
        None => {
            info!(
                blobs = summary.blobs,
                snapshots_created = summary.snapshots_created,
                backup_requests = summary.backup_requests,
                changed_during_run = summary.changed_during_run,
                duration_ms = summary.duration_ms,
                "producer finished"
            );
            Ok(summary)
        }
    }
}

fn tally(
    summary: &mut ProducerSummary,
    result: Result<BlobOutcome, StorageError>,
) -> Result<(), StorageError> {
    match result? {
        BlobOutcome::Snapshotted => {
            summary.backup_requests += 1;
            summary.snapshots_created += 1;
        }
        BlobOutcome::Changed => {
            summary.backup_requests += 1;
            summary.changed_during_run += 1;
        }
    }
    Ok(())
}

async fn back_up_and_snapshot(
    app: &App,
    client: &azure_storage_blob::BlobContainerClient,
    container: &str,
    blob: BaseBlob,
) -> Result<BlobOutcome, StorageError> {
    let span = tracing::info_span!("blob", blob = %blob.name, etag = %blob.etag);
    async move {
        app.enqueue_backup(&BackupRequest::new(container, &blob.name, &blob.etag))
            .await?;
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
            Ok(_) => Ok(BlobOutcome::Snapshotted),
            Err(error) if error.has_code("ConditionNotMet") || error.has_code("BlobNotFound") => {
                info!(reason = ?error.code, "blob changed since it was listed; left for the next run");
                Ok(BlobOutcome::Changed)
            }
            Err(error) => Err(error),
        }
    }
    .instrument(span)
    .await
}

fn storage_failure(
    source: StorageError,
    summary: &ProducerSummary,
    started: Instant,
) -> ProducerError {
    let mut done = summary.clone();
    done.duration_ms = started.elapsed().as_millis() as u64;
    ProducerError::Storage {
        source,
        done: Box::new(done),
    }
}
