//! A job's status, read from its ledger (see [`super`]): the entries listed once, the notes of
//! the shards that failed blobs read, and what they add up to ([`JobProgress::from_ledger`]),
//! with the counts of the job's kind all shown. Only read: a status call never writes.

use std::collections::HashMap;

use futures::TryStreamExt;
use percent_encoding::percent_decode_str;
use serde::Serialize;

use super::{field_of, ABOUT, NOTES_KEY, REPORT};
use crate::{
    app::App,
    core::{
        counts::Counts,
        job::{JobProgress, LedgerEntry, Notes},
        shard::is_job_id,
    },
    engine::jobs,
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
    /// What the job's kind says about it (a restore: where it writes — account URL, container,
    /// prefix; never a credential).
    #[serde(flatten)]
    pub about: serde_json::Map<String, serde_json::Value>,
    #[serde(flatten)]
    pub progress: JobProgress,
}

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
    let Listed {
        record,
        mut entries,
        mut with_notes,
    } = list_entries(ledger, job).await?;
    let Some(record) = record else {
        return Ok(None);
    };
    let work = work_of(&record);
    // The notes of shards that failed blobs first: a status names what was not protected before
    // it lists warnings.
    with_notes.sort_by_key(|(_, _, counts)| jobs::not_done(&work, counts) == 0);
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
    Ok(Some(status_of(job, &record, entries)))
}

/// What a job does, from its record: jobs of releases before the kind was recorded were
/// backups.
fn work_of(record: &HashMap<String, String>) -> String {
    match field_of(record, "work").as_str() {
        "" => "backup".to_owned(),
        work => work.to_owned(),
    }
}

/// The status of `job` from its record and its entries (with whatever notes were read).
pub(super) fn status_of(
    job: &str,
    record: &HashMap<String, String>,
    entries: Vec<LedgerEntry>,
) -> JobStatus {
    let field = |name: &str| field_of(record, name);
    let work = work_of(record);
    let not_done = |counts: &Counts| jobs::not_done(&work, counts);
    let mut progress = JobProgress::from_ledger(entries, time::OffsetDateTime::now_utc(), not_done);
    // Every count of the job's kind is shown, those still at zero too.
    let mut totals = Counts::zero(jobs::count_names(&work));
    totals.add(&progress.totals);
    progress.totals = totals;
    let decoded = |name: &str| {
        percent_decode_str(&field(name))
            .decode_utf8_lossy()
            .into_owned()
    };
    let about = match serde_json::from_str(&decoded(ABOUT)) {
        Ok(serde_json::Value::Object(about)) => about,
        _ => serde_json::Map::new(),
    };
    JobStatus {
        job: job.to_owned(),
        kind: field("kind"),
        work,
        container: field("container"),
        prefix: decoded("prefix"),
        started: field("started"),
        about,
        progress,
    }
}

/// A job's ledger entries as listed: its record, the entries, and the finished entries whose
/// notes are to be read (name, shard, counts).
#[derive(Default)]
pub(super) struct Listed {
    pub(super) record: Option<HashMap<String, String>>,
    pub(super) entries: Vec<LedgerEntry>,
    pub(super) with_notes: Vec<(String, String, Counts)>,
}

async fn list_entries(ledger: &Container, job: &str) -> Result<Listed, StorageError> {
    let pages = list_with_metadata(ledger, &format!("{job}/"))?;
    futures::pin_mut!(pages);
    let mut listed = Listed::default();
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
            listed.take(rest, &blob.name, metadata);
        }
    }
    Ok(listed)
}

impl Listed {
    /// One entry, `rest` its name after `{job}/`.
    pub(super) fn take(&mut self, rest: &str, name: &str, metadata: HashMap<String, String>) {
        let entries = &mut self.entries;
        match rest.split_once('/') {
            None if rest == "job" => self.record = Some(metadata),
            Some(("queued", shard)) => entries.push(LedgerEntry::Queued {
                shard: shard.to_owned(),
            }),
            Some(("finished", shard)) => {
                let counts = Counts::from_metadata(&metadata);
                // Shards finished by releases before the `notes` flag have notes where they
                // counted failures or MD5 mismatches.
                let has_notes = !field_of(&metadata, NOTES_KEY).is_empty()
                    || counts.get("failed") + counts.get("errors") > 0
                    || counts.get("md5_mismatches") > 0;
                if has_notes {
                    self.with_notes
                        .push((shard.to_owned(), name.to_owned(), counts));
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
                let deadline = time::OffsetDateTime::parse(
                    &field_of(&metadata, "deadline"),
                    &time::format_description::well_known::Rfc3339,
                );
                if let Ok(deadline) = deadline {
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

/// The notes in a finished entry's body; none when it cannot be read (its counts still say how
/// many blobs failed).
async fn read_notes(ledger: &Container, name: &str) -> Notes {
    let read = async {
        let read = ledger.blob(name).read(None).await.ok()?;
        serde_json::from_slice(&read.bytes).ok()
    };
    read.await.unwrap_or_default()
}
