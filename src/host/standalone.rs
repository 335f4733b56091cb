//! `lakebackup run`: the four functions without the Functions host, doing what the host would.
//!
//! - the queue triggers: poll `BACKUP_QUEUE_NAME` (the consumer) and `{BACKUP_QUEUE_NAME}-shards`
//!   (the shard function) in batches with bounded parallelism, delete a message on success, let it
//!   reappear after the retry delay on failure, and move it to `{queue}-poison` once it has failed
//!   `maxDequeueCount` times (read from `host.json`, as the host does);
//! - the timer: the reconciler's root shards on `RECONCILE_SCHEDULE` (6-field NCRONTAB);
//! - the HTTP trigger: the producer at `/api/HttpSnapshotIncBackupContainerProducer`.
//!
//! Like the host, it keeps a taken message hidden for a window (`RUN_VISIBILITY_SECONDS`, 10
//! minutes as the host's) and renews that window at its half while the invocation runs, so a long
//! copy is never taken twice; and like the host it ends an invocation at `functionTimeout`
//! (`-1`: never). A message to poison is written to the poison queue, byte for byte as received,
//! before it is deleted.
//!
//! On shutdown it stops taking messages and lets in-flight ones finish (their leases are released
//! by the consumer); a message never taken stays on the queue, so nothing is lost.

use std::{future::Future, path::Path, sync::Arc, time::Duration};

use azure_storage_queue::models::{QueueClientReceiveMessagesOptions, ReceivedMessage};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use croner::{parser::CronParser, parser::Seconds, Cron};
use serde_json::Value;
use thiserror::Error;
use tokio::{
    net::TcpListener,
    sync::{watch, Semaphore},
};
use tracing::{error, info, warn, Instrument};

use super::server;
use crate::{
    app::App,
    functions::{
        consumer::{self, QueueDelivery},
        events, reconciler, shard,
    },
    settings::{Settings, SettingsError},
    storage::{StorageError, StorageResultExt},
};

/// The queue trigger's behaviour, as `host.json` configures the host's.
#[derive(Debug, Clone)]
pub struct QueueBehaviour {
    /// `extensions.queues.maxDequeueCount` (default 5).
    pub max_dequeue_count: u64,
    /// `extensions.queues.batchSize` (default 16): messages in flight at once.
    pub batch_size: usize,
    /// `extensions.queues.visibilityTimeout` (default 0): how long a failed message waits.
    pub retry_delay: Duration,
    /// How long one invocation may run (`functionTimeout`; `None` for `-1`, unbounded).
    pub function_timeout: Option<Duration>,
    /// How long a taken message stays hidden before its window is renewed
    /// (`RUN_VISIBILITY_SECONDS`; renewed at half, while the invocation runs).
    pub visibility_window: Duration,
    /// `extensions.queues.maxPollingInterval` (default 1 s here): wait when the queue is empty.
    pub poll_interval: Duration,
}

impl Default for QueueBehaviour {
    fn default() -> Self {
        Self {
            max_dequeue_count: 5,
            batch_size: 16,
            retry_delay: Duration::ZERO,
            function_timeout: Some(Duration::from_secs(600)),
            visibility_window: Duration::from_secs(600),
            poll_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Error)]
pub enum StandaloneError {
    #[error("{path}: {reason}")]
    HostJson { path: String, reason: String },
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("serving HTTP: {0}")]
    Http(std::io::Error),
}

impl QueueBehaviour {
    /// Reads `host.json` at `path`; a missing file gives the host's defaults.
    pub fn from_host_json(path: &Path) -> Result<Self, StandaloneError> {
        let mut behaviour = Self::default();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(behaviour),
            Err(e) => return Err(host_json_error(path, e.to_string())),
        };
        let host: Value =
            serde_json::from_str(&text).map_err(|e| host_json_error(path, e.to_string()))?;
        let queues = &host["extensions"]["queues"];
        let number = |field: &str| queues[field].as_u64();
        if let Some(n) = number("maxDequeueCount") {
            behaviour.max_dequeue_count = n.max(1);
        }
        if let Some(n) = number("batchSize") {
            behaviour.batch_size = n.clamp(1, 32) as usize;
        }
        let timespan = |value: &Value, field: &str| -> Result<Option<Duration>, StandaloneError> {
            value
                .as_str()
                .map(|t| {
                    parse_timespan(t)
                        .ok_or_else(|| host_json_error(path, format!("{field} is not hh:mm:ss")))
                })
                .transpose()
        };
        if let Some(delay) = timespan(&queues["visibilityTimeout"], "visibilityTimeout")? {
            behaviour.retry_delay = delay;
        }
        if let Some(interval) = timespan(&queues["maxPollingInterval"], "maxPollingInterval")? {
            behaviour.poll_interval = interval.max(Duration::from_millis(100));
        }
        behaviour.function_timeout = function_timeout(&host)
            .map_err(|reason| host_json_error(path, reason))?
            .unwrap_or(behaviour.function_timeout);
        Ok(behaviour)
    }
}

