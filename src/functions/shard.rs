//! `QueueSnapshotBackupShard`: one directory shard — one directory level of one container, from
//! a continuation marker on, repaired within a time budget.
//!
//! The shard lists its level of the source with snapshots (delimiter `/`) and the same level of
//! `{c}bak` with metadata; backups keep the source's directories, so this is a merge of two
//! listings of one directory, and memory grows with one directory, never with the container.
//! Each sub-directory is queued as a new shard (the fan-out). A blob without a snapshot of its
//! current version gets one; a current version without a complete backup is backed up — copied in
//! the shard with the `direct` engine (the consumer's own path, stamp in the copy request), or
//! queued as a per-blob request for the `adf` engine. Between listing pages the budget
//! (`SHARD_TIME_BUDGET_SECONDS`) is checked; once it is spent the rest of the directory is queued
//! as a continuation. Every step is idempotent, so a shard that fails or dies is simply retried.
//!
//! On the queue, a shard belongs to a job whose ledger (see [`crate::job_ledger`]) records each
//! shard queued and each shard finished; `lakebackup produce` runs a job's shards in-process.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Mutex,
    time::Instant,
};

use azure_core::http::RequestContent;

use azure_storage_blob::{
    models::{BlobClientCreateSnapshotOptions, BlobClientUploadOptions},
    BlobContainerClient,
};
use futures::{stream::FuturesUnordered, StreamExt, TryStreamExt};
use serde::Serialize;
use thiserror::Error;
use tracing::{info, warn, Instrument};

use super::{
    consumer::{self, ConsumerError, ConsumerOutcome},
    prune,
};
use crate::{
    app::{App, CopyEngine},
    core::{
        backup_index::BackupIndex,
        deletion,
        diff::{BaseBlob, BlobVerdict, SnapshotDiff},
        etag::quoted_etag,
        job::ShardCounts,
        message::BackupRequest,
        naming,
        shard::Shard,
        stamp,
    },
    job_ledger,
    storage::{
        listing::{
            deletion_markers, index_backups_with, list_backup_directory,
            list_directory_with_snapshots, ListingScope,
        },
        StorageError, StorageResultExt,
    },
};

pub const FUNCTION_NAME: &str = "QueueSnapshotBackupShard";

/// What one shard did; the invocation's return value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShardReport {
    pub job: String,
    pub container: String,
    pub prefix: String,
    #[serde(flatten)]
    pub counts: ShardCounts,
    /// The budget ran out and the rest of the directory was queued.
    pub continued: bool,
    pub duration_ms: u64,
}

/// Where a shard puts the shards it spawns (sub-directories, its continuation).
pub enum Fanout<'a> {
    /// On the shard queue, entered in the job's ledger first (the functions).
    Queue,
    /// On a list in this process (`lakebackup produce`).
    Local(&'a Mutex<Vec<Shard>>),
}

impl Fanout<'_> {
    async fn push(&self, app: &App, shard: Shard) -> Result<(), StorageError> {
        match self {
            Fanout::Queue => job_ledger::queue_shard(app, &shard).await,
            Fanout::Local(list) => {
                list.lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(shard);
                Ok(())
            }
        }
    }
}

#[derive(Debug, Error)]
pub enum ShardError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Copy(#[from] ConsumerError),
}

