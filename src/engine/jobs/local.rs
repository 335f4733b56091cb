//! A whole job of kind `K` run in this process ([`run_here`]): its shards, up to a number at
//! once, each failed one tried again as the host would; nothing queued or recorded. Its totals
//! are the kind's own counts, its lines handed over as they are done.

use std::{sync::Mutex, time::Duration};

use futures::{stream::FuturesUnordered, StreamExt};
use tracing::warn;

use super::{
    kind::{Kind, LineSink},
    runner::{self, Fanout},
    JobError, Shard,
};
use crate::{
    app::App,
    core::{
        counts::KindCounts,
        job::{BlobNote, Notes},
    },
};

/// A whole job run in this process: its totals, the shards that ran, and the notes of the
/// units it could not do (and of the shards that failed).
#[derive(Debug)]
pub struct LocalJob<K: Kind> {
    pub totals: K::Counts,
    pub shards: u64,
    pub shards_failed: u64,
    pub notes: Notes,
}

impl<K: Kind> Default for LocalJob<K> {
    fn default() -> Self {
        Self {
            totals: K::Counts::default(),
            shards: 0,
            shards_failed: 0,
            notes: Notes::default(),
        }
    }
}

impl<K: Kind> LocalJob<K> {
    /// Adds another job's run to this one.
    pub fn add(&mut self, other: LocalJob<K>) {
        self.totals.add(&other.totals);
        self.shards += other.shards;
        self.shards_failed += other.shards_failed;
        self.notes.extend(other.notes);
    }

    /// Why the first shard that failed for good failed.
    pub fn shard_failure(&self) -> Option<String> {
        self.notes
            .failures
            .iter()
            .find(|note| note.blob.is_empty())
            .map(|note| note.reason.clone())
    }

    /// Every shard ended and every unit it judged was done.
    pub fn succeeded(&self) -> bool {
        self.shards_failed == 0 && K::not_done(&self.totals) == 0
    }
}

/// Runs a whole job in this process, starting at `root`, up to `concurrency` shards at once,
/// handing each line to `on_line` as it is done. A shard that fails is tried again, as the host
/// would, up to `maxDequeueCount` times; then it is named in the notes and the rest of the job
/// goes on. A refusal ([`JobError::Refused`]) is not tried again: no retry can change it.
pub(super) async fn run_here<K: Kind>(
    app: &App,
    root: Shard,
    options: &K::Options,
    concurrency: usize,
    on_line: LineSink<'_, K::Line>,
) -> LocalJob<K> {
    let mut job = LocalJob::<K>::default();
    let pending = Mutex::new(vec![(root, 1u64)]);
    let take = || {
        pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
    };
    let spawned = Mutex::new(Vec::new());
    let fanout = Fanout::Local(&spawned);
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < concurrency.max(1) {
            let Some((shard, attempt)) = take() else {
                break;
            };
            let fanout = &fanout;
            running.push(async move {
                if attempt > 1 {
                    tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
                }
                let result =
                    runner::run_part::<K>(app, &shard, options, fanout, Some(on_line), None).await;
                (shard, attempt, result)
            });
        }
        let Some((shard, attempt, result)) = running.next().await else {
            return job;
        };
        let mut queue = pending.lock().unwrap_or_else(|p| p.into_inner());
        queue.extend(
            spawned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..)
                .map(|s| (s, 1)),
        );
        match result {
            Ok(run) => {
                job.totals.add(&run.done.counts);
                job.shards += 1;
                job.notes.extend(run.done.notes);
            }
            Err(error)
                if attempt < app.config.max_dequeue_count
                    && !matches!(error, JobError::Refused(_)) =>
            {
                warn!(%error, attempt, prefix = shard.prefix, "shard failed; trying it again");
                queue.push((shard, attempt + 1));
            }
            Err(error) => {
                warn!(%error, prefix = shard.prefix, "shard failed for good");
                job.shards += 1;
                job.shards_failed += 1;
                job.notes.failures.push(BlobNote {
                    blob: String::new(),
                    reason: format!(
                        "the shard of {:?} (part {}) failed {attempt} times: {error}",
                        shard.prefix, shard.part
                    ),
                });
            }
        }
    }
}
