//! Every job of the ledger (`lakebackup job list`). Every job id starts `job-` (the start time
//! in nanoseconds, in hex). Every job has an entry under `summaries/` ([`super::summary`]): its
//! summary once it has ended, an index entry before; all are read in one listing, with metadata.
//! Once the timer has marked that index complete, it names every job; until then the jobs' ids
//! come from a listing of the ledger's directories (a `/` delimiter, which scans every entry).
//! With `--since`, the ids are narrowed by the start time each carries. Each job left without a
//! current summary (running, reopened, or ended before summaries were written) has its entries
//! listed, [`JOBS_AT_ONCE`] at a time, and added up as [`super::job_status`] does. So a ledger's
//! ended jobs cost an entry each, however many entries they hold. No entry's body is read (a
//! list names no failed blob: `lakebackup job JOB` does), and nothing is written.

use std::collections::{BTreeMap, HashMap};

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use time::OffsetDateTime;

use super::status::{status_of, Listed};
use crate::{
    core::{
        job::{JobState, LedgerEntry, Notes},
        shard::is_job_id,
    },
    storage::{
        listing::{list_directory_names, list_with_metadata, until_container_missing},
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
    /// Its record (`{job}/job`'s metadata), for its summary.
    #[serde(skip)]
    pub(super) record: HashMap<String, String>,
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

/// How many jobs' entries are listed at once.
pub const JOBS_AT_ONCE: usize = 32;

/// What every job id starts with ([`crate::core::shard::new_job_id`]).
const JOB_PREFIX: &str = "job-";

/// How long before its recorded start a job's id may have been made (the id is taken first,
/// then the record written).
const ID_BEFORE_START: time::Duration = time::Duration::minutes(1);

/// Each job's entries as listed, and when its last shard ended.
pub(super) type Entries = BTreeMap<String, (Listed, Option<OffsetDateTime>)>;

/// The jobs of `ledger` that `filter` admits, newest first. A ledger that does not exist yet
/// holds no job.
pub async fn list_jobs(
    ledger: &Container,
    filter: &JobFilter,
) -> Result<Vec<ListedJob>, StorageError> {
    let summaries = super::summary::read_summaries(ledger).await?;
    let mut current = summaries.current;
    let ids = match summaries.complete {
        // Every job is in the index: no scan of the ledger's entries.
        true => summaries
            .indexed
            .into_iter()
            .filter(|job| !too_old(job, filter.since))
            .collect(),
        false => job_ids(ledger, filter.since).await?,
    };
    let mut listed = Vec::with_capacity(ids.len());
    let mut unsummarized = Vec::new();
    for job in ids {
        // A summary counts only beside its job's entries: a job whose entries were removed is
        // no job, whatever summary is left.
        match current.remove(&job) {
            Some(summary) => listed.push(summary),
            None => unsummarized.push(job),
        }
    }
    let each: Vec<Entries> = futures::stream::iter(unsummarized)
        .map(|job| async move {
            let mut one = Entries::new();
            take_listing(ledger, &format!("{job}/"), &mut one, usize::MAX)
                .await
                .map(|_| one)
        })
        .buffer_unordered(JOBS_AT_ONCE)
        .try_collect()
        .await?;
    listed.extend(
        each.into_iter()
            .flatten()
            .filter_map(|(job, (entries, ended))| listed_job(&job, entries, ended)),
    );
    listed.retain(|job| filter.admits(job));
    // Newest first; ids (the start in hex) order jobs started in the same second.
    listed.sort_by(|a, b| {
        let key = |j: &ListedJob| (parse_instant(&j.status.started), j.status.job.clone());
        key(b).cmp(&key(a))
    });
    Ok(listed)
}

/// The entries under `prefix`, with metadata, into `jobs`; `false` (and stopped) once `most`
/// or more were listed.
pub(super) async fn take_listing(
    ledger: &Container,
    prefix: &str,
    jobs: &mut Entries,
    most: usize,
) -> Result<bool, StorageError> {
    let pages = until_container_missing(list_with_metadata(ledger, prefix)?);
    futures::pin_mut!(pages);
    let mut taken = 0usize;
    while let Some(page) = pages.try_next().await? {
        taken = taken.saturating_add(page.len());
        if taken >= most {
            return Ok(false);
        }
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
    Ok(true)
}

/// The ledger's job ids, one directory level, without those whose id says they started before
/// `since` (an id that carries no time is kept: its record decides).
pub(super) async fn job_ids(
    ledger: &Container,
    since: Option<OffsetDateTime>,
) -> Result<Vec<String>, StorageError> {
    let pages = until_container_missing(list_directory_names(ledger, Some(JOB_PREFIX))?);
    futures::pin_mut!(pages);
    let mut jobs = Vec::new();
    while let Some(page) = pages.try_next().await? {
        for directory in page.directories() {
            let job = directory.trim_end_matches('/');
            if is_job_id(job) && !too_old(job, since) {
                jobs.push(job.to_owned());
            }
        }
    }
    Ok(jobs)
}

/// Whether `job`'s id says it started before `since` (an id that carries no time is kept: its
/// record decides).
fn too_old(job: &str, since: Option<OffsetDateTime>) -> bool {
    since.is_some_and(|since| {
        started_by_id(job).is_some_and(|by_id| by_id < since - ID_BEFORE_START)
    })
}

/// When a job id made by [`crate::core::shard::new_job_id`] was made.
fn started_by_id(job: &str) -> Option<OffsetDateTime> {
    let nanos = u128::from_str_radix(job.strip_prefix("job-")?, 16).ok()?;
    OffsetDateTime::from_unix_timestamp_nanos(i128::try_from(nanos).ok()?).ok()
}

/// One job's entries added up; `None` without its record.
pub(super) fn listed_job(
    job: &str,
    listed: Listed,
    ended: Option<OffsetDateTime>,
) -> Option<ListedJob> {
    let record = listed.record?;
    let mut entries = listed.entries;
    // The notes stay unread: the counts say how many blobs failed.
    entries.extend(
        listed
            .with_notes
            .into_iter()
            .map(|(shard, _, counts)| LedgerEntry::Finished {
                shard,
                counts,
                notes: Notes::default(),
            }),
    );
    let mut status = status_of(job, &record, entries);
    status.progress.failures.clear();
    status.progress.warnings.clear();
    let finished = (status.progress.state != JobState::Running)
        .then(|| ended.map(rfc3339))
        .flatten();
    Some(ListedJob {
        status,
        finished,
        record,
    })
}

fn parse_instant(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

fn rfc3339(instant: OffsetDateTime) -> String {
    instant
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_id_says_when_it_was_made() {
        let made = OffsetDateTime::from_unix_timestamp_nanos(1_765_000_000_123_456_789).unwrap();
        let id = format!("job-{:x}", made.unix_timestamp_nanos());
        assert_eq!(started_by_id(&id), Some(made));
        assert_eq!(
            started_by_id(&crate::core::shard::new_job_id()).map(|t| t.year()),
            Some(OffsetDateTime::now_utc().year())
        );
        for other in ["job-", "job-xyz", "reconcile-1", "poisoned"] {
            assert_eq!(started_by_id(other), None, "{other}");
        }
    }
}
