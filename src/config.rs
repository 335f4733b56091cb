//! The worker's settings, read once and checked: what each `%Setting%` and app setting means,
//! with the defaults a Function App gets when it sets nothing. A missing or malformed setting
//! is an error naming it, before any trigger fires.

use std::time::Duration;

use crate::{
    adf::AdfConfig,
    core::{naming, retention::RetentionPolicy},
    settings::{Settings, SettingsError},
};

/// Connection holding the lake.
pub const SOURCE_STORAGE: &str = "SOURCE_STORAGE";
/// Connection holding the backup containers.
pub const BACKUP_STORAGE: &str = "BACKUP_STORAGE";
/// Connection a restore `--to-account` writes into (optional).
pub const RESTORE_TARGET_STORAGE: &str = "RESTORE_TARGET_STORAGE";
/// The connection `prune` deletes backups with (same forms; unset: `BACKUP_STORAGE`), so the
/// functions' own identity may be a writer that cannot delete.
pub const PRUNE_STORAGE: &str = "PRUNE_STORAGE";
/// Connection holding the backup-request queue (the Functions host's own storage).
pub const JOBS_STORAGE: &str = "AzureWebJobsStorage";

/// `COPY_TIMEOUT_SECONDS` when unset: a copy and its checks fit the default 10-minute
/// `functionTimeout`.
pub const DEFAULT_COPY_TIMEOUT_SECONDS: u64 = 300;

/// Versions up to this size are copied through the worker by default: one read and one write
/// cost the service less than a server-side copy, which reads the source again to authorize it.
pub const DEFAULT_COPY_THROUGH_MAX_BYTES: u64 = 1 << 20;
/// Beyond this a server-side copy, which moves no bytes through the worker, is the better deal
/// (a copy through the worker reads and writes in chunks, so memory is no limit).
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
    /// `BACKUP_LEASE_WAIT_SECONDS`: how long a request waits for another's lease on its source,
    /// and then how long it stays back on the queue before it is tried again.
    pub lease_wait: Duration,
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
    /// `RESTORE_CONCURRENCY`: directory shards a restore run in this process works at once
    /// (each with `SNAPSHOT_CONCURRENCY` writes in flight).
    pub restore_concurrency: usize,
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
        let backup_queue = backup_queue_name(settings)?;
        let backup_container_suffix = backup_container_suffix(settings)?;
        let snapshot_concurrency =
            settings.get_number("SNAPSHOT_CONCURRENCY", 16, 1..=256)? as usize;
        let adf = AdfConfig::from_settings(settings)?;
        let copy_engine = copy_engine(settings, adf.is_some())?;
        // A direct copy needs no lock: its source condition pins the version.
        let use_lease =
            copy_engine == CopyEngine::Adf && settings.get_bool("BACKUP_USE_LEASE", true)?;
        Ok(Self {
            backup_container_suffix,
            snapshot_concurrency,
            copy_engine,
            use_lease,
            lease_wait: settings.get_duration("BACKUP_LEASE_WAIT_SECONDS", 30, 1..=600)?,
            copy_timeout: settings.get_duration(
                "COPY_TIMEOUT_SECONDS",
                DEFAULT_COPY_TIMEOUT_SECONDS,
                1..=86_400,
            )?,
            copy_poll_interval: settings.get_duration(
                "COPY_POLL_INTERVAL_MS",
                1_000,
                10..=60_000,
            )?,
            retention: retention_policy(settings)?,
            events: events_config(settings),
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
            restore_concurrency: settings.get_number("RESTORE_CONCURRENCY", 4, 1..=64)? as usize,
            shard_queue: format!("{backup_queue}-shards"),
            shard_budget: settings.get_duration("SHARD_TIME_BUDGET_SECONDS", 120, 1..=3_600)?,
            shard_page_size: settings.get_number("SHARD_PAGE_SIZE", 1_000, 1..=5_000)? as u32,
            job_ledger: format!("{backup_queue}-jobs"),
            // ADF's Azure Function activity and Azure's front end give up on an HTTP call after
            // 230 s.
            producer_wait: settings.get_duration("PRODUCER_WAIT_SECONDS", 200, 0..=220)?,
            max_dequeue_count: 5,
            function_timeout: Some(Duration::from_secs(600)),
            list_tags: settings.get_bool("BACKUP_TAGS", true)?,
            backup_queue,
        })
    }
}

/// `BACKUP_QUEUE_NAME`, checked so that the queues named after it are valid too.
fn backup_queue_name(settings: &Settings) -> Result<String, SettingsError> {
    let backup_queue = settings
        .get_or("BACKUP_QUEUE_NAME", "backup-requests")
        .to_owned();
    // The host's poison queues are `{queue}-poison` and `{queue}-shards-poison`, so those
    // names must be valid too.
    naming::validate_container_name(&format!("{backup_queue}-shards-poison")).map_err(|_| {
        SettingsError::new(
            "BACKUP_QUEUE_NAME",
            "must be 3 to 49 lowercase letters, digits and single hyphens (the shard queue's \
             poison queue adds -shards-poison)",
        )
    })?;
    Ok(backup_queue)
}

/// `BACKUP_CONTAINER_SUFFIX`, checked so that every `{c}{suffix}` is a valid container name.
fn backup_container_suffix(settings: &Settings) -> Result<String, SettingsError> {
    let backup_container_suffix = settings.get_or("BACKUP_CONTAINER_SUFFIX", "bak").to_owned();
    naming::backup_container_name("abc", &backup_container_suffix).map_err(|_| {
        SettingsError::new(
            "BACKUP_CONTAINER_SUFFIX",
            "must be lowercase letters, digits and hyphens that keep container names valid",
        )
    })?;
    Ok(backup_container_suffix)
}

/// `BACKUP_COPY_ENGINE`: `adf` where the `ADF_*` settings are set (`has_adf`) and it says
/// nothing, else `direct`.
fn copy_engine(settings: &Settings, has_adf: bool) -> Result<CopyEngine, SettingsError> {
    let copy_engine = match settings
        .get("BACKUP_COPY_ENGINE")
        .map(str::to_ascii_lowercase)
    {
        None if has_adf => CopyEngine::Adf,
        None => CopyEngine::Direct,
        Some(engine) if engine == "direct" => CopyEngine::Direct,
        Some(engine) if engine == "adf" && has_adf => CopyEngine::Adf,
        Some(engine) if engine == "adf" => {
            return Err(SettingsError::new(
                "BACKUP_COPY_ENGINE",
                "is adf, but ADF_SUBSCRIPTION_ID, ADF_RESOURCE_GROUP, ADF_FACTORY_NAME and \
                 ADF_PIPELINE_NAME are not set",
            ))
        }
        Some(_) => {
            return Err(SettingsError::new(
                "BACKUP_COPY_ENGINE",
                "must be adf or direct",
            ))
        }
    };
    Ok(copy_engine)
}

/// `EVENTS_QUEUE_NAME`, `EVENTS_CONTAINERS` and `EVENTS_PREFIX`.
fn events_config(settings: &Settings) -> EventsConfig {
    EventsConfig {
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
    }
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
}
