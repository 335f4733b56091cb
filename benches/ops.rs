//! Benchmarks of the operators' commands, on a fresh Azurite, with the `lakebackup` binary of
//! this build:
//!
//! - `job-list [N]` (default 1,000): a ledger of N jobs written as the shard function writes it
//!   (over 10 containers; each job's root shard and ten sub-directory shards queued, each
//!   claimed by a delivery — its lock entry — and ended, a plan and a report: 36 entries a job,
//!   as a real 11-shard job leaves; the root 90% finished with counts, 5% failed, the rest still
//!   running; each end followed by the job's end check, so an ended job has its summary), and
//!   as many poison reasons; the last tenth started a minute after the rest; then the
//!   reconciliation timer's pass over the jobs without a summary, which marks the index
//!   complete (in Azure it runs daily). Then `lakebackup
//!   job list --json` timed, and with `--since` between the two (a tenth listed),
//!   `BENCH_ROUNDS` times (default 3): median and worst, against the floor — the listing any
//!   `job list` needs at the least, in this process: one entry per job with metadata (the
//!   summaries and index). The figure to meet is under 2 s at 1,000 jobs. With
//!   `LAKEBACKUP_BASELINE=/path/to/lakebackup` (an earlier build), that binary is timed on the
//!   same ledger too.
//!
//! - `poison-replay [N]` (default 1,000): N backup requests in the backup queue's poison queue,
//!   `lakebackup poison replay --queue backups` started and killed (SIGKILL) once a third is
//!   back on the work queue; after the replay's visibility window, every message is counted on
//!   the work queue and in the poison queue: none may be lost. Then a second replay finishes
//!   the job, timed (messages per second).
//!
//! Run: `scripts/bench.sh ops job-list 1000` or `cargo bench --bench ops -- job-list 1000`.

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use futures::StreamExt;
use lakebackup::{
    app::App,
    core::counts::Counts,
    core::job::Notes,
    engine::jobs::{
        self,
        backup::{BackupKind, BackupOptions},
        ledger, JobOrigin, NewJob, Root,
    },
    settings::Settings,
};
use lakebackup_devtools::azurite::Azurite;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args
        .iter()
        .find(|a| !a.starts_with('-') && a.parse::<usize>().is_err());
    let n = args.iter().find_map(|a| a.parse::<usize>().ok());
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match what.map(String::as_str) {
        Some("job-list") | None => runtime.block_on(job_list(n.unwrap_or(1_000))),
        Some("poison-replay") => runtime.block_on(poison_replay(n.unwrap_or(1_000))),
        Some(other) => panic!("unknown benchmark {other:?}: job-list, poison-replay"),
    }
}

fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
}

struct Bench {
    _azurite: Azurite,
    app: App,
    settings: HashMap<String, String>,
}

