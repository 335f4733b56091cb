//! Shared test support: Azurite, and small helpers over the SDK for arranging and checking data.
#![allow(dead_code)]

pub mod adf;
pub mod azurite;
pub mod keys_off;
pub mod proxy;
pub mod worker;

use azure_core::http::RequestContent;
use azure_storage_blob::BlobContainerClient;
use futures::TryStreamExt;

pub use azurite::Azurite;

pub async fn upload(container: &BlobContainerClient, name: &str, bytes: &[u8]) {
    container
        .blob_client(name)
        .upload(RequestContent::from(bytes.to_vec()), None)
        .await
        .unwrap_or_else(|e| panic!("upload {name}: {e}"));
}

/// Deletes a blob with its snapshots (a blob with snapshots is not deleted on its own).
pub async fn delete_with_snapshots(container: &BlobContainerClient, name: &str) {
    container
        .blob_client(name)
        .delete(Some(azure_storage_blob::models::BlobClientDeleteOptions {
            delete_snapshots: Some(azure_storage_blob::models::DeleteSnapshotsOptionType::Include),
            ..Default::default()
        }))
        .await
        .unwrap_or_else(|e| panic!("delete {name} with its snapshots: {e}"));
}

pub async fn download(container: &BlobContainerClient, name: &str) -> Vec<u8> {
    container
        .blob_client(name)
        .download(None)
        .await
        .unwrap_or_else(|e| panic!("download {name}: {e}"))
        .body
        .collect()
        .await
        .unwrap()
        .to_vec()
}

/// `(name, snapshot)` of every entry, snapshots included.
pub async fn list_all(container: &BlobContainerClient) -> Vec<(String, Option<String>)> {
    list_versions(container)
        .await
        .into_iter()
        .map(|(name, snapshot, _)| (name, snapshot))
        .collect()
}

/// `(name, snapshot, etag without quotes)` of every entry, snapshots included.
pub async fn list_versions(
    container: &BlobContainerClient,
) -> Vec<(String, Option<String>, String)> {
    use azure_storage_blob::models::{BlobContainerClientListBlobsOptions, ListBlobsIncludeItem};
    let options = BlobContainerClientListBlobsOptions {
        include: Some(vec![ListBlobsIncludeItem::Snapshots]),
        ..Default::default()
    };
    let mut pages = container.list_blobs(Some(options)).unwrap().into_pages();
    let mut entries = Vec::new();
    while let Some(page) = pages.try_next().await.unwrap() {
        for item in page.into_model().unwrap().blob_items {
            let etag = item.properties.unwrap().etag.unwrap().to_string();
            entries.push((
                item.name.unwrap(),
                item.snapshot.filter(|s| !s.is_empty()),
                etag.trim_matches('"').to_owned(),
            ));
        }
    }
    entries
}

/// Takes every message off `queue` (hidden for five minutes, so each is read once) and returns
/// their texts.
pub async fn drain_queue(queue: &azure_storage_queue::QueueClient) -> Vec<String> {
    use azure_storage_queue::models::QueueClientReceiveMessagesOptions;
    let mut texts = Vec::new();
    loop {
        let batch = queue
            .receive_messages(Some(QueueClientReceiveMessagesOptions {
                number_of_messages: Some(32),
                visibility_timeout: Some(300),
                ..Default::default()
            }))
            .await
            .expect("receive messages")
            .into_model()
            .expect("messages parse")
            .items
            .unwrap_or_default();
        if batch.is_empty() {
            return texts;
        }
        texts.extend(batch.into_iter().filter_map(|m| m.message_text));
    }
}

