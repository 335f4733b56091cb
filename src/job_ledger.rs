//! Where a job's progress lives: container `{BACKUP_QUEUE_NAME}-jobs` of `AzureWebJobsStorage`,
//! one small blob per event, never updated in place, so that any instance can answer a status
//! call and no two instances ever write the same counter.
//!
//! ```text
//! {job}/job               the job: kind, container, prefix, start (metadata)
//! {job}/queued/{shard}    written before the shard is put on the queue
//! {job}/finished/{shard}  written when the shard has done its part (its counts as metadata;
//!                         the blobs it could not protect, if any, as JSON in the body)
//! {job}/failed/{shard}    written when the shard's last delivery failed (the reason as metadata)
//! {job}/last/{shard}      written when the shard's last allowed delivery starts (its deadline)
//! ```
//!
//! A job is done when every queued shard has finished and every blob was protected; it failed
//! when a shard failed for good, or its last delivery passed its deadline without ending, or a
//! blob could not be protected ([`JobProgress::from_ledger`]).

use std::collections::HashMap;

use azure_core::http::RequestContent;
use azure_storage_blob::{models::BlobClientUploadOptions, BlobContainerClient};
use futures::TryStreamExt;
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Serialize;

use crate::{
    app::App,
    core::{
        job::{shard_id, JobProgress, LedgerEntry, ShardCounts, ShardNotes},
        shard::{is_job_id, Shard},
    },
    storage::{listing::list_with_metadata, StorageError, StorageResultExt},
};

/// What started a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Producer,
    Reconcile,
    Command,
}

impl JobKind {
    fn as_str(self) -> &'static str {
        match self {
            JobKind::Producer => "producer",
            JobKind::Reconcile => "reconcile",
            JobKind::Command => "command",
        }
    }
}

/// A job's status: what it is, and what its ledger adds up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobStatus {
    pub job: String,
    pub kind: String,
    pub container: String,
    pub prefix: String,
    pub started: String,
    #[serde(flatten)]
    pub progress: JobProgress,
}

/// Starts a job at `roots` (one shard, or a blob and a directory of the same name): its ledger
/// first, then the shards on the queue, so that the job can never look done before its first
/// shard has run.
pub async fn start_job(app: &App, kind: JobKind, roots: &[Shard]) -> Result<(), StorageError> {
    let Some(first) = roots.first() else {
        return Ok(());
    };
    let ledger = app.job_ledger().await?;
    for root in roots {
        write(ledger, &entry_name(root, "queued"), HashMap::new()).await?;
    }
    let prefix = first.only.as_deref().unwrap_or(&first.prefix);
    let metadata = HashMap::from([
        ("kind".to_owned(), kind.as_str().to_owned()),
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
    counts: &ShardCounts,
    notes: &ShardNotes,
) -> Result<(), StorageError> {
    let ledger = app.job_ledger().await?;
    let body = if notes.is_empty() {
        Vec::new()
    } else {
        serde_json::to_vec(notes).unwrap_or_default()
    };
    write_with_body(
        ledger,
        &entry_name(shard, "finished"),
        counts.to_metadata(),
        body,
    )
    .await
}

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
    let ledger = app.job_ledger().await?;
    let pages = list_with_metadata(ledger, &app.config.job_ledger, &format!("{job}/"))?;
    futures::pin_mut!(pages);
    let mut record = None;
    let mut entries = Vec::new();
    let mut notes_to_read = Vec::new();
    while let Some(page) = pages.try_next().await? {
        for blob in page {
            let Some(rest) = blob
                .name
                .strip_prefix(job)
                .and_then(|r| r.strip_prefix('/'))
            else {
                continue;
            };
            match rest.split_once('/') {
                None if rest == "job" => record = Some(blob.metadata),
                Some(("queued", shard)) => entries.push(LedgerEntry::Queued {
                    shard: shard.to_owned(),
                }),
                Some(("finished", shard)) => {
                    let counts = ShardCounts::from_metadata(&blob.metadata);
                    if (counts.failed > 0 || counts.md5_mismatches > 0)
                        && notes_to_read.len() < MAX_NOTES_READ
                    {
                        notes_to_read.push((shard.to_owned(), blob.name.clone(), counts));
                    } else {
                        entries.push(LedgerEntry::Finished {
                            shard: shard.to_owned(),
                            counts,
                            notes: ShardNotes::default(),
                        });
                    }
                }
                Some(("failed", shard)) => entries.push(LedgerEntry::Failed {
                    shard: shard.to_owned(),
                    reason: percent_decode_str(&field_of(&blob.metadata, "reason"))
                        .decode_utf8_lossy()
                        .into_owned(),
                }),
                Some(("last", shard)) => {
                    if let Ok(deadline) = time::OffsetDateTime::parse(
                        &field_of(&blob.metadata, "deadline"),
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
    for (shard, name, counts) in notes_to_read {
        let notes = read_notes(ledger, &name).await;
        entries.push(LedgerEntry::Finished {
            shard,
            counts,
            notes,
        });
    }
    let field = |name: &str| field_of(&record, name);
    Ok(Some(JobStatus {
        job: job.to_owned(),
        kind: field("kind"),
        container: field("container"),
        prefix: percent_decode_str(&field("prefix"))
            .decode_utf8_lossy()
            .into_owned(),
        started: field("started"),
        progress: JobProgress::from_ledger(entries, time::OffsetDateTime::now_utc()),
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
async fn read_notes(ledger: &BlobContainerClient, name: &str) -> ShardNotes {
    let read = async {
        let downloaded = ledger.blob_client(name).download(None).await.ok()?;
        let bytes = downloaded.body.collect().await.ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    read.await.unwrap_or_default()
}

async fn write(
    ledger: &BlobContainerClient,
    name: &str,
    metadata: HashMap<String, String>,
) -> Result<(), StorageError> {
    write_with_body(ledger, name, metadata, Vec::new()).await
}

async fn write_with_body(
    ledger: &BlobContainerClient,
    name: &str,
    metadata: HashMap<String, String>,
    body: Vec<u8>,
) -> Result<(), StorageError> {
    ledger
        .blob_client(name)
        .upload(
            RequestContent::from(body),
            Some(BlobClientUploadOptions {
                metadata: Some(metadata),
                ..Default::default()
            }),
        )
        .await
        .during(|| format!("writing {name} to the job ledger"))?;
    Ok(())
}
