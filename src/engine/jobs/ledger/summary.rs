//! A job's summary: what `job list` shows of a job that has ended, in one small blob
//! `summaries/{job}` whose metadata holds it (the job's record — kind, work, container, prefix,
//! start, what its kind says about it — its state, when it ended, its shard counts and totals),
//! so that `job list` reads every ended job in one listing of `summaries/` rather than each
//! job's entries. The same blob indexes the job from its start (`summary=running`), so that
//! listing names every job: once the reconciliation timer has entered every job of the ledger
//! (jobs from before the index too) it writes `summaries/index-complete`, and `job list` no
//! longer lists the ledger's job directories, a listing that scans every entry.
//!
//! The summary is written only from the full reading of the job's entries, never from what one
//! worker did: after every shard's end (finished, failed, given up) and after a duplicate
//! delivery of a finished shard, the worker reads the job's entries ([`note_end`]) and, when the
//! job is no longer running, writes the summary over the entry it read before the reading
//! (`If-Match`, or create-only when there was none), so a write from an older reading never
//! replaces one from a newer. The worker whose write turns the job's index entry into its first
//! summary, and only it, records the job's duration. A job that runs again after its end (a
//! shard's message replayed from its poison queue) has its summary marked stale by the delivery
//! that claims the shard ([`mark_stale`]), before it writes anything; a stale summary is no
//! summary: `job list` reads that job's entries.
//!
//! A worker that dies between a shard's end and the summary leaves none: the host delivers the
//! message again, and that delivery, finding the shard finished, writes it. A job whose entries
//! are [`MAX_ENTRIES_READ`] or more gets none after a shard's end (a reading that large after
//! every shard's end would cost more than the work), nor does one that fails only because a
//! shard's last delivery passed its deadline (no worker ends it): the reconciliation timer
//! writes theirs, reading each job without a current summary whole, newest first, within a
//! budget ([`summarize_ended`]). Until a summary is written, `job list` reads the job's entries:
//! slower, never different. A lifecycle rule that removes the ledger's old blobs removes a
//! job's summary after its entries (it is written after them): for up to a day `job list` may
//! still show an ended job whose entries are gone.

use std::collections::HashMap;

use futures::TryStreamExt;

use super::{
    field_of,
    list::{listed_job, Entries, ListedJob},
    status::status_of,
};
use crate::{
    core::{counts::Counts, job::JobState},
    storage::{
        listing::{list_with_metadata, until_container_missing},
        BlobState, Container, StorageError,
    },
};

/// Where the summaries are: one blob per job, `summaries/{job}`.
pub(super) const SUMMARIES: &str = "summaries/";

/// A job whose ledger holds this many entries or more (a full listing page: about 1,400 shards)
/// gets no summary after a shard's end: that reading costs one request whatever the job's size.
pub const MAX_ENTRIES_READ: usize = 5_000;

/// The metadata that marks a summary, and says whether it is current (`1`), stale (the job
/// ended, then a delivery reopened it) or only an index entry (the job has not ended yet).
const MARK: &str = "summary";
const CURRENT: &str = "1";
const STALE: &str = "stale";
const RUNNING: &str = "running";

/// Written by the timer once every job of the ledger has an entry under `summaries/` (see
/// [`summarize_ended`]): from then on `job list` finds every job in that one listing, with no
/// listing of the ledger's job directories (which costs a scan of every entry).
const COMPLETE: &str = "summaries/index-complete";

/// The job's record fields a summary carries, as `{job}/job` holds them.
const RECORD_FIELDS: [&str; 6] = ["kind", "work", "container", "prefix", "started", "about"];

/// The prefix of a total's name in a summary's metadata.
const COUNT: &str = "count_";

fn summary_name(job: &str) -> String {
    format!("{SUMMARIES}{job}")
}

/// Enters a job that starts in the index (`summaries/{job}`, not yet a summary), so that `job
/// list` finds it in the one listing of `summaries/`.
pub(super) async fn index_job(ledger: &Container, job: &str) -> Result<(), StorageError> {
    let marker = HashMap::from([(MARK.to_owned(), RUNNING.to_owned())]);
    ledger
        .blob(&summary_name(job))
        .create(Vec::new(), marker)
        .await
        .map(|_| ())
}

