//! `lakebackup run`, the functions without the Functions host: queue processing to empty,
//! poisoning after maxDequeueCount, the timer, the HTTP producer, and restarts that lose nothing.

use crate::support;

use std::time::Duration;

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use lakebackup::{app::WorkQueue, core::message::BackupRequest};
use support::worker::Standalone;

/// The common lake, with containers `lake` and `called`, worked off by `lakebackup run` processes in a
/// directory whose `host.json` the test gives.
struct Lake {
    lake: support::Lake,
    dir: tempfile::TempDir,
}

impl std::ops::Deref for Lake {
    type Target = support::Lake;

    fn deref(&self) -> &support::Lake {
        &self.lake
    }
}

impl Lake {
    async fn new(host_json: &str) -> Lake {
        let lake = support::Lake::start_with(
            &["lake", "called"],
            &[
                ("COPY_POLL_INTERVAL_MS", "50"),
                ("COPY_TIMEOUT_SECONDS", "20"),
                // A shard's budget and a copy must fit the 30 s functionTimeout below.
                ("SHARD_TIME_BUDGET_SECONDS", "5"),
                // A taken message stays hidden 3 s at a time (renewed while it is worked on),
                // so one taken by a worker that died reappears quickly.
                ("RUN_VISIBILITY_SECONDS", "3"),
            ],
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("host.json"), host_json).unwrap();
        Lake { lake, dir }
    }

    fn start(&self, extra: &[(&str, &str)], args: &[&str]) -> Standalone {
        Standalone::start(&self.settings_with(extra), self.dir.path(), args)
    }

    async fn upload_many(&self, prefix: &str, count: usize) {
        self.upload_many_to("lake", prefix, count).await
    }

    async fn upload_many_to(&self, container: &str, prefix: &str, count: usize) {
        let client = self.lake(container);
        for i in 0..count {
            support::upload(
                &client,
                &format!("{prefix}/blob-{i:03}.bin"),
                format!("{prefix} {i}").as_bytes(),
            )
            .await;
        }
    }

    /// Queues one backup request per blob of the lake, as an external producer (or the ADF
    /// engine's shards) would.
    async fn request_backups(&self) {
        let client = self.lake("lake");
        for (name, _) in support::list_all(&client).await {
            let (etag, _, _) = support::properties(&client, &name).await;
            self.app
                .enqueue_backup(&BackupRequest::new("lake", &name, &etag))
                .await
                .unwrap();
        }
    }

    /// Complete backups (stamped by the consumer) in lakebak.
    async fn backups(&self) -> usize {
        self.backups_of("lake").await
    }

    /// Complete backups (stamped by the consumer) in `{container}bak`.
    async fn backups_of(&self, container: &str) -> usize {
        let container = self.vault(container);
        if !container.exists().await.unwrap() {
            return 0;
        }
        let mut complete = 0;
        for (name, _) in support::list_all(&container).await {
            let (_, _, metadata) = support::properties(&container, &name).await;
            complete += usize::from(metadata.contains_key("lakebackup_etag"));
        }
        complete
    }

    async fn wait_for_backups(&self, at_least: usize, within: Duration) -> usize {
        let what = format!("{at_least} backups");
        support::wait_for(within, &what, || async {
            let count = self.backups().await;
            (count >= at_least).then_some(count)
        })
        .await
    }

    /// Waits until `queue` holds no message, hidden ones included (a message a killed worker
    /// took reappears when its visibility ends, and is then handled and deleted).
    async fn wait_for_empty_queue(&self, queue: &str, within: Duration) {
        let client = self.queue(queue);
        let what = format!("{queue} empty");
        support::eventually(within, &what, || async {
            client.depth().await.ok().flatten() == Some(0)
        })
        .await
    }

    async fn queue_texts(&self, queue: &str) -> Vec<String> {
        let client = self.queue(queue);
        if !support::queue_exists(&client).await {
            return Vec::new();
        }
        support::drain_queue(&client).await
    }

