//! What the benchmarks against rclone share: the cases (`NxSIZE`), the table with its ratio and
//! requests per blob, Azurite's CPU seconds, the seeded lake and `rclone copy` between the
//! accounts. Each benchmark supplies the one run it times.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use futures::StreamExt;
use lakebackup::storage::StorageAccount;
use lakebackup_devtools::azurite::{Azurite, BACKUP_KEY, SOURCE_KEY};

pub const CONTAINER: &str = "lake";
const SEED_CONCURRENCY: usize = 64;
/// Blobs in the run that counts requests.
const REQUEST_SAMPLE: usize = 1_000;

#[derive(Debug, Clone)]
pub struct Case {
    pub n: usize,
    pub size: usize,
}

pub struct Row {
    pub case: Case,
    pub lakebackup: Duration,
    pub rclone: Duration,
    /// Azurite's CPU seconds during each tool's run.
    pub lakebackup_cpu: f64,
    pub rclone_cpu: f64,
    /// Requests Azurite served during each tool's run (per blob in the table).
    pub lakebackup_requests: f64,
    pub rclone_requests: f64,
}

/// Runs `bench` on each case given as `NxSIZE` arguments (default 10,000 × 1 KiB and
/// 100 × 8 MiB) and prints the table under `title`: timed on a silent Azurite, requests counted
/// in a second run on a sample.
pub fn run<F, Fut>(title: &str, bench: F)
where
    F: Fn(Case, String, bool) -> Fut,
    Fut: std::future::Future<Output = Row>,
{
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
            let timed = runtime.block_on(bench(case.clone(), rclone.clone(), false));
            let sample = Case {
                n: case.n.min(REQUEST_SAMPLE),
                size: case.size,
            };
            let counted = runtime.block_on(bench(sample.clone(), rclone.clone(), true));
            let per_blob = |requests: f64| requests / sample.n as f64;
            Row {
                lakebackup_requests: per_blob(counted.lakebackup_requests),
                rclone_requests: per_blob(counted.rclone_requests),
                ..timed
            }
        })
        .collect();
    println!();
    println!("{title}");
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

pub fn human(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

/// Azurite's CPU seconds between two readings (0 where they cannot be read).
pub fn cpu_used(before: Option<f64>, after: Option<f64>) -> f64 {
    after
        .zip(before)
        .map_or(0.0, |(after, before)| after - before)
}

/// N blobs of `size` bytes over 100 directories.
pub async fn seed(source: &StorageAccount, case: &Case) {
    let lake = source.container(CONTAINER).unwrap();
    lake.create().await.unwrap();
    let body: Vec<u8> = (0..case.size).map(|i| (i % 251) as u8).collect();
    futures::stream::iter(0..case.n)
        .for_each_concurrent(
            SEED_CONCURRENCY.min(if case.size > 1 << 20 { 8 } else { 64 }),
            |i| {
                let (lake, body) = (&lake, &body);
                async move {
                    let name = format!("dir{:03}/blob-{i:07}.dat", i % 100);
                    lake.blob(&name).upload(body.clone()).await.unwrap();
                }
            },
        )
        .await;
}

/// `rclone copy` from `from` to `to` (`source:CONTAINER` or `backup:CONTAINER`: the lake's and
/// the backup account), 16 transfers.
pub fn rclone_copy(rclone: &str, azurite: &Azurite, from: &str, to: &str) -> Duration {
    let config = tempfile::NamedTempFile::new().unwrap();
    let remote = |name: &str, account: &str, key: &str| {
        format!(
            "[{name}]\ntype = azureblob\naccount = {account}\nkey = {key}\nendpoint = {}\n\n",
            azurite.blob_endpoint(account)
        )
    };
    std::fs::write(
        config.path(),
        remote("source", "source", SOURCE_KEY) + &remote("backup", "backup", BACKUP_KEY),
    )
    .unwrap();
    let started = Instant::now();
    let status = Command::new(rclone)
        .args(["copy", from, to, "--transfers", "16", "--checkers", "16"])
        .arg("--config")
        .arg(config.path())
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{rclone} runs (scripts/bench.sh installs it): {e}"));
    let elapsed = started.elapsed();
    assert!(status.success(), "rclone copy failed");
    elapsed
}
