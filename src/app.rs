//! The worker's shared state: validated settings and the three storage accounts, built once at
//! start-up so that a missing or malformed setting stops the worker before any trigger fires.

use std::{collections::HashSet, sync::Mutex, time::Duration};

use azure_core::http::RequestContent;
use azure_storage_blob::BlobContainerClient;
use azure_storage_queue::{
    models::{QueueClientSendMessageOptions, QueueMessage},
    QueueClient,
};
use tokio::sync::OnceCell;

use crate::{
    adf::{AdfClient, AdfConfig},
    core::{message::BackupRequest, naming, retention::RetentionPolicy},
    settings::{Settings, SettingsError},
    storage::{create_container_if_missing, StorageAccount, StorageError, StorageResultExt},
};

/// Connection holding the lake.
pub const SOURCE_STORAGE: &str = "SOURCE_STORAGE";
/// Connection holding the backup containers.
pub const BACKUP_STORAGE: &str = "BACKUP_STORAGE";
/// Connection holding the backup-request queue (the Functions host's own storage).
pub const JOBS_STORAGE: &str = "AzureWebJobsStorage";

/// `COPY_TIMEOUT_SECONDS` when unset: a copy and its checks fit the default 10-minute
/// `functionTimeout`.
pub const DEFAULT_COPY_TIMEOUT_SECONDS: u64 = 300;

/// Versions up to this size are copied through the worker by default: one read and one write
/// cost the service less than a server-side copy, which reads the source again to authorize it.
pub const DEFAULT_COPY_THROUGH_MAX_BYTES: u64 = 1 << 20;
/// Held in memory while copied, `SNAPSHOT_CONCURRENCY` at once per shard: kept small.
pub const MAX_COPY_THROUGH_BYTES: u64 = 16 << 20;

/// Tunables, with the defaults a Function App gets when it sets nothing.
#[derive(Debug, Clone)]
pub struct Config {
    /// `BACKUP_QUEUE_NAME`: where backup requests go.
    pub backup_queue: String,
    /// `BACKUP_CONTAINER_SUFFIX`: backups of container `c` live in `{c}{suffix}`.
    pub backup_container_suffix: String,
    /// `SNAPSHOT_CONCURRENCY`: snapshots and enqueues in flight at once.
    pub snapshot_concurrency: usize,
    /// `BACKUP_COPY_ENGINE`: how the consumer copies a version.
    pub copy_engine: CopyEngine,
    /// `BACKUP_USE_LEASE`: hold a lease on the source blob during an ADF copy.
    pub use_lease: bool,
    /// `COPY_TIMEOUT_SECONDS`: how long a direct copy may take.
    pub copy_timeout: Duration,
    /// `COPY_POLL_INTERVAL_MS`: how often a pending direct copy is checked.
    pub copy_poll_interval: Duration,
    /// `COPY_THROUGH_WORKER_MAX_BYTES`: the direct engine reads and writes versions up to this
    /// size itself instead of a server-side copy (0: never).
    pub copy_through_max_bytes: u64,
    /// The ADF pipeline, when `ADF_*` settings name one.
    pub adf: Option<AdfConfig>,
    /// `RECONCILE_CONTAINERS`: the reconciler's scope; every container when unset.
    pub reconcile_containers: Option<Vec<String>>,
    /// `RECONCILE_CONTAINER_CONCURRENCY`: containers reconciled at once.
    pub reconcile_container_concurrency: usize,
    /// `{BACKUP_QUEUE_NAME}-shards`: where directory shards go.
    pub shard_queue: String,
    /// `SHARD_TIME_BUDGET_SECONDS`: when a shard stops and queues its continuation.
    pub shard_budget: Duration,
    /// `SHARD_PAGE_SIZE`: listing entries a shard takes at a time (its budget is checked
    /// between pages).
    pub shard_page_size: u32,
    /// `{BACKUP_QUEUE_NAME}-jobs`: the container (in `AzureWebJobsStorage`) of the jobs' ledgers.
    pub job_ledger: String,
    /// `PRODUCER_WAIT_SECONDS`: how long the producer waits for its job before answering 202.
    pub producer_wait: Duration,
    /// `EVENTS_*`: the blob events' queue and filters.
    pub events: EventsConfig,
    /// `RETENTION_*`: what pruning keeps (nothing is pruned when none is set).
    pub retention: RetentionPolicy,
    /// host.json's `extensions.queues.maxDequeueCount`: the delivery after which a failed shard
    /// is given up (recorded as failed in its job's ledger).
    pub max_dequeue_count: u64,
    /// host.json's `functionTimeout` (`None`: unbounded): a shard's last delivery that has not
    /// ended by then was killed.
    pub function_timeout: Option<Duration>,
    /// `BACKUP_TAGS` (default on): list and keep blob index tags. Reading tags takes its own
    /// permission (the role Storage Blob Data Owner, or a SAS with `t`); turn it off only where
    /// the identity cannot have it, knowing that tags are then not backed up.
    pub list_tags: bool,
}

