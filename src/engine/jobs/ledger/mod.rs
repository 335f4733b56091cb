//! Where a job's progress lives: container `{BACKUP_QUEUE_NAME}-jobs` of `AzureWebJobsStorage`,
//! one small blob per event, never updated in place, so that any instance can answer a status
//! call and no two instances ever write the same counter.
//!
//! ```text
//! {job}/job               the job: what started it, its kind of work, container, prefix,
//!                         start, and a restore's target account, container and prefix
//!                         (metadata)
//! {job}/queued/{shard}    written before the shard is put on the queue
//! {job}/finished/{shard}  written when the shard has done its part (its counts as metadata;
//!                         the blobs it could not protect, if any, as JSON in the body)
//! {job}/failed/{shard}    written when the shard's last delivery failed (the reason as metadata)
//! {job}/last/{shard}      written when the shard's last allowed delivery starts (its deadline)
//! {job}/lock/{shard}      leased by the delivery working on the shard: one at a time
//! {job}/plan/{shard}      what a prune shard judged it deletes (JSON), written before it deletes:
//!                         a delivery redone after a crash carries out the same plan
//! {job}/next/{shard}      the continuation the shard chose (JSON), written before it is queued:
//!                         a delivery redone after a crash stops where it did and queues the
//!                         same continuation
//! {job}/report/{shard}    the per-blob lines a shard reports (a restore's actions, a verify's
//!                         problems, a prune's deletions), one JSON
//!                         object per line, written before its finished entry
//! summaries/{job}         the job's index entry from its start; once it has ended, what
//!                         `job list` shows of it (metadata), written from the full reading of
//!                         its entries after a shard's end ([`summary`])
//! ```
//!
//! A shard's id names its exact position (container, directory, part, and where a continuation
//! goes on), so a part redone after a crash, which reads its `next` entry and stops there, queues
//! a continuation with the same id: the ledger counts each part once, and no second chain of
//! continuations starts. A duplicate delivery of a shard that has finished does nothing; one
//! whose shard another delivery is working on is put back on the queue for later.
//!
//! A job is done when every queued shard has finished and every blob was protected; it failed
//! when a shard failed for good, or its last delivery passed its deadline without ending, or a
//! blob could not be protected ([`JobProgress::from_ledger`]).

use std::collections::HashMap;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Serialize;

mod list;
mod status;
pub mod summary;

pub use list::{list_jobs, JobFilter, ListedJob};
pub use status::{job_report, job_status, job_status_in, JobStatus};

use super::{budget::RecordedStop, JobOrigin, Shard};
use crate::{
    app::App,
    core::{counts::Counts, job::Notes, shard::ShardWork},
    storage::{
        lease::{HeldLease, SHORTEST_LEASE_SECONDS},
        Container, ErrorCode, StorageError,
    },
};

/// Starts a job at `roots` (one shard, or a blob and a directory of the same name): its ledger
/// first, then the shards on the queue, so that the job can never look done before its first
/// shard has run. `about`: what the job's kind says about it, shown in its status.
pub async fn start_job(
    app: &App,
    origin: JobOrigin,
    roots: &[Shard],
    about: Option<serde_json::Value>,
) -> Result<(), StorageError> {
    let Some(first) = roots.first() else {
        return Ok(());
    };
    let ledger = app.job_ledger().await?;
    for root in roots {
        write(ledger, &entry_name(root, "queued"), HashMap::new()).await?;
    }
    let prefix = first.only.as_deref().unwrap_or(&first.prefix);
    let mut metadata = HashMap::from([
        ("kind".to_owned(), origin.as_str().to_owned()),
        ("work".to_owned(), first.work.kind().to_owned()),
        ("container".to_owned(), first.container.clone()),
        ("prefix".to_owned(), encode(prefix)),
        ("started".to_owned(), now_rfc3339()),
    ]);
    if let Some(about) = about {
        metadata.insert(ABOUT.to_owned(), encode(&about.to_string()));
    }
    write(ledger, &format!("{}/job", first.job), metadata).await?;
    summary::index_job(ledger, &first.job).await?;
    for root in roots {
        app.enqueue_shard(root).await?;
    }
    Ok(())
}

/// The `{job}/job` metadata that holds what the job's kind says about it (JSON).
const ABOUT: &str = "about";

/// Puts a shard of a running job on the queue, entered in the ledger first.
pub async fn queue_shard(app: &App, shard: &Shard) -> Result<(), StorageError> {
    let ledger = app.job_ledger().await?;
    write(ledger, &entry_name(shard, "queued"), HashMap::new()).await?;
    app.enqueue_shard(shard).await
}

/// What a delivery of a shard may do.
pub enum Claim {
    /// The shard has finished already (this delivery is a duplicate): nothing to do.
    Finished,
    /// Another delivery is working on it now: this one goes back on the queue for later.
    Busy,
    /// This delivery works on the shard, alone while the lock is held.
    Held(Box<PartLock>),
}

