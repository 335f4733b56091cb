//! Shared test support: Azurite and the lake on it ([`Lake`]), waiting for a condition
//! ([`wait_for`], [`next_second`]), and small helpers for arranging and checking data over the
//! product's storage seam (`lakebackup::storage`, with its `testing` operations).
#![allow(dead_code)]

pub mod adf;
pub mod azurite;
pub mod keys_off;
pub mod proxy;
pub mod worker;

use std::{collections::HashMap, future::Future, time::Duration};

use lakebackup::{
    app::App,
    settings::Settings,
    storage::{testing::NewBlob, Container, Queue},
};

pub use azurite::Azurite;

/// Azurite with its source, backup and jobs accounts, the worker's `App` on it with the settings
/// a Function App would have (and the test's own), and containers created in the lake: where
/// most tests start. The `App` arranges and checks; the worker under test runs with
/// [`Lake::settings`].
pub struct Lake {
    pub azurite: Azurite,
    pub app: App,
    settings: HashMap<String, String>,
}

impl Lake {
    /// The lake with `containers`, and the Function App's default settings.
    pub async fn start(containers: &[&str]) -> Lake {
        Lake::start_with(containers, &[]).await
    }

    /// The lake with `containers`, and the Function App's settings with `extra`.
    pub async fn start_with(containers: &[&str], extra: &[(&str, &str)]) -> Lake {
        Lake::on(Azurite::start(), containers, extra).await
    }

    /// The lake on `azurite` (started as the test needs it), as [`Lake::start_with`].
    pub async fn on(azurite: Azurite, containers: &[&str], extra: &[(&str, &str)]) -> Lake {
        let settings = with(worker::settings(&azurite), extra);
        let app = App::from_settings(&Settings::from_pairs(settings.clone())).unwrap();
        for container in containers {
            app.source
                .container(container)
                .unwrap()
                .create()
                .await
                .unwrap_or_else(|e| panic!("create {container}: {e}"));
        }
        Lake {
            azurite,
            app,
            settings,
        }
    }

    /// The Function App's settings the lake was started with.
    pub fn settings(&self) -> HashMap<String, String> {
        self.settings.clone()
    }

    /// The Function App's settings with `extra` besides.
    pub fn settings_with(&self, extra: &[(&str, &str)]) -> HashMap<String, String> {
        with(self.settings(), extra)
    }

    /// Container `name` of the lake (the source account).
    pub fn lake(&self, name: &str) -> Container {
        self.app.source.container(name).unwrap()
    }

    /// The backup container of the lake's `container`: `{container}bak`.
    pub fn vault(&self, container: &str) -> Container {
        self.app
            .backup
            .container(&format!("{container}bak"))
            .unwrap()
    }

    /// Queue `name` of the jobs account (`AzureWebJobsStorage`).
    pub fn queue(&self, name: &str) -> Queue {
        self.app.jobs.queue(name).unwrap()
    }

    /// `lakebackup serve` with the lake's settings and `extra`.
    pub fn serve(&self, extra: &[(&str, &str)]) -> worker::Worker {
        worker::Worker::serve(&self.settings_with(extra))
    }

    /// `lakebackup ARGS` with the lake's settings, to completion: (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        worker::run_once(&self.settings, args)
    }
}

/// `settings` with `extra` set (replacing what they name).
pub fn with(
    mut settings: HashMap<String, String>,
    extra: &[(&str, &str)],
) -> HashMap<String, String> {
    settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    settings
}

/// Waits until `condition` gives a value and returns it, trying again every 50 ms; panics
/// naming `what` when it has given none within `within`. The one way a test waits for
/// something to happen: never a fixed sleep.
pub async fn wait_for<T, F, Fut>(within: Duration, what: &str, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// As [`wait_for`], for a caller that is not async (a child process starting or stopping).
pub fn wait_for_blocking<T>(
    within: Duration,
    what: &str,
    mut condition: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `condition` holds (see [`wait_for`]).
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(within, what, || {
        let holds = condition();
        async move { holds.await.then_some(()) }
    })
    .await
}

pub async fn upload(container: &Container, name: &str, bytes: &[u8]) {
    container
        .blob(name)
        .upload(bytes)
        .await
        .unwrap_or_else(|e| panic!("upload {name}: {e}"));
}

/// Uploads `bytes` with `new`'s metadata, headers, tags and tier.
pub async fn upload_with(container: &Container, name: &str, bytes: &[u8], new: &NewBlob) {
    container
        .blob(name)
        .upload_with(bytes, new)
        .await
        .unwrap_or_else(|e| panic!("upload {name}: {e}"));
}

/// Deletes a blob with its snapshots (a blob with snapshots is not deleted on its own).
pub async fn delete_with_snapshots(container: &Container, name: &str) {
    container
        .blob(name)
        .delete_with_snapshots()
        .await
        .unwrap_or_else(|e| panic!("delete {name} with its snapshots: {e}"));
}

pub async fn download(container: &Container, name: &str) -> Vec<u8> {
    container
        .blob(name)
        .read(None)
        .await
        .unwrap_or_else(|e| panic!("download {name}: {e}"))
        .bytes
}

/// Every base blob's bytes; nothing for a container that does not exist.
pub async fn contents(container: &Container) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut contents = std::collections::BTreeMap::new();
    if !container.exists().await.unwrap() {
        return contents;
    }
    for (name, snapshot) in list_all(container).await {
        if snapshot.is_none() {
            let bytes = download(container, &name).await;
            contents.insert(name, bytes);
        }
    }
    contents
}

/// `(name, snapshot)` of every entry, snapshots included.
pub async fn list_all(container: &Container) -> Vec<(String, Option<String>)> {
    list_versions(container)
        .await
        .into_iter()
        .map(|(name, snapshot, _)| (name, snapshot))
        .collect()
}

