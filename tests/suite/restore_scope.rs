//! What a restore covers: `--prefix` is a prefix of names (`a.csv` also takes `a.csv.old` and
//! the directory `a.csv/`), `--blob` is exactly one blob's name — from the backup account and
//! from snapshots, through the real binary.

use crate::support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::worker;

/// Names that start with `a.csv` (a longer name, a directory of that name), a name whose
/// backups share the listing prefix `a_` with `a.csv`'s, and one beside them all.
const NAMES: [&str; 5] = ["a.csv", "a.csv.old", "a.csv/x", "a_b.csv", "b.csv"];

/// Runs `lakebackup restore --container lake ARGS`: (exit code, the action lines, the summary).
fn restore(
    settings: &std::collections::HashMap<String, String>,
    args: &[&str],
) -> (i32, Vec<Value>, Value) {
    let mut full = vec!["restore", "--container", "lake"];
    full.extend(args);
    worker::run_lines(settings, &full)
}

async fn names_in(app: &lakebackup::app::App, container: &str) -> BTreeSet<String> {
    let client = app.source.container(container).unwrap();
    support::list_all(&client)
        .await
        .into_iter()
        .filter(|(_, snapshot)| snapshot.is_none())
        .map(|(name, _)| name)
        .collect()
}

#[tokio::test]
async fn blob_restores_exactly_one_name_and_prefix_every_name_it_starts() {
    let fixture = support::Lake::start(&["lake"]).await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    let client = app.source.container("lake").unwrap();
    for name in NAMES {
        support::upload(&client, name, format!("{name} v1").as_bytes()).await;
    }
    support::produce(app, "lake").await;
    let settings = worker::settings(azurite);
    let exactly = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();

    for (from, into) in [
        ("backup", "one-from-backup"),
        ("snapshots", "one-from-snaps"),
    ] {
        let (code, lines, summary) = restore(
            &settings,
            &["--blob", "a.csv", "--from", from, "--to-container", into],
        );
        assert_eq!(code, 0, "--from {from}: {summary}");
        assert_eq!(summary["restored"], 1, "--from {from}: {summary}");
        assert_eq!(lines.len(), 1, "one action: {lines:?}");
        assert_eq!(lines[0]["blob"], "a.csv");
        assert_eq!(
            names_in(app, into).await,
            exactly(&["a.csv"]),
            "--from {from}"
        );
        assert_eq!(
            support::download(&app.source.container(into).unwrap(), "a.csv").await,
            b"a.csv v1"
        );
    }

    // A prefix stays a prefix: every name it starts, the directory of that name included.
    let (code, _, summary) = restore(
        &settings,
        &["--prefix", "a.csv", "--to-container", "by-prefix"],
    );
    assert_eq!(code, 0, "{summary}");
    assert_eq!(
        names_in(app, "by-prefix").await,
        exactly(&["a.csv", "a.csv.old", "a.csv/x"])
    );

    // The directory alone, with its trailing `/`.
    let (code, _, summary) = restore(
        &settings,
        &["--prefix", "a.csv/", "--to-container", "by-directory"],
    );
    assert_eq!(code, 0, "{summary}");
    assert_eq!(names_in(app, "by-directory").await, exactly(&["a.csv/x"]));

    // A name with no backup is refused, never "done, 0".
    let (code, _, summary) = restore(&settings, &["--blob", "a.cs", "--to-container", "none"]);
    assert_eq!(code, 1, "{summary}");
    assert!(
        summary["error"].as_str().unwrap().contains("\"a.cs\""),
        "{summary}"
    );
    // A directory's name, or both forms at once, is a usage error.
    let (code, _, stderr) = worker::run_once(
        &settings,
        &["restore", "--container", "lake", "--blob", "a.csv/"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--prefix"), "{stderr}");
    let (code, _, stderr) = worker::run_once(
        &settings,
        &[
            "restore",
            "--container",
            "lake",
            "--blob",
            "a.csv",
            "--prefix",
            "a",
        ],
    );
    assert_eq!(code, 2, "{stderr}");
}