    /// Waits until the poison queue has held at least `count` messages, and returns them.
    async fn wait_for_poisoned(&self, count: usize, within: Duration) -> Vec<String> {
        let poisoned = std::cell::RefCell::new(Vec::new());
        support::wait_for(within, "poisoned messages", || async {
            let texts = self.queue_texts("backup-requests-poison").await;
            let mut poisoned = poisoned.borrow_mut();
            poisoned.extend(texts);
            (poisoned.len() >= count).then(|| poisoned.clone())
        })
        .await
    }
}

const FAST_HOST_JSON: &str = r#"{"version": "2.0", "functionTimeout": "00:00:30",
  "extensions": {"queues": {"maxDequeueCount": 5, "batchSize": 4, "visibilityTimeout": "00:00:00.5", "maxPollingInterval": "00:00:00.2"}}}"#;

#[tokio::test]
async fn runs_the_timer_queue_and_http_producer_until_everything_is_backed_up() {
    let lake = Lake::new(FAST_HOST_JSON).await;
    lake.upload_many("timer", 5).await;
    let address = format!("127.0.0.1:{}", support::closed_port());
    // The timer reconciles `lake` only: the producer's container is the producer's alone, so
    // what it answers cannot depend on whether a reconciliation came first.
    let runner = lake.start(
        &[
            ("RECONCILE_SCHEDULE", "*/2 * * * * *"),
            ("RECONCILE_CONTAINERS", "lake"),
        ],
        &["--http", &address],
    );

    // Nobody called the producer: the scheduled reconciliation finds the blobs and the queue
    // loop backs them up.
    lake.wait_for_backups(5, Duration::from_secs(60)).await;

    lake.upload_many_to("called", "http", 3).await;
    let url =
        format!("http://{address}/api/HttpSnapshotIncBackupContainerProducer?container=called");
    let reply: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    // The producer's job ran on this process's shard queue: answered done, with its totals.
    assert_eq!(reply["status"], "done", "{reply}");
    assert_eq!(reply["backups_copied"], 3, "{reply}");
    assert_eq!(lake.backups_of("called").await, 3);

    assert_eq!(runner.terminate(), 0, "clean shutdown");
    assert!(lake.queue_texts("backup-requests").await.is_empty());
    assert_eq!(lake.backups().await, 5, "one backup per version");
    assert_eq!(lake.backups_of("called").await, 3, "one backup per version");
}

#[tokio::test]
async fn failing_and_malformed_messages_end_in_the_poison_queue_unchanged() {
    let lake = Lake::new(
        r#"{"version": "2.0", "extensions": {"queues": {"maxDequeueCount": 2, "visibilityTimeout": "00:00:00.2", "maxPollingInterval": "00:00:00.2"}}}"#,
    )
    .await;
    lake.upload_many("p", 1).await;
    let request = BackupRequest::new("lake", "p/blob-000.bin", "0x1");
    let (etag, _, _) = support::properties(&lake.lake("lake"), "p/blob-000.bin").await;
    let request = BackupRequest { etag, ..request };
    lake.app.enqueue_backup(&request).await.unwrap();
    let queue = lake.app.queue(WorkQueue::Backups).await.unwrap();
    queue
        .send(BASE64.encode("this is no request"), None, "a message")
        .await
        .unwrap();

    // The backup account is unreachable: every attempt at the real request fails.
    let unreachable = support::unreachable_connection("backup", support::azurite::BACKUP_KEY);
    let runner = lake.start(&[("BACKUP_STORAGE", &unreachable)], &[]);
    let poisoned = lake.wait_for_poisoned(2, Duration::from_secs(90)).await;
    assert_eq!(runner.terminate(), 0);
    let mut decoded: Vec<String> = poisoned
        .iter()
        .map(|t| String::from_utf8(BASE64.decode(t).unwrap()).unwrap())
        .collect();
    decoded.sort();
    assert_eq!(
        decoded,
        ["this is no request".to_owned(), request.to_json()]
    );
    assert!(lake.queue_texts("backup-requests").await.is_empty());
}