/// Waits until messages put on `queue` with a visibility delay of up to `seconds` have become
/// visible, then takes them all.
pub async fn drain_queue_after(
    queue: &azure_storage_queue::QueueClient,
    seconds: u64,
) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        let texts = drain_queue(queue).await;
        if !texts.is_empty() || std::time::Instant::now() >= deadline {
            return texts;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// (ETag without quotes, last-modified, metadata) of a blob.
pub async fn properties(
    container: &BlobContainerClient,
    name: &str,
) -> (
    String,
    time::OffsetDateTime,
    std::collections::HashMap<String, String>,
) {
    use azure_storage_blob::models::BlobClientGetPropertiesResultHeaders;
    let response = container
        .blob_client(name)
        .get_properties(None)
        .await
        .unwrap_or_else(|e| panic!("properties of {name}: {e}"));
    (
        response
            .etag()
            .unwrap()
            .unwrap()
            .to_string()
            .trim_matches('"')
            .to_owned(),
        response.last_modified().unwrap().unwrap(),
        response.metadata().unwrap(),
    )
}

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

/// The backup request for the current version of `name`.
pub async fn request_for(
    container: &BlobContainerClient,
    container_name: &str,
    name: &str,
) -> String {
    let (etag, _, _) = properties(container, name).await;
    serde_json::json!({"container": container_name, "blob_name": name, "etag": etag}).to_string()
}

/// A loopback port nobody listens on (bound, then released).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// An account-key connection string for `account` whose blob endpoint nobody answers.
pub fn unreachable_connection(account: &str, key: &str) -> String {
    format!(
        "AccountName={account};AccountKey={key};BlobEndpoint=http://127.0.0.1:{}/{account}",
        closed_port()
    )
}

/// Azurite, the worker's `App` on it (settings as a Function App would have them), and
/// `containers` created in the source account.
pub async fn app_on_azurite(containers: &[&str]) -> (Azurite, lakebackup::app::App) {
    let azurite = Azurite::start();
    let settings = lakebackup::settings::Settings::from_pairs(worker::settings(&azurite));
    let app = lakebackup::app::App::from_settings(&settings).unwrap();
    for container in containers {
        app.source
            .container_client(container)
            .unwrap()
            .create(None)
            .await
            .unwrap_or_else(|e| panic!("create {container}: {e}"));
    }
    (azurite, app)
}

/// The Functions host's queue trigger for the shard function, as far as the tests need it:
/// takes shards off `{BACKUP_QUEUE_NAME}-shards`, delivers each to the worker's
/// `/QueueSnapshotBackupShard` route as the host does, and deletes it once the invocation
/// succeeds. Stops when dropped.
pub struct ShardPump(tokio::task::JoinHandle<()>);

impl ShardPump {
    pub fn start(worker: &worker::Worker, jobs: &lakebackup::storage::StorageAccount) -> Self {
        use azure_storage_queue::models::QueueClientReceiveMessagesOptions;
        let queue = jobs.queue_client("backup-requests-shards").unwrap();
        let url = worker.url("/QueueSnapshotBackupShard");
        ShardPump(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let received = queue
                    .receive_messages(Some(QueueClientReceiveMessagesOptions {
                        number_of_messages: Some(16),
                        visibility_timeout: Some(60),
                        ..Default::default()
                    }))
                    .await
                    .ok()
                    .and_then(|r| r.into_model().ok())
                    .and_then(|m| m.items)
                    .unwrap_or_default();
                if received.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
                for message in received {
                    use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
                    let text = message.message_text.clone().unwrap_or_default();
                    let decoded = String::from_utf8(BASE64.decode(&text).unwrap()).unwrap();
                    let response = client
                        .post(&url)
                        .json(&serde_json::json!({
                            "Data": {"message": decoded},
                            "Metadata": {
                                "Id": message.message_id,
                                "DequeueCount": message.dequeue_count,
                                "sys": {"MethodName": "QueueSnapshotBackupShard"}
                            }
                        }))
                        .send()
                        .await;
                    if response.is_ok_and(|r| r.status().is_success()) {
                        let (Some(id), Some(receipt)) = (message.message_id, message.pop_receipt)
                        else {
                            continue;
                        };
                        let _ = queue.delete_message(&id, &receipt, None).await;
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

/// The records of lives in a backup container (deletions and returns), with when each was seen.
pub async fn life_records(
    vault: &BlobContainerClient,
) -> Vec<(lakebackup::core::life::Record, Option<time::OffsetDateTime>)> {
    let mut records = Vec::new();
    for (name, _) in list_all(vault).await {
        if let Some(record) = lakebackup::core::life::Record::parse(&name) {
            let (_, _, metadata) = properties(vault, &name).await;
            let seen = lakebackup::core::life::seen_in(&metadata, lakebackup::core::life::SEEN_KEY);
            records.push((record, seen));
        }
    }
    records
}

/// Writes the record that `name`'s life ending at `etag` was seen deleted at `seen`, as a pass
/// would have.
pub async fn record_deletion(
    vault: &BlobContainerClient,
    name: &str,
    etag: &str,
    seen: time::OffsetDateTime,
) {
    let record =
        lakebackup::core::life::Record::new(name, etag, lakebackup::core::life::Change::Deleted, 1);
    vault
        .blob_client(&record.blob_name().unwrap())
        .upload(
            RequestContent::from(Vec::new()),
            Some(azure_storage_blob::models::BlobClientUploadOptions {
                metadata: Some(lakebackup::core::life::record_metadata(seen)),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
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

/// Writes `bytes` as one block and a block list: the service keeps `md5` exactly as given, or
/// none, without checking it (Azure documents it; Azurite 3.37 does the same), as for blobs ADF,
/// DFS and large uploads write.
pub async fn put_block_list(
    container: &BlobContainerClient,
    name: &str,
    bytes: &[u8],
    md5: Option<Vec<u8>>,
) {
    use azure_storage_blob::models::{BlockBlobClientCommitBlockListOptions, BlockLookupList};
    let block = container.blob_client(name).block_blob_client();
    block
        .stage_block(
            b"block-0",
            bytes.len() as u64,
            RequestContent::from(bytes.to_vec()),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("stage a block of {name}: {e}"));
    let list = BlockLookupList {
        latest: Some(vec![b"block-0".to_vec()]),
        ..Default::default()
    };
    block
        .commit_block_list(
            list.try_into().unwrap(),
            Some(BlockBlobClientCommitBlockListOptions {
                blob_content_md5: md5,
                ..Default::default()
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("commit the block list of {name}: {e}"));
}

/// Waits until the wall clock has passed into the next whole second. Azure reports
/// Last-Modified to the second, so two writes (or a write and an instant) are told apart only
/// across a second boundary: this waits for exactly that, never a fixed time.
pub async fn next_second() {
    let now = time::OffsetDateTime::now_utc();
    let into_second = std::time::Duration::from_nanos(u64::from(now.nanosecond()));
    // A few milliseconds past the boundary: the emulator's clock is this machine's.
    let left =
        std::time::Duration::from_secs(1) - into_second + std::time::Duration::from_millis(5);
    tokio::time::sleep(left).await;
}

/// Now, as RFC 3339.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Delivers every shard on the shard queue until it is empty, as the host would (first
/// deliveries). Returns how many deliveries ran a part.
pub async fn deliver_all_shards(app: &lakebackup::app::App) -> usize {
    let queue = app.jobs.queue_client("backup-requests-shards").unwrap();
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
            let shard = lakebackup::engine::jobs::Shard::parse(&decoded).unwrap();
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
