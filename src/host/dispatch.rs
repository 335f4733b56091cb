//! The one table of the Function App's functions, shared by `serve` (the Functions host calls
//! them) and `run` (this process polls their queues and keeps their timer): what triggers each,
//! and the one path a queue message takes — to its function, and to the poison queue when the
//! function finds it unusable or the host gives it up.

use serde::Serialize;
use serde_json::{json, Value};
use tracing::{warn, Instrument};

use crate::{
    app::{App, WorkQueue},
    functions::{
        backup_requests, blob_events, producer, reconciliation, shards, Delivery, Handled,
    },
    telemetry,
};

/// What triggers a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// HTTP (the producer).
    Http,
    /// The timer (`RECONCILE_SCHEDULE`).
    Timer,
    /// Messages on a queue.
    Queue(WorkQueue),
}

/// One function of the Function App.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Function {
    pub name: &'static str,
    pub trigger: Trigger,
}

/// Every function, as `function.json` names it.
pub const FUNCTIONS: [Function; 5] = [
    Function {
        name: producer::FUNCTION_NAME,
        trigger: Trigger::Http,
    },
    Function {
        name: reconciliation::FUNCTION_NAME,
        trigger: Trigger::Timer,
    },
    Function {
        name: backup_requests::FUNCTION_NAME,
        trigger: Trigger::Queue(WorkQueue::Backups),
    },
    Function {
        name: shards::FUNCTION_NAME,
        trigger: Trigger::Queue(WorkQueue::Shards),
    },
    Function {
        name: blob_events::FUNCTION_NAME,
        trigger: Trigger::Queue(WorkQueue::Events),
    },
];

/// The queue functions, with their queues.
pub fn queue_functions() -> impl Iterator<Item = (&'static str, WorkQueue)> {
    FUNCTIONS.iter().filter_map(|f| match f.trigger {
        Trigger::Queue(queue) => Some((f.name, queue)),
        _ => None,
    })
}

/// One queue message on its way to its function.
#[derive(Debug, Clone)]
pub struct QueueMessage {
    /// The text as the function reads it (decoded from base64).
    pub text: String,
    /// The text exactly as it stands on the queue: what a poison copy carries.
    pub raw: String,
    pub message_id: String,
    pub dequeue_count: u64,
}

/// Runs the function of `queue` on one message: its outcome as the invocation's return value;
/// an unusable message moved to the poison queue unchanged (the invocation then succeeds,
/// `{"outcome":"poisoned","reason":…}`); a failure as text, for the host to retry.
pub async fn invoke_queue_function(
    app: &App,
    queue: WorkQueue,
    message: &QueueMessage,
) -> Result<Value, String> {
    let function = function_of(queue);
    let span = tracing::info_span!(
        "function",
        function,
        otel.name = function,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        message_id = %message.message_id,
        dequeue_count = message.dequeue_count,
    );
    async {
        let delivery = Delivery {
            text: message.text.clone(),
            message_id: message.message_id.clone(),
            last_attempt: message.dequeue_count >= app.config.max_dequeue_count,
        };
        let handled = match queue {
            WorkQueue::Backups => reply(backup_requests::handle(app, &delivery).await),
            WorkQueue::Shards => reply(shards::handle(app, &delivery).await),
            WorkQueue::Events => reply(blob_events::handle(app, &delivery).await),
        }
        .inspect_err(|_| {
            telemetry::record::failures(function, "invocation", 1);
            tracing::Span::current().record("otel.status_code", "error");
        })?;
        match handled {
            Handled::Done(outcome) => Ok(outcome),
            Handled::Unusable(reason) => {
                poison(app, queue, message, &reason, "unusable").await?;
                warn!(reason, "message moved to the poison queue unchanged");
                Ok(json!({"outcome": "poisoned", "reason": reason}))
            }
        }
    }
    .instrument(span)
    .await
}

/// The timer's invocation (the host's, or `lakebackup run`'s clock): reconciliation jobs
/// queued under a `function` span, a request in telemetry that fails when they could not be.
pub async fn reconciliation_timer(
    app: &App,
    past_due: bool,
) -> crate::engine::reconcile::ScheduledReconciliation {
    let span = tracing::info_span!(
        "function",
        function = reconciliation::FUNCTION_NAME,
        otel.name = reconciliation::FUNCTION_NAME,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
    );
    let scheduled = reconciliation::handle(app, past_due)
        .instrument(span.clone())
        .await;
    if scheduled.status != "queued" {
        span.record("otel.status_code", "error");
    }
    scheduled
}

/// The host gives a message up after its last allowed delivery failed (`lakebackup run` does
/// what the host does): a shard's job is told first; then the message goes to the poison queue,
/// byte for byte.
pub async fn give_up(
    app: &App,
    queue: WorkQueue,
    message: &QueueMessage,
    reason: &str,
) -> Result<(), String> {
    if queue == WorkQueue::Shards {
        shards::given_up(app, &message.text, reason).await;
    }
    poison(app, queue, message, reason, "given_up").await
}

/// The one way a message goes to its poison queue (with its `reason` recorded), counted by
/// queue and why (`unusable`, `given_up`).
async fn poison(
    app: &App,
    queue: WorkQueue,
    message: &QueueMessage,
    reason: &str,
    why: &'static str,
) -> Result<(), String> {
    app.poison(queue, &message.raw, reason)
        .await
        .map_err(|e| e.to_string())?;
    let name = queue.name(&app.config).unwrap_or_default();
    telemetry::record::poisoned(&name, why);
    Ok(())
}

/// The text the function of a queue reads from a message as it stands on the queue: the
/// queue trigger decodes base64; text that is not base64 is handed over as it is.
pub fn decoded_text(raw: &str) -> String {
    use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
    BASE64
        .decode(raw.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_else(|| raw.to_owned())
}

/// Whether the function of `queue` could read the message `raw` (as it stands on the queue):
/// the same typed parse it does first, so a message that fails it would only be poisoned again.
/// `Err` says why, as the function would.
pub fn readable(queue: WorkQueue, raw: &str) -> Result<(), String> {
    let text = decoded_text(raw);
    match queue {
        WorkQueue::Backups => backup_requests::parse_request(&text).map(drop),
        WorkQueue::Shards => {
            crate::core::shard::Shard::<crate::engine::jobs::Work>::parse(&text).map(drop)
        }
        WorkQueue::Events => crate::core::event::parse_event(&text).map(drop),
    }
}

fn function_of(queue: WorkQueue) -> &'static str {
    queue_functions()
        .find(|(_, q)| *q == queue)
        .map_or("", |(name, _)| name)
}

fn reply<T: Serialize, E: std::fmt::Display>(
    result: Result<Handled<T>, E>,
) -> Result<Handled<Value>, String> {
    match result {
        Ok(Handled::Done(outcome)) => Ok(Handled::Done(
            serde_json::to_value(&outcome).unwrap_or(Value::Null),
        )),
        Ok(Handled::Unusable(reason)) => Ok(Handled::Unusable(reason)),
        Err(e) => Err(e.to_string()),
    }
}