/// Where blob events arrive, and which ones count.
#[derive(Debug, Clone, Default)]
pub struct EventsConfig {
    /// `EVENTS_QUEUE_NAME`: unset, the events function and its queue are inert.
    pub queue: Option<String>,
    /// `EVENTS_CONTAINERS`: only events for these containers (all when unset).
    pub containers: Option<Vec<String>>,
    /// `EVENTS_PREFIX`: only blobs whose names start with it.
    pub prefix: Option<String>,
}

/// A comma-separated list of names, blanks dropped.
fn name_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The retention policy from `RETENTION_*`; a rule that is not set does not apply.
fn retention_policy(settings: &Settings) -> Result<RetentionPolicy, SettingsError> {
    let days = |name: &str| -> Result<Option<u32>, SettingsError> {
        settings
            .get(name)
            .map(|_| settings.get_number(name, 0, 0..=36_500).map(|d| d as u32))
            .transpose()
    };
    let count = |name: &str| settings.get_number(name, 0, 0..=10_000).map(|n| n as u32);
    Ok(RetentionPolicy {
        keep_days: days("RETENTION_KEEP_DAYS")?,
        keep_daily: count("RETENTION_KEEP_DAILY")?,
        keep_weekly: count("RETENTION_KEEP_WEEKLY")?,
        keep_monthly: count("RETENTION_KEEP_MONTHLY")?,
        keep_yearly: count("RETENTION_KEEP_YEARLY")?,
        deleted_days: days("RETENTION_DELETED_DAYS")?,
        snapshot_days: days("RETENTION_SNAPSHOT_DAYS")?,
    })
}

/// How the consumer copies a version to the backup account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyEngine {
    /// Trigger the ADF pipeline and follow its run.
    Adf,
    /// Server-side Copy Blob from a SAS URL of the exact source version.
    Direct,
}

