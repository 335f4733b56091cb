//! The worker's shared state: the validated [`Config`] and the three storage accounts, built once
//! at start-up so that a missing or malformed setting stops the worker before any trigger fires;
//! the queues and the jobs' ledger container, each created once per process.

use std::{collections::HashSet, sync::Mutex, time::Duration};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use tokio::sync::OnceCell;

pub use crate::config::{
    Config, CopyEngine, EventsConfig, BACKUP_STORAGE, DEFAULT_COPY_THROUGH_MAX_BYTES,
    DEFAULT_COPY_TIMEOUT_SECONDS, JOBS_STORAGE, MAX_COPY_THROUGH_BYTES, PRUNE_STORAGE,
    RESTORE_TARGET_STORAGE, SOURCE_STORAGE,
};
use crate::{
    adf::AdfClient,
    core::{
        message::BackupRequest,
        naming,
        shard::{Shard, ShardWork},
    },
    settings::{Settings, SettingsError},
    storage::{Container, Queue, StorageAccount, StorageError},
};

/// The queues the functions take their work from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkQueue {
    /// `BACKUP_QUEUE_NAME`: backup requests.
    Backups,
    /// `{BACKUP_QUEUE_NAME}-shards`: the shards of jobs.
    Shards,
    /// `EVENTS_QUEUE_NAME`: the lake's blob events (only when it is set).
    Events,
}

impl WorkQueue {
    /// The queue's name; `None` for the events queue when `EVENTS_QUEUE_NAME` is unset.
    pub fn name(self, config: &Config) -> Option<String> {
        match self {
            WorkQueue::Backups => Some(config.backup_queue.clone()),
            WorkQueue::Shards => Some(config.shard_queue.clone()),
            WorkQueue::Events => config.events.queue.clone(),
        }
    }

    fn index(self) -> usize {
        match self {
            WorkQueue::Backups => 0,
            WorkQueue::Shards => 1,
            WorkQueue::Events => 2,
        }
    }
}

/// What this process has worked on so far, for a progress line: units of work (blobs) seen
/// and done, by whatever command or job runs here.
#[derive(Debug, Default)]
pub struct Progress {
    seen: std::sync::atomic::AtomicU64,
    done: std::sync::atomic::AtomicU64,
}

impl Progress {
    pub fn saw(&self, units: u64) {
        self.seen
            .fetch_add(units, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn did(&self, units: u64) {
        self.done
            .fetch_add(units, std::sync::atomic::Ordering::Relaxed);
    }

    /// `(done, seen)`; done never exceeds seen.
    pub fn now(&self) -> (u64, u64) {
        let done = self.done.load(std::sync::atomic::Ordering::Relaxed);
        let seen = self.seen.load(std::sync::atomic::Ordering::Relaxed);
        (done, seen.max(done))
    }
}

/// Everything a function needs, shared by all invocations.
pub struct App {
    pub config: Config,
    pub source: StorageAccount,
    pub backup: StorageAccount,
    pub jobs: StorageAccount,
    /// `RESTORE_TARGET_STORAGE`, when set: the account a restore `--to-account` writes into.
    pub restore_target: Option<StorageAccount>,
    /// `PRUNE_STORAGE`, when set: the backup account as the identity that may delete backups.
    pub prune_account: Option<StorageAccount>,
    /// Present when the copy engine is ADF.
    pub adf: Option<AdfClient>,
    /// Each work queue, and its poison queue (`{queue}-poison`, as the host names it).
    queues: [OnceCell<Queue>; 3],
    poison_queues: [OnceCell<Queue>; 3],
    job_ledger: OnceCell<Container>,
    /// Backup containers known to exist, so each is created once per process.
    backup_containers: Mutex<HashSet<String>>,
    /// What this process has worked on (the commands' progress line).
    pub progress: Progress,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .field("source", &self.source)
            .field("backup", &self.backup)
            .field("jobs", &self.jobs)
            .finish_non_exhaustive()
    }
}

impl App {
    pub fn from_settings(settings: &Settings) -> Result<Self, SettingsError> {
        let config = Config::from_settings(settings)?;
        let source = StorageAccount::connect(SOURCE_STORAGE, settings)?;
        source.connection().require_blob_endpoint()?;
        let backup = StorageAccount::connect(BACKUP_STORAGE, settings)?;
        backup.connection().require_blob_endpoint()?;
        let jobs = StorageAccount::connect(JOBS_STORAGE, settings)?;
        jobs.connection().require_queue_endpoint()?;
        jobs.connection().require_blob_endpoint()?;
        let optional_account = |name: &str| -> Result<Option<StorageAccount>, SettingsError> {
            if settings.get(name).is_none() && !settings.has_prefix(&format!("{name}__")) {
                return Ok(None);
            }
            let account = StorageAccount::connect(name, settings)?;
            account.connection().require_blob_endpoint()?;
            Ok(Some(account))
        };
        let restore_target = optional_account(RESTORE_TARGET_STORAGE)?;
        let prune_account = optional_account(PRUNE_STORAGE)?;
        let adf = match (&config.copy_engine, &config.adf) {
            (CopyEngine::Adf, Some(adf)) => Some(AdfClient::new(adf.clone())?),
            _ => None,
        };
        Ok(Self {
            config,
            source,
            backup,
            jobs,
            restore_target,
            prune_account,
            adf,
            queues: Default::default(),
            poison_queues: Default::default(),
            job_ledger: OnceCell::new(),
            backup_containers: Mutex::new(HashSet::new()),
            progress: Progress::default(),
        })
    }

