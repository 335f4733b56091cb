//! What a kind of job work is: a type implementing [`Kind`] — its options (what a job of it is
//! asked to do, carried by every shard), its counts (a struct made with
//! [`crate::kind_counts!`]), its per-unit report line, how it runs one part of a directory level,
//! and which of its counts say that units were not done. The runner is generic over it; the
//! registry ([`super::registry`]) names every kind, once.

use futures::future::BoxFuture;
use serde::{de::DeserializeOwned, Serialize};

use super::{runner::Fanout, JobError, Shard, Stop, Work};
use crate::{
    app::App,
    core::{counts::KindCounts, job::Notes},
};

/// One kind of work a job does, directory level by directory level.
pub trait Kind: Sized + Send + Sync + 'static {
    /// Its name in shards, the ledger and statuses.
    const NAME: &'static str;
    /// Where a shard's message carries its options: under this field, or beside the shard's
    /// own fields (`None`), as the kind's earlier releases wrote them.
    const FIELD: Option<&'static str>;

    /// What a job of this kind is asked to do; every shard of the job carries them.
    type Options: Clone + std::fmt::Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync;
    /// What one part counts.
    type Counts: KindCounts;
    /// One unit's line in the job's report (none for a kind that reports none).
    type Line: Serialize + Send + 'static;
    /// Whether its parts report lines at all (a kind whose `Line` is [`NoLine`] does not).
    const REPORTS_LINES: bool = true;

    /// Runs one part of a shard of this kind: its share of one directory level, within the
    /// shard's budget (or up to a recorded stop), fanning out the level's sub-directories.
    fn run_part(part: Part<'_, Self>) -> BoxFuture<'_, Result<PartDone<Self>, JobError>>;

    /// How many units its counts say were not done: a job with any ends failed.
    fn not_done(counts: &Self::Counts) -> u64;

    /// What a job's status says about a job of this kind besides its counts, if anything.
    fn about(_options: &Self::Options, _container: &str) -> Option<serde_json::Value> {
        None
    }
}

/// The line of a kind that reports none: no value of it exists.
#[derive(Debug, Serialize)]
pub enum NoLine {}

/// A kind the registry names: how its options travel in a shard's [`Work`].
pub trait Registered: Kind {
    fn wrap(options: Self::Options) -> Work;
}

/// Where a part's report lines go when a job runs in this process: handed over as each is done
/// (the commands print them). Without one they are kept for the job's ledger.
pub type LineSink<'a, L> = &'a (dyn Fn(L) + Send + Sync);

/// One part of a shard of kind `K`, about to run.
pub struct Part<'a, K: Kind> {
    pub app: &'a App,
    pub shard: &'a Shard,
    pub options: &'a K::Options,
    /// Where its sub-directories' shards go.
    pub fanout: &'a Fanout<'a>,
    /// Where its lines go as they are done; `None`: kept in [`PartDone::lines`].
    pub sink: Option<LineSink<'a, K::Line>>,
    /// Where a delivery of this shard before chose to stop.
    pub stop: Stop<'a>,
}

/// What a kind's part hands back to the runner.
pub struct PartDone<K: Kind> {
    pub counts: K::Counts,
    pub notes: Notes,
    /// Where the rest of the directory goes on, when this part did not finish it.
    pub continuation: Option<Shard>,
    /// For a kind that deals with its level in the service's order, the last entry dealt with
    /// before the cut (see [`super::RecordedStop`]).
    pub last_done: Option<String>,
    /// Its lines, when no sink took them.
    pub lines: Vec<K::Line>,
}

impl<K: Kind> PartDone<K> {
    /// Nothing done yet.
    pub fn new() -> Self {
        Self {
            counts: K::Counts::default(),
            notes: Notes::default(),
            continuation: None,
            last_done: None,
            lines: Vec::new(),
        }
    }

    /// One unit's line: to `sink`, or kept.
    pub fn line(&mut self, sink: Option<LineSink<'_, K::Line>>, line: K::Line) {
        match sink {
            Some(sink) => sink(line),
            None => self.lines.push(line),
        }
    }
}

impl<K: Kind> Default for PartDone<K> {
    fn default() -> Self {
        Self::new()
    }
}