/// `functionTimeout` of a parsed host.json: `None` when absent, `Some(None)` for `-1`
/// (unbounded), else the duration.
fn function_timeout(host: &Value) -> Result<Option<Option<Duration>>, String> {
    match &host["functionTimeout"] {
        Value::Null => Ok(None),
        Value::String(text) if text.trim() == "-1" => Ok(Some(None)),
        Value::String(text) => parse_timespan(text)
            .filter(|d| !d.is_zero())
            .map(|d| Some(Some(d)))
            .ok_or_else(|| "functionTimeout is not hh:mm:ss or -1".to_owned()),
        _ => Err("functionTimeout is not a string (hh:mm:ss or -1)".to_owned()),
    }
}

/// `functionTimeout` from the host.json at `path` (the host's default of 10 minutes when the
/// file or the field is absent; `None` for `-1`).
pub fn function_timeout_of(path: &Path) -> Result<Option<Duration>, StandaloneError> {
    Ok(QueueBehaviour::from_host_json(path)?.function_timeout)
}

fn host_json_error(path: &Path, reason: String) -> StandaloneError {
    StandaloneError::HostJson {
        path: path.display().to_string(),
        reason,
    }
}

/// `hh:mm:ss` (optionally `d.hh:mm:ss`), the .NET TimeSpan form host.json uses.
fn parse_timespan(text: &str) -> Option<Duration> {
    if text.contains('-') {
        return None;
    }
    let (days, clock) = match text.split_once('.') {
        Some((d, rest)) if rest.contains(':') && !d.contains(':') => (d.parse::<u64>().ok()?, rest),
        _ => (0, text),
    };
    let parts: Vec<f64> = clock
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = parts[..] else { return None };
    if [h, m, s].iter().any(|p| !p.is_finite() || *p < 0.0) {
        return None;
    }
    Duration::try_from_secs_f64(days as f64 * 86_400.0 + h * 3600.0 + m * 60.0 + s).ok()
}

/// The reconciler's schedule when `RECONCILE_SCHEDULE` is unset: daily at 02:00 UTC.
pub const DEFAULT_RECONCILE_SCHEDULE: &str = "0 0 2 * * *";

/// `RECONCILE_SCHEDULE`, a 6-field NCRONTAB expression (seconds first); daily by default.
pub fn reconcile_schedule(settings: &Settings) -> Result<Cron, SettingsError> {
    let text = settings.get_or("RECONCILE_SCHEDULE", DEFAULT_RECONCILE_SCHEDULE);
    CronParser::builder()
        .seconds(Seconds::Required)
        .build()
        .parse(text)
        .map_err(|e| {
            SettingsError::new(
                "RECONCILE_SCHEDULE",
                format!(
                    "is not a 6-field NCRONTAB expression (sec min hour day month weekday): {e}"
                ),
            )
        })
}

/// Runs until `shutdown` completes, then drains in-flight work.
pub async fn run(
    app: Arc<App>,
    behaviour: QueueBehaviour,
    schedule: Option<Cron>,
    http: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StandaloneError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        info!("shutting down: no new messages are taken; in-flight work finishes");
        let _ = stop_tx.send(true);
    });
    let http_task = http.map(|listener| {
        let mut stop = stop_rx.clone();
        let routes = server::producer_http_router().with_state(app.clone());
        tokio::spawn(server::serve(routes, listener, async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    });
    let timer_task =
        schedule.map(|cron| tokio::spawn(run_timer(app.clone(), cron, stop_rx.clone())));
    let shards = tokio::spawn(run_queue(
        app.clone(),
        QueueFunction::Shards,
        behaviour.clone(),
        stop_rx.clone(),
    ));
    let events = app.config.events.queue.is_some().then(|| {
        tokio::spawn(run_queue(
            app.clone(),
            QueueFunction::Events,
            behaviour.clone(),
            stop_rx.clone(),
        ))
    });
    let queue_result = run_queue(app, QueueFunction::Backups, behaviour, stop_rx).await;
    let shard_result = shards.await.unwrap_or(Ok(()));
    let events_result = match events {
        Some(task) => task.await.unwrap_or(Ok(())),
        None => Ok(()),
    };
    if let Some(task) = timer_task {
        let _ = task.await;
    }
    if let Some(task) = http_task {
        if let Ok(Err(e)) = task.await {
            return Err(StandaloneError::Http(e));
        }
    }
    queue_result.and(shard_result).and(events_result)
}

/// The queue-triggered functions `run` hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueFunction {
    /// `QueueCreateBlobBackupADFv2` on `BACKUP_QUEUE_NAME`.
    Backups,
    /// `QueueSnapshotBackupShard` on `{BACKUP_QUEUE_NAME}-shards`.
    Shards,
    /// `QueueBlobEvents` on `EVENTS_QUEUE_NAME` (only when it is set).
    Events,
}

