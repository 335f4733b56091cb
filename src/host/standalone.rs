//! `lakebackup run`: every function of the Function App ([`dispatch::FUNCTIONS`]) without the
//! Functions host, doing what the host would.
//!
//! - the queue triggers: poll each function's queue (`BACKUP_QUEUE_NAME`,
//!   `{BACKUP_QUEUE_NAME}-shards`, and `EVENTS_QUEUE_NAME` when set) in batches with bounded
//!   parallelism, delete a message on success, let it reappear after the retry delay on
//!   failure, and give it up to `{queue}-poison` once it has failed `maxDequeueCount` times
//!   (read from `host.json`, as the host does);
//! - the timer: the reconciliation's jobs on `RECONCILE_SCHEDULE` (6-field NCRONTAB);
//! - the HTTP trigger: the producer at `/api/HttpSnapshotIncBackupContainerProducer`.
//!
//! Like the host, it keeps a taken message hidden for a window (`RUN_VISIBILITY_SECONDS`, 10
//! minutes as the host's) and renews that window at its half while the invocation runs, so a long
//! copy is never taken twice; and like the host it ends an invocation at `functionTimeout`
//! (`-1`: never). A message to poison is written to the poison queue, byte for byte as received,
//! before it is deleted.
//!
//! On shutdown it stops taking messages and lets in-flight ones finish (their leases are released
//! by the backup engine); a message never taken stays on the queue, so nothing is lost.

use std::{future::Future, path::Path, sync::Arc, time::Duration};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use croner::{parser::CronParser, parser::Seconds, Cron};
use serde_json::Value;
use thiserror::Error;
use tokio::{
    net::TcpListener,
    sync::{watch, Semaphore},
};
use tracing::{error, info, warn, Instrument};

use super::{
    dispatch::{self, QueueMessage},
    server,
};
use crate::{
    app::{App, WorkQueue},
    functions::reconciliation,
    settings::{Settings, SettingsError},
    storage::{Queue, StorageError, TakenMessage},
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
    // Every queue function of the table whose queue is configured.
    let pollers: Vec<_> = dispatch::queue_functions()
        .filter(|(_, queue)| queue.name(&app.config).is_some())
        .map(|(function, queue)| {
            tokio::spawn(run_queue(
                app.clone(),
                function,
                queue,
                behaviour.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    let mut result = Ok(());
    for poller in pollers {
        let polled = poller.await.unwrap_or(Ok(()));
        if result.is_ok() {
            result = polled;
        }
    }
    if let Some(task) = timer_task {
        let _ = task.await;
    }
    if let Some(task) = http_task {
        if let Ok(Err(e)) = task.await {
            return Err(StandaloneError::Http(e));
        }
    }
    result
}

async fn run_queue(
    app: Arc<App>,
    function: &'static str,
    work_queue: WorkQueue,
    behaviour: QueueBehaviour,
    mut stop: watch::Receiver<bool>,
) -> Result<(), StandaloneError> {
    let queue = app.queue(work_queue).await?;
    let slots = Arc::new(Semaphore::new(behaviour.batch_size));
    info!(function, ?behaviour, "taking messages");
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
        let messages = match queue.take(free, behaviour.visibility_window).await {
            Ok(messages) => messages,
            Err(error) => {
                warn!(%error, function, "queue poll failed; retrying");
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
                // Created on start-up above, so this is the cached queue.
                if let Ok(queue) = app.queue(work_queue).await {
                    handle_message(&app, work_queue, queue, &behaviour, message).await;
                }
                drop(permit);
            });
        }
    }
    // Wait for every in-flight message to finish.
    let _ = slots.acquire_many(behaviour.batch_size as u32).await;
    info!(function, "queue processing stopped; nothing in flight");
    Ok(())
}

/// A taken message whose receipt is renewed with its visibility while the invocation runs.
struct Held {
    id: String,
    receipt: tokio::sync::Mutex<String>,
}

impl Held {
    /// Hides the message for `window` more; the service answers with a new receipt.
    async fn extend(&self, queue: &Queue, window: Duration) -> Result<(), StorageError> {
        let mut receipt = self.receipt.lock().await;
        *receipt = queue.hide(&self.id, &receipt, window).await?;
        Ok(())
    }

    async fn delete(&self, queue: &Queue) -> Result<(), StorageError> {
        let receipt = self.receipt.lock().await.clone();
        queue.delete(&self.id, &receipt).await
    }
}

/// Keeps `message` hidden while `work` runs, as the host does, renewing at half the window.
async fn while_hidden<T>(
    queue: &Queue,
    message: &Held,
    behaviour: &QueueBehaviour,
    work: impl Future<Output = T>,
) -> T {
    let window = behaviour.visibility_window.max(Duration::from_secs(1));
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            result = &mut work => return result,
            // A renewal is never cut short by the end of the work: the service changes the
            // receipt when it answers, and a renewal dropped in flight would leave a stale
            // receipt, so the message could not be deleted (PopReceiptMismatch) and would be
            // taken again. (The work waits for the one request the renewal makes.)
            () = tokio::time::sleep(window / 2) => {
                if let Err(e) = message.extend(queue, window).await {
                    warn!(error = %e, "could not renew the message's visibility; it may be taken again");
                }
            }
        }
    }
}

