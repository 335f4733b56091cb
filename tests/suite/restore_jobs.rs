//! Restore as a job: `restore --distributed` worked off by two `lakebackup run` processes with a
//! one-second shard budget, `lakebackup job --wait --report`, a restore into another account
//! (`RESTORE_TARGET_STORAGE`), and the refusals that keep a restore from ending "done, 0".

use crate::support;

use std::{collections::BTreeMap, time::Duration};

use lakebackup::{app::App, settings::Settings};
use serde_json::Value;
use support::worker::{self, Standalone};

use support::contents;

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("JSON ({e}): {line}")))
        .collect()
}

/// The names of the test lake: one large directory (its shards run out of budget and go on)
/// and nested ones whose names cross Unicode (CJK, U+FF61, an astral emoji).
fn lake_names() -> Vec<String> {
    let mut names: Vec<String> = (0..200).map(|i| format!("big/part-{i:03}.csv")).collect();
    for directory in ["", "a/", "a/b/", "a/b/c/", "日本/", "x｡y/", "🦀/deep/"] {
        names.extend((0..12).map(|i| format!("{directory}f{i}.txt")));
    }
    names
}

#[tokio::test]
async fn a_distributed_restore_on_two_run_workers_brings_back_the_lake_of_the_instant() {
    let fixture = support::Lake::start(&["lake"]).await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    let client = app.source.container("lake").unwrap();
    let names = lake_names();
    for name in &names {
        support::upload(&client, name, format!("{name} v1").as_bytes()).await;
    }
    support::produce(app, "lake").await;
    let before = contents(&client).await;
    // Versions are told apart by Last-Modified, which has one-second resolution.
    let instant = support::instant_after_writes().await;
    support::next_second().await;

    // The incident: the large directory and every 7th other blob corrupted, every 11th other
    // one deleted, five created.
    let (mut corrupted, mut deleted) = (0, 0);
    for (index, name) in names.iter().enumerate() {
        if name.starts_with("big/") || index % 7 == 0 {
            support::upload(&client, name, b"ENCRYPTED BY RANSOMWARE").await;
            corrupted += 1;
        } else if index % 11 == 0 {
            support::delete_with_snapshots(&client, name).await;
            deleted += 1;
        }
    }
    let created: Vec<String> = (0..5).map(|i| format!("a/b/new-{i}.txt")).collect();
    for name in &created {
        support::upload(&client, name, b"created after the instant").await;
    }
    // The Function App keeps working: the corrupt versions are backed up, the deletions
    // recorded.
    support::produce(app, "lake").await;

    let mut settings = worker::settings(azurite);
    for (key, value) in [
        ("SHARD_TIME_BUDGET_SECONDS", "1"),
        // One write at a time: the large directory takes several one-second parts.
        ("SNAPSHOT_CONCURRENCY", "1"),
        // No worker is stopped here: a message is hidden longer than any part takes, so none
        // is taken twice (the counts are exact only without duplicates: a part redone counts
        // what its first try restored as unchanged).
        ("RUN_VISIBILITY_SECONDS", "30"),
        ("COPY_TIMEOUT_SECONDS", "20"),
    ] {
        settings.insert(key.into(), value.into());
    }
    let command = format!("restore --container lake --as-of {instant} --distributed");
    let out = worker::run_ok(&settings, &command);
    let started = json_lines(&out);
    assert_eq!(started.len(), 1, "one JSON line: {out}");
    assert_eq!(
        (&started[0]["kind"], &started[0]["status"]),
        (&Value::from("restore"), &Value::from("running")),
        "{out}"
    );
    let job = started[0]["job"].as_str().unwrap().to_owned();
    assert_eq!(
        contents(&client).await.get(&names[0]).map(Vec::as_slice),
        Some(&b"ENCRYPTED BY RANSOMWARE"[..]),
        "--distributed only queues the job"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("host.json"),
        r#"{"version": "2.0", "functionTimeout": "00:01:00", "extensions": {"queues": {"batchSize": 4, "maxPollingInterval": "00:00:00.2"}}}"#,
    )
    .unwrap();
    let address = format!("127.0.0.1:{}", support::closed_port());
    let first = Standalone::start(&settings, dir.path(), &["--http", &address]);
    let second = Standalone::start(&settings, dir.path(), &[]);
    let waited = {
        let settings = settings.clone();
        let job = job.clone();
        let waiting = tokio::task::spawn_blocking(move || {
            worker::run_once(&settings, &["job", &job, "--wait"])
        });
        tokio::time::timeout(Duration::from_secs(180), waiting)
            .await
            .expect("the two workers end the job within 3 minutes")
            .unwrap()
    };
    let (code, out, err) = waited;
    assert_eq!(code, 0, "job --wait exits 0 when done: {out}{err}");
    let status = json_lines(&out).pop().unwrap();
    assert_eq!(status["status"], "done", "{status}");
    assert_eq!(status["kind"], "restore", "{status}");
    assert_eq!(status["work"], "restore", "{status}");
    assert_eq!(status["restored"], corrupted + deleted, "{status}");
    assert_eq!(status["missing_version"], created.len(), "{status}");
    assert_eq!(
        status["unchanged"],
        names.len() - corrupted - deleted,
        "{status}"
    );
    assert_eq!(
        (
            &status["errors"],
            &status["deleted"],
            &status["changed_since_plan"]
        ),
        (&Value::from(0), &Value::from(0), &Value::from(0)),
        "{status}"
    );
    // 9 directory levels (the root, big/, a/, a/b/, a/b/c/, 日本/, x｡y/, 🦀/, 🦀/deep/), and
    // the large one's 200 writes, one at a time, took more than one one-second part.
    assert!(
        status["shards_queued"].as_u64().unwrap() > 9,
        "the large directory went on in continuations: {status}"
    );
    // The producer's status route answers for a restore job too.
    let url = format!("http://{address}/api/HttpSnapshotIncBackupContainerProducer?job={job}");
    let reply: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(
        (&reply["kind"], &reply["status"], &reply["restored"]),
        (
            &Value::from("restore"),
            &Value::from("done"),
            &status["restored"]
        ),
        "{reply}"
    );
    assert_eq!(first.terminate(), 0);
    assert_eq!(second.terminate(), 0);

    let after = contents(&client).await;
    for (name, bytes) in &before {
        assert!(
            after.get(name) == Some(bytes),
            "{name} is not as at the instant"
        );
    }
    for name in &created {
        assert!(after.contains_key(name), "restore never deletes: {name}");
    }

    // The report: the same lines the in-process restore prints, from every shard.
    let (code, out, err) = worker::run_once(&settings, &["job", &job, "--report"]);
    assert_eq!(code, 0, "{out}{err}");
    let mut lines = json_lines(&out);
    let last = lines.pop().unwrap();
    assert_eq!(last["job"], job.as_str());
    let mut by_action: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in &lines {
        by_action
            .entry(line["action"].as_str().unwrap().to_owned())
            .or_default()
            .push(line["blob"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        by_action["restore"].len(),
        corrupted + deleted,
        "{by_action:?}"
    );
    let mut missing = by_action["missing_version"].clone();
    missing.sort();
    assert_eq!(missing, created);
    assert_eq!(by_action.len(), 2, "{by_action:?}");
}

#[tokio::test]
async fn a_restore_into_another_account_and_the_refusals() {
    let fixture = support::Lake::start(&["lake", "empty"]).await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    let client = app.source.container("lake").unwrap();
    let names = ["top.csv", "dir/日本.txt", "dir/🦀.bin"];
    for name in names {
        support::upload(&client, name, format!("{name} bytes").as_bytes()).await;
    }
    support::produce(app, "lake").await;
    let before = contents(&client).await;

    // Into a clean account (here the jobs account stands in for it): the lake is left alone.
    let mut settings = worker::settings(azurite);
    settings.insert("RESTORE_TARGET_STORAGE".into(), azurite.jobs());
    let (code, out, err) = worker::run_once(
        &settings,
        &[
            "restore",
            "--container",
            "lake",
            "--to-account",
            "--to-container",
            "clean",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let summary = json_lines(&out).pop().unwrap();
    assert_eq!(summary["restored"], names.len(), "{summary}");
    assert_eq!(summary["to_account"], true, "{summary}");
    let target = App::from_settings(&Settings::from_pairs(settings.clone()))
        .unwrap()
        .restore_target
        .expect("RESTORE_TARGET_STORAGE is read")
        .container("clean")
        .unwrap();
    assert_eq!(
        contents(&target).await,
        before,
        "byte-identical in the other account"
    );
    assert_eq!(contents(&client).await, before, "the lake is untouched");

    // --to-account without RESTORE_TARGET_STORAGE: one clear error naming the setting.
    let plain = worker::settings(azurite);
    let (code, out, _) =
        worker::run_once(&plain, &["restore", "--container", "lake", "--to-account"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("RESTORE_TARGET_STORAGE is not set"), "{out}");

    // An unreachable target account: one clear error naming it, and no key in it.
    let mut unreachable = worker::settings(azurite);
    let key = "Zm9yIHRlc3RzIG9ubHksIG5vdCBhIHJlYWwga2V5IQ==";
    unreachable.insert(
        "RESTORE_TARGET_STORAGE".into(),
        format!(
            "DefaultEndpointsProtocol=http;AccountName=gone;AccountKey={key};\
             BlobEndpoint=http://127.0.0.1:9/gone;"
        ),
    );
    let (code, out, err) = worker::run_once(
        &unreachable,
        &[
            "restore",
            "--container",
            "lake",
            "--to-account",
            "--distributed",
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("RESTORE_TARGET_STORAGE"), "{out}");
    assert!(
        !out.contains(key) && !err.contains(key),
        "no secret: {out}{err}"
    );
    assert!(!out.contains("\"job\""), "no job was made: {out}");

    // Nothing to restore from: refused before a job is made, never "done, 0".
    for args in [
        &["restore", "--container", "empty"][..],
        &["restore", "--container", "empty", "--distributed"],
        &[
            "restore",
            "--container",
            "lake",
            "--prefix",
            "nothing/here/",
        ],
        &[
            "restore",
            "--container",
            "never-made",
            "--from",
            "snapshots",
        ],
    ] {
        let (code, out, _) = worker::run_once(&plain, args);
        assert_eq!(code, 1, "{args:?}: {out}");
        let refusal = json_lines(&out).pop().unwrap();
        assert_eq!(refusal["status"], "failed", "{args:?}: {refusal}");
        let reason = refusal["error"].as_str().unwrap();
        assert!(
            reason.contains("nothing to restore") || reason.contains("does not exist"),
            "{args:?}: {reason}"
        );
    }

    // An unknown job.
    let (code, out, _) = worker::run_once(&plain, &["job", "job-0123456789abcdef"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no job"), "{out}");
    let (code, _, _) = worker::run_once(&plain, &["job", "../not-an-id", "--wait"]);
    assert_eq!(code, 1);
}

#[tokio::test]
async fn a_terminal_shows_a_progress_line_and_a_pipe_gets_clean_output() {
    let fixture = support::Lake::start(&["lake"]).await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    let client = app.source.container("lake").unwrap();
    for name in ["a.csv", "dir/b.csv"] {
        support::upload(&client, name, b"bytes").await;
    }
    support::produce(app, "lake").await;
    let settings = worker::settings(azurite);
    let args = ["restore", "--container", "lake", "--to-container", "copy"];

    // Piped (as in every other test): JSON lines on stdout, and no progress line anywhere.
    let (code, out, err) = worker::run_once(&settings, &args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        json_lines(&out).len() == 3,
        "two actions and the summary: {out}"
    );
    assert!(
        !err.contains("blobs ·") && !out.contains("blobs ·"),
        "{err}"
    );

    // On a terminal (util-linux's `script` gives it one): the line is drawn on stderr.
    let command = std::iter::once(worker::binary().display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .chain(["--dry-run".to_owned()])
        .collect::<Vec<_>>()
        .join(" ");
    let output = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TERM", "xterm")
        .env("RUST_LOG", "warn")
        .envs(&settings)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script(1) runs");
    let terminal = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{terminal}");
    assert!(
        terminal.contains("restore ") && terminal.contains("blobs ·"),
        "{terminal}"
    );
}

#[tokio::test]
async fn an_in_place_restore_keeps_the_version_it_overwrites() {
    let fixture = support::Lake::start(&["lake"]).await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    let client = app.source.container("lake").unwrap();
    support::upload(&client, "a.csv", b"v1, backed up").await;
    support::upload(&client, "b.csv", b"b v1, backed up").await;
    support::produce(app, "lake").await;
    let instant = support::instant_after_writes().await;
    support::next_second().await;
    // Written after the last pass: neither snapshotted nor backed up. A restore to the instant
    // must not make this the version nobody can get back.
    support::upload(&client, "a.csv", b"v2, written since, nowhere else").await;

    let (code, out, err) = worker::run_once(
        &worker::settings(azurite),
        &["restore", "--container", "lake", "--as-of", &instant],
    );
    assert_eq!(code, 0, "{out}{err}");
    let summary = json_lines(&out).pop().unwrap();
    assert_eq!(
        (&summary["restored"], &summary["unchanged"]),
        (&Value::from(1), &Value::from(1)),
        "{summary}"
    );
    assert_eq!(support::download(&client, "a.csv").await, b"v1, backed up");
    // The version overwritten is in the backup, with its usual stamp: a restore as of now
    // brings it back.
    let vault = app.backup.container("lakebak").unwrap();
    let mut kept = Vec::new();
    for (name, _) in support::list_all(&vault).await {
        if name.starts_with("a_") {
            kept.push(support::download(&vault, &name).await);
        }
    }
    assert!(
        kept.contains(&b"v2, written since, nowhere else".to_vec()),
        "the overwritten version is kept in the backup: {kept:?}"
    );
}
