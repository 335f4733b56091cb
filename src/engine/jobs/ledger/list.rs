//! Every job of the ledger at once (`lakebackup job list`): one flat listing of the ledger's
//! container with metadata — a page holds up to 5,000 entries, so 1,000 jobs of a few entries
//! each take a page or two, where a listing per job would take a request per job — parsed into
//! each job's entries and added up as [`super::job_status`] does. No entry's body is read (a
//! list names no failed blob: `lakebackup job JOB` does), and nothing is written.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use serde::Serialize;
use time::OffsetDateTime;

use super::status::{status_of, Listed};
use crate::{
    core::{
        job::{JobState, LedgerEntry, Notes},
        shard::is_job_id,
    },
    storage::{
        listing::{list_with_metadata, until_container_missing},
        Container, StorageError,
    },
};

/// One job as `job list` shows it: its status without the failed blobs' names, and when it
/// ended.
#[derive(Debug, Clone, Serialize)]
pub struct ListedJob {
    #[serde(flatten)]
    pub status: super::JobStatus,
    /// When its last shard ended (the newest finished or failed entry), for a job that is no
    /// longer running; `None` while it runs.
    pub finished: Option<String>,
}

/// Which jobs `job list` shows; `None` lets every job through.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub container: Option<String>,
    /// What started the job (`producer`, `reconcile`, …) or what it does (`backup`, …).
    pub kind: Option<String>,
    /// Jobs started at or after this instant.
    pub since: Option<OffsetDateTime>,
}

impl JobFilter {
    pub fn admits(&self, job: &ListedJob) -> bool {
        let status = &job.status;
        self.state
            .is_none_or(|state| status.progress.state == state)
            && self
                .container
                .as_ref()
                .is_none_or(|c| &status.container == c)
            && self
                .kind
                .as_ref()
                .is_none_or(|k| &status.kind == k || &status.work == k)
            && self.since.is_none_or(|since| {
                parse_instant(&status.started).is_some_and(|started| started >= since)
            })
    }
}

/// The jobs of `ledger` that `filter` admits, newest first. A ledger that does not exist yet
/// holds no job.
pub async fn list_jobs(
    ledger: &Container,
    filter: &JobFilter,
) -> Result<Vec<ListedJob>, StorageError> {
    let pages = until_container_missing(list_with_metadata(ledger, "")?);
    futures::pin_mut!(pages);
    let mut jobs: BTreeMap<String, (Listed, Option<OffsetDateTime>)> = BTreeMap::new();
    while let Some(page) = pages.try_next().await? {
        for blob in page {
            let Some((job, rest)) = blob.name.split_once('/') else {
                continue;
            };
            if !is_job_id(job) {
                continue;
            }
            let (listed, ended) = jobs.entry(job.to_owned()).or_default();
            if rest.starts_with("finished/") || rest.starts_with("failed/") {
                *ended = (*ended).max(Some(blob.last_modified));
            }
            let metadata = blob.metadata.clone().unwrap_or_default();
            listed.take(rest, &blob.name, metadata);
        }
    }
    let mut listed: Vec<ListedJob> = jobs
        .into_iter()
        .filter_map(|(job, (listed, ended))| {
            let record = listed.record?;
            let mut entries = listed.entries;
            // The notes stay unread: the counts say how many blobs failed.
            entries.extend(listed.with_notes.into_iter().map(|(shard, _, counts)| {
                LedgerEntry::Finished {
                    shard,
                    counts,
                    notes: Notes::default(),
                }
            }));
            let mut status = status_of(&job, &record, entries);
            status.progress.failures.clear();
            status.progress.warnings.clear();
            let finished = (status.progress.state != JobState::Running)
                .then(|| ended.map(rfc3339))
                .flatten();
            Some(ListedJob { status, finished })
        })
        .filter(|job| filter.admits(job))
        .collect();
    // Newest first; ids (the start in hex) order jobs started in the same second.
    listed.sort_by(|a, b| {
        let key = |j: &ListedJob| (parse_instant(&j.status.started), j.status.job.clone());
        key(b).cmp(&key(a))
    });
    Ok(listed)
}

fn parse_instant(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

fn rfc3339(instant: OffsetDateTime) -> String {
    instant
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
