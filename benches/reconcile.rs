//! Benchmark: a no-change reconcile pass against the raw listing floor, in the same run.
//!
//! For each N (default 10,000 and 100,000): seed Azurite with N blobs of 1 KiB spread over
//! directories, each with a snapshot of its current version and a complete backup, then time
//! (a) `lakebackup reconcile` (the release binary, a pass that finds nothing to do),
//! (b) the floor: the same list requests its shards make (per directory: the `{c}bak` level,
//!     whose listing holds the records of lives too, and the source level with snapshots,
//!     metadata and tags) fetched and discarded unparsed,
//! (c) the reconcile process's peak RSS.
//! Each is run `BENCH_ROUNDS` times (default 3), interleaved; the table shows medians.
//!
//! Run: `scripts/bench.sh` or `cargo bench --bench reconcile -- 10000 100000`.

use std::{
    collections::HashMap,
    io::Read,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use futures::StreamExt;
use lakebackup::{
    core::{naming, stamp::STAMP_ETAG},
    settings::Settings,
    storage::{
        sas::AccountSasGrant,
        testing::{account_sas, NewBlob},
        StorageAccount,
    },
};
use lakebackup_devtools::azurite::{Azurite, BACKUP_KEY, SOURCE_KEY};

const CONTAINER: &str = "bench";
const SEED_CONCURRENCY: usize = 64;
/// Rounds per N (`BENCH_ROUNDS`, default 3): reconcile and floor alternate, medians reported.
fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(3)
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 100_000]
    } else {
        sizes
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut rows = Vec::new();
    for n in sizes {
        rows.push(runtime.block_on(bench(n)));
    }
    println!();
    println!(
        "{:>8} {:>13} {:>10} {:>7} {:>14}",
        "N", "reconcile s", "floor s", "ratio", "peak RSS MB"
    );
    for row in rows {
        println!(
            "{:>8} {:>13.2} {:>10.2} {:>7.2} {:>14.1}",
            row.n,
            row.reconcile.as_secs_f64(),
            row.floor.as_secs_f64(),
            row.reconcile.as_secs_f64() / row.floor.as_secs_f64(),
            row.peak_rss_kib as f64 / 1024.0
        );
    }
}

struct Row {
    n: usize,
    reconcile: Duration,
    floor: Duration,
    peak_rss_kib: i64,
}