impl Config {
    /// Refuses timeouts that cannot finish inside one invocation of `function_timeout`
    /// (`None`: unbounded), naming the setting: the host would kill the invocation first, and the
    /// work would be retried forever.
    pub fn check_fits_invocation(
        &self,
        function_timeout: Option<Duration>,
    ) -> Result<(), SettingsError> {
        let Some(limit) = function_timeout else {
            return Ok(());
        };
        // Room for the checks before and after a copy.
        let margin = (limit / 10).min(Duration::from_secs(60));
        let mut timeouts = vec![
            ("COPY_TIMEOUT_SECONDS", self.copy_timeout),
            // A shard copies inside its budget; the last copy may start just before it ends.
            (
                "SHARD_TIME_BUDGET_SECONDS",
                self.shard_budget + self.copy_timeout,
            ),
        ];
        if let (CopyEngine::Adf, Some(adf)) = (self.copy_engine, &self.adf) {
            timeouts.push(("ADF_RUN_TIMEOUT_SECONDS", adf.run_timeout));
        }
        for (setting, timeout) in timeouts {
            if timeout + margin > limit {
                return Err(SettingsError::new(
                    setting,
                    format!(
                        "is {}s, which with {}s for the checks around a copy does not fit \
                         host.json's functionTimeout of {}s: lower it or raise functionTimeout",
                        timeout.as_secs(),
                        margin.as_secs(),
                        limit.as_secs()
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn from_settings(settings: &Settings) -> Result<Self, SettingsError> {
        let backup_queue = settings
            .get_or("BACKUP_QUEUE_NAME", "backup-requests")
            .to_owned();
        // The host's poison queues are `{queue}-poison` and `{queue}-shards-poison`, so those
        // names must be valid too.
        naming::validate_container_name(&format!("{backup_queue}-shards-poison")).map_err(
            |_| {
                SettingsError::new(
                "BACKUP_QUEUE_NAME",
                "must be 3 to 49 lowercase letters, digits and single hyphens (the shard queue's \
                 poison queue adds -shards-poison)",
            )
            },
        )?;
        let backup_container_suffix = settings.get_or("BACKUP_CONTAINER_SUFFIX", "bak").to_owned();
        naming::backup_container_name("abc", &backup_container_suffix).map_err(|_| {
            SettingsError::new(
                "BACKUP_CONTAINER_SUFFIX",
                "must be lowercase letters, digits and hyphens that keep container names valid",
            )
        })?;
        let snapshot_concurrency =
            settings.get_number("SNAPSHOT_CONCURRENCY", 16, 1..=256)? as usize;
        let adf = AdfConfig::from_settings(settings)?;
        let copy_engine =
            match settings
                .get("BACKUP_COPY_ENGINE")
                .map(str::to_ascii_lowercase)
            {
                None if adf.is_some() => CopyEngine::Adf,
                None => CopyEngine::Direct,
                Some(engine) if engine == "direct" => CopyEngine::Direct,
                Some(engine) if engine == "adf" && adf.is_some() => CopyEngine::Adf,
                Some(engine) if engine == "adf" => return Err(SettingsError::new(
                    "BACKUP_COPY_ENGINE",
                    "is adf, but ADF_SUBSCRIPTION_ID, ADF_RESOURCE_GROUP, ADF_FACTORY_NAME and \
                     ADF_PIPELINE_NAME are not set",
                )),
                Some(_) => {
                    return Err(SettingsError::new(
                        "BACKUP_COPY_ENGINE",
                        "must be adf or direct",
                    ))
                }
            };
        // A direct copy needs no lock: its source condition pins the version.
        let use_lease =
            copy_engine == CopyEngine::Adf && settings.get_bool("BACKUP_USE_LEASE", true)?;
        Ok(Self {
            backup_container_suffix,
            snapshot_concurrency,
            copy_engine,
            use_lease,
            copy_timeout: Duration::from_secs(settings.get_number(
                "COPY_TIMEOUT_SECONDS",
                DEFAULT_COPY_TIMEOUT_SECONDS,
                1..=86_400,
            )?),
            copy_poll_interval: Duration::from_millis(settings.get_number(
                "COPY_POLL_INTERVAL_MS",
                1_000,
                10..=60_000,
            )?),
            retention: retention_policy(settings)?,
            events: EventsConfig {
                queue: settings
                    .get("EVENTS_QUEUE_NAME")
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned),
                containers: settings.get("EVENTS_CONTAINERS").map(name_list),
                prefix: settings
                    .get("EVENTS_PREFIX")
                    .map(|p| p.trim_start_matches('/').to_owned())
                    .filter(|p| !p.is_empty()),
            },
            copy_through_max_bytes: settings.get_number(
                "COPY_THROUGH_WORKER_MAX_BYTES",
                DEFAULT_COPY_THROUGH_MAX_BYTES,
                0..=MAX_COPY_THROUGH_BYTES,
            )?,
            adf,
            reconcile_containers: settings.get("RECONCILE_CONTAINERS").map(name_list),
            reconcile_container_concurrency: settings.get_number(
                "RECONCILE_CONTAINER_CONCURRENCY",
                4,
                1..=64,
            )? as usize,
            shard_queue: format!("{backup_queue}-shards"),
            shard_budget: Duration::from_secs(settings.get_number(
                "SHARD_TIME_BUDGET_SECONDS",
                120,
                1..=3_600,
            )?),
            shard_page_size: settings.get_number("SHARD_PAGE_SIZE", 1_000, 1..=5_000)? as u32,
            job_ledger: format!("{backup_queue}-jobs"),
            // ADF's Azure Function activity and Azure's front end give up on an HTTP call after
            // 230 s.
            producer_wait: Duration::from_secs(settings.get_number(
                "PRODUCER_WAIT_SECONDS",
                200,
                0..=220,
            )?),
            max_dequeue_count: 5,
            function_timeout: Some(Duration::from_secs(600)),
            list_tags: settings.get_bool("BACKUP_TAGS", true)?,
            backup_queue,
        })
    }
}

/// Everything a function needs, shared by all invocations.
pub struct App {
    pub config: Config,
    pub source: StorageAccount,
    pub backup: StorageAccount,
    pub jobs: StorageAccount,
    /// Present when the copy engine is ADF.
    pub adf: Option<AdfClient>,
    backup_queue: OnceCell<QueueClient>,
    poison_queue: OnceCell<QueueClient>,
    shard_queue: OnceCell<QueueClient>,
    shard_poison_queue: OnceCell<QueueClient>,
    events_queue: OnceCell<QueueClient>,
    events_poison_queue: OnceCell<QueueClient>,
    job_ledger: OnceCell<BlobContainerClient>,
    /// Backup containers known to exist, so each is created once per process.
    backup_containers: Mutex<HashSet<String>>,
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
        let adf = match (&config.copy_engine, &config.adf) {
            (CopyEngine::Adf, Some(adf)) => Some(AdfClient::new(adf.clone())?),
            _ => None,
        };
        Ok(Self {
            config,
            source,
            backup,
            jobs,
            adf,
            backup_queue: OnceCell::new(),
            poison_queue: OnceCell::new(),
            shard_queue: OnceCell::new(),
            shard_poison_queue: OnceCell::new(),
            events_queue: OnceCell::new(),
            events_poison_queue: OnceCell::new(),
            job_ledger: OnceCell::new(),
            backup_containers: Mutex::new(HashSet::new()),
        })
    }

    /// The backup-request queue, created on first use (once per process).
    pub async fn backup_queue(&self) -> Result<&QueueClient, StorageError> {
        self.created_queue(&self.backup_queue, &self.config.backup_queue)
            .await
    }

    /// `{BACKUP_QUEUE_NAME}-poison`, the host's poison queue, created on first use.
    pub async fn poison_queue(&self) -> Result<&QueueClient, StorageError> {
        let name = format!("{}-poison", self.config.backup_queue);
        self.created_queue(&self.poison_queue, &name).await
    }

    /// `{BACKUP_QUEUE_NAME}-shards`, the shard queue, created on first use.
    pub async fn shard_queue(&self) -> Result<&QueueClient, StorageError> {
        self.created_queue(&self.shard_queue, &self.config.shard_queue)
            .await
    }

    /// `{BACKUP_QUEUE_NAME}-shards-poison`, created on first use.
    pub async fn shard_poison_queue(&self) -> Result<&QueueClient, StorageError> {
        let name = format!("{}-poison", self.config.shard_queue);
        self.created_queue(&self.shard_poison_queue, &name).await
    }

    /// `EVENTS_QUEUE_NAME`, the blob events' queue, created on first use; `None` when unset.
    pub async fn events_queue(&self) -> Result<Option<&QueueClient>, StorageError> {
        match &self.config.events.queue {
            Some(name) => Ok(Some(self.created_queue(&self.events_queue, name).await?)),
            None => Ok(None),
        }
    }

    /// Puts an unusable event on `{EVENTS_QUEUE_NAME}-poison` exactly as it was received.
    pub async fn poison_event_raw(&self, raw: &str) -> Result<(), StorageError> {
        let Some(events) = &self.config.events.queue else {
            return Err(StorageError::other(
                "poisoning an event",
                "EVENTS_QUEUE_NAME is not set",
            ));
        };
        let name = format!("{events}-poison");
        let queue = self.created_queue(&self.events_poison_queue, &name).await?;
        send_raw(queue, raw.to_owned(), None, "an event to the poison queue").await
    }

    /// The container of the jobs' ledgers, created on first use (once per process).
    pub async fn job_ledger(&self) -> Result<&BlobContainerClient, StorageError> {
        self.job_ledger
            .get_or_try_init(|| async {
                let name = &self.config.job_ledger;
                let container = self.jobs.container(name)?;
                create_container_if_missing(&container, &format!("container {name}")).await?;
                Ok::<_, StorageError>(container)
            })
            .await
    }

    /// Writes a shard message, exactly as it was received, to the shard queue's poison queue.
    pub async fn poison_shard_raw(&self, raw: &str) -> Result<(), StorageError> {
        let queue = self.shard_poison_queue().await?;
        send_raw(queue, raw.to_owned(), None, "a shard to the poison queue").await
    }

    /// Puts one shard on the shard queue (base64, never expiring).
    pub async fn enqueue_shard(
        &self,
        shard: &crate::core::shard::Shard,
    ) -> Result<(), StorageError> {
        let queue = self.shard_queue().await?;
        let what = format!("the shard {}/{}", shard.container, shard.prefix);
        self.send_text(queue, &shard.to_json(), &what).await
    }

    async fn created_queue<'a>(
        &'a self,
        cell: &'a OnceCell<QueueClient>,
        name: &str,
    ) -> Result<&'a QueueClient, StorageError> {
        cell.get_or_try_init(|| async {
            let queue = self.jobs.queue(name)?;
            queue
                .create(None)
                .await
                .during(|| format!("creating queue {name}"))?;
            Ok(queue)
        })
        .await
    }

    /// The backup container of `container` (`{container}{BACKUP_CONTAINER_SUFFIX}`).
    pub fn backup_container_of(&self, container: &str) -> Result<String, StorageError> {
        naming::backup_container_name(container, &self.config.backup_container_suffix)
            .map_err(|e| StorageError::other("naming the backup container", e.to_string()))
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
        let container = self.backup.container(name)?;
        create_container_if_missing(&container, &format!("backup container {name}")).await?;
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

    /// Puts `text` on `queue` as the queue trigger encodes it (base64); it never expires.
    async fn send_text(
        &self,
        queue: &QueueClient,
        text: &str,
        what: &str,
    ) -> Result<(), StorageError> {
        use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
        send_raw(queue, BASE64.encode(text), None, what).await
    }

    /// Writes `raw`, a message's text exactly as it was received from the queue, to the poison
    /// queue byte for byte.
    pub async fn poison_raw(&self, raw: &str) -> Result<(), StorageError> {
        let queue = self.poison_queue().await?;
        send_raw(queue, raw.to_owned(), None, "a message to the poison queue").await
    }

    /// Puts `request` back on the backup queue, invisible for `delay`: a new message, so waiting
    /// for another invocation's copy never counts toward the poison threshold.
    pub async fn defer_backup(
        &self,
        request: &BackupRequest,
        delay: Duration,
    ) -> Result<(), StorageError> {
        use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
        let queue = self.backup_queue().await?;
        let what = format!(
            "the deferred backup of {}/{}",
            request.container, request.blob_name
        );
        send_raw(queue, BASE64.encode(request.to_json()), Some(delay), &what).await
    }

    /// Puts one backup request on the queue. It never expires: a request that vanished
    /// unprocessed would be a version never backed up.
    pub async fn enqueue_backup(&self, request: &BackupRequest) -> Result<(), StorageError> {
        let queue = self.backup_queue().await?;
        let what = format!("the backup of {}/{}", request.container, request.blob_name);
        self.send_text(queue, &request.to_json(), &what).await
    }
}

/// Puts `text` on `queue` as it is, optionally invisible for `delay`; it never expires.
async fn send_raw(
    queue: &QueueClient,
    text: String,
    delay: Option<Duration>,
    what: &str,
) -> Result<(), StorageError> {
    let message: RequestContent<QueueMessage, _> = QueueMessage {
        message_text: Some(text),
    }
    .try_into()
    .during(|| format!("encoding {what}"))?;
    queue
        .send_message(
            message,
            Some(QueueClientSendMessageOptions {
                message_time_to_live: Some(-1),
                visibility_timeout: delay.map(|d| d.as_secs().min(7 * 86_400) as i32),
                ..Default::default()
            }),
        )
        .await
        .during(|| format!("queueing {what}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_checks() {
        let config = Config::from_settings(&Settings::default()).unwrap();
        assert_eq!(config.backup_queue, "backup-requests");
        assert_eq!(config.backup_container_suffix, "bak");
        for (name, value) in [
            ("BACKUP_QUEUE_NAME", "Bad_Queue"),
            ("BACKUP_QUEUE_NAME", &"q".repeat(57)),
            ("BACKUP_CONTAINER_SUFFIX", "_BAK"),
            ("SNAPSHOT_CONCURRENCY", "0"),
        ] {
            let err = Config::from_settings(&Settings::from_pairs([(name, value)])).unwrap_err();
            assert_eq!(err.setting, name);
        }
    }

    #[test]
    fn copy_timeouts_must_fit_the_function_timeout() {
        let defaults = Config::from_settings(&Settings::default()).unwrap();
        defaults
            .check_fits_invocation(Some(Duration::from_secs(600)))
            .unwrap();
        defaults.check_fits_invocation(None).unwrap();
        let hour = Config::from_settings(&Settings::from_pairs([("COPY_TIMEOUT_SECONDS", "3600")]))
            .unwrap();
        let err = hour
            .check_fits_invocation(Some(Duration::from_secs(600)))
            .unwrap_err();
        assert_eq!(err.setting, "COPY_TIMEOUT_SECONDS");
        hour.check_fits_invocation(None).unwrap();
    }

    #[test]
    fn missing_connection_is_named() {
        let settings = Settings::from_pairs([("SOURCE_STORAGE", "UseDevelopmentStorage=true")]);
        let err = App::from_settings(&settings).unwrap_err();
        assert_eq!(err.setting, "BACKUP_STORAGE");
    }
}
