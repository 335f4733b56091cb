//! `lakebackup verify` on Azurite: the real binary, after a real backup, catching a deleted
//! backup, a same-length corrupted one and a blob changed since its backup, and reporting the RPO.

use crate::support;

use std::{collections::BTreeMap, time::Duration};

use lakebackup::storage::testing::NewBlob;
use serde_json::Value;
use support::{
    proxy::{FaultKind, Faults, OpClass, ProxiedAzurite, ProxyConfig},
    worker,
};

fn verify(azurite: &support::Azurite, args: &[&str]) -> (i32, Value) {
    let mut full = vec!["verify", "--container", "lake"];
    full.extend(args);
    // One JSON line per gap or warning as found, then the summary, which lists them too.
    let (code, found, summary) = worker::run_lines(&worker::settings(azurite), &full);
    let listed = summary["gaps"].as_array().unwrap().len()
        + summary["warnings"].as_array().map_or(0, Vec::len);
    assert_eq!(found.len(), listed, "a line per gap and warning: {found:?}");
    (code, summary)
}

fn gaps(summary: &Value) -> BTreeMap<String, Vec<String>> {
    let mut gaps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for gap in summary["gaps"].as_array().unwrap() {
        gaps.entry(gap["blob"].as_str().unwrap().to_owned())
            .or_default()
            .push(gap["problem"].as_str().unwrap().to_owned());
    }
    gaps
}

#[tokio::test]
async fn deep_verify_catches_missing_corrupted_and_stale_backups_and_reports_the_rpo() {
    let fixture = support::Lake::start(&["lake"]).await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    let lake = app.source.container("lake").unwrap();
    for name in ["a.csv", "dir/b.csv", "dir/c.csv", "d.csv"] {
        support::upload(&lake, name, format!("content of {name}").as_bytes()).await;
    }
    support::produce(app, "lake").await;

    let (code, clean) = verify(azurite, &["--deep"]);
    assert_eq!(code, 0, "{clean}");
    assert_eq!(
        (
            clean["checked"].as_u64(),
            clean["gaps"].as_array().map(Vec::len)
        ),
        (Some(4), Some(0))
    );
    assert!(clean["rpo_seconds"].is_null(), "{clean}");

    let vault = app.backup.container("lakebak").unwrap();
    let backup_of = |name: &str| {
        let stem = name.trim_end_matches(".csv").to_owned();
        let vault = &vault;
        async move {
            support::list_all(vault)
                .await
                .into_iter()
                .map(|(n, _)| n)
                .find(|n| n.starts_with(&format!("{stem}_")))
                .unwrap()
        }
    };
    // a: its backup is deleted. b: its backup corrupted, same length, stamp kept. c: changed
    // in the lake since its backup.
    let a = backup_of("a.csv").await;
    vault.blob(&a).delete(None).await.unwrap();
    let b = backup_of("dir/b.csv").await;
    let (_, _, stamp) = support::properties(&vault, &b).await;
    let corrupted = "content of dir/b.csX".as_bytes().to_vec();
    let stamped = NewBlob {
        metadata: stamp,
        ..NewBlob::default()
    };
    support::upload_with(&vault, &b, &corrupted, &stamped).await;
    support::upload(&lake, "dir/c.csv", b"changed since its backup").await;

    let (code, shallow) = verify(azurite, &[]);
    assert_eq!(code, 1, "{shallow}");
    assert!(
        !gaps(&shallow).contains_key("dir/b.csv"),
        "bytes are read only when deep"
    );

    let (code, deep) = verify(azurite, &["--deep"]);
    assert_eq!(code, 1, "{deep}");
    assert_eq!(deep["status"], "gaps");
    let found = gaps(&deep);
    assert_eq!(found["a.csv"], ["no_backup"]);
    assert_eq!(found["dir/b.csv"], ["backup_mismatch"]);
    let mut c = found["dir/c.csv"].clone();
    c.sort();
    assert_eq!(c, ["no_backup", "no_snapshot"]);
    assert!(!found.contains_key("d.csv"), "{deep}");
    assert_eq!(deep["mismatched"], 1);
    assert!(deep["rpo_seconds"].as_i64().is_some(), "{deep}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_distributed_deep_verify_over_many_parts_finds_exactly_what_a_run_here_finds() {
    let fixture = support::Lake::start(&["lake"]).await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    let lake = app.source.container("lake").unwrap();
    let names: Vec<String> = ["", "日本/", "x｡y/🦀/"]
        .iter()
        .flat_map(|dir| (0..12).map(move |i| format!("{dir}f{i}.txt")))
        .collect();
    for name in &names {
        support::upload(&lake, name, format!("content of {name}").as_bytes()).await;
    }
    support::produce(app, "lake").await;
    // Two gaps: a backup deleted, a blob changed since its backup.
    let vault = app.backup.container("lakebak").unwrap();
    let backup_of_f3 = support::list_all(&vault)
        .await
        .into_iter()
        .map(|(n, _)| n)
        .find(|n| n.starts_with("日本/f3_"))
        .unwrap();
    vault.blob(&backup_of_f3).delete(None).await.unwrap();
    support::upload(&lake, "x｡y/🦀/f5.txt", b"changed since its backup").await;

    let (code, here) = verify(azurite, &["--deep"]);
    assert_eq!(code, 1, "{here}");
    let mut found_here = gaps(&here);
    assert_eq!(found_here.len(), 2, "{here}");
    for problems in found_here.values_mut() {
        problems.sort();
    }

    // Reads slowed to ~100 ms, one at a time, with a one-second budget: each level's deep
    // checks take several parts.
    let proxied = ProxiedAzurite::start(
        azurite,
        ProxyConfig::azurite().faults(
            Faults::new(11, 1.0)
                .classes([OpClass::Read])
                .kinds([FaultKind::Delay])
                .delay(Duration::from_millis(90), Duration::from_millis(110)),
        ),
    )
    .expect("proxies start");
    let settings = support::with(
        proxied.settings(),
        &[
            ("SHARD_TIME_BUDGET_SECONDS", "1"),
            ("SNAPSHOT_CONCURRENCY", "1"),
            ("RUN_VISIBILITY_SECONDS", "30"),
        ],
    );
    let (code, out, err) = worker::run_once(
        &settings,
        &["verify", "--container", "lake", "--deep", "--distributed"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let started: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(started["work"], "verify", "{started}");
    let job = started["job"].as_str().unwrap();
    let (code, lines, status) =
        worker::work_off_job(&settings, job, Duration::from_secs(120)).await;
    assert_eq!(code, 1, "a verify that found gaps fails: {status}");
    assert_eq!(
        (&status["status"], &status["work"]),
        (&Value::from("failed"), &Value::from("verify"))
    );
    assert!(
        status["shards_queued"].as_u64().unwrap() > 4,
        "the levels went on in continuations: {status}"
    );
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in &lines {
        found
            .entry(line["blob"].as_str().unwrap().to_owned())
            .or_default()
            .push(line["problem"].as_str().unwrap().to_owned());
    }
    for problems in found.values_mut() {
        problems.sort();
    }
    assert_eq!(found, found_here, "the job's report holds the same gaps");
    // Every blob judged once, each backup's bytes read once.
    for count in [
        "blobs",
        "backed_up",
        "without_backup",
        "without_snapshot",
        "checked",
    ] {
        assert_eq!(status[count], here[count], "{count}: {status}");
    }
    assert_eq!(status["blobs"], names.len() as u64);
    // The job's failures name the blobs with gaps.
    let failures = status["failures"].to_string();
    for blob in found.keys() {
        assert!(failures.contains(blob.as_str()), "{blob}: {status}");
    }
}
