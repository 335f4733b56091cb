//! Benchmark: from a write to its stamped backup, through blob events, with `lakebackup run`.
//!
//! On a fresh Azurite: N times (default 40), one after the other, write a blob and queue its
//! `BlobCreated` event as Event Grid would (base64, Event Grid schema), then poll (every 20 ms)
//! until the version's stamped backup exists: the latency. The floor, in the same run: the same
//! event handed straight to the events function in-process (no queue, no polling), timed until
//! it returns. Prints median and p95 of both, and the ratio of the medians. `lakebackup run`
//! polls an empty queue at the shipped `host.json`'s `maxPollingInterval`.
//!
//! Run: `scripts/bench.sh events [N]` or `cargo bench --bench events -- 40`.

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use lakebackup::{
    app::{App, WorkQueue},
    core::{event::parse_event, naming, stamp},
    engine::events,
    settings::Settings,
};
use lakebackup_devtools::azurite::Azurite;

const QUEUE: &str = "bench-events";

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(40);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(bench(n));
}

fn event(container: &str, blob: &str, etag: &str) -> String {
    serde_json::json!({
        "topic": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/source",
        "subject": format!("/blobServices/default/containers/{container}/blobs/{blob}"),
        "eventType": "Microsoft.Storage.BlobCreated",
        "eventTime": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap(),
        "id": blob,
        "data": {"api": "PutBlob", "eTag": etag, "blobType": "BlockBlob"},
        "dataVersion": "", "metadataVersion": "1"
    })
    .to_string()
}

fn percentile(mut values: Vec<Duration>, p: f64) -> Duration {
    values.sort();
    let at = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[at]
}

async fn bench(n: usize) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let azurite = Azurite::start_in(root).expect("Azurite starts (run `npm ci` first)");
    let settings = HashMap::from([
        ("SOURCE_STORAGE".to_owned(), azurite.source()),
        ("BACKUP_STORAGE".to_owned(), azurite.backup()),
        ("AzureWebJobsStorage".to_owned(), azurite.jobs()),
        ("EVENTS_QUEUE_NAME".to_owned(), QUEUE.to_owned()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ]);
    let app = App::from_settings(&Settings::from_pairs(settings.clone())).unwrap();
    let lake = app.source.container("lake").unwrap();
    lake.create().await.unwrap();
    let vault = app.backup.container("lakebak").unwrap();
    let queue = app.queue(WorkQueue::Events).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root.join("host.json"), dir.path().join("host.json")).unwrap();
    let mut run = Command::new(env!("CARGO_BIN_EXE_lakebackup"))
        .arg("run")
        .current_dir(dir.path())
        .env_clear()
        .envs(&settings)
        .stdin(Stdio::null())
        .spawn()
        .expect("lakebackup run starts");
    // Let it start polling.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let write = |name: String| {
        let lake = &lake;
        async move {
            let blob = lake.blob(&name);
            blob.upload(name.clone().into_bytes()).await.unwrap();
            let state = blob.state().await.unwrap().unwrap();
            let version = state.version;
            let backup =
                naming::backup_blob_name(&name, version.last_modified, &version.etag).unwrap();
            (name, version.etag, backup)
        }
    };
    let mut latencies = Vec::new();
    for i in 0..n {
        let (name, etag, backup) = write(format!("queued/blob-{i:04}.csv")).await;
        let started = Instant::now();
        let message = BASE64.encode(event("lake", &name, &etag));
        queue.send(message, None, "an event").await.unwrap();
        let backup = vault.blob(&backup);
        loop {
            let stamped = backup
                .state()
                .await
                .ok()
                .flatten()
                .is_some_and(|s| stamp::stamped_etag(s.metadata()) == Some(etag.as_str()));
            if stamped {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{name} never backed up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        latencies.push(started.elapsed());
    }
    let _ = run.kill();
    let _ = run.wait();

    let mut floor = Vec::new();
    for i in 0..n {
        let (name, etag, _) = write(format!("direct/blob-{i:04}.csv")).await;
        let started = Instant::now();
        let event = parse_event(&event("lake", &name, &etag)).unwrap();
        let outcome = events::handle(&app, &event).await.unwrap();
        assert!(
            matches!(outcome, events::EventOutcome::Protected { .. }),
            "{outcome:?}"
        );
        floor.push(started.elapsed());
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (median, p95) = (
        percentile(latencies.clone(), 0.5),
        percentile(latencies, 0.95),
    );
    let (floor_median, floor_p95) = (percentile(floor.clone(), 0.5), percentile(floor, 0.95));
    println!();
    println!(
        "{:>5} {:>16} {:>13} {:>16} {:>13} {:>7}",
        "N", "run median ms", "run p95 ms", "direct median ms", "direct p95 ms", "ratio"
    );
    println!(
        "{:>5} {:>16.0} {:>13.0} {:>16.0} {:>13.0} {:>7.1}",
        n,
        ms(median),
        ms(p95),
        ms(floor_median),
        ms(floor_p95),
        ms(median) / ms(floor_median)
    );
}
