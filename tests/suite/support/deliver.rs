//! Messages delivered to the functions as the Functions host delivers them: over HTTP to the
//! real binary ([`deliver`], [`ShardPump`]), or in this process through `host::dispatch`
//! ([`deliver_to`], [`deliver_all_shards`]).

use std::time::Duration;

use super::{drain_queue, worker};

/// Delivers a queue message to the consumer the way the Functions host does; returns the
/// invocation's HTTP status and reply.
pub async fn deliver(
    worker: &worker::Worker,
    text: &str,
    message_id: &str,
    dequeue_count: u32,
) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(worker.url("/QueueCreateBlobBackupADFv2"))
        .json(&serde_json::json!({
            "Data": {"message": text},
            "Metadata": {
                "Id": message_id,
                "DequeueCount": dequeue_count,
                "PopReceipt": "receipt",
                "InsertionTime": "2026-11-25T12:00:00+00:00",
                "sys": {"MethodName": "QueueCreateBlobBackupADFv2"}
            }
        }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The Functions host's queue trigger for the shard function, as far as the tests need it:
/// takes shards off `{BACKUP_QUEUE_NAME}-shards`, delivers each to the worker's
/// `/QueueSnapshotBackupShard` route as the host does, and deletes it once the invocation
/// succeeds. Stops when dropped.
pub struct ShardPump(tokio::task::JoinHandle<()>);

impl ShardPump {
    pub fn start(worker: &worker::Worker, jobs: &lakebackup::storage::StorageAccount) -> Self {
        let queue = jobs.queue("backup-requests-shards").unwrap();
        let url = worker.url("/QueueSnapshotBackupShard");
        ShardPump(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let received = queue
                    .take(16, Duration::from_secs(60))
                    .await
                    .unwrap_or_default();
                if received.is_empty() {
                    // The host's polling interval when its queue is empty: pacing, not a wait.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                for message in received {
                    use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
                    let decoded = String::from_utf8(BASE64.decode(&message.text).unwrap()).unwrap();
                    let response = client
                        .post(&url)
                        .json(&serde_json::json!({
                            "Data": {"message": decoded},
                            "Metadata": {
                                "Id": message.id,
                                "DequeueCount": message.dequeue_count,
                                "sys": {"MethodName": "QueueSnapshotBackupShard"}
                            }
                        }))
                        .send()
                        .await;
                    if response.is_ok_and(|r| r.status().is_success()) {
                        let _ = queue.delete(&message.id, &message.pop_receipt).await;
                    }
                }
            }
        }))
    }
}

impl Drop for ShardPump {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a queue function made of one message, delivered the way the host delivers it
/// (`host::dispatch`, the path `serve` and `run` share).
#[derive(Debug)]
pub enum Delivered<T> {
    Done(T),
    /// Found unusable: moved to the poison queue unchanged, for this reason.
    Poisoned(String),
}

impl<T: std::fmt::Debug> Delivered<T> {
    /// The outcome; panics when the message was poisoned.
    pub fn done(self) -> T {
        match self {
            Delivered::Done(outcome) => outcome,
            Delivered::Poisoned(reason) => panic!("poisoned: {reason}"),
        }
    }
}

/// Delivers `text` to the function of `queue` as its `dequeue_count`th delivery; `Err` is a
/// failed invocation (the host would retry it).
pub async fn deliver_to<T: serde::de::DeserializeOwned>(
    app: &lakebackup::app::App,
    queue: lakebackup::app::WorkQueue,
    text: &str,
    dequeue_count: u64,
) -> Result<Delivered<T>, String> {
    use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
    let message = lakebackup::host::dispatch::QueueMessage {
        text: text.to_owned(),
        raw: BASE64.encode(text),
        message_id: "message".into(),
        dequeue_count,
    };
    let value = lakebackup::host::dispatch::invoke_queue_function(app, queue, &message).await?;
    if value["outcome"] == "poisoned" {
        return Ok(Delivered::Poisoned(
            value["reason"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    Ok(Delivered::Done(
        serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("outcome {value}: {e}")),
    ))
}

/// Delivers every shard on the shard queue until it is empty, as the host would (first
/// deliveries). Returns how many deliveries ran a part.
pub async fn deliver_all_shards(app: &lakebackup::app::App) -> usize {
    let queue = app.jobs.queue("backup-requests-shards").unwrap();
    let mut ran = 0;
    loop {
        let texts = drain_queue(&queue).await;
        if texts.is_empty() {
            return ran;
        }
        for text in texts {
            use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
            let decoded = BASE64
                .decode(text.trim())
                .map(|b| String::from_utf8(b).unwrap())
                .unwrap_or(text);
            let shard = lakebackup::core::shard::Shard::parse(&decoded).unwrap();
            match lakebackup::engine::jobs::run_delivered(app, &shard, false)
                .await
                .unwrap()
            {
                lakebackup::engine::jobs::Delivered::Ran(_) => ran += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