    /// The work queue `queue`, created on first use (once per process).
    pub async fn queue(&self, queue: WorkQueue) -> Result<&Queue, StorageError> {
        let name = queue.name(&self.config).ok_or_else(|| {
            StorageError::other("taking blob events", "EVENTS_QUEUE_NAME is not set")
        })?;
        self.created_queue(&self.queues[queue.index()], &name).await
    }

    /// Puts a message that can never succeed on `{queue}-poison`, exactly as it was on the
    /// queue: byte for byte, so nothing about it is lost. Then records `reason` in the jobs'
    /// ledger ([`poison_reason_name`]), where `lakebackup poison list` finds it: a record that
    /// cannot be written is logged, never a reason to fail (the message is safe already).
    pub async fn poison(
        &self,
        queue: WorkQueue,
        raw: &str,
        reason: &str,
    ) -> Result<(), StorageError> {
        let name = queue.name(&self.config).ok_or_else(|| {
            StorageError::other("poisoning a message", "EVENTS_QUEUE_NAME is not set")
        })?;
        let name = format!("{name}-poison");
        let poison = self
            .created_queue(&self.poison_queues[queue.index()], &name)
            .await?;
        poison
            .send(raw.to_owned(), None, "a message to the poison queue")
            .await?;
        let recorded = async {
            let encoded = crate::core::job::encoded_reason(reason);
            let metadata = std::collections::HashMap::from([("reason".to_owned(), encoded)]);
            self.job_ledger()
                .await?
                .blob(&poison_reason_name(&name, raw))
                .put(Vec::new(), metadata)
                .await
        };
        if let Err(e) = recorded.await {
            tracing::warn!(error = %e, "could not record why a message was poisoned");
        }
        Ok(())
    }

    /// The container of the jobs' ledgers, created on first use (once per process).
    pub async fn job_ledger(&self) -> Result<&Container, StorageError> {
        self.job_ledger
            .get_or_try_init(|| async {
                let container = self.jobs.container(&self.config.job_ledger)?;
                container.create_if_missing().await?;
                Ok::<_, StorageError>(container)
            })
            .await
    }

    /// Puts one shard on the shard queue (base64, never expiring).
    pub async fn enqueue_shard<W: ShardWork>(&self, shard: &Shard<W>) -> Result<(), StorageError> {
        let queue = self.queue(WorkQueue::Shards).await?;
        let what = format!("the shard {}/{}", shard.container, shard.prefix);
        queue
            .send(BASE64.encode(shard.to_json()), None, &what)
            .await
    }

    /// Puts `shard` back on the shard queue, invisible for `delay`: a new message, so waiting for
    /// another delivery's lock never counts toward the poison threshold.
    pub async fn defer_shard<W: ShardWork>(
        &self,
        shard: &Shard<W>,
        delay: Duration,
    ) -> Result<(), StorageError> {
        let queue = self.queue(WorkQueue::Shards).await?;
        let what = format!("the shard {}/{}", shard.container, shard.prefix);
        queue
            .send(BASE64.encode(shard.to_json()), Some(delay), &what)
            .await
    }