async fn handle_message(
    app: &App,
    work_queue: WorkQueue,
    queue: &Queue,
    behaviour: &QueueBehaviour,
    taken: TakenMessage,
) {
    let held = Held {
        id: taken.id.clone(),
        receipt: tokio::sync::Mutex::new(taken.pop_receipt.clone()),
    };
    let dequeue_count = taken.dequeue_count;
    let span = tracing::info_span!("queue_trigger", message_id = %taken.id, dequeue_count);
    async {
        let raw = taken.text;
        // The queue trigger decodes base64; text that is not base64 is handed over as it is.
        let text = BASE64
            .decode(raw.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .unwrap_or_else(|| raw.clone());
        let message = QueueMessage {
            text,
            raw,
            message_id: taken.id.clone(),
            dequeue_count,
        };
        if dequeue_count > behaviour.max_dequeue_count {
            // Taken too often without completing (e.g. the worker died each time).
            let reason = format!(
                "taken {} times without finishing (the worker was stopped or timed out each time)",
                dequeue_count - 1
            );
            move_to_poison(app, work_queue, queue, &held, &message, &reason).await;
            return;
        }
        let invoke = dispatch::invoke_queue_function(app, work_queue, &message);
        let invocation = async {
            match behaviour.function_timeout {
                Some(limit) => tokio::time::timeout(limit, invoke)
                    .await
                    .unwrap_or_else(|_| Err(format!("functionTimeout ({limit:?}) reached"))),
                None => invoke.await,
            }
        };
        match while_hidden(queue, &held, behaviour, invocation).await {
            Ok(outcome) => {
                if let Err(e) = held.delete(queue).await {
                    warn!(error = %e, %outcome, "processed, but the message could not be deleted; it will be processed again (idempotent)");
                }
            }
            Err(e) if dequeue_count >= behaviour.max_dequeue_count => {
                error!(error = %e, "failed on its last allowed attempt; moving it to the poison queue");
                move_to_poison(app, work_queue, queue, &held, &message, &e).await;
            }
            Err(e) => {
                warn!(error = %e, "failed; it will be retried");
                if let Err(e) = held.extend(queue, behaviour.retry_delay).await {
                    warn!(error = %e, "the message reappears when its visibility timeout ends");
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// Gives the message up as the host does ([`dispatch::give_up`]: the poison copy is written
/// byte for byte, a shard's job told), and only then deletes it: a failure in between leaves a
/// duplicate, never a loss.
async fn move_to_poison(
    app: &App,
    work_queue: WorkQueue,
    queue: &Queue,
    held: &Held,
    message: &QueueMessage,
    reason: &str,
) {
    if let Err(e) = dispatch::give_up(app, work_queue, message, reason).await {
        error!(error = %e, message_id = held.id, "could not write to the poison queue; the message stays on its queue and reappears");
        return;
    }
    if let Err(e) = held.delete(queue).await {
        warn!(error = %e, message_id = held.id, "poisoned, but the original could not be deleted; it may be poisoned twice");
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
        let span = tracing::info_span!("function", function = reconciliation::FUNCTION_NAME);
        let scheduled = reconciliation::handle(&app, false).instrument(span).await;
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