impl QueueFunction {
    async fn queue(self, app: &App) -> Result<&azure_storage_queue::QueueClient, StorageError> {
        match self {
            QueueFunction::Backups => app.backup_queue().await,
            QueueFunction::Shards => app.shard_queue().await,
            QueueFunction::Events => app.events_queue().await?.ok_or_else(|| {
                StorageError::other("taking blob events", "EVENTS_QUEUE_NAME is not set")
            }),
        }
    }

    async fn poison(self, app: &App, raw: &str) -> Result<(), StorageError> {
        match self {
            QueueFunction::Backups => app.poison_raw(raw).await,
            QueueFunction::Shards => app.poison_shard_raw(raw).await,
            QueueFunction::Events => app.poison_event_raw(raw).await,
        }
    }

    /// Runs the function on one delivery; the error text on failure.
    async fn invoke(self, app: &App, delivery: &QueueDelivery) -> Result<String, String> {
        match self {
            QueueFunction::Backups => consumer::consume(app, delivery)
                .await
                .map(|o| format!("{o:?}"))
                .map_err(|e| e.to_string()),
            QueueFunction::Shards => shard::consume(app, delivery)
                .await
                .map(|o| format!("{o:?}"))
                .map_err(|e| e.to_string()),
            QueueFunction::Events => events::consume(app, delivery)
                .await
                .map(|o| format!("{o:?}"))
                .map_err(|e| e.to_string()),
        }
    }
}

async fn run_queue(
    app: Arc<App>,
    function: QueueFunction,
    behaviour: QueueBehaviour,
    mut stop: watch::Receiver<bool>,
) -> Result<(), StandaloneError> {
    let queue = function.queue(&app).await?;
    let slots = Arc::new(Semaphore::new(behaviour.batch_size));
    let visibility = window_seconds(&behaviour);
    info!(?function, ?behaviour, "taking messages");
    while !*stop.borrow() {
        // Take only as many messages as there are free slots: none waits hidden unprocessed.
        let free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                permit = slots.clone().acquire_owned() => drop(permit),
                _ = stop.wait_for(|s| *s) => break,
            }
            continue;
        }
        let received = queue
            .receive_messages(Some(QueueClientReceiveMessagesOptions {
                number_of_messages: Some(free.min(32) as i32),
                visibility_timeout: Some(visibility),
                ..Default::default()
            }))
            .await
            .and_then(|r| r.into_model());
        let messages = match received {
            Ok(batch) => batch.items.unwrap_or_default(),
            Err(e) => {
                warn!(error = %StorageError::new("receiving backup requests", e), "queue poll failed; retrying");
                Vec::new()
            }
        };
        if messages.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(behaviour.poll_interval) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            continue;
        }
        for message in messages {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let (app, behaviour) = (app.clone(), behaviour.clone());
            tokio::spawn(async move {
                // Created on start-up above, so this is the cached client.
                if let Ok(queue) = function.queue(&app).await {
                    handle_message(&app, function, queue, &behaviour, message).await;
                }
                drop(permit);
            });
        }
    }
    // Wait for every in-flight message to finish.
    let _ = slots.acquire_many(behaviour.batch_size as u32).await;
    info!("queue processing stopped; nothing in flight");
    Ok(())
}

fn window_seconds(behaviour: &QueueBehaviour) -> i32 {
    behaviour.visibility_window.as_secs().clamp(1, 7 * 86_400) as i32
}

/// A taken message's pop receipt, renewed with its visibility while the invocation runs.
struct TakenMessage {
    id: String,
    receipt: tokio::sync::Mutex<String>,
}

