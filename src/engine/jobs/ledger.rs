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

use futures::TryStreamExt;
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Serialize;

use super::{runner::RecordedStop, JobOrigin};
use crate::{
    app::App,
    core::{
        job::{
            count_names, legacy_shard_id, not_done, shard_id, Counts, JobProgress, LedgerEntry,
            Notes,
        },
        restore_plan::RestoreTarget,
        shard::{is_job_id, Shard, WorkKind},
    },
    storage::{
        lease::{HeldLease, SHORTEST_LEASE_SECONDS},
        listing::list_with_metadata,
        Container, ErrorCode, StorageError,
    },
};

/// A job's status: what it is, and what its ledger adds up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobStatus {
    pub job: String,
    /// What started it: `producer`, `reconcile`, `command`, `event`, `restore`, `verify` or
    /// `prune`.
    pub kind: String,
    /// What it does: `backup`, `restore`, `verify` or `prune`.
    pub work: String,
    pub container: String,
    pub prefix: String,
    pub started: String,
    /// Where a restore job writes (account URL, container, prefix; never a credential).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<RestoreTarget>,
    #[serde(flatten)]
    pub progress: JobProgress,
}

/// Starts a job at `roots` (one shard, or a blob and a directory of the same name): its ledger
/// first, then the shards on the queue, so that the job can never look done before its first
/// shard has run.
pub async fn start_job(app: &App, origin: JobOrigin, roots: &[Shard]) -> Result<(), StorageError> {
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
        ("work".to_owned(), first.kind.as_str().to_owned()),
        ("container".to_owned(), first.container.clone()),
        ("prefix".to_owned(), encode(prefix)),
        ("started".to_owned(), now_rfc3339()),
    ]);
    let target = first
        .restore
        .as_ref()
        .and_then(|o| o.target(&first.container));
    if let Some(target) = target {
        for (key, value) in [
            (TARGET_ACCOUNT, target.account),
            (TARGET_CONTAINER, target.container),
            (TARGET_PREFIX, target.prefix),
        ] {
            metadata.insert(key.to_owned(), encode(&value));
        }
    }
    write(ledger, &format!("{}/job", first.job), metadata).await?;
    for root in roots {
        app.enqueue_shard(root).await?;
    }
    Ok(())
}

