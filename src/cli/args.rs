//! The command line clap parses: the commands, their arguments and help, and the value parsers
//! that make a bad container name, blob name or instant a usage error (exit 2) before anything
//! is read or written.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use lakebackup::{core::naming, engine::restore::RestoreFrom};

#[derive(Parser)]
#[command(
    version,
    about = "Keeps an Azure data lake recoverable: ETag-diffed snapshots and version-keeping backups"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the five functions to the Azure Functions host (custom handler).
    Serve {
        /// Port on 127.0.0.1; the host passes it in FUNCTIONS_CUSTOMHANDLER_PORT.
        #[arg(long, env = "FUNCTIONS_CUSTOMHANDLER_PORT")]
        port: u16,
    },
    /// Run the five functions without the Functions host: take backup requests, shards and
    /// (when EVENTS_QUEUE_NAME is set) blob events off their queues, start reconciliations on
    /// RECONCILE_SCHEDULE, and serve the producer.
    Run {
        /// Serve the producer at http://ADDR/api/HttpSnapshotIncBackupContainerProducer
        /// (e.g. 127.0.0.1:8080, or 0.0.0.0:8080 in a container).
        #[arg(long, env = "LAKEBACKUP_HTTP")]
        http: Option<SocketAddr>,
        /// The Function App's host.json, for the queue trigger's settings (maxDequeueCount, ...).
        #[arg(long, default_value = "host.json")]
        host_json: std::path::PathBuf,
    },
    /// Repair missing snapshots and backups once, and print the JSON summary.
    Reconcile {
        /// Limit to these containers (repeatable); default RECONCILE_CONTAINERS, else all.
        #[arg(long = "container", value_parser = container_name)]
        containers: Vec<String>,
        /// Report what would be done and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete the backup versions and snapshots the retention policy (RETENTION_*) no longer
    /// keeps; one JSON line per deletion, then the summary.
    Prune {
        /// Limit to these containers (repeatable); default RECONCILE_CONTAINERS, else all.
        #[arg(long = "container", value_parser = container_name)]
        containers: Vec<String>,
        /// Only blobs whose names start with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Print what would be deleted and delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Queue a prune job per container and exit at once (one JSON line each); `lakebackup
        /// job` follows them.
        #[arg(long)]
        distributed: bool,
    },
    /// Restore a container (or a prefix, or one blob) to an instant, from snapshots or the
    /// backup account.
    Restore {
        #[arg(long, value_parser = container_name)]
        container: String,
        /// Only blobs whose names start with this: `raw/a.csv` also takes `raw/a.csv.old` and
        /// `raw/a.csv/…`; end it with `/` to keep to one directory.
        #[arg(long, conflicts_with = "blob")]
        prefix: Option<String>,
        /// Only the blob of exactly this name (no other name it starts, no directory of it).
        #[arg(long, value_parser = blob_name)]
        blob: Option<String>,
        /// The instant, RFC 3339 (e.g. 2026-11-24T14:00:00Z); default: the newest versions.
        #[arg(long, value_parser = parse_instant)]
        as_of: Option<time::OffsetDateTime>,
        #[arg(long, value_enum, default_value = "backup")]
        from: RestoreFromArg,
        /// Restore into this container instead of in place.
        #[arg(long, value_parser = container_name)]
        to_container: Option<String>,
        /// List what would be restored and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Where a blob and its version cannot be compared by MD5, read both before writing.
        #[arg(long)]
        verify_content: bool,
        /// Restore into the account of RESTORE_TARGET_STORAGE (with --to-container, or into a
        /// container of the same name) instead of the lake's.
        #[arg(long)]
        to_account: bool,
        /// Queue the restore as a job and exit at once: the Function App's shard function, or
        /// any number of `lakebackup run` processes, work it off; `lakebackup job` follows it.
        #[arg(long)]
        distributed: bool,
    },
    /// Check the deployment's set-up with its own settings and identity, writing nothing: a table
    /// of checks (ok, warn, fail); exit 1 if any fails.
    Doctor {
        /// One JSON object instead: {"status", "checks": [{"name", "status", "detail"}]}.
        #[arg(long)]
        json: bool,
    },
    /// Print a job's status (backup, reconcile, restore, verify or prune) as JSON: exit 0 unless
    /// it failed (a verify job that found a gap failed). `job list` lists the jobs.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Job {
        #[command(subcommand)]
        list: Option<JobCommand>,
        /// The job's id, as `restore --distributed`, `shard` or the producer printed it.
        #[arg(required = true)]
        job: Option<String>,
        /// Wait until the job is done or failed; exit 0 when done, 1 when failed.
        #[arg(long)]
        wait: bool,
        /// First print the per-blob lines the job's shards recorded (a restore's actions).
        #[arg(long)]
        report: bool,
    },
    /// Read the poison queues, and move their messages back to their work queues once the
    /// cause is fixed.
    Poison {
        #[command(subcommand)]
        command: PoisonCommand,
    },
    /// Check that every current blob has a complete backup of its current version and a
    /// snapshot of it; report the gaps and the RPO (the age of the oldest change without a
    /// backup). Exit 1 on any gap or mismatch.
    Verify {
        #[arg(long, value_parser = container_name)]
        container: String,
        /// Only blobs whose names start with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Also read each backup's bytes and check them against the version.
        #[arg(long)]
        deep: bool,
        /// Queue the verify as a job and exit at once; `lakebackup job JOB --report` prints its
        /// gaps, and exits 1 when it found any.
        #[arg(long)]
        distributed: bool,
    },
    /// Snapshot and back up the new and changed blobs of one container (or one directory tree)
    /// now, in this process, shard by shard; print the totals.
    Produce {
        #[arg(long, value_parser = container_name)]
        container: String,
        /// Only this directory tree (e.g. raw/2026/11/).
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Start a sharded backup job: queue the root shard of a container (or of one directory);
    /// `lakebackup run` processes (or the Function App's QueueSnapshotBackupShard function)
    /// fan it out, directory by directory, each shard within SHARD_TIME_BUDGET_SECONDS.
    Shard {
        #[arg(long, value_parser = container_name)]
        container: String,
        /// Only this directory tree (e.g. raw/2026/11/).
        #[arg(long, default_value = "")]
        prefix: String,
    },
}