/// Reads `job`'s entries and, when the job has ended, writes its summary (see the module);
/// when it has not (or no longer has), marks a summary found there stale. A write that finds
/// the summary changed since it was read reads the entries again.
pub(super) async fn note_end(
    ledger: &Container,
    job: &str,
    most: usize,
) -> Result<(), StorageError> {
    let blob = ledger.blob(&summary_name(job));
    for _ in 0..4 {
        let before = blob.probe().await?;
        let ended = read_whole(ledger, job, most)
            .await?
            .filter(|listed| listed.status.progress.state != JobState::Running);
        let written = match (ended, &before) {
            (Some(listed), None) => {
                let created = blob.create(Vec::new(), to_metadata(&listed)).await?;
                if created {
                    record_duration(&listed);
                }
                created
            }
            (Some(listed), Some(state)) => {
                let replaced = blob
                    .replace_if_match(Vec::new(), to_metadata(&listed), state.etag())
                    .await?;
                // Its first summary: the job's end, once.
                if replaced && mark_of(state) == RUNNING {
                    record_duration(&listed);
                }
                replaced
            }
            (None, Some(state)) if mark_of(state) == CURRENT => {
                blob.replace_if_match(Vec::new(), stale(), state.etag())
                    .await?
            }
            // A job from before the index: entered now.
            (None, None) => {
                index_job(ledger, job).await?;
                true
            }
            (None, Some(_)) => true,
        };
        if written {
            return Ok(());
        }
    }
    Err(StorageError::other(
        format!("writing the summary of {job}"),
        "it kept changing between reading the job's entries and writing it",
    ))
}

/// Marks `job`'s summary stale, if it has one: a delivery is about to change the job's
/// entries (see the module).
pub(super) async fn mark_stale(ledger: &Container, job: &str) -> Result<(), StorageError> {
    let blob = ledger.blob(&summary_name(job));
    for _ in 0..4 {
        match blob.probe().await? {
            None => return Ok(()),
            Some(state) if mark_of(&state) != CURRENT => return Ok(()),
            Some(state) => {
                if blob
                    .replace_if_match(Vec::new(), stale(), state.etag())
                    .await?
                {
                    return Ok(());
                }
            }
        }
    }
    Err(StorageError::other(
        format!("marking the summary of {job} stale"),
        "it kept changing",
    ))
}

/// What one listing of `summaries/` holds.
#[derive(Default)]
pub(super) struct Summaries {
    /// Each job's current summary.
    pub(super) current: HashMap<String, ListedJob>,
    /// Every job with an entry (a summary, stale or current, or an index entry).
    pub(super) indexed: Vec<String>,
    /// Every job of the ledger has an entry (the timer said so).
    pub(super) complete: bool,
}

/// The summaries and index of `ledger`, in one listing.
pub(super) async fn read_summaries(ledger: &Container) -> Result<Summaries, StorageError> {
    let pages = until_container_missing(list_with_metadata(ledger, SUMMARIES)?);
    futures::pin_mut!(pages);
    let mut summaries = Summaries::default();
    while let Some(page) = pages.try_next().await? {
        for blob in page {
            if blob.name == COMPLETE {
                summaries.complete = true;
                continue;
            }
            let Some(job) = blob.name.strip_prefix(SUMMARIES) else {
                continue;
            };
            if !crate::core::shard::is_job_id(job) {
                continue;
            }
            summaries.indexed.push(job.to_owned());
            let metadata = blob.metadata.unwrap_or_default();
            if let Some(listed) = from_metadata(job, &metadata) {
                summaries.current.insert(job.to_owned(), listed);
            }
        }
    }
    Ok(summaries)
}

/// Writes the summary of each job of `ledger` without a current one that has ended (see
/// [`note_end`]), newest first, reading each job whole, until `budget` is spent: the
/// reconciliation timer's. How many jobs it read.
pub async fn summarize_ended(
    ledger: &Container,
    budget: std::time::Duration,
) -> Result<usize, StorageError> {
    let started = std::time::Instant::now();
    let summaries = read_summaries(ledger).await?;
    let mut jobs = super::list::job_ids(ledger, None).await?;
    jobs.retain(|job| !summaries.current.contains_key(job));
    // Newest first: ids are the start in hex (of one length for centuries).
    jobs.sort_by(|a, b| (b.len(), b).cmp(&(a.len(), a)));
    let (mut read, total) = (0, jobs.len());
    for job in jobs {
        if started.elapsed() >= budget {
            break;
        }
        note_end(ledger, &job, usize::MAX).await?;
        read += 1;
    }
    // Every job has an entry now (each read one has): `job list` may trust the index. Written
    // at every timer, so a lifecycle rule on the ledger never ages it out.
    if read == total {
        let marker = HashMap::from([(MARK.to_owned(), "index".to_owned())]);
        ledger.blob(COMPLETE).put(Vec::new(), marker).await?;
    }
    Ok(read)
}