async fn bench(n: usize) -> Row {
    let azurite = Azurite::start_in(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("Azurite starts (run `npm ci` first)");
    let settings = HashMap::from([
        ("SOURCE_STORAGE".to_owned(), azurite.source()),
        ("BACKUP_STORAGE".to_owned(), azurite.backup()),
        ("AzureWebJobsStorage".to_owned(), azurite.jobs()),
    ]);
    let accounts = Settings::from_pairs(settings.clone());
    let source = StorageAccount::connect("SOURCE_STORAGE", &accounts).unwrap();
    let backup = StorageAccount::connect("BACKUP_STORAGE", &accounts).unwrap();
    let seeded = Instant::now();
    seed(&source, &backup, n).await;
    eprintln!("N={n}: seeded in {:.1} s", seeded.elapsed().as_secs_f64());

    let mut reconcile_times = Vec::new();
    let mut floor_times = Vec::new();
    let mut peak_rss_kib = 0;
    for round in 0..rounds() {
        let (elapsed, rss) = reconcile_once(&settings, n);
        reconcile_times.push(elapsed);
        peak_rss_kib = peak_rss_kib.max(rss);
        floor_times.push(floor_once(&azurite).await);
        eprintln!(
            "N={n} round {}: reconcile {:.2} s, floor {:.2} s",
            round + 1,
            elapsed.as_secs_f64(),
            floor_times[round].as_secs_f64()
        );
    }
    Row {
        n,
        reconcile: median(reconcile_times),
        floor: median(floor_times),
        peak_rss_kib,
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// N blobs of 1 KiB over 100 directories, each snapshotted and backed up (the backup written as
/// the consumer leaves it: under its version name, stamped with its source ETag).
async fn seed(source: &StorageAccount, backup: &StorageAccount, n: usize) {
    let lake = source.container(CONTAINER).unwrap();
    lake.create().await.unwrap();
    let backup_container = naming::backup_container_name(CONTAINER, "bak").unwrap();
    let vault = backup.container(&backup_container).unwrap();
    vault.create().await.unwrap();
    let body = vec![b'x'; 1024];
    futures::stream::iter(0..n)
        .for_each_concurrent(SEED_CONCURRENCY, |i| {
            let (lake, vault, body) = (&lake, &vault, &body);
            async move {
                let name = format!("dir{:03}/sub{}/blob-{i:07}.dat", i % 100, i % 7);
                let blob = lake.blob(&name);
                let uploaded = blob.upload(body.clone()).await.unwrap();
                let backup_name =
                    naming::backup_blob_name(&name, uploaded.last_modified, &uploaded.etag)
                        .unwrap();
                blob.take_snapshot(None).await.unwrap();
                let stamped = NewBlob::with_metadata([(STAMP_ETAG, uploaded.etag.as_str())]);
                vault
                    .blob(&backup_name)
                    .upload_with(body.clone(), &stamped)
                    .await
                    .unwrap();
            }
        })
        .await;
}

/// Runs the release binary once; returns its wall time and peak RSS (KiB).
// The child is reaped with wait4 (to read its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn reconcile_once(settings: &HashMap<String, String>, n: usize) -> (Duration, i64) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lakebackup"))
        .args(["reconcile", "--container", CONTAINER])
        .env_clear()
        .envs(settings)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("lakebackup runs");
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: `pid` is our child, not yet reaped; the pointers are to live locals.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed();
    assert_eq!(reaped, pid, "wait4 reaps the reconcile process");
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("JSON summary");
    assert_eq!(summary["status"], "ok", "{summary}");
    assert_eq!(summary["total"]["blobs"], n as u64);
    assert_eq!(summary["total"]["snapshots_created"], 0, "no-change pass");
    assert_eq!(summary["total"]["backup_requests"], 0, "no-change pass");
    assert_eq!(summary["total"]["backups_present"], n as u64);
    (elapsed, usage.ru_maxrss)
}

/// The same list requests the reconcile's shards make, bodies fetched and dropped: per
/// directory, 4 directories at once, the `{c}bak` level (metadata) and the source level
/// (snapshots, metadata and tags, 1,000 a page); pages are followed, and sub-directories found,
/// by scanning the raw text.
async fn floor_once(azurite: &Azurite) -> Duration {
    let http = reqwest::Client::new();
    let sas = |account: &str, key: &str| {
        account_sas(
            account,
            &BASE64.decode(key).unwrap(),
            AccountSasGrant {
                services: "b",
                resource_types: "sco",
                permissions: "rlt",
                expiry: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
            },
        )
    };
    let (source_sas, backup_sas) = (sas("source", SOURCE_KEY), sas("backup", BACKUP_KEY));
    let list = |account: &'static str,
                sas: &str,
                container: &str,
                prefix: String,
                include: &str,
                size: u32| {
        let base = format!(
            "{}/{container}?restype=container&comp=list&delimiter=%2F&maxresults={size}&include={include}&prefix={}&{sas}",
            azurite.blob_endpoint(account),
            url::form_urlencoded::byte_serialize(prefix.as_bytes()).collect::<String>(),
        );
        let http = &http;
        async move {
            let mut bodies = String::new();
            let mut marker = String::new();
            loop {
                let mut url = base.clone();
                if !marker.is_empty() {
                    url.push_str("&marker=");
                    url.push_str(
                        &url::form_urlencoded::byte_serialize(marker.as_bytes())
                            .collect::<String>(),
                    );
                }
                let body = http
                    .get(url)
                    .header("x-ms-version", "2026-04-06")
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                marker = body
                    .split_once("<NextMarker>")
                    .and_then(|(_, rest)| rest.split_once("</NextMarker>"))
                    .map(|(m, _)| m.to_owned())
                    .unwrap_or_default();
                bodies.push_str(&body);
                if marker.is_empty() {
                    return bodies;
                }
            }
        }
    };
    let directory = |prefix: String| {
        let (list, source_sas, backup_sas) = (&list, &source_sas, &backup_sas);
        async move {
            // (The records of lives sit in the `{c}bak` level's own listing: nothing more.)
            list(
                "backup",
                backup_sas,
                "benchbak",
                prefix.clone(),
                "metadata,copy",
                5000,
            )
            .await;
            let lake = list(
                "source",
                source_sas,
                CONTAINER,
                prefix,
                "snapshots,metadata,tags",
                1000,
            )
            .await;
            lake.split("<BlobPrefix><Name>")
                .skip(1)
                .filter_map(|rest| rest.split_once("</Name>").map(|(name, _)| name.to_owned()))
                .collect::<Vec<String>>()
        }
    };
    let started = Instant::now();
    let mut pending = vec![String::new()];
    let mut running = futures::stream::FuturesUnordered::new();
    loop {
        while running.len() < 4 {
            let Some(prefix) = pending.pop() else { break };
            running.push(directory(prefix));
        }
        match running.next().await {
            Some(subdirectories) => pending.extend(subdirectories),
            None => return started.elapsed(),
        }
    }
}