/// `(name, snapshot, etag without quotes)` of every entry, snapshots included.
pub async fn list_versions(container: &Container) -> Vec<(String, Option<String>, String)> {
    container
        .entries()
        .await
        .unwrap_or_else(|e| panic!("list {}: {e}", container.name()))
        .into_iter()
        .map(|entry| (entry.name, entry.snapshot, entry.etag))
        .collect()
}

/// Takes every message off `queue` (hidden for five minutes, so each is read once) and returns
/// their texts.
pub async fn drain_queue(queue: &Queue) -> Vec<String> {
    let mut texts = Vec::new();
    loop {
        let batch = queue
            .take(32, Duration::from_secs(300))
            .await
            .expect("receive messages");
        if batch.is_empty() {
            return texts;
        }
        texts.extend(batch.into_iter().map(|m| m.text));
    }
}

/// Waits until messages put on `queue` with a visibility delay of up to `seconds` have become
/// visible, then takes them all.
pub async fn drain_queue_after(queue: &Queue, seconds: u64) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    wait_for(Duration::from_secs(seconds + 5), "messages", || async {
        let texts = drain_queue(queue).await;
        (!texts.is_empty() || tokio::time::Instant::now() >= deadline).then_some(texts)
    })
    .await
}

/// Whether `queue` exists.
pub async fn queue_exists(queue: &Queue) -> bool {
    queue.depth().await.expect("queue properties").is_some()
}

/// (ETag without quotes, last-modified, metadata) of a blob.
pub async fn properties(
    container: &Container,
    name: &str,
) -> (String, time::OffsetDateTime, HashMap<String, String>) {
    let version = container
        .blob(name)
        .probe()
        .await
        .unwrap_or_else(|e| panic!("properties of {name}: {e}"))
        .unwrap_or_else(|| panic!("properties of {name}: no such blob"))
        .version;
    (
        version.etag,
        version.last_modified,
        version.metadata.unwrap_or_default(),
    )
}

/// A producer job over the whole of `container`, run in this process (`lakebackup produce`): a
/// snapshot and a backup of every new version.
pub async fn produce(app: &App, container: &str) -> lakebackup::engine::jobs::LocalJob {
    let request = lakebackup::functions::producer::ProduceRequest {
        container: container.into(),
        prefix: String::new(),
    };
    lakebackup::functions::producer::run_here(app, &request)
        .await
        .unwrap_or_else(|e| panic!("produce {container}: {e}"))
}

/// The restore of the whole of `container` from `from` into `to` (in place when `None`) as of
/// `as_of` (the newest versions when `None`): what `lakebackup restore` asks without other
/// options. Set the other fields with `..`.
pub fn restore_request(
    container: &str,
    from: lakebackup::core::restore_plan::RestoreFrom,
    to: Option<&str>,
    as_of: Option<time::OffsetDateTime>,
) -> lakebackup::engine::restore::RestoreRequest {
    lakebackup::engine::restore::RestoreRequest {
        container: container.into(),
        prefix: None,
        blob: None,
        as_of,
        from,
        to_container: to.map(str::to_owned),
        to_account: false,
        dry_run: false,
        verify_content: false,
    }
}

/// `len` bytes that do not repeat, the same for the same `seed`: no compression or framing
/// leaves them alike by accident.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
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
pub async fn request_for(container: &Container, name: &str) -> String {
    let (etag, _, _) = properties(container, name).await;
    serde_json::json!({"container": container.name(), "blob_name": name, "etag": etag}).to_string()
}

/// An account-SAS connection string to `account` of `azurite` (`key`: its key, base64) with no
/// key, as a deployment gives a SAS setting: `services` (`b`, `q`, `bq`) and `permissions` on
/// every resource type, until `expiry`.
pub fn sas_connection(
    azurite: &Azurite,
    account: &str,
    key: &str,
    services: &str,
    permissions: &str,
    expiry: time::OffsetDateTime,
) -> String {
    use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
    let grant = lakebackup::storage::sas::AccountSasGrant {
        services,
        resource_types: "sco",
        permissions,
        expiry,
    };
    let key = BASE64.decode(key).expect("a base64 key");
    let sas = lakebackup::storage::testing::account_sas(account, &key, grant);
    format!(
        "BlobEndpoint={};QueueEndpoint={};SharedAccessSignature={sas}",
        azurite.blob_endpoint(account),
        azurite.queue_endpoint(account)
    )
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

/// The records of lives in a backup container (deletions and returns), with when each was seen.
pub async fn life_records(
    vault: &Container,
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
    vault: &Container,
    name: &str,
    etag: &str,
    seen: time::OffsetDateTime,
) {
    let record =
        lakebackup::core::life::Record::new(name, etag, lakebackup::core::life::Change::Deleted, 1);
    let new = NewBlob {
        metadata: lakebackup::core::life::record_metadata(seen),
        ..NewBlob::default()
    };
    upload_with(vault, &record.blob_name().unwrap(), b"", &new).await;
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
pub async fn put_block_list(container: &Container, name: &str, bytes: &[u8], md5: Option<Vec<u8>>) {
    let new = NewBlob {
        md5,
        ..NewBlob::default()
    };
    container
        .blob(name)
        .put_block_list(&[bytes], &new)
        .await
        .unwrap_or_else(|e| panic!("put the block list of {name}: {e}"));
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

/// An instant after every write so far, as RFC 3339: once the clock has passed into the next
/// second (restore reads a version's whole-second time as the end of its second).
pub async fn instant_after_writes() -> String {
    next_second().await;
    now_rfc3339()
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
