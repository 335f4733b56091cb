//! How a part spends its budget and where it stops: items done in order within a deadline
//! ([`each_within_budget`]), and the stop a delivery before it recorded ([`RecordedStop`],
//! [`Stop`]) — so a part redone after a crash ends exactly where the one before chose to.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::Shard;

/// Runs `act` on each of `items` in their order, up to `concurrency` at once, handing each
/// outcome to `done` in that order; none is started after `deadline` but the first, so every part
/// makes progress. Whether every item was started (else the part continues after the last one
/// done).
pub async fn each_within_budget<T, O, F>(
    items: Vec<T>,
    deadline: Instant,
    concurrency: usize,
    act: impl FnMut(T) -> F,
    mut done: impl FnMut(O),
) -> bool
where
    F: std::future::Future<Output = O>,
{
    let total = items.len();
    let started = AtomicUsize::new(0);
    let within_budget = |_: &T| {
        let go = started.load(Ordering::Relaxed) == 0 || Instant::now() < deadline;
        if go {
            started.fetch_add(1, Ordering::Relaxed);
        }
        std::future::ready(go)
    };
    let mut outcomes = futures::stream::iter(items)
        .take_while(within_budget)
        .map(act)
        .buffered(concurrency.max(1));
    while let Some(outcome) = outcomes.next().await {
        done(outcome);
    }
    drop(outcomes);
    started.load(Ordering::Relaxed) == total
}

/// Where a delivery of a shard chose to stop, recorded in its job's ledger before its
/// continuation is queued: the continuation, and for a part that deals with its level in the
/// service's order (backup), the last entry it dealt with — the first it did not is the
/// continuation's `resume_at` — since a page marker is no place a later listing can find again.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedStop {
    pub next: Shard,
    pub last_done: Option<String>,
}

/// [`RecordedStop`] as the ledger keeps it: the continuation's message, and the last entry.
#[derive(Serialize, Deserialize)]
struct StopRecord {
    next: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_done: Option<String>,
}

impl RecordedStop {
    pub fn to_json(&self) -> String {
        let next = serde_json::from_str(&self.next.to_json()).unwrap_or_default();
        serde_json::to_string(&StopRecord {
            next,
            last_done: self.last_done.clone(),
        })
        .unwrap_or_default()
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let record: StopRecord = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(Self {
            next: Shard::parse(&record.next.to_string())?,
            last_done: record.last_done,
        })
    }
}

/// Where a part must stop: where a delivery of the same shard before it chose to (it then died
/// before it finished). Such a part deals with exactly what lies before that stop — the work the
/// delivery before it did, found done — so the ledger counts every unit once and the chain of
/// continuations stays one chain.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stop<'a>(pub Option<&'a RecordedStop>);

impl Stop<'_> {
    /// The deadline of a kind that orders its level itself (restore, verify, prune): its budget
    /// from now, or none while a recorded stop is to be reached — its units up to the stop are
    /// found by order, so it always gets there, and the delivery before did them in a budget.
    pub fn deadline(&self, budget: Duration) -> Instant {
        match self.0 {
            Some(_) => Instant::now() + Duration::from_secs(86_400 * 365),
            None => Instant::now() + budget,
        }
    }

    /// Whether a unit at `position` in the part's own order (a kind that orders its level
    /// itself) lies before the recorded stop, which goes on after its `after`; every unit does
    /// when there is none.
    pub fn admits(&self, position: &str) -> bool {
        match self.after() {
            Some(after) => position <= after,
            None => true,
        }
    }

    /// The recorded continuation's `after`.
    pub fn after(&self) -> Option<&str> {
        self.0.and_then(|stop| stop.next.after.as_deref())
    }
}