impl TakenMessage {
    async fn receipt(&self) -> String {
        self.receipt.lock().await.clone()
    }

    /// Hides the message for `seconds` more; the service answers with a new pop receipt.
    async fn extend(
        &self,
        queue: &azure_storage_queue::QueueClient,
        seconds: i32,
    ) -> Result<(), StorageError> {
        let mut receipt = self.receipt.lock().await;
        let response = queue
            .update_message(&self.id, &receipt, seconds, None)
            .await
            .during(|| format!("extending the visibility of message {}", self.id))?;
        if let Some(new) = response.headers().get_optional_str(
            &azure_core::http::headers::HeaderName::from_static("x-ms-popreceipt"),
        ) {
            *receipt = new.to_owned();
        }
        Ok(())
    }

    async fn delete(&self, queue: &azure_storage_queue::QueueClient) -> Result<(), StorageError> {
        let receipt = self.receipt().await;
        queue
            .delete_message(&self.id, &receipt, None)
            .await
            .during(|| format!("deleting message {}", self.id))?;
        Ok(())
    }
}

/// Keeps `message` hidden while `work` runs, as the host does, renewing at half the window.
async fn while_hidden<T>(
    queue: &azure_storage_queue::QueueClient,
    message: &TakenMessage,
    behaviour: &QueueBehaviour,
    work: impl Future<Output = T>,
) -> T {
    let seconds = window_seconds(behaviour);
    let renew = async {
        loop {
            tokio::time::sleep(Duration::from_secs(seconds as u64) / 2).await;
            if let Err(e) = message.extend(queue, seconds).await {
                warn!(error = %e, "could not renew the message's visibility; it may be taken again");
            }
        }
    };
    tokio::select! {
        result = work => result,
        _ = renew => unreachable!("renewing never ends"),
    }
}

