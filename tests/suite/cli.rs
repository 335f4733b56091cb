//! The command line's two conventions, through the real binary: stdout is JSON lines — one
//! object per line, the summary last — for every command, and the exit code is README's table
//! (0 done; 1 something failed, storage included; 2 the command line or the settings are wrong,
//! with nothing on stdout).

use crate::support;

use std::collections::HashMap;

use serde_json::Value;
use support::{azurite, worker};

/// Every line of `stdout` as a JSON object, the last one a summary (it has a `status`).
fn json_lines(args: &[&str], stdout: &str, stderr: &str) -> Vec<Value> {
    assert!(!stdout.trim().is_empty(), "{args:?}: no output\n{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{args:?}: not a JSON line ({e}): {line:?}\n{stderr}"));
            assert!(value.is_object(), "{args:?}: not an object: {line}");
            value
        })
        .collect();
    let summary = lines.last().unwrap();
    assert!(
        summary.get("status").is_some(),
        "{args:?}: the last line is the summary: {summary}"
    );
    lines
}

/// Runs `lakebackup ARGS`, checks its output is JSON lines, and returns (code, lines).
fn run(settings: &HashMap<String, String>, args: &[&str]) -> (i32, Vec<Value>) {
    let (code, stdout, stderr) = worker::run_once(settings, args);
    (code, json_lines(args, &stdout, &stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_prints_one_json_object_per_line_with_the_summary_last() {
    let fixture = support::Lake::start(&["lake"]).await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    let lake = app.source.container("lake").unwrap();
    for name in ["a.csv", "dir/b.csv", "dir/sub/c.csv"] {
        support::upload(&lake, name, name.as_bytes()).await;
    }
    let mut settings = worker::settings(azurite);
    settings.insert("RETENTION_KEEP_DAYS".into(), "7".into());

    // Before any backup, verify finds gaps: a line each, then the summary; exit 1.
    let (code, lines) = run(&settings, &["verify", "--container", "lake"]);
    assert_eq!(code, 1, "{lines:?}");
    assert_eq!(
        lines.len(),
        7,
        "two gaps per blob, then the summary: {lines:?}"
    );

    let (code, lines) = run(&settings, &["shard", "--container", "lake"]);
    assert_eq!(code, 0, "{lines:?}");
    let job = lines[0]["job"].as_str().unwrap().to_owned();
    // Shard by shard in this process, as the producer's job.
    support::produce(app, "lake").await;

    let (job_status, job_report) = (format!("job {job}"), format!("job {job} --report"));
    let done = [
        "produce --container lake",
        "reconcile --dry-run",
        "reconcile",
        "verify --container lake --deep",
        "prune --dry-run",
        "prune",
        "restore --container lake --dry-run",
        "restore --container lake --to-container copy",
        "restore --container lake --blob a.csv --dry-run",
        "restore --container lake --distributed --dry-run",
        "verify --container lake --distributed",
        "prune --container lake --distributed --dry-run",
        &job_status,
        &job_report,
    ];
    for command in done {
        let args: Vec<&str> = command.split(' ').collect();
        let (code, lines) = run(&settings, &args);
        assert_eq!(code, 0, "{args:?}: {lines:?}");
    }
    // Prune's jobs, one line per container, then the summary naming them.
    let (_, lines) = run(&settings, &["prune", "--distributed", "--dry-run"]);
    let summary = lines.last().unwrap();
    assert_eq!(summary["status"], "running", "{lines:?}");
    assert_eq!(summary["jobs"].as_array().unwrap().len(), lines.len() - 1);
    // The restore wrote its lines as it went: three restored, then the summary.
    let (_, lines) = run(
        &settings,
        &["restore", "--container", "lake", "--to-container", "copy2"],
    );
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[3]["restored"], 3, "{lines:?}");

    // The doctor's JSON form is one line too (its table is for people).
    let (code, lines) = run(&settings, &["doctor", "--json"]);
    assert!(code == 0 || code == 1, "{code}: {lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
}

/// Connections to accounts nobody answers (closed loopback ports).
fn unreachable_settings() -> HashMap<String, String> {
    let connection = |account: &str, key: &str| {
        let port = support::closed_port();
        format!(
            "AccountName={account};AccountKey={key};BlobEndpoint=http://127.0.0.1:{port}/{account};\
             QueueEndpoint=http://127.0.0.1:{port}/{account}"
        )
    };
    HashMap::from([
        (
            "SOURCE_STORAGE".to_owned(),
            connection("source", azurite::SOURCE_KEY),
        ),
        (
            "BACKUP_STORAGE".to_owned(),
            connection("backup", azurite::BACKUP_KEY),
        ),
        (
            "AzureWebJobsStorage".to_owned(),
            connection("jobs", azurite::JOBS_KEY),
        ),
    ])
}

#[test]
fn exit_codes_follow_the_table() {
    let reachable_nowhere = unreachable_settings();

    // 2: the command line is wrong (clap's own errors, and names Azure refuses) — nothing on
    // stdout, the reason on stderr, before any setting or account is read.
    let usage = [
        "nonsense",
        "restore",
        "verify --container lake --bogus",
        "restore --container lake --as-of yesterday",
        "restore --container lake --blob a --prefix a",
        "restore --container lake --blob dir/",
        "restore --container lake --to-container Not_Valid",
        "produce --container Bad_Name",
        "shard --container x",
        "verify --container UPPER",
        "reconcile --container a_b",
        "prune --container ab",
    ];
    for command in usage {
        let args: Vec<&str> = command.split(' ').collect();
        let (code, stdout, stderr) = worker::run_once(&HashMap::new(), &args);
        assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert!(stderr.contains("error"), "{args:?}: {stderr}");
    }

    // 2: the settings are wrong (one missing, one malformed) — the setting named on stderr.
    let mut missing = reachable_nowhere.clone();
    missing.remove("BACKUP_STORAGE");
    let mut malformed = reachable_nowhere.clone();
    malformed.insert("SHARD_TIME_BUDGET_SECONDS".into(), "soon".into());
    malformed.insert("FUNCTIONS_CUSTOMHANDLER_PORT".into(), "1".into());
    let every_command: &[&[&str]] = &[
        &["produce", "--container", "lake"],
        &["shard", "--container", "lake"],
        &["reconcile"],
        &["prune"],
        &["restore", "--container", "lake"],
        &["verify", "--container", "lake"],
        &["job", "job-1"],
        &["run"],
        &["serve", "--port", "1"],
    ];
    for (settings, setting) in [
        (&missing, "BACKUP_STORAGE"),
        (&malformed, "SHARD_TIME_BUDGET_SECONDS"),
    ] {
        for args in every_command {
            let (code, stdout, stderr) = worker::run_once(settings, args);
            assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
            assert!(stdout.is_empty(), "{args:?}: {stdout}");
            assert!(stderr.contains(setting), "{args:?}: {stderr}");
        }
        // The doctor reports settings among its checks: a failed check, exit 1.
        let (code, lines) = run(settings, &["doctor", "--json"]);
        assert_eq!(code, 1, "{lines:?}");
        assert_eq!(lines[0]["status"], "fail", "{lines:?}");
    }

    // 1: storage cannot be reached — a failed summary naming what was being done, each
    // command in about three seconds of retries.
    let failing: &[&[&str]] = &[
        &["produce", "--container", "lake"],
        &["shard", "--container", "lake"],
        &["reconcile"],
        &["prune"],
        &["prune", "--distributed"],
        &["restore", "--container", "lake"],
        &["restore", "--container", "lake", "--distributed"],
        &["verify", "--container", "lake"],
        &["verify", "--container", "lake", "--distributed"],
        &["job", "job-1"],
        &["job", "list", "--json"],
        &["poison", "list"],
        &["poison", "replay", "--queue", "backups"],
    ];
    std::thread::scope(|scope| {
        for args in failing {
            let settings = &reachable_nowhere;
            scope.spawn(move || {
                let (code, lines) = run(settings, args);
                assert_eq!(code, 1, "{args:?}: {lines:?}");
                let summary = lines.last().unwrap();
                assert!(
                    ["failed", "unknown"].contains(&summary["status"].as_str().unwrap()),
                    "{args:?}: {summary}"
                );
                assert!(summary["error"].is_string(), "{args:?}: {summary}");
            });
        }
    });
}

#[test]
fn a_connection_string_beside_identity_settings_is_warned_of_at_start_up() {
    // `az functionapp create` sets AzureWebJobsStorage to a key-based connection string; the
    // identity settings added beside it are then ignored, by the host and by lakebackup alike.
    let mut settings = unreachable_settings();
    settings.insert(
        "AzureWebJobsStorage__accountName".into(),
        "lakefuncs".into(),
    );
    let (_, _, stderr) = worker::run_once(&settings, &["job", "job-1"]);
    assert!(
        stderr.contains(
            "AzureWebJobsStorage holds a connection string, so it is used and \
             AzureWebJobsStorage__accountName ignored"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("--setting-names AzureWebJobsStorage"),
        "{stderr}"
    );
    assert!(!stderr.contains(azurite::JOBS_KEY), "{stderr}");
    // Only one form: no warning.
    let (_, _, stderr) = worker::run_once(&unreachable_settings(), &["job", "job-1"]);
    assert!(!stderr.contains("holds a connection string"), "{stderr}");
}