#[tokio::test]
async fn restarts_mid_batch_lose_nothing() {
    let lake = Lake::new(FAST_HOST_JSON).await;
    // Enough that a clean stop lands mid-way even on a fast machine.
    lake.upload_many("r", 120).await;
    lake.request_backups().await;

    // A crash mid-batch: taken messages reappear after RUN_VISIBILITY_SECONDS (3 s here).
    let runner = lake.start(&[], &[]);
    let first = lake.wait_for_backups(1, Duration::from_secs(60)).await;
    runner.kill();
    // A clean stop mid-batch: in-flight messages finish, the rest stay queued. (Up to a batch
    // of 4 copies the dead worker had sent may still land: wait for one more than that, so the
    // new worker is surely at work.)
    let runner = lake.start(&[], &[]);
    lake.wait_for_backups(first + 5, Duration::from_secs(60))
        .await;
    assert_eq!(runner.terminate(), 0);
    assert!(lake.backups().await < 120, "stopped mid-batch");

    let runner = lake.start(&[], &[]);
    lake.wait_for_backups(120, Duration::from_secs(120)).await;
    // Any message the crash left hidden reappears and is found already backed up.
    lake.wait_for_empty_queue("backup-requests", Duration::from_secs(60))
        .await;
    assert_eq!(runner.terminate(), 0);
    assert_eq!(lake.backups().await, 120, "exactly one backup per version");
    assert!(
        lake.queue_texts("backup-requests").await.is_empty(),
        "nothing left behind"
    );
    assert!(
        lake.queue_texts("backup-requests-poison").await.is_empty(),
        "nothing poisoned"
    );
}

#[tokio::test]
async fn a_copy_longer_than_the_visibility_window_is_kept_hidden_and_taken_once() {
    // functionTimeout -1: no limit, as on a Premium plan.
    let lake = Lake::new(
        r#"{"version": "2.0", "functionTimeout": "-1", "extensions": {"queues": {"maxPollingInterval": "00:00:00.2"}}}"#,
    )
    .await;
    // About 6 s of polls at 50 ms: three visibility windows of 2 s.
    let standin = support::adf::AdfStandIn::on(&lake, 120, support::adf::RunEnd::Succeeded).await;
    lake.upload_many("long", 1).await;
    lake.request_backups().await;
    let mut extra: Vec<(String, String)> = standin.settings().into_iter().collect();
    // Unleased, a second taking of the message would start a second pipeline run.
    extra.push(("BACKUP_USE_LEASE".into(), "false".into()));
    extra.push(("RUN_VISIBILITY_SECONDS".into(), "2".into()));
    let extra: Vec<(&str, &str)> = extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let runner = lake.start(&extra, &[]);
    lake.wait_for_backups(1, Duration::from_secs(60)).await;
    // Deleted once handled: a message taken again would be held until its second run ended.
    lake.wait_for_empty_queue("backup-requests", Duration::from_secs(60))
        .await;
    assert_eq!(runner.terminate(), 0);
    assert_eq!(
        standin.record(|r| r.runs.len()),
        1,
        "the message was taken twice"
    );
    assert!(lake.queue_texts("backup-requests").await.is_empty());
    assert!(lake.queue_texts("backup-requests-poison").await.is_empty());
}

#[tokio::test]
async fn a_poisoned_message_is_byte_identical_to_what_was_queued() {
    let lake = Lake::new(
        r#"{"version": "2.0", "extensions": {"queues": {"maxPollingInterval": "00:00:00.2"}}}"#,
    )
    .await;
    let queue = lake.app.queue(WorkQueue::Backups).await.unwrap();
    // Plain text, not base64: re-encoding it would change its bytes.
    let raw = r#"{"container": "lake", "blob_name": "x.csv"}"#;
    queue.send(raw.to_owned(), None, "a message").await.unwrap();
    let runner = lake.start(&[], &[]);
    let poisoned = lake.wait_for_poisoned(1, Duration::from_secs(30)).await;
    assert_eq!(runner.terminate(), 0);
    assert_eq!(poisoned, [raw.to_owned()]);
    assert!(lake.queue_texts("backup-requests").await.is_empty());
}