async fn handle_message(
    app: &App,
    function: QueueFunction,
    queue: &azure_storage_queue::QueueClient,
    behaviour: &QueueBehaviour,
    message: ReceivedMessage,
) {
    let (Some(id), Some(receipt)) = (message.message_id.clone(), message.pop_receipt.clone())
    else {
        warn!("received a message without id or pop receipt; it will reappear");
        return;
    };
    let taken = TakenMessage {
        id: id.clone(),
        receipt: tokio::sync::Mutex::new(receipt),
    };
    let raw = message.message_text.unwrap_or_default();
    let dequeue_count = message.dequeue_count.unwrap_or(1).max(1) as u64;
    let span = tracing::info_span!("queue_trigger", message_id = %id, dequeue_count);
    async {
        if dequeue_count > behaviour.max_dequeue_count {
            // Taken too often without completing (e.g. the worker died each time).
            let reason = format!(
                "taken {} times without finishing (the worker was stopped or timed out each time)",
                dequeue_count - 1
            );
            move_to_poison(app, function, queue, &taken, &raw, &reason).await;
            return;
        }
        // The queue trigger decodes base64; text that is not base64 is handed over as it is.
        let text = BASE64
            .decode(raw.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .unwrap_or_else(|| raw.clone());
        let delivery = QueueDelivery {
            text,
            raw: Some(raw.clone()),
            message_id: id.clone(),
            dequeue_count,
        };
        let invocation = async {
            match behaviour.function_timeout {
                Some(limit) => tokio::time::timeout(limit, function.invoke(app, &delivery))
                    .await
                    .unwrap_or_else(|_| Err(format!("functionTimeout ({limit:?}) reached"))),
                None => function.invoke(app, &delivery).await,
            }
        };
        match while_hidden(queue, &taken, behaviour, invocation).await {
            Ok(outcome) => {
                if let Err(e) = taken.delete(queue).await {
                    warn!(error = %e, ?outcome, "processed, but the message could not be deleted; it will be processed again (idempotent)");
                }
            }
            Err(e) if dequeue_count >= behaviour.max_dequeue_count => {
                error!(error = %e, "failed on its last allowed attempt; moving it to the poison queue");
                move_to_poison(app, function, queue, &taken, &raw, &e).await;
            }
            Err(e) => {
                warn!(error = %e, "failed; it will be retried");
                let delay = behaviour.retry_delay.as_secs() as i32;
                if let Err(e) = taken.extend(queue, delay).await {
                    warn!(error = %e, "the message reappears when its visibility timeout ends");
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// Writes the message, exactly as received, to the poison queue, and only then deletes it: a
/// failure in between leaves a duplicate, never a loss. A shard given up is said failed in its
/// job's ledger, with `reason`, so that its job ends rather than running for ever.
async fn move_to_poison(
    app: &App,
    function: QueueFunction,
    queue: &azure_storage_queue::QueueClient,
    taken: &TakenMessage,
    raw: &str,
    reason: &str,
) {
    if function == QueueFunction::Shards {
        let text = BASE64
            .decode(raw.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .unwrap_or_else(|| raw.to_owned());
        if let Ok(shard) = crate::core::shard::Shard::parse(&text) {
            if let Err(e) = crate::job_ledger::record_failed(app, &shard, reason).await {
                warn!(error = %e, "could not record the given-up shard in its job's ledger");
            }
        }
    }
    if let Err(e) = function.poison(app, raw).await {
        error!(error = %e, message_id = taken.id, "could not write to the poison queue; the message stays on its queue and reappears");
        return;
    }
    if let Err(e) = taken.delete(queue).await {
        warn!(error = %e, message_id = taken.id, "poisoned, but the original could not be deleted; it may be poisoned twice");
    }
}

async fn run_timer(app: Arc<App>, cron: Cron, mut stop: watch::Receiver<bool>) {
    loop {
        let now = chrono::Utc::now();
        let next = match cron.find_next_occurrence(&now, false) {
            Ok(next) => next,
            Err(e) => {
                error!(error = %e, "RECONCILE_SCHEDULE has no next occurrence; the timer stops");
                return;
            }
        };
        let wait = (next - now).to_std().unwrap_or_default();
        info!(next = %next, "next reconciliation");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let scope = app.config.reconcile_containers.clone();
        let scheduled = reconciler::schedule(&app, scope.as_deref()).await;
        if scheduled.status != "queued" {
            error!(error = ?scheduled.error, "scheduling the reconciliation failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_json_configures_the_queue_trigger() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.json");
        std::fs::write(
            &path,
            r#"{"version":"2.0","functionTimeout":"00:10:00","extensions":{"queues":{"maxDequeueCount":2,"batchSize":4,"visibilityTimeout":"00:00:01.5"}}}"#,
        )
        .unwrap();
        let behaviour = QueueBehaviour::from_host_json(&path).unwrap();
        assert_eq!(behaviour.max_dequeue_count, 2);
        assert_eq!(behaviour.batch_size, 4);
        assert_eq!(behaviour.retry_delay, Duration::from_millis(1500));
        assert_eq!(behaviour.function_timeout, Some(Duration::from_secs(600)));
        let missing = QueueBehaviour::from_host_json(&dir.path().join("none.json")).unwrap();
        assert_eq!(missing.max_dequeue_count, 5);
        std::fs::write(&path, "{not json").unwrap();
        assert!(QueueBehaviour::from_host_json(&path).is_err());
        std::fs::write(&path, r#"{"functionTimeout":"-1"}"#).unwrap();
        assert_eq!(
            QueueBehaviour::from_host_json(&path)
                .unwrap()
                .function_timeout,
            None
        );
        for bad in [
            "-00:00:01",
            "99999999999999999999:00:00",
            "NaN:00:00",
            "00:00:00",
            "soon",
        ] {
            std::fs::write(&path, format!(r#"{{"functionTimeout":"{bad}"}}"#)).unwrap();
            assert!(QueueBehaviour::from_host_json(&path).is_err(), "{bad}");
        }
    }

    #[test]
    fn timespans_and_schedules_are_read() {
        assert_eq!(parse_timespan("00:00:30"), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_timespan("1.00:00:00"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(parse_timespan("soon"), None);
        let every_minute = Settings::from_pairs([("RECONCILE_SCHEDULE", "0 * * * * *")]);
        let next = reconcile_schedule(&every_minute)
            .unwrap()
            .find_next_occurrence(&chrono::Utc::now(), false)
            .unwrap();
        assert!(next - chrono::Utc::now() <= chrono::Duration::seconds(60));
        let default = reconcile_schedule(&Settings::default()).unwrap();
        assert_eq!(default.pattern.to_string(), DEFAULT_RECONCILE_SCHEDULE);
        let five_fields = Settings::from_pairs([("RECONCILE_SCHEDULE", "0 2 * * *")]);
        assert_eq!(
            reconcile_schedule(&five_fields).unwrap_err().setting,
            "RECONCILE_SCHEDULE"
        );
    }
}