/// The lock on a shard while one delivery works on it, and where a delivery before it decided
/// to stop.
pub struct PartLock {
    lease: HeldLease,
    /// Where a delivery before this one chose to stop: this one stops exactly there and queues
    /// that continuation again.
    pub stop: Option<RecordedStop>,
}

impl PartLock {
    /// Resolves, with the reason, when the lock can no longer be trusted to be held.
    pub fn lost(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        self.lease.lost()
    }

    pub async fn release(self) {
        if let Err(e) = self.lease.release().await {
            // It lapses by itself within a lease's length.
            tracing::warn!(error = %e, "could not release a shard's lock");
        }
    }
}

/// Claims `shard` for this delivery: its lock (a lease on `{job}/lock/{shard}`, created on first
/// use), then whether it has finished already and where a delivery before stopped. A delivery
/// killed while it held the lock leaves it to lapse within [`SHORTEST_LEASE_SECONDS`].
pub async fn claim(app: &App, shard: &Shard) -> Result<Claim, StorageError> {
    let ledger = app.job_ledger().await?;
    let lock = ledger.blob(&entry_name(shard, LOCK));
    let created = lock.create(Vec::new(), HashMap::new()).await;
    match created {
        Ok(_) => {}
        // Leased by a delivery at work on it: it exists.
        Err(e) if e.is_leased() || e.is(ErrorCode::LeaseAlreadyPresent) => return Ok(Claim::Busy),
        Err(e) => return Err(e.context("creating a shard's lock in the job ledger")),
    }
    let lease = match HeldLease::acquire_for(&lock, None, SHORTEST_LEASE_SECONDS).await {
        Ok(lease) => lease,
        Err(e) if e.is(ErrorCode::LeaseAlreadyPresent) => return Ok(Claim::Busy),
        Err(e) => return Err(e),
    };
    if ledger
        .blob(&entry_name(shard, "finished"))
        .state()
        .await?
        .is_some()
    {
        lease.release().await.ok();
        // The delivery that finished it may have died before the job's summary: a
        // duplicate writes it (one listing of the job, only ever for a duplicate).
        note_end(app, &shard.job).await;
        return Ok(Claim::Finished);
    }
    // The job may have ended before (this shard failed, and its message was replayed): its
    // summary no longer holds once this delivery writes.
    summary::mark_stale(ledger, &shard.job).await?;
    let stop = match ledger.blob(&entry_name(shard, NEXT)).read(None).await {
        Ok(read) => Some(RecordedStop::parse(&read.bytes).map_err(|reason| {
            StorageError::other("reading a shard's recorded continuation", reason)
        })?),
        Err(e) if e.is(ErrorCode::BlobNotFound) => None,
        Err(e) => return Err(e.context("reading a shard's recorded continuation")),
    };
    Ok(Claim::Held(Box::new(PartLock { lease, stop })))
}

/// Records where `shard` chose to stop, before its continuation is queued: a delivery of
/// `shard` redone after a crash stops at the same place and queues the same continuation.
/// Written once: one found there already was recorded by another delivery, so this one's lock
/// was lost and it must not queue a continuation of its own.
pub async fn record_continuation(
    app: &App,
    shard: &Shard,
    stop: &RecordedStop,
) -> Result<(), StorageError> {
    let ledger = app.job_ledger().await?;
    let name = entry_name(shard, NEXT);
    let body = stop.to_json().into_bytes();
    let written = ledger
        .blob(&name)
        .create(body, HashMap::new())
        .await
        .map_err(|e| e.context(format!("writing {name} to the job ledger")))?;
    if written {
        Ok(())
    } else {
        Err(StorageError::other(
            format!("recording {name}"),
            "another delivery of the shard recorded where it stops: this one's lock was lost",
        ))
    }
}

/// Records what `shard` plans to do (a prune's judgement), before it does any of it.
pub async fn record_plan<T: Serialize>(
    app: &App,
    shard: &Shard,
    plan: &T,
) -> Result<(), StorageError> {
    let ledger = app.job_ledger().await?;
    let body = serde_json::to_vec(plan).map_err(|e| {
        StorageError::other(
            "recording a shard's plan",
            format!("it does not serialize: {e}"),
        )
    })?;
    write_with_body(ledger, &entry_name(shard, PLAN), HashMap::new(), body).await
}

/// What a delivery of `shard` before this one planned; `None` when none did.
pub async fn read_plan<T: serde::de::DeserializeOwned>(
    app: &App,
    shard: &Shard,
) -> Result<Option<T>, StorageError> {
    let ledger = app.job_ledger().await?;
    match ledger.blob(&entry_name(shard, PLAN)).read(None).await {
        Ok(read) => serde_json::from_slice(&read.bytes)
            .map(Some)
            .map_err(|e| StorageError::other("reading a shard's recorded plan", e.to_string())),
        Err(e) if e.is(ErrorCode::BlobNotFound) => Ok(None),
        Err(e) => Err(e.context("reading a shard's recorded plan")),
    }
}

const PLAN: &str = "plan";
const LOCK: &str = "lock";
const NEXT: &str = "next";

