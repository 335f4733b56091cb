//! `QueueSnapshotBackupShard`: one shard of a job from `{BACKUP_QUEUE_NAME}-shards` → the job
//! engine, which runs its part and keeps the job's ledger. A message that is not a shard is
//! poisoned unchanged; a failed shard fails the invocation, for a retry; a refused one (a
//! restore's target this worker has no connection to) is recorded failed in its job's ledger
//! and poisoned unchanged at once.

use serde::Serialize;
use tracing::warn;

use super::{Delivery, Handled};
use crate::{
    app::App,
    core::shard::Shard,
    engine::jobs::{self, ledger, Delivered, JobError, PartReport},
};

pub const FUNCTION_NAME: &str = "QueueSnapshotBackupShard";

/// What became of one shard message; the invocation's return value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ShardOutcome {
    Done {
        #[serde(flatten)]
        report: Box<PartReport>,
    },
    /// The shard had finished already: a duplicate message.
    AlreadyFinished,
    /// Another delivery is working on the shard: put back on the queue for later.
    Deferred,
}

/// Handles one delivery.
pub async fn handle(app: &App, delivery: &Delivery) -> Result<Handled<ShardOutcome>, JobError> {
    let shard = match Shard::parse(&delivery.text) {
        Ok(shard) => shard,
        Err(reason) => return Ok(Handled::Unusable(reason)),
    };
    let outcome = match jobs::run_delivered(app, &shard, delivery.last_attempt).await {
        Ok(Delivered::Ran(report)) => ShardOutcome::Done {
            report: Box::new(report),
        },
        Ok(Delivered::AlreadyFinished) => ShardOutcome::AlreadyFinished,
        Ok(Delivered::Deferred) => ShardOutcome::Deferred,
        // Recorded failed in its job's ledger already: no retry could change it.
        Err(JobError::Refused(reason)) => return Ok(Handled::Unusable(reason)),
        Err(e) => return Err(e),
    };
    Ok(Handled::Done(outcome))
}

/// The host gives a shard message up (`lakebackup run` does, after `maxDequeueCount`
/// deliveries): its job's ledger says so, with `reason`, so that the job ends rather than
/// running for ever.
pub async fn given_up(app: &App, text: &str, reason: &str) {
    if let Ok(shard) = Shard::parse(text) {
        if let Err(e) = ledger::record_failed(app, &shard, reason).await {
            warn!(error = %e, "could not record the given-up shard in its job's ledger");
        }
    }
}
