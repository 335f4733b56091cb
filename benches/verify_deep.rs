//! Benchmark: `lakebackup verify --deep` over large blobs, and the peak RSS of the lakebackup
//! process, which must not grow with the blobs' size: each backup (and, where no MD5 proves it,
//! its source) is hashed in bounded chunks as it is read (bound: 100 MB for 1 GiB in 8 blobs).
//!
//! Per case `NxSIZE` (default 8 × 128 MiB = 1 GiB): seed Azurite with N blobs of SIZE bytes,
//! committed as block lists without a stored MD5 (as large uploads, ADF and DFS writers leave
//! them), back them up with `lakebackup reconcile`, then time the release binary's
//! `verify --deep` and read its peak RSS (`wait4`). Without a stored MD5 each deep check reads
//! both the backup and its source (2 × N × SIZE bytes): the worst case for memory.
//!
//! `LAKEBACKUP_BIN=path` measures another build (e.g. an earlier release) the same way.
//!
//! Run: `scripts/bench.sh verify-deep [NxSIZE ...]` or `cargo bench --bench verify_deep`.

use std::{
    collections::HashMap,
    io::Read,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use futures::StreamExt;
use lakebackup::{
    settings::Settings,
    storage::{testing::NewBlob, StorageAccount},
};
use lakebackup_devtools::azurite::Azurite;

const CONTAINER: &str = "lake";
/// The bound the issue set for 1 GiB in 8 blobs.
const RSS_BOUND_MB: f64 = 100.0;
const BLOCK: usize = 8 << 20;

struct Case {
    n: usize,
    size: usize,
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
        vec![Case {
            n: 8,
            size: 128 << 20,
        }]
    } else {
        cases
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let rows: Vec<(Case, Duration, i64)> = cases
        .into_iter()
        .map(|case| {
            let (elapsed, rss) = runtime.block_on(bench(&case));
            (case, elapsed, rss)
        })
        .collect();
    println!();
    println!("verify --deep: wall time and peak RSS of the lakebackup process");
    println!(
        "{:>4} {:>9} {:>9} {:>10} {:>8} {:>13} {:>9}",
        "N", "size", "total", "verify s", "MB/s", "peak RSS MB", "bound MB"
    );
    for (case, elapsed, rss_kib) in rows {
        let total = case.n * case.size;
        // Each check reads the backup and its source.
        let read_mb = 2.0 * total as f64 / 1e6;
        println!(
            "{:>4} {:>9} {:>9} {:>10.2} {:>8.1} {:>13.1} {:>9.0}",
            case.n,
            human(case.size),
            human(total),
            elapsed.as_secs_f64(),
            read_mb / elapsed.as_secs_f64(),
            rss_kib as f64 / 1024.0,
            RSS_BOUND_MB
        );
    }
}

fn human(size: usize) -> String {
    match size {
        s if s >= 1 << 30 => format!("{:.1} GiB", s as f64 / (1u64 << 30) as f64),
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

async fn bench(case: &Case) -> (Duration, i64) {
    let azurite = Azurite::start_in(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("Azurite starts (run `npm ci` first)");
    let settings = HashMap::from([
        ("SOURCE_STORAGE".to_owned(), azurite.source()),
        ("BACKUP_STORAGE".to_owned(), azurite.backup()),
        ("AzureWebJobsStorage".to_owned(), azurite.jobs()),
    ]);
    let accounts = Settings::from_pairs(settings.clone());
    let source = StorageAccount::connect("SOURCE_STORAGE", &accounts).unwrap();
    let seeded = Instant::now();
    seed(&source, case).await;
    let (code, _, _) = run(&settings, &["reconcile", "--container", CONTAINER]);
    assert_eq!(code, 0, "the backup of the seeded lake succeeds");
    eprintln!(
        "{} × {}: seeded and backed up in {:.1} s",
        case.n,
        human(case.size),
        seeded.elapsed().as_secs_f64()
    );
    let (code, elapsed, rss, stdout) =
        run_measured(&settings, &["verify", "--container", CONTAINER, "--deep"]);
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("JSON summary");
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["checked"], case.n as u64, "{summary}");
    (elapsed, rss)
}

/// N blobs of `size` bytes, each staged in 8 MiB blocks and committed without an MD5.
async fn seed(source: &StorageAccount, case: &Case) {
    let lake = source.container(CONTAINER).unwrap();
    lake.create().await.unwrap();
    futures::stream::iter(0..case.n)
        .for_each_concurrent(2, |i| {
            let lake = &lake;
            async move {
                // Each block made as it is staged: one in memory at a time.
                let blocks = (0..case.size.div_ceil(BLOCK)).map(|index| {
                    let length = BLOCK.min(case.size - index * BLOCK);
                    (0..length)
                        .map(|j| (j as u64 * 31 + index as u64 + i as u64) as u8)
                        .collect::<Vec<u8>>()
                });
                lake.blob(&format!("dir{}/big-{i:03}.bin", i % 2))
                    .put_block_list(blocks, &NewBlob::default())
                    .await
                    .unwrap();
            }
        })
        .await;
}

/// The binary to measure: `LAKEBACKUP_BIN` when set, else this crate's release build.
fn binary() -> std::path::PathBuf {
    std::env::var_os("LAKEBACKUP_BIN")
        .filter(|path| !path.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_lakebackup").into())
}

fn command(settings: &HashMap<String, String>, args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env_clear()
        .envs(settings)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

fn run(settings: &HashMap<String, String>, args: &[&str]) -> (i32, String, Duration) {
    let started = Instant::now();
    let output = command(settings, args).output().expect("lakebackup runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        started.elapsed(),
    )
}

/// Runs the binary once; returns its exit code, wall time, peak RSS (KiB) and stdout.
// The child is reaped with wait4 (to read its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run_measured(settings: &HashMap<String, String>, args: &[&str]) -> (i32, Duration, i64, String) {
    let started = Instant::now();
    let mut child = command(settings, args).spawn().expect("lakebackup runs");
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
    assert_eq!(reaped, pid, "wait4 reaps the verify process");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, elapsed, usage.ru_maxrss, stdout)
}