/// The job's entries read whole, as `job list` reads a job without a summary; `None` without
/// its record, or at `most` entries or more.
async fn read_whole(
    ledger: &Container,
    job: &str,
    most: usize,
) -> Result<Option<ListedJob>, StorageError> {
    let mut entries = Entries::new();
    let complete =
        super::list::take_listing(ledger, &format!("{job}/"), &mut entries, most).await?;
    if !complete {
        return Ok(None);
    }
    Ok(entries
        .remove(job)
        .and_then(|(listed, ended)| listed_job(job, listed, ended)))
}

/// A summary's mark: [`CURRENT`], [`STALE`] or [`RUNNING`].
fn mark_of(state: &BlobState) -> String {
    field_of(state.metadata(), MARK)
}

fn stale() -> HashMap<String, String> {
    HashMap::from([(MARK.to_owned(), STALE.to_owned())])
}

/// An ended job as a summary's metadata (ASCII: the record's fields are encoded already).
fn to_metadata(listed: &ListedJob) -> HashMap<String, String> {
    let status = &listed.status;
    let progress = &status.progress;
    let mut metadata = HashMap::from([
        (MARK.to_owned(), CURRENT.to_owned()),
        ("state".to_owned(), state_name(progress.state).to_owned()),
        (
            "finished".to_owned(),
            listed.finished.clone().unwrap_or_default(),
        ),
        (
            "shards_queued".to_owned(),
            progress.shards_queued.to_string(),
        ),
        (
            "shards_finished".to_owned(),
            progress.shards_finished.to_string(),
        ),
        (
            "shards_failed".to_owned(),
            progress.shards_failed.to_string(),
        ),
    ]);
    for field in RECORD_FIELDS {
        let value = field_of(&listed.record, field);
        if !value.is_empty() {
            metadata.insert(field.to_owned(), value);
        }
    }
    for (name, value) in progress.totals.iter() {
        metadata.insert(format!("{COUNT}{name}"), value.to_string());
    }
    metadata
}

/// A current summary read back; `None` when it is stale or not one this release wrote.
fn from_metadata(job: &str, metadata: &HashMap<String, String>) -> Option<ListedJob> {
    if field_of(metadata, MARK) != CURRENT {
        return None;
    }
    let number = |name: &str| field_of(metadata, name).parse::<u64>().ok();
    let record: HashMap<String, String> = RECORD_FIELDS
        .iter()
        .map(|field| ((*field).to_owned(), field_of(metadata, field)))
        .filter(|(_, value)| !value.is_empty())
        .collect();
    let mut status = status_of(job, &record, Vec::new());
    let progress = &mut status.progress;
    progress.state = match field_of(metadata, "state").as_str() {
        "done" => JobState::Done,
        "failed" => JobState::Failed,
        _ => return None,
    };
    progress.shards_queued = number("shards_queued")?;
    progress.shards_finished = number("shards_finished")?;
    progress.shards_failed = number("shards_failed")?;
    let mut totals = Counts::default();
    for (key, value) in metadata {
        let lower = key.to_ascii_lowercase();
        if let Some(name) = lower.strip_prefix(COUNT) {
            totals.set(name, value.parse().ok()?);
        }
    }
    progress.totals.add(&totals);
    let finished = Some(field_of(metadata, "finished")).filter(|f| !f.is_empty());
    Some(ListedJob {
        status,
        finished,
        record,
    })
}

fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Running => "running",
        JobState::Done => "done",
        JobState::Failed => "failed",
    }
}

/// How long after its end a job's duration is still recorded: a summary written later (a
/// ledger's jobs from before summaries, found by the timer) would put it in the wrong day.
const LATEST_RECORD: time::Duration = time::Duration::days(2);

/// The job's duration, by its work, what started it and how it ended, recorded once: by the
/// worker that wrote its first summary.
fn record_duration(listed: &ListedJob) {
    let instant = |text: &str| {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
    };
    let status = &listed.status;
    let (Some(started), Some(finished)) = (
        instant(&status.started),
        listed.finished.as_deref().and_then(instant),
    ) else {
        return;
    };
    if time::OffsetDateTime::now_utc() - finished > LATEST_RECORD {
        return;
    }
    let took = (finished - started).max(time::Duration::ZERO);
    crate::telemetry::record::job_finished(
        &status.work,
        &status.kind,
        status.progress.state == JobState::Done,
        std::time::Duration::from_secs_f64(took.as_seconds_f64()),
    );
}