/// Runs one shard. A failure fails the whole shard: the host retries it, and what it had done
/// is found done the next time.
pub async fn run_shard(
    app: &App,
    shard: &Shard,
    fanout: &Fanout<'_>,
) -> Result<ShardReport, ShardError> {
    let span = tracing::info_span!(
        "shard",
        function = FUNCTION_NAME,
        job = %shard.job,
        container = %shard.container,
        prefix = %shard.prefix,
    );
    async {
        let started = Instant::now();
        let mut report = ShardReport {
            job: shard.job.clone(),
            container: shard.container.clone(),
            prefix: shard.prefix.clone(),
            ..Default::default()
        };
        let source = app.source.container(&shard.container)?;
        let level = backup_level(app, shard).await?;
        let index = &level.index;
        let prefix = (!shard.prefix.is_empty()).then_some(shard.prefix.as_str());
        let pages = list_directory_with_snapshots(
            &source,
            &shard.container,
            ListingScope {
                prefix,
                marker: shard.marker.as_deref(),
                page_size: Some(app.config.shard_page_size as i32),
                ..Default::default()
            },
        )?;
        futures::pin_mut!(pages);
        let mut diff = SnapshotDiff::new();
        let backup_vault = app.backup.container(&level.container)?;
        // The deletions already recorded at this level: (name, ETag).
        let mut recorded: Option<HashSet<(String, String)>> = None;
        // Where the rest of the directory is listed from, and up to which name it is done.
        let mut continuation: Option<(Option<String>, Option<String>)> = None;
        // The marker the current page was listed from.
        let mut page_marker = shard.marker.clone();
        // The last name dealt with so far: the (exclusive) start of the next page's range.
        let mut after = shard.after.clone();
        loop {
            let page = match pages.try_next().await {
                Ok(Some(page)) => page,
                Ok(None) => break,
                Err(e) if e.has_code("ContainerNotFound") => {
                    warn!("the shard's container does not exist; nothing to do");
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            // Names with backups inside the range this page covers, but not listed, are gone;
            // so are backed-up directories it does not show, which are visited all the same.
            // The last page of the directory covers everything after its previous one.
            let mut listed: HashSet<String> = page.items.iter().map(|e| e.name.clone()).collect();
            listed.extend(page.prefixes.iter().cloned());
            let last_listed = page
                .items
                .last()
                .map(|e| &e.name)
                .into_iter()
                .chain(page.prefixes.last())
                .max()
                .cloned();
            let before = match (&page.next_marker, &last_listed) {
                (None, _) => None,
                (Some(_), Some(last)) => Some(last.as_str()),
                // A page of sub-directories only: it says nothing about names.
                (Some(_), None) => Some(after.as_deref().unwrap_or("")),
            };
            // Deletions first: a directory deleted whole gives one page a marker per name, so
            // the budget may cut the page at the last name recorded. This part then deals with
            // the page up to that name, and the continuation lists the page again after it.
            let mut gone =
                deletion::gone_in_range(&level.newest, after.as_deref(), before, &listed);
            if !gone.is_empty() {
                // Listed once, and only when something is gone: a pass that finds nothing
                // missing costs no listing of markers.
                if recorded.is_none() {
                    recorded = Some(
                        deletion_markers(&backup_vault, &level.container, &shard.prefix)
                            .await?
                            .into_keys()
                            .collect(),
                    );
                }
                let recorded = recorded.as_ref().expect("listed just above");
                gone.retain(|(name, etag)| {
                    !recorded.contains(&((*name).to_owned(), (*etag).to_owned()))
                });
            }
            let mut cut = None;
            if !gone.is_empty() {
                let recorded = record_deletions(app, &level, gone, started).await?;
                report.counts.deletions_recorded += recorded.new;
                cut = recorded.cut_after;
            }
            // This part deals with the names up to the cut; a cut part's continuation lists the
            // page again and skips what came before its `after`. A blob's entries may straddle
            // two pages (its name is then the previous page's last): they are kept.
            let before_cut = |name: &str| cut.as_deref().is_none_or(|c| name <= c);
            let blob_in_part =
                |name: &str| after.as_deref().is_none_or(|a| name >= a) && before_cut(name);
            let directory_in_part =
                |name: &str| after.as_deref().is_none_or(|a| name > a) && before_cut(name);
            for sub in page.prefixes.iter().filter(|sub| directory_in_part(sub)) {
                fanout.push(app, shard.child(sub)).await?;
                report.counts.subdirectories_queued += 1;
            }
            let gone_directories = deletion::gone_directories(
                &level.subdirectories,
                after.as_deref(),
                cut.as_deref().or(before),
                &listed,
            );
            for sub in gone_directories {
                fanout.push(app, shard.child(sub)).await?;
                report.counts.subdirectories_queued += 1;
            }
            let verdicts: Vec<BlobVerdict> = page
                .items
                .into_iter()
                .filter(|e| blob_in_part(&e.name))
                .filter_map(|e| diff.push(e))
                .collect();
            repair_all(app, &source, shard, index, verdicts, &mut report.counts).await?;
            if let Some(cut) = cut {
                continuation = Some((page_marker, Some(cut)));
                break;
            }
            if last_listed.is_some() {
                after = last_listed;
            }
            if page.next_marker.is_some() && started.elapsed() >= app.config.shard_budget {
                continuation = Some((page.next_marker, after.clone()));
                break;
            }
            page_marker = page.next_marker;
        }
        // The last name; at a cut, a name whose entries straddle it is judged on what was seen:
        // at worst one snapshot too many, never one too few.
        let rest: Vec<BlobVerdict> = diff.finish().into_iter().collect();
        repair_all(app, &source, shard, index, rest, &mut report.counts).await?;
        // The directory is done: what the retention policy no longer keeps goes, within what
        // is left of the budget (the next pass takes the rest).
        let policy = &app.config.retention;
        let prunes = policy.prunes_backups() || policy.prunes_snapshots();
        if shard.prune
            && prunes
            && continuation.is_none()
            && started.elapsed() < app.config.shard_budget
        {
            let scope = prune::DirectoryScope {
                container: &shard.container,
                directory: &shard.prefix,
                prefix: "",
                dry_run: false,
                now: time::OffsetDateTime::now_utc(),
                deadline: Some(started + app.config.shard_budget),
            };
            let (pruned, _) = prune::prune_directory(app, &scope, &mut |_| {}).await?;
            report.counts.versions_pruned += pruned.versions_deleted;
            report.counts.snapshots_pruned += pruned.snapshots_deleted;
        }
        if let Some((marker, after)) = continuation {
            fanout
                .push(app, shard.continuation(marker.as_deref(), after.as_deref()))
                .await?;
            report.continued = true;
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        info!(report = ?report, "shard finished");
        Ok(report)
    }
    .instrument(span)
    .await
}

/// The shard's directory level of `{c}bak`: its complete backups, and per source name the ETag
/// of its newest one (to tell which names with backups are gone from the lake).
struct BackupLevel {
    container: String,
    index: BackupIndex,
    /// Per source name, the ETag of its newest backed-up version.
    newest: BTreeMap<String, String>,
    /// Its sub-directories: one the lake no longer has is visited all the same.
    subdirectories: BTreeSet<String>,
}

async fn backup_level(app: &App, shard: &Shard) -> Result<BackupLevel, ShardError> {
    let backup_container = app.backup_container_of(&shard.container)?;
    let client = app.backup.container(&backup_container)?;
    let prefix = (!shard.prefix.is_empty()).then_some(shard.prefix.as_str());
    let pages = list_backup_directory(&client, &backup_container, prefix)?;
    let mut newest: BTreeMap<String, (time::OffsetDateTime, String)> = BTreeMap::new();
    let mut subdirectories = BTreeSet::new();
    let pages = pages.map_ok(|page| {
        subdirectories.extend(page.prefixes);
        page.items
    });
    let index = index_backups_with(pages, |backup| {
        let Ok(parsed) = naming::parse_backup_blob_name(&backup.name) else {
            return;
        };
        let when = stamp::stamped_last_modified(&backup.metadata).unwrap_or(parsed.last_modified);
        let slot = newest
            .entry(parsed.source_name)
            .or_insert((when, parsed.etag.clone()));
        if when > slot.0 {
            *slot = (when, parsed.etag);
        }
    })
    .await?;
    Ok(BackupLevel {
        container: backup_container,
        index,
        newest: newest
            .into_iter()
            .map(|(name, (_, etag))| (name, etag))
            .collect(),
        subdirectories,
    })
}

/// What [`record_deletions`] did.
struct Recorded {
    /// Markers written (not there already).
    new: u64,
    /// The budget ran out: the last name recorded, when names after it are left.
    cut_after: Option<String>,
}

/// Records that each of `gone` (name, last backed-up ETag; in name order) was found deleted from
/// the lake: one marker per life, the first pass to see it setting the time. Written in rounds
/// of as many at once as repairs; once the shard's budget is spent, the rest is left to the
/// continuation (at least one round is always written, so every part makes progress).
async fn record_deletions(
    app: &App,
    level: &BackupLevel,
    gone: Vec<(&str, &str)>,
    started: Instant,
) -> Result<Recorded, StorageError> {
    let client = app.backup.container(&level.container)?;
    let seen = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut recorded = Recorded {
        new: 0,
        cut_after: None,
    };
    let mut rounds = gone
        .chunks(app.config.snapshot_concurrency.max(1))
        .peekable();
    while let Some(round) = rounds.next() {
        let written = futures::future::join_all(
            round
                .iter()
                .map(|(name, etag)| record_deletion(&client, &level.container, &seen, name, etag)),
        )
        .await;
        for new in written {
            recorded.new += u64::from(new?);
        }
        if rounds.peek().is_some() && started.elapsed() >= app.config.shard_budget {
            recorded.cut_after = round.last().map(|(name, _)| (*name).to_owned());
            break;
        }
    }
    Ok(recorded)
}

/// Writes one deletion marker; `false` when it was there already (or cannot be named).
pub(crate) async fn record_deletion(
    client: &BlobContainerClient,
    container: &str,
    seen: &str,
    name: &str,
    etag: &str,
) -> Result<bool, StorageError> {
    let Some(marker) = deletion::marker_name(name, etag) else {
        warn!(
            blob = name,
            "the deletion marker's name would be too long; not recorded"
        );
        return Ok(false);
    };
    let metadata = HashMap::from([(deletion::SEEN_KEY.to_owned(), seen.to_owned())]);
    let written = client
        .blob_client(&marker)
        .upload(
            RequestContent::from(Vec::new()),
            Some(BlobClientUploadOptions {
                if_none_match: Some("*".into()),
                metadata: Some(metadata),
                ..Default::default()
            }),
        )
        .await
        .during(|| format!("recording the deletion of {container}/{name}"));
    match written {
        Ok(_) => {
            info!(blob = name, etag, "gone from the lake; deletion recorded");
            Ok(true)
        }
        Err(e) if e.has_code("BlobAlreadyExists") => Ok(false),
        Err(e) => Err(e),
    }
}

enum Repaired {
    Snapshot,
    Copied,
    Requested,
    Archived,
    Skipped,
    /// The blob changed since it was listed: left for the next pass.
    Nothing,
}

/// Repairs one page's blobs, up to `SNAPSHOT_CONCURRENCY` at once: first every missing backup,
/// then every missing snapshot. A failed backup fails the page before any snapshot is taken, so
/// no snapshot stands without its backup.
async fn repair_all(
    app: &App,
    source: &BlobContainerClient,
    shard: &Shard,
    index: &BackupIndex,
    verdicts: Vec<BlobVerdict>,
    report: &mut ShardCounts,
) -> Result<(), ShardError> {
    let mut backups = Vec::new();
    let mut snapshots = Vec::new();
    for verdict in verdicts {
        report.blobs += 1;
        let backed_up = index.contains(&verdict.blob.name, &verdict.blob.etag);
        report.backups_present += u64::from(backed_up);
        if !backed_up {
            backups.push(verdict.blob.clone());
        }
        if verdict.needs_snapshot {
            snapshots.push(verdict.blob);
        }
    }
    let copies = backups.into_iter().map(Repair::Backup).collect();
    run_repairs(app, source, shard, copies, report).await?;
    let snapshots = snapshots.into_iter().map(Repair::Snapshot).collect();
    run_repairs(app, source, shard, snapshots, report).await
}

enum Repair {
    Backup(BaseBlob),
    Snapshot(BaseBlob),
}

async fn run_repairs(
    app: &App,
    source: &BlobContainerClient,
    shard: &Shard,
    repairs: Vec<Repair>,
    report: &mut ShardCounts,
) -> Result<(), ShardError> {
    let mut work = FuturesUnordered::new();
    let mut failure = None;
    for todo in repairs {
        while work.len() >= app.config.snapshot_concurrency {
            if let Some(result) = work.next().await {
                tally(result, report, &mut failure);
            }
        }
        work.push(repair(app, source, shard, todo));
    }
    while let Some(result) = work.next().await {
        tally(result, report, &mut failure);
    }
    failure.map_or(Ok(()), Err)
}

fn tally(
    result: Result<Repaired, ShardError>,
    report: &mut ShardCounts,
    failure: &mut Option<ShardError>,
) {
    match result {
        Ok(repaired) => match repaired {
            Repaired::Snapshot => report.snapshots_created += 1,
            Repaired::Copied => report.backups_copied += 1,
            Repaired::Requested => report.backup_requests += 1,
            Repaired::Archived => report.archived += 1,
            Repaired::Skipped => report.backups_skipped += 1,
            Repaired::Nothing => {}
        },
        Err(e) => {
            failure.get_or_insert(e);
        }
    }
}

/// One repair: a backup (copied, or requested for ADF), or a snapshot of the listed version.
async fn repair(
    app: &App,
    source: &BlobContainerClient,
    shard: &Shard,
    todo: Repair,
) -> Result<Repaired, ShardError> {
    let blob = match &todo {
        Repair::Backup(blob) | Repair::Snapshot(blob) => blob,
    };
    let span = tracing::info_span!("blob", blob = %blob.name, etag = %blob.etag);
    async move {
        match todo {
            Repair::Backup(blob) => back_up(app, shard, &blob).await,
            Repair::Snapshot(blob) => {
                let result = source
                    .blob_client(&blob.name)
                    .create_snapshot(Some(BlobClientCreateSnapshotOptions {
                        if_match: Some(quoted_etag(&blob.etag).into()),
                        ..Default::default()
                    }))
                    .await
                    .during(|| format!("snapshotting {}/{}", shard.container, blob.name));
                match result {
                    Ok(_) => Ok(Repaired::Snapshot),
                    Err(e) if e.has_code("ConditionNotMet") || e.has_code("BlobNotFound") => {
                        info!("blob changed since it was listed; left for the next pass");
                        Ok(Repaired::Nothing)
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }
    .instrument(span)
    .await
}

async fn back_up(app: &App, shard: &Shard, blob: &BaseBlob) -> Result<Repaired, ShardError> {
    if app.config.copy_engine == CopyEngine::Adf {
        let request = BackupRequest::new(&shard.container, &blob.name, &blob.etag);
        app.enqueue_backup(&request).await?;
        return Ok(Repaired::Requested);
    }
    match consumer::back_up_listed(app, &shard.container, blob).await {
        Ok(ConsumerOutcome::BackedUp { .. } | ConsumerOutcome::AlreadyBackedUp { .. }) => {
            Ok(Repaired::Copied)
        }
        Ok(ConsumerOutcome::Archived { .. }) => Ok(Repaired::Archived),
        Ok(other) => {
            info!(outcome = ?other, "not backed up by the shard");
            Ok(Repaired::Skipped)
        }
        // A name whose backup name would break Azure's limits can never be copied: reported,
        // not a reason to fail the directory forever.
        Err(ConsumerError::Unusable { what, reason }) => {
            warn!(what, reason, "cannot be backed up");
            Ok(Repaired::Skipped)
        }
        Err(e) => Err(e.into()),
    }
}

/// What became of one shard message; the invocation's return value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ShardOutcome {
    Done {
        #[serde(flatten)]
        report: ShardReport,
    },
    Poisoned {
        reason: String,
    },
}

/// Handles one delivery from the shard queue: a message that is not a shard goes to
/// `{shard queue}-poison` unchanged; a failed shard fails the invocation for a retry.
pub async fn consume(
    app: &App,
    delivery: &consumer::QueueDelivery,
) -> Result<ShardOutcome, ShardError> {
    let shard = match Shard::parse(&delivery.text) {
        Ok(shard) => shard,
        Err(reason) => {
            app.poison_shard_raw(&delivery.as_queued()).await?;
            warn!(
                reason,
                message_id = delivery.message_id,
                "shard message moved to the poison queue unchanged"
            );
            return Ok(ShardOutcome::Poisoned { reason });
        }
    };
    let report = match run_shard(app, &shard, &Fanout::Queue).await {
        Ok(report) => report,
        Err(e) => {
            if delivery.dequeue_count >= app.config.max_dequeue_count {
                // The host gives the message up now: say so in the job's ledger, or the job
                // would wait for it forever.
                if let Err(ledger) = job_ledger::record_failed(app, &shard).await {
                    warn!(error = %ledger, "could not record the failed shard in its job's ledger");
                }
            }
            return Err(e);
        }
    };
    job_ledger::record_finished(app, &shard, &report.counts).await?;
    Ok(ShardOutcome::Done { report })
}

/// Runs a whole job in this process, starting at `root`, up to `concurrency` shards at once;
/// returns the counts summed over every shard, and how many shards ran.
pub async fn run_job_here(
    app: &App,
    root: Shard,
    concurrency: usize,
) -> Result<(ShardCounts, u64), ShardError> {
    let pending = Mutex::new(vec![root]);
    let take = || {
        pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
    };
    let fanout = Fanout::Local(&pending);
    let mut running = FuturesUnordered::new();
    let (mut totals, mut shards) = (ShardCounts::default(), 0);
    loop {
        while running.len() < concurrency.max(1) {
            let Some(shard) = take() else { break };
            let fanout = &fanout;
            running.push(async move { run_shard(app, &shard, fanout).await });
        }
        match running.next().await {
            Some(report) => {
                totals.add(&report?.counts);
                shards += 1;
            }
            None => return Ok((totals, shards)),
        }
    }
}