/// `job list`: the jobs of the ledger.
#[derive(Subcommand)]
pub enum JobCommand {
    /// List the jobs of the ledger, newest first (reads the ledger only): a table, or with
    /// `--json` one JSON line per job and a summary.
    List {
        /// Only jobs in this state.
        #[arg(long, value_enum)]
        state: Option<JobStateArg>,
        /// Only jobs over this container.
        #[arg(long, value_parser = container_name)]
        container: Option<String>,
        /// Only jobs started by this (producer, reconcile, command, event, restore, verify,
        /// prune) or doing this work (backup, restore, verify, prune).
        #[arg(long)]
        kind: Option<String>,
        /// Only jobs started at or after this instant (RFC 3339).
        #[arg(long, value_parser = parse_instant)]
        since: Option<time::OffsetDateTime>,
        /// JSON lines (one per job, then a summary) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `poison list|show|replay`.
#[derive(Subcommand)]
pub enum PoisonCommand {
    /// The messages at the front of each poison queue (at most 32 each: Azure's limit for
    /// reading without taking), read without taking them, each with the reason recorded when
    /// it was poisoned; one JSON line each, then the depth of each queue.
    List {
        /// Only the poison queue of this work queue.
        #[arg(long, value_enum)]
        queue: Option<QueueArg>,
    },
    /// One message, by its id, among those `list` can see.
    Show {
        id: String,
        /// Only the poison queue of this work queue.
        #[arg(long, value_enum)]
        queue: Option<QueueArg>,
    },
    /// Move messages back to their work queue, byte for byte: each sent there first, then
    /// deleted from the poison queue (a crash leaves a duplicate, never a loss). A message the
    /// function could not read is refused, with why, and left in the poison queue.
    Replay {
        /// The work queue whose poison queue to replay.
        #[arg(long, value_enum)]
        queue: QueueArg,
        /// At most this many messages.
        #[arg(long, default_value_t = u64::MAX, hide_default_value = true)]
        count: u64,
        /// Say what would be replayed or refused (of the first 32), and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// A work queue, by what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueArg {
    /// BACKUP_QUEUE_NAME: backup requests.
    Backups,
    /// {BACKUP_QUEUE_NAME}-shards: the shards of jobs.
    Shards,
    /// EVENTS_QUEUE_NAME: blob events.
    Events,
}

impl From<QueueArg> for lakebackup::app::WorkQueue {
    fn from(arg: QueueArg) -> Self {
        match arg {
            QueueArg::Backups => Self::Backups,
            QueueArg::Shards => Self::Shards,
            QueueArg::Events => Self::Events,
        }
    }
}

/// `job list --state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JobStateArg {
    Running,
    Done,
    Failed,
}

impl From<JobStateArg> for lakebackup::core::job::JobState {
    fn from(arg: JobStateArg) -> Self {
        match arg {
            JobStateArg::Running => Self::Running,
            JobStateArg::Done => Self::Done,
            JobStateArg::Failed => Self::Failed,
        }
    }
}

/// A container name Azure accepts; any other is a usage error (exit 2), found before anything
/// is read or written.
fn container_name(text: &str) -> Result<String, String> {
    naming::validate_container_name(text)
        .map(|()| text.to_owned())
        .map_err(|e| e.to_string())
}

/// A blob's whole name (`restore --blob`): a valid name, and not a directory's.
fn blob_name(text: &str) -> Result<String, String> {
    naming::validate_blob_name(text).map_err(|e| e.to_string())?;
    if text.ends_with('/') {
        return Err(format!(
            "{text:?} names a directory, not a blob: restore it with --prefix"
        ));
    }
    Ok(text.to_owned())
}

fn parse_instant(text: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 instant like 2026-11-24T14:00:00Z: {e}"))
}

/// `--from`: where a restore takes its versions from (the command line's spelling of
/// [`RestoreFrom`], which the pure core keeps free of the CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RestoreFromArg {
    /// The source container's own snapshots (same account).
    Snapshots,
    /// The backup container in the backup account; also brings back deleted blobs.
    Backup,
}

impl From<RestoreFromArg> for RestoreFrom {
    fn from(arg: RestoreFromArg) -> Self {
        match arg {
            RestoreFromArg::Snapshots => RestoreFrom::Snapshots,
            RestoreFromArg::Backup => RestoreFrom::Backup,
        }
    }
}
