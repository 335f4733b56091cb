//! Where a job's progress lives: container `{BACKUP_QUEUE_NAME}-jobs` of `AzureWebJobsStorage`,
//! one small blob per event, never updated in place, so that any instance can answer a status
//! call and no two instances ever write the same counter.
//!
//! ```text
//! {job}/job               the job: what started it, its kind of work, container, prefix,
//!                         start (metadata)
//! {job}/queued/{shard}    written before the shard is put on the queue
//! {job}/finished/{shard}  written when the shard has done its part (its counts as metadata;
//!                         the blobs it could not protect, if any, as JSON in the body)
//! {job}/failed/{shard}    written when the shard's last delivery failed (the reason as metadata)
//! {job}/last/{shard}      written when the shard's last allowed delivery starts (its deadline)
//! {job}/report/{shard}    the per-blob lines a shard reports (a restore's actions, a verify's
//!                         problems, a prune's deletions), one JSON
//!                         object per line, written before its finished entry
//! ```
//!
//! A job is done when every queued shard has finished and every blob was protected; it failed
//! when a shard failed for good, or its last delivery passed its deadline without ending, or a
//! blob could not be protected ([`JobProgress::from_ledger`]).

use std::collections::HashMap;

use futures::TryStreamExt;
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Serialize;

use super::JobOrigin;
use crate::{
    app::App,
    core::{
        job::{count_names, not_done, shard_id, Counts, JobProgress, LedgerEntry, Notes},
        shard::{is_job_id, Shard, WorkKind},
    },
    storage::{listing::list_with_metadata, Container, StorageError},
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
    let metadata = HashMap::from([
        ("kind".to_owned(), origin.as_str().to_owned()),
        ("work".to_owned(), first.kind.as_str().to_owned()),
        ("container".to_owned(), first.container.clone()),
        ("prefix".to_owned(), encode(prefix)),
        ("started".to_owned(), now_rfc3339()),
    ]);
    write(ledger, &format!("{}/job", first.job), metadata).await?;
    for root in roots {
        app.enqueue_shard(root).await?;
    }
    Ok(())
}

/// Puts a shard of a running job on the queue, entered in the ledger first.
pub async fn queue_shard(app: &App, shard: &Shard) -> Result<(), StorageError> {
    let ledger = app.job_ledger().await?;
    write(ledger, &entry_name(shard, "queued"), HashMap::new()).await?;
    app.enqueue_shard(shard).await
}

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
    write_with_body(ledger, &entry_name(shard, "finished"), metadata, body).await
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
    Ok(Some(JobStatus {
        job: job.to_owned(),
        kind: field("kind"),
        work,
        container: field("container"),
        prefix: percent_decode_str(&field("prefix"))
            .decode_utf8_lossy()
            .into_owned(),
        started: field("started"),
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