/// The `{job}/job` metadata that names a restore's target.
const TARGET_ACCOUNT: &str = "target_account";
const TARGET_CONTAINER: &str = "target_container";
const TARGET_PREFIX: &str = "target_prefix";

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
        return Ok(Claim::Finished);
    }
    let stop = match ledger.blob(&entry_name(shard, NEXT)).read(None).await {
        Ok(read) => Some(serde_json::from_slice(&read.bytes).map_err(|e| {
            StorageError::other("reading a shard's recorded continuation", e.to_string())
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
    let body = serde_json::to_vec(stop)
        .map_err(|e| StorageError::other("recording a shard's continuation", e.to_string()))?;
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
    if let Some(legacy) = legacy_shard_id(shard) {
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

/// Records the per-blob lines `shard` reports (JSON objects), before its finished entry: a shard
/// redone after a crash writes its lines again, whole.
pub async fn record_report(app: &App, shard: &Shard, lines: &[String]) -> Result<(), StorageError> {
    let ledger = app.job_ledger().await?;
    let mut body = lines.join("\n").into_bytes();
    body.push(b'\n');
    write_with_body(ledger, &entry_name(shard, REPORT), HashMap::new(), body).await
}

const REPORT: &str = "report";

/// Every line the shards of `job` reported, shard by shard; `None` when no such job was
/// started.
pub async fn job_report(app: &App, job: &str) -> Result<Option<Vec<String>>, StorageError> {
    if !is_job_id(job) {
        return Ok(None);
    }
    let ledger = app.job_ledger().await?;
    if ledger.blob(&format!("{job}/job")).probe().await?.is_none() {
        return Ok(None);
    }
    let pages = list_with_metadata(ledger, &format!("{job}/{REPORT}/"))?;
    futures::pin_mut!(pages);
    let mut lines = Vec::new();
    while let Some(page) = pages.try_next().await? {
        for entry in page {
            let read =
                ledger.blob(&entry.name).read(None).await.map_err(|e| {
                    e.context(format!("reading {} from the job ledger", entry.name))
                })?;
            let text = String::from_utf8_lossy(&read.bytes);
            lines.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_owned));
        }
    }
    Ok(Some(lines))
}

/// Marks a finished entry whose body holds notes.
const NOTES_KEY: &str = "notes";

/// Records that `shard` has failed for good (its message goes to the poison queue), and why.
pub async fn record_failed(app: &App, shard: &Shard, reason: &str) -> Result<(), StorageError> {
    let ledger = app.job_ledger().await?;
    let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
    let metadata = HashMap::from([("reason".to_owned(), encode(&reason))]);
    write(ledger, &entry_name(shard, "failed"), metadata).await
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

/// How much of a failure's reason the ledger keeps (metadata is limited to 8 KiB in all).
const MAX_REASON_CHARS: usize = 1_000;
/// How many finished entries' notes a status call reads: the counts say how many more failed.
const MAX_NOTES_READ: usize = 20;

/// The status of `job`; `None` when no such job was started.
pub async fn job_status(app: &App, job: &str) -> Result<Option<JobStatus>, StorageError> {
    if !is_job_id(job) {
        return Ok(None);
    }
    job_status_in(app.job_ledger().await?, job).await
}

/// The status of `job` in `ledger`, only read (a container that may not exist: `None`).
pub async fn job_status_in(
    ledger: &Container,
    job: &str,
) -> Result<Option<JobStatus>, StorageError> {
    if !is_job_id(job) {
        return Ok(None);
    }
    let pages = list_with_metadata(ledger, &format!("{job}/"))?;
    futures::pin_mut!(pages);
    let mut record = None;
    let mut entries = Vec::new();
    let mut with_notes = Vec::new();
    while let Some(page) = pages.try_next().await? {
        for blob in page {
            let metadata = blob.metadata.clone().unwrap_or_default();
            let Some(rest) = blob
                .name
                .strip_prefix(job)
                .and_then(|r| r.strip_prefix('/'))
            else {
                continue;
            };
            match rest.split_once('/') {
                None if rest == "job" => record = Some(metadata),
                Some(("queued", shard)) => entries.push(LedgerEntry::Queued {
                    shard: shard.to_owned(),
                }),
                Some(("finished", shard)) => {
                    let counts = Counts::from_metadata(&metadata);
                    // Shards finished by releases before the `notes` flag have notes where
                    // they counted failures or MD5 mismatches.
                    let has_notes = !field_of(&metadata, NOTES_KEY).is_empty()
                        || not_done(&counts) > 0
                        || counts.get("md5_mismatches") > 0;
                    if has_notes {
                        with_notes.push((shard.to_owned(), blob.name.clone(), counts));
                    } else {
                        entries.push(LedgerEntry::Finished {
                            shard: shard.to_owned(),
                            counts,
                            notes: Notes::default(),
                        });
                    }
                }
                Some(("failed", shard)) => entries.push(LedgerEntry::Failed {
                    shard: shard.to_owned(),
                    reason: percent_decode_str(&field_of(&metadata, "reason"))
                        .decode_utf8_lossy()
                        .into_owned(),
                }),
                Some(("last", shard)) => {
                    if let Ok(deadline) = time::OffsetDateTime::parse(
                        &field_of(&metadata, "deadline"),
                        &time::format_description::well_known::Rfc3339,
                    ) {
                        entries.push(LedgerEntry::LastAttempt {
                            shard: shard.to_owned(),
                            deadline,
                        });
                    }
                }
                _ => {}
            }
        }
    }
    let Some(record) = record else {
        return Ok(None);
    };
    // The notes of shards that failed blobs first: a status names what was not protected before
    // it lists warnings.
    with_notes.sort_by_key(|(_, _, counts)| not_done(counts) == 0);
    for (index, (shard, name, counts)) in with_notes.into_iter().enumerate() {
        let notes = if index < MAX_NOTES_READ {
            read_notes(ledger, &name).await
        } else {
            Notes::default()
        };
        entries.push(LedgerEntry::Finished {
            shard,
            counts,
            notes,
        });
    }
    let field = |name: &str| field_of(&record, name);
    let work = match field("work").as_str() {
        "" => WorkKind::Backup.as_str().to_owned(),
        work => work.to_owned(),
    };
    let mut progress = JobProgress::from_ledger(entries, time::OffsetDateTime::now_utc());
    // Every count of the job's kind is shown, those still at zero too.
    let mut totals = Counts::zero(WorkKind::parse(&work).map_or(&[][..], count_names));
    totals.add(&progress.totals);
    progress.totals = totals;
    let decoded = |name: &str| {
        percent_decode_str(&field(name))
            .decode_utf8_lossy()
            .into_owned()
    };
    let target = Some(decoded(TARGET_ACCOUNT))
        .filter(|account| !account.is_empty())
        .map(|account| RestoreTarget {
            account,
            container: decoded(TARGET_CONTAINER),
            prefix: decoded(TARGET_PREFIX),
        });
    Ok(Some(JobStatus {
        job: job.to_owned(),
        kind: field("kind"),
        work,
        container: field("container"),
        prefix: decoded("prefix"),
        started: field("started"),
        target,
        progress,
    }))
}

fn entry_name(shard: &Shard, event: &str) -> String {
    format!("{}/{event}/{}", shard.job, shard_id(shard))
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

/// The notes in a finished entry's body; none when it cannot be read (its counts still say how
/// many blobs failed).
async fn read_notes(ledger: &Container, name: &str) -> Notes {
    let read = async {
        let read = ledger.blob(name).read(None).await.ok()?;
        serde_json::from_slice(&read.bytes).ok()
    };
    read.await.unwrap_or_default()
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
