//! Where a job's progress lives: container `{BACKUP_QUEUE_NAME}-jobs` of `AzureWebJobsStorage`,
//! one small blob per event, never updated in place, so that any instance can answer a status
//! call and no two instances ever write the same counter.
//!
//! ```text
//! {job}/job               the job: kind, container, prefix, start (metadata)
//! {job}/queued/{shard}    written before the shard is put on the queue
//! {job}/finished/{shard}  written when the shard has done its part (its counts as metadata)
//! {job}/failed/{shard}    written when the shard's last delivery failed
//! ```
//!
//! A job is done when every queued shard has finished ([`JobProgress::from_ledger`]).

use std::collections::HashMap;

use azure_core::http::RequestContent;
use azure_storage_blob::{models::BlobClientUploadOptions, BlobContainerClient};
use futures::TryStreamExt;
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Serialize;

use crate::{
    app::App,
    core::{
        job::{shard_id, JobProgress, LedgerEntry, ShardCounts},
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

/// Starts a job at `root`: its ledger first, then the shard on the queue, so that the job can
/// never look done before its first shard has run.
pub async fn start_job(app: &App, kind: JobKind, root: &Shard) -> Result<(), StorageError> {
    let ledger = app.job_ledger().await?;
    write(ledger, &entry_name(root, "queued"), HashMap::new()).await?;
    let metadata = HashMap::from([
        ("kind".to_owned(), kind.as_str().to_owned()),
        ("container".to_owned(), root.container.clone()),
        ("prefix".to_owned(), encode(&root.prefix)),
        ("started".to_owned(), now_rfc3339()),
    ]);
    write(ledger, &format!("{}/job", root.job), metadata).await?;
    app.enqueue_shard(root).await
}

/// Puts a shard of a running job on the queue, entered in the ledger first.
pub async fn queue_shard(app: &App, shard: &Shard) -> Result<(), StorageError> {
    let ledger = app.job_ledger().await?;
    write(ledger, &entry_name(shard, "queued"), HashMap::new()).await?;
    app.enqueue_shard(shard).await
}

/// Records that `shard` has done its part.
pub async fn record_finished(
    app: &App,
    shard: &Shard,
    counts: &ShardCounts,
) -> Result<(), StorageError> {
    let ledger = app.job_ledger().await?;
    write(ledger, &entry_name(shard, "finished"), counts.to_metadata()).await
}

/// Records that `shard` has failed for good (its message goes to the poison queue).
pub async fn record_failed(app: &App, shard: &Shard) -> Result<(), StorageError> {
    let ledger = app.job_ledger().await?;
    write(ledger, &entry_name(shard, "failed"), HashMap::new()).await
}

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
                Some(("finished", shard)) => entries.push(LedgerEntry::Finished {
                    shard: shard.to_owned(),
                    counts: ShardCounts::from_metadata(&blob.metadata),
                }),
                Some(("failed", shard)) => entries.push(LedgerEntry::Failed {
                    shard: shard.to_owned(),
                }),
                _ => {}
            }
        }
    }
    let Some(record) = record else {
        return Ok(None);
    };
    let field = |name: &str| {
        record
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    };
    Ok(Some(JobStatus {
        job: job.to_owned(),
        kind: field("kind"),
        container: field("container"),
        prefix: percent_decode_str(&field("prefix"))
            .decode_utf8_lossy()
            .into_owned(),
        started: field("started"),
        progress: JobProgress::from_ledger(entries),
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
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

async fn write(
    ledger: &BlobContainerClient,
    name: &str,
    metadata: HashMap<String, String>,
) -> Result<(), StorageError> {
    ledger
        .blob_client(name)
        .upload(
            RequestContent::from(Vec::new()),
            Some(BlobClientUploadOptions {
                metadata: Some(metadata),
                ..Default::default()
            }),
        )
        .await
        .during(|| format!("writing {name} to the job ledger"))?;
    Ok(())
}