/// Records that `shard` has done its part, with the blobs it could not protect.
pub async fn record_finished(
    app: &App,
    shard: &Shard,
    counts: &Counts,
    notes: &Notes,
) -> Result<(), StorageError> {
    let ledger = app.job_ledger().await?;
    let mut metadata = counts.to_metadata();
    let body = if notes.is_empty() {
        Vec::new()
    } else {
        // Not a number, so never read back as a count.
        metadata.insert(NOTES_KEY.to_owned(), "yes".to_owned());
        serde_json::to_vec(notes).unwrap_or_default()
    };
    write_with_body(ledger, &entry_name(shard, "finished"), metadata, body).await?;
    // A job in flight across an upgrade entered this continuation under the id its earlier
    // release gave it: that entry is ended too (with no counts: they are this entry's).
    if let Some(legacy) = shard.legacy_id() {
        let queued = format!("{}/queued/{legacy}", shard.job);
        if ledger.blob(&queued).probe().await?.is_some() {
            write(
                ledger,
                &format!("{}/finished/{legacy}", shard.job),
                HashMap::new(),
            )
            .await?;
        }
    }
    Ok(())
}

/// After a shard's end that may end its job (one that queued no continuation: a continuation is
/// a shard of the job still to run): the job's summary, when the job has ended
/// ([`summary::note_end`]); a reading of the job's entries. A summary not written costs
/// `job list` that reading, nothing else: the shard's own record stands.
pub async fn note_end(app: &App, job: &str) {
    let noted =
        async { summary::note_end(app.job_ledger().await?, job, summary::MAX_ENTRIES_READ).await };
    if let Err(e) = noted.await {
        tracing::warn!(error = %e, job, "could not write the job's summary");
    }
}

/// Records the per-blob lines `shard` reports (JSON objects), before its finished entry: a shard
/// redone after a crash writes its lines again, whole.
pub async fn record_report(app: &App, shard: &Shard, lines: &[String]) -> Result<(), StorageError> {
    let ledger = app.job_ledger().await?;
    let mut body = lines.join("\n").into_bytes();
    body.push(b'\n');
    write_with_body(ledger, &entry_name(shard, REPORT), HashMap::new(), body).await
}

/// Removes the lines a delivery of `shard` before this one reported, if any.
pub async fn forget_report(app: &App, shard: &Shard) -> Result<(), StorageError> {
    let ledger = app.job_ledger().await?;
    match ledger.blob(&entry_name(shard, REPORT)).delete(None).await {
        Err(e) if e.is(ErrorCode::BlobNotFound) => Ok(()),
        deleted => deleted,
    }
}

const REPORT: &str = "report";

/// Marks a finished entry whose body holds notes.
const NOTES_KEY: &str = "notes";

/// Records that `shard` has failed for good (its message goes to the poison queue), and why.
pub async fn record_failed(app: &App, shard: &Shard, reason: &str) -> Result<(), StorageError> {
    let ledger = app.job_ledger().await?;
    let reason = crate::core::job::encoded_reason(reason);
    let metadata = HashMap::from([("reason".to_owned(), reason)]);
    write(ledger, &entry_name(shard, "failed"), metadata).await?;
    note_end(app, &shard.job).await;
    Ok(())
}

/// Records that `shard`'s last allowed delivery has started: if it neither finishes nor fails
/// by the invocation's timeout (it was killed, or timed out), the job's status says it failed.
pub async fn record_last_attempt(app: &App, shard: &Shard) -> Result<(), StorageError> {
    let ledger = app.job_ledger().await?;
    let limit = app
        .config
        .function_timeout
        .unwrap_or(std::time::Duration::from_secs(86_400));
    // Room for the host to notice the end of an invocation.
    let deadline = time::OffsetDateTime::now_utc() + limit + std::time::Duration::from_secs(120);
    let metadata = HashMap::from([("deadline".to_owned(), rfc3339(deadline))]);
    write(ledger, &entry_name(shard, "last"), metadata).await
}

fn entry_name(shard: &Shard, event: &str) -> String {
    format!("{}/{event}/{}", shard.job, shard.id())
}

/// Metadata values travel as HTTP headers: ASCII only.
fn encode(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

fn rfc3339(instant: time::OffsetDateTime) -> String {
    instant
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A metadata value by its case-blind name; empty when absent.
fn field_of(metadata: &HashMap<String, String>, name: &str) -> String {
    metadata
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.clone())
        .unwrap_or_default()
}

async fn write(
    ledger: &Container,
    name: &str,
    metadata: HashMap<String, String>,
) -> Result<(), StorageError> {
    write_with_body(ledger, name, metadata, Vec::new()).await
}

async fn write_with_body(
    ledger: &Container,
    name: &str,
    metadata: HashMap<String, String>,
    body: Vec<u8>,
) -> Result<(), StorageError> {
    ledger
        .blob(name)
        .put(body, metadata)
        .await
        .map_err(|e| e.context(format!("writing {name} to the job ledger")))
}