fn start() -> Bench {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let azurite = Azurite::start_in(root).expect("Azurite starts (run `npm ci` first)");
    let settings = HashMap::from([
        ("SOURCE_STORAGE".to_owned(), azurite.source()),
        ("BACKUP_STORAGE".to_owned(), azurite.backup()),
        ("AzureWebJobsStorage".to_owned(), azurite.jobs()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ]);
    let app = App::from_settings(&Settings::from_pairs(settings.clone())).unwrap();
    Bench {
        _azurite: azurite,
        app,
        settings,
    }
}

/// `lakebackup ARGS` to completion: its wall time and stdout; panics unless it exits 0.
fn timed_run(settings: &HashMap<String, String>, args: &[&str]) -> (Duration, String) {
    timed_run_of(env!("CARGO_BIN_EXE_lakebackup"), settings, args)
}

/// [`timed_run`] of the binary `binary`.
fn timed_run_of(
    binary: &str,
    settings: &HashMap<String, String>,
    args: &[&str],
) -> (Duration, String) {
    let started = Instant::now();
    let output = Command::new(binary)
        .args(args)
        .env_clear()
        .envs(settings)
        .stdin(Stdio::null())
        .output()
        .expect("lakebackup runs");
    let took = started.elapsed();
    assert!(
        output.status.success(),
        "lakebackup {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (took, String::from_utf8_lossy(&output.stdout).into_owned())
}

/// One shard's delivery as the shard function makes it: claimed (its lock entry), ended —
/// finished with `counts` or failed — then its lock released. Each end runs the job's end
/// check (in the ledger's `record_*`).
async fn deliver(app: &App, shard: &jobs::Shard, end: Option<&Counts>) {
    let ledger::Claim::Held(lock) = ledger::claim(app, shard).await.unwrap() else {
        panic!("a new shard is held");
    };
    match end {
        Some(counts) => ledger::record_finished(app, shard, counts, &Notes::default())
            .await
            .unwrap(),
        None => ledger::record_failed(app, shard, "benchmark")
            .await
            .unwrap(),
    }
    lock.release().await;
}

/// One job of the ledger: queued, its sub-directories queued and delivered, then (by its
/// index) its root finished with counts, failed, or left running.
async fn one_job(app: &App, i: usize) {
    let new = NewJob::<BackupKind> {
        origin: JobOrigin::Command,
        container: format!("lake{}", i % 10),
        roots: vec![Root::directory("")],
        options: BackupOptions::default(),
    };
    let queued = jobs::queue(app, new).await.expect("a job queued");
    let root = &queued.roots[0];
    // What a job's shards leave besides: sub-directories queued and finished, a plan, a report.
    let mut counts = Counts::default();
    counts.set("blobs", 1);
    let children: Vec<_> = (0..10).map(|d| root.child(&format!("d{d}/"))).collect();
    for child in &children {
        ledger::queue_shard(app, child).await.unwrap();
    }
    ledger::record_plan(app, root, &serde_json::json!({"doomed": []}))
        .await
        .unwrap();
    ledger::record_report(app, root, &["{}".to_owned()])
        .await
        .unwrap();
    for child in &children {
        deliver(app, child, Some(&counts)).await;
    }
    let poisoned = lakebackup::app::poison_reason_name("bench-poison", &format!("message {i}"));
    let reasons = app.job_ledger().await.unwrap();
    reasons.blob(&poisoned).upload(Vec::new()).await.unwrap();
    match i % 20 {
        0 => deliver(app, root, None).await,
        1 => {
            // Running: its root's delivery holds its lock, and has not ended.
            let ledger::Claim::Held(lock) = ledger::claim(app, root).await.unwrap() else {
                panic!("a new shard is held");
            };
            lock.release().await;
        }
        _ => {
            let mut counts = Counts::default();
            counts.set("blobs", i as u64);
            counts.set("backups_copied", 1);
            deliver(app, root, Some(&counts)).await;
        }
    }
}

/// The floor: the listing any `job list` needs at the least (one entry per job, with
/// metadata), in this process.
async fn floor(app: &App) -> Duration {
    use lakebackup::storage::listing::list_with_metadata;
    let ledger = app.job_ledger().await.unwrap();
    let started = Instant::now();
    let pages = list_with_metadata(ledger, "summaries/").unwrap();
    futures::pin_mut!(pages);
    while let Some(page) = pages.next().await {
        page.unwrap();
    }
    started.elapsed()
}

async fn job_list(n: usize) {
    let bench = start();
    let seeding = Instant::now();
    let seed = |range: std::ops::Range<usize>| {
        futures::stream::iter(range)
            .map(|i| one_job(&bench.app, i))
            .buffer_unordered(32)
            .collect::<Vec<()>>()
    };
    // The last tenth started over a minute after the rest (the slack `job list` gives an id's
    // time before its job's start), and `--since` between them.
    let recent = n - n / 10;
    seed(0..recent).await;
    tokio::time::sleep(Duration::from_secs(61)).await;
    let since = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    seed(recent..n).await;
    eprintln!(
        "{n} jobs in the ledger in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    // The reconciliation timer has run since (daily, in Azure): it marks the index complete.
    let ledger = bench.app.job_ledger().await.unwrap();
    let read = ledger::summary::summarize_ended(ledger, Duration::from_secs(3_600))
        .await
        .unwrap();
    eprintln!("the timer read {read} jobs without a summary (the running ones)");
    let baseline = std::env::var("LAKEBACKUP_BASELINE").ok();
    println!(
        "{:>8} {:>10} {:>10} {:>12} {:>12} {:>10} {:>8} {:>8}",
        "jobs", "listed", "binary", "median s", "worst s", "floor s", "ratio", "bound s"
    );
    let binaries = std::iter::once(("this", env!("CARGO_BIN_EXE_lakebackup").to_owned()))
        .chain(baseline.map(|b| ("baseline", b)));
    for (label, binary) in binaries {
        for (args, listed) in [
            (vec!["job", "list", "--json"], n),
            (vec!["job", "list", "--json", "--since", &since], n - recent),
        ] {
            let (mut times, mut floors) = (Vec::new(), Vec::new());
            for _ in 0..rounds() {
                let (took, stdout) = timed_run_of(&binary, &bench.settings, &args);
                let summary: serde_json::Value =
                    serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
                assert_eq!(summary["jobs"], listed, "every job listed: {summary}");
                times.push(took);
                floors.push(floor(&bench.app).await);
            }
            times.sort();
            floors.sort();
            let (median, floor) = (times[times.len() / 2], floors[floors.len() / 2]);
            println!(
                "{:>8} {:>10} {:>10} {:>12.3} {:>12.3} {:>10.3} {:>8.1} {:>8}",
                n,
                listed,
                label,
                median.as_secs_f64(),
                times[times.len() - 1].as_secs_f64(),
                floor.as_secs_f64(),
                median.as_secs_f64() / floor.as_secs_f64(),
                2
            );
        }
    }
}

/// Every text on `queue`, counted (taken, hidden five minutes).
async fn drain(queue: &lakebackup::storage::Queue) -> std::collections::BTreeMap<String, usize> {
    let mut counted = std::collections::BTreeMap::new();
    loop {
        let batch = queue.take(32, Duration::from_secs(300)).await.unwrap();
        if batch.is_empty() {
            return counted;
        }
        for message in batch {
            *counted.entry(message.text).or_default() += 1;
        }
    }
}

async fn poison_replay(n: usize) {
    use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
    let bench = start();
    let poison = bench.app.jobs.queue("backup-requests-poison").unwrap();
    let work = bench.app.jobs.queue("backup-requests").unwrap();
    poison.create_if_missing().await.unwrap();
    work.create_if_missing().await.unwrap();
    let texts: Vec<String> = (0..n)
        .map(|i| {
            let request = serde_json::json!({
                "container": "lake", "blob_name": format!("dir/数据-{i:05}.csv"), "etag": "0x8DC1"
            });
            BASE64.encode(request.to_string())
        })
        .collect();
    futures::stream::iter(texts.iter())
        .map(|text| poison.send(text.clone(), None, "a message"))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;

    let started = Instant::now();
    let mut replay = Command::new(env!("CARGO_BIN_EXE_lakebackup"))
        .args(["poison", "replay", "--queue", "backups"])
        .env_clear()
        .envs(&bench.settings)
        .stdout(Stdio::null())
        .spawn()
        .expect("lakebackup runs");
    while work.depth().await.unwrap().unwrap_or(0) < (n / 3) as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let still_running = replay.try_wait().unwrap().is_none();
    replay.kill().unwrap();
    replay.wait().unwrap();
    let killed_after = started.elapsed();
    tokio::time::sleep(lakebackup::host::poison::REPLAY_WINDOW + Duration::from_secs(1)).await;
    let (on_work, in_poison) = (drain(&work).await, drain(&poison).await);
    let moved: usize = on_work.values().sum();
    let left: usize = in_poison.values().sum();
    let lost = texts
        .iter()
        .filter(|t| !on_work.contains_key(*t) && !in_poison.contains_key(*t))
        .count();
    let duplicated = texts
        .iter()
        .filter(|t| on_work.contains_key(*t) && in_poison.contains_key(*t))
        .count();
    println!(
        "{:>6} {:>10} {:>12} {:>10} {:>10} {:>8} {:>11}",
        "N", "killed s", "still running", "on work", "in poison", "lost", "duplicated"
    );
    println!(
        "{:>6} {:>10.2} {:>12} {:>10} {:>10} {:>8} {:>11}",
        n,
        killed_after.as_secs_f64(),
        still_running,
        moved,
        left,
        lost,
        duplicated
    );
    assert_eq!(lost, 0, "a message was lost");
    // Put the drained messages back where they were and finish the replay, timed.
    let back: Vec<String> = in_poison
        .into_iter()
        .flat_map(|(text, count)| std::iter::repeat_n(text, count))
        .collect();
    futures::stream::iter(back.iter())
        .map(|text| poison.send(text.clone(), None, "a message"))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let (took, _) = timed_run(&bench.settings, &["poison", "replay", "--queue", "backups"]);
    println!(
        "the rest ({}) replayed to the end in {:.2} s: {:.0} messages/s",
        back.len(),
        took.as_secs_f64(),
        back.len() as f64 / took.as_secs_f64()
    );
}
