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

mod behaviour;

use std::{future::Future, sync::Arc, time::Duration};

use croner::Cron;
use thiserror::Error;
use tokio::{
    net::TcpListener,
    sync::{watch, Semaphore},
};
use tracing::{error, info, warn, Instrument};

pub use behaviour::{
    function_timeout_of, reconcile_schedule, QueueBehaviour, DEFAULT_RECONCILE_SCHEDULE,
};

use super::{
    dispatch::{self, QueueMessage},
    server,
};
use crate::{
    app::{App, WorkQueue},
    settings::SettingsError,
    storage::{Queue, StorageError, TakenMessage},
};

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
        let text = super::dispatch::decoded_text(&raw);
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
        let scheduled = dispatch::reconciliation_timer(&app, false).await;
        if scheduled.status != "queued" {
            error!(error = ?scheduled.error, "scheduling the reconciliation failed");
        }
    }
}
