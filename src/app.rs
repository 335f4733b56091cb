//! The worker's shared state: validated settings and the three storage accounts, built once at
//! start-up so that a missing or malformed setting stops the worker before any trigger fires.

use azure_core::http::RequestContent;
use azure_storage_queue::{
    models::{QueueClientSendMessageOptions, QueueMessage},
    QueueClient,
};
use tokio::sync::OnceCell;

use crate::{
    core::{message::BackupRequest, naming},
    settings::{Settings, SettingsError},
    storage::{StorageAccount, StorageError, StorageResultExt},
};

/// Connection holding the lake.
pub const SOURCE_STORAGE: &str = "SOURCE_STORAGE";
/// Connection holding the backup containers.
pub const BACKUP_STORAGE: &str = "BACKUP_STORAGE";
/// Connection holding the backup-request queue (the Functions host's own storage).
pub const JOBS_STORAGE: &str = "AzureWebJobsStorage";

/// Tunables, with the defaults a Function App gets when it sets nothing.
#[derive(Debug, Clone)]
pub struct Config {
    /// `BACKUP_QUEUE_NAME`: where backup requests go.
    pub backup_queue: String,
    /// `BACKUP_CONTAINER_SUFFIX`: backups of container `c` live in `{c}{suffix}`.
    pub backup_container_suffix: String,
    /// `SNAPSHOT_CONCURRENCY`: snapshots and enqueues in flight at once.
    pub snapshot_concurrency: usize,
}

impl Config {
    pub fn from_settings(settings: &Settings) -> Result<Self, SettingsError> {
        let backup_queue = settings
            .get_or("BACKUP_QUEUE_NAME", "backup-requests")
            .to_owned();
        // The host's poison queue is `{queue}-poison`, so that name must be valid too.
        naming::validate_container_name(&format!("{backup_queue}-poison")).map_err(|_| {
            SettingsError::new(
                "BACKUP_QUEUE_NAME",
                "must be 3 to 56 lowercase letters, digits and single hyphens (the host adds -poison)",
            )
        })?;
        let backup_container_suffix = settings.get_or("BACKUP_CONTAINER_SUFFIX", "bak").to_owned();
        naming::backup_container_name("abc", &backup_container_suffix).map_err(|_| {
            SettingsError::new(
                "BACKUP_CONTAINER_SUFFIX",
                "must be lowercase letters, digits and hyphens that keep container names valid",
            )
        })?;
        let snapshot_concurrency =
            settings.get_number("SNAPSHOT_CONCURRENCY", 16, 1..=256)? as usize;
        Ok(Self {
            backup_queue,
            backup_container_suffix,
            snapshot_concurrency,
        })
    }
}

/// Everything a function needs, shared by all invocations.
pub struct App {
    pub config: Config,
    pub source: StorageAccount,
    pub backup: StorageAccount,
    pub jobs: StorageAccount,
    backup_queue: OnceCell<QueueClient>,
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
        Ok(Self {
            config,
            source,
            backup,
            jobs,
            backup_queue: OnceCell::new(),
        })
    }

    /// The backup-request queue, created on first use (once per process).
    pub async fn backup_queue(&self) -> Result<&QueueClient, StorageError> {
        self.backup_queue
            .get_or_try_init(|| async {
                let name = &self.config.backup_queue;
                let queue = self.jobs.queue(name)?;
                queue
                    .create(None)
                    .await
                    .during(|| format!("creating queue {name}"))?;
                Ok(queue)
            })
            .await
    }

    /// Puts one backup request on the queue, base64-encoded as the queue trigger expects. It
    /// never expires: a request that vanished unprocessed would be a version never backed up.
    pub async fn enqueue_backup(&self, request: &BackupRequest) -> Result<(), StorageError> {
        let queue = self.backup_queue().await?;
        let message: RequestContent<QueueMessage, _> = QueueMessage {
            message_text: Some(request.to_queue_text()),
        }
        .try_into()
        .during(|| "encoding a backup request".to_owned())?;
        queue
            .send_message(
                message,
                Some(QueueClientSendMessageOptions {
                    message_time_to_live: Some(-1),
                    ..Default::default()
                }),
            )
            .await
            .during(|| {
                format!(
                    "queueing the backup of {}/{}",
                    request.container, request.blob_name
                )
            })?;
        Ok(())
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
    fn missing_connection_is_named() {
        let settings = Settings::from_pairs([("SOURCE_STORAGE", "UseDevelopmentStorage=true")]);
        let err = App::from_settings(&settings).unwrap_err();
        assert_eq!(err.setting, "BACKUP_STORAGE");
    }
}
