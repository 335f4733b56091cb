//! `lakebackup job list`, through the real binary: the ledger's jobs, newest first, with their
//! kind, container, state, start, end and counts; each filter; the table for people; and that
//! it only reads (a ledger that does not exist is not created).

use crate::support;

use serde_json::Value;

/// `job list ARGS --json`: (exit code, the job lines, the summary).
fn list(fixture: &support::Lake, args: &[&str]) -> (i32, Vec<Value>, Value) {
    let mut all = vec!["job", "list", "--json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = fixture.run(&all);
    let mut lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}\n{stderr}")))
        .collect();
    let summary = lines.pop().unwrap_or_else(|| panic!("no output\n{stderr}"));
    (code, lines, summary)
}

fn ids(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["job"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn job_list_shows_every_job_of_the_ledger_newest_first_and_filters_them() {
    let fixture = support::Lake::start(&["lake", "other"]).await;
    for name in ["a.csv", "dir/b.csv"] {
        support::upload(&fixture.lake("lake"), name, name.as_bytes()).await;
    }
    support::upload(&fixture.lake("other"), "c.csv", b"c").await;

    // A backup job that runs to its end (done), in the ledger through the shard queue.
    let done = support::worker::queue_job(&fixture.settings(), "shard --container lake");
    support::deliver_all_shards(&fixture.app).await;
    support::next_second().await;
    let between = support::now_rfc3339();
    support::next_second().await;
    // A verify of a container with no backup: it finds gaps, so it fails.
    let (code, stdout, _) = fixture.run(&["verify", "--container", "other", "--distributed"]);
    assert_eq!(code, 0, "{stdout}");
    let failed: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let failed = failed["job"].as_str().unwrap().to_owned();
    support::deliver_all_shards(&fixture.app).await;
    // A backup job left on the queue: running.
    let running = support::worker::queue_job(&fixture.settings(), "shard --container other");

    let (code, lines, summary) = list(&fixture, &[]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["status"], "ok");
    assert_eq!(summary["jobs"], 3);
    assert_eq!(
        ids(&lines),
        [running.as_str(), failed.as_str(), done.as_str()],
        "newest first"
    );
    let by_id = |id: &str| lines.iter().find(|l| l["job"] == id).unwrap().clone();
    let (d, f, r) = (by_id(&done), by_id(&failed), by_id(&running));
    assert_eq!(
        (&d["status"], &d["work"], &d["kind"], &d["container"]),
        (
            &"done".into(),
            &"backup".into(),
            &"command".into(),
            &"lake".into()
        )
    );
    assert_eq!(d["blobs"], 2, "the job's counts: {d}");
    assert_eq!(d["shards_finished"], d["shards_queued"]);
    assert!(d["finished"].is_string() && d["started"].is_string(), "{d}");
    assert_eq!(
        (&f["status"], &f["work"]),
        (&"failed".into(), &"verify".into())
    );
    assert_eq!(f["without_backup"], 1, "{f}");
    assert!(f["finished"].is_string(), "{f}");
    assert_eq!(r["status"], "running");
    assert!(
        r["finished"].is_null(),
        "a running job has not finished: {r}"
    );

    let filtered = |args: &[&str]| ids(&list(&fixture, args).1);
    assert_eq!(filtered(&["--state", "failed"]), [failed.as_str()]);
    assert_eq!(filtered(&["--state", "running"]), [running.as_str()]);
    assert_eq!(filtered(&["--state", "done"]), [done.as_str()]);
    assert_eq!(
        filtered(&["--container", "other"]),
        [running.as_str(), failed.as_str()]
    );
    assert_eq!(filtered(&["--kind", "verify"]), [failed.as_str()]);
    assert_eq!(
        filtered(&["--kind", "backup"]),
        [running.as_str(), done.as_str()]
    );
    assert_eq!(
        filtered(&["--kind", "command"]),
        [running.as_str(), done.as_str()]
    );
    assert_eq!(
        filtered(&["--since", &between]),
        [running.as_str(), failed.as_str()]
    );
    assert_eq!(
        filtered(&[
            "--since",
            &between,
            "--kind",
            "backup",
            "--container",
            "other"
        ]),
        [running.as_str()]
    );

    // Without --json: a table, a row per job under a header, and the count.
    let (code, table, stderr) = fixture.run(&["job", "list", "--state", "failed"]);
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<&str> = table.lines().collect();
    assert!(
        rows[0].starts_with("job") && rows[0].contains("status"),
        "{table}"
    );
    assert_eq!(rows.len(), 3, "{table}");
    assert!(
        rows[1].starts_with(&failed) && rows[1].contains("failed"),
        "{table}"
    );
    assert_eq!(rows[2], "1 jobs");

    // A usage error: an unknown state is exit 2 with nothing on stdout.
    let (code, stdout, _) = fixture.run(&["job", "list", "--state", "lost"]);
    assert_eq!((code, stdout.as_str()), (2, ""));
}

#[tokio::test(flavor = "multi_thread")]
async fn job_list_only_reads_a_ledger_that_does_not_exist_yet() {
    let fixture = support::Lake::start(&["lake"]).await;
    let (code, lines, summary) = list(&fixture, &[]);
    assert_eq!((code, lines.len(), &summary["jobs"]), (0, 0, &0.into()));
    let ledger = fixture.app.jobs.container("backup-requests-jobs").unwrap();
    assert!(
        !ledger.exists().await.unwrap(),
        "job list created the ledger"
    );
}