    /// Puts one backup request on the queue (base64, never expiring: a request that vanished
    /// unprocessed would be a version never backed up).
    pub async fn enqueue_backup(&self, request: &BackupRequest) -> Result<(), StorageError> {
        self.send_backup(request, None).await
    }

    /// Puts `request` back on the backup queue, invisible for `delay`: a new message, so waiting
    /// for another invocation's copy never counts toward the poison threshold.
    pub async fn defer_backup(
        &self,
        request: &BackupRequest,
        delay: Duration,
    ) -> Result<(), StorageError> {
        self.send_backup(request, Some(delay)).await
    }

    async fn send_backup(
        &self,
        request: &BackupRequest,
        delay: Option<Duration>,
    ) -> Result<(), StorageError> {
        let queue = self.queue(WorkQueue::Backups).await?;
        let what = format!("the backup of {}/{}", request.container, request.blob_name);
        queue
            .send(BASE64.encode(request.to_json()), delay, &what)
            .await
    }

    async fn created_queue<'a>(
        &'a self,
        cell: &'a OnceCell<Queue>,
        name: &str,
    ) -> Result<&'a Queue, StorageError> {
        cell.get_or_try_init(|| async {
            let queue = self.jobs.queue(name)?;
            queue.create_if_missing().await?;
            Ok(queue)
        })
        .await
    }

    /// The backup container of `container` (`{container}{BACKUP_CONTAINER_SUFFIX}`).
    pub fn backup_container_of(&self, container: &str) -> Result<String, StorageError> {
        naming::backup_container_name(container, &self.config.backup_container_suffix)
            .map_err(|e| StorageError::other("naming the backup container", e.to_string()))
    }

    /// The backup container of lake container `container`.
    /// The backup account as `prune` deletes from it: `PRUNE_STORAGE`'s identity when set, else
    /// `BACKUP_STORAGE`'s.
    pub fn pruner(&self) -> &StorageAccount {
        self.prune_account.as_ref().unwrap_or(&self.backup)
    }

    /// The account a restore writes into: the lake's, or with `to_account` the one of
    /// `RESTORE_TARGET_STORAGE` (an error naming the setting when it is not set).
    pub fn restore_target(&self, to_account: bool) -> Result<&StorageAccount, StorageError> {
        if !to_account {
            return Ok(&self.source);
        }
        self.restore_target.as_ref().ok_or_else(|| {
            StorageError::other(
                "restoring into another account",
                format!(
                    "{RESTORE_TARGET_STORAGE} is not set: give the target account's connection \
                     string, or {RESTORE_TARGET_STORAGE}__blobServiceUri for an identity"
                ),
            )
        })
    }

    pub fn vault_of(&self, container: &str) -> Result<Container, StorageError> {
        self.backup.container(&self.backup_container_of(container)?)
    }

    /// Creates backup container `name` unless this process already did.
    pub async fn ensure_backup_container(&self, name: &str) -> Result<(), StorageError> {
        let known = |set: &HashSet<String>| set.contains(name);
        if self
            .backup_containers
            .lock()
            .map(|s| known(&s))
            .unwrap_or(false)
        {
            return Ok(());
        }
        self.backup.container(name)?.create_if_missing().await?;
        if let Ok(mut set) = self.backup_containers.lock() {
            set.insert(name.to_owned());
        }
        Ok(())
    }

    /// Until when a copy source URL signed now must stay valid: the longest a copy may take,
    /// and a few minutes for clock skew.
    pub fn copy_source_expiry(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc() + self.config.copy_timeout + time::Duration::minutes(5)
    }
}

/// Where the jobs' ledger keeps why a message went to poison queue `poison`: one empty blob per
/// message text (its SHA-256), the reason percent-encoded in its metadata. Not a job id's
/// shape's concern: `poisoned/` holds no `job` entry, so no job is read from it.
pub fn poison_reason_name(poison: &str, raw: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest: String = Sha256::digest(raw.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{POISON_REASONS}/{poison}/{digest}")
}

/// The directory of the jobs' ledger that holds why messages were poisoned.
pub const POISON_REASONS: &str = "poisoned";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_connection_is_named() {
        let settings = Settings::from_pairs([("SOURCE_STORAGE", "UseDevelopmentStorage=true")]);
        let err = App::from_settings(&settings).unwrap_err();
        assert_eq!(err.setting, "BACKUP_STORAGE");
    }
}
