//! `HttpSnapshotIncBackupContainerProducer`: snapshot every new or changed blob of one container
//! and queue one backup request per such blob — a sweep whose rule is "a blob without a snapshot
//! of its current version gets both".

use std::time::Instant;

use serde::Serialize;
use thiserror::Error;
use tracing::{info, warn, Instrument};

use super::sweep::{sweep, Repair, SweepCounts, SweepError};
use crate::{
    app::App,
    core::naming::{self, NamingError},
    storage::StorageError,
};

pub const FUNCTION_NAME: &str = "HttpSnapshotIncBackupContainerProducer";

/// What one run did; the HTTP reply body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProducerSummary {
    pub status: &'static str,
    pub container: String,
    #[serde(flatten)]
    pub counts: SweepCounts,
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

/// Runs the producer over `container`.
pub async fn produce(app: &App, container: &str) -> Result<ProducerSummary, ProducerError> {
    naming::validate_container_name(container)?;
    let span = tracing::info_span!("producer", function = FUNCTION_NAME, container);
    async {
        let started = Instant::now();
        let result = sweep(app, container, false, |verdict| Repair {
            snapshot: verdict.needs_snapshot,
            request: verdict.needs_snapshot,
        })
        .await;
        let summary = |counts: SweepCounts, status| ProducerSummary {
            status,
            container: container.to_owned(),
            counts,
            duration_ms: started.elapsed().as_millis() as u64,
        };
        match result {
            Ok(counts) => {
                let summary = summary(counts, "ok");
                info!(counts = ?summary.counts, duration_ms = summary.duration_ms, "producer finished");
                Ok(summary)
            }
            Err(SweepError::ContainerNotFound(name)) => Err(ProducerError::ContainerNotFound(name)),
            Err(SweepError::Storage { source, done }) => {
                warn!(error = %source, done = ?done, "producer stopped by a storage failure; work done before it is kept");
                Err(ProducerError::Storage {
                    source,
                    done: Box::new(summary(done, "error")),
                })
            }
        }
    }
    .instrument(span)
    .await
}
