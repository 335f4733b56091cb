//! Continuations count a job exactly. A level too large for one part goes on from its exact
//! position: a continuation's id is that position, and a part redone after a crash stops where
//! the delivery before it chose to and queues the same continuation, so the ledger counts every
//! blob once and no second chain starts. A job reads `done` only when every part it ever started
//! has finished. Proved with workers killed at random points, and in one process.

use crate::support;

use std::collections::BTreeMap;

use futures::StreamExt;
use lakebackup::{
    app::App,
    engine::{
        jobs::{self, JobOrigin, NewJob, Root, Work},
        restore::{self, RestoreFrom, RestoreRequest},
    },
    settings::Settings,
};
use serde_json::Value;
use support::worker;

/// Blobs of one directory level, written 16 at a time.
async fn seed(app: &App, names: &[String]) {
    let lake = app.source.container_client("lake").unwrap();
    futures::stream::iter(names)
        .for_each_concurrent(16, |name| {
            let lake = &lake;
            async move { support::upload(lake, name, format!("{name} v1").as_bytes()).await }
        })
        .await;
}

async fn lake_app(azurite: &support::Azurite, extra: &[(&str, &str)]) -> App {
    let mut pairs = worker::settings(azurite);
    pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let app = App::from_settings(&Settings::from_pairs(pairs)).unwrap();
    app.source
        .container_client("lake")
        .unwrap()
        .create(None)
        .await
        .unwrap();
    app
}

#[tokio::test]
async fn a_level_continued_in_one_process_counts_every_blob_once() {
    let azurite = support::Azurite::start();
    // Pages of 7 and a one-second budget: 600 blobs take several parts, and each continuation
    // lists again from a page that now holds the snapshots the part before took, so the last
    // blob done is on a later page than it was.
    let app = lake_app(
        &azurite,
        &[("SHARD_TIME_BUDGET_SECONDS", "1"), ("SHARD_PAGE_SIZE", "7")],
    )
    .await;
    let names: Vec<String> = (0..600).map(|i| format!("wide/f{i:04}.txt")).collect();
    seed(&app, &names).await;
    let job = jobs::run_here(
        &app,
        NewJob {
            origin: JobOrigin::Producer,
            container: "lake".into(),
            roots: vec![Root::directory("")],
            work: Work::Backup,
        },
        4,
    )
    .await;
    assert!(job.shards > 3, "the level took several parts: {job:?}");
    for count in ["blobs", "backups_copied", "snapshots_created"] {
        assert_eq!(job.totals.get(count), 600, "{count}: {:?}", job.totals);
    }
    assert_eq!(job.totals.get("backups_present"), 0, "{:?}", job.totals);

    let mut restored = 0;
    let summary = restore::restore(
        &app,
        &RestoreRequest {
            container: "lake".into(),
            prefix: None,
            blob: None,
            as_of: None,
            from: RestoreFrom::Backup,
            to_container: Some("copy".into()),
            to_account: false,
            dry_run: false,
            verify_content: false,
        },
        &mut |action| restored += usize::from(action.action == "restore"),
    )
    .await;
    assert_eq!((summary.restored, restored), (600, 600), "{summary:?}");
}

#[tokio::test]
async fn workers_killed_at_twenty_random_points_lose_nothing_and_count_each_blob_once() {
    let azurite = support::Azurite::start();
    let app = lake_app(&azurite, &[]).await;
    // One large directory (its parts run out of budget and go on) and nested ones named across
    // Unicode.
    let mut names: Vec<String> = (0..150).map(|i| format!("big/part-{i:03}.csv")).collect();
    for directory in ["日本/", "x｡y/🦀/"] {
        names.extend((0..15).map(|i| format!("{directory}f{i}.txt")));
    }
    seed(&app, &names).await;
    let mut settings = worker::settings(&azurite);
    for (key, value) in [
        ("SHARD_TIME_BUDGET_SECONDS", "1"),
        ("SHARD_PAGE_SIZE", "9"),
        ("SNAPSHOT_CONCURRENCY", "2"),
        // A killed worker's messages come back soon.
        ("RUN_VISIBILITY_SECONDS", "2"),
        ("COPY_TIMEOUT_SECONDS", "20"),
    ] {
        settings.insert(key.into(), value.into());
    }

    // A backup job, killed at 20 points.
    let (code, out, err) = worker::run_once(&settings, &["shard", "--container", "lake"]);
    assert_eq!(code, 0, "{out}{err}");
    let job = serde_json::from_str::<Value>(out.lines().next().unwrap()).unwrap()["job"]
        .as_str()
        .unwrap()
        .to_owned();
    let backed_up = {
        let app = App::from_settings(&Settings::from_pairs(settings.clone())).unwrap();
        let expected = names.len();
        move || {
            let backup = app.backup.container_client("lakebak").unwrap();
            async move {
                let stamped = support::list_all(&backup).await.len();
                (stamped == expected)
                    .then_some(())
                    .ok_or(format!("{stamped} of {expected} versions backed up"))
            }
        }
    };
    let (status, _) =
        worker::work_off_killing(&settings, &job, 20, 0x9E37_79B9_7F4A_7C15, backed_up).await;
    assert_eq!(status["status"], "done", "{status}");
    assert_eq!(status["shards_failed"], 0, "{status}");
    assert_eq!(
        status["blobs"],
        names.len(),
        "each blob counted once: {status}"
    );
    assert_eq!(
        status["backups_copied"].as_u64().unwrap() + status["backups_present"].as_u64().unwrap(),
        names.len() as u64,
        "{status}"
    );

    // A restore job into another container, killed at 20 other points.
    let (code, out, err) = worker::run_once(
        &settings,
        &[
            "restore",
            "--container",
            "lake",
            "--to-container",
            "restored",
            "--distributed",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let job = serde_json::from_str::<Value>(out.lines().next().unwrap()).unwrap()["job"]
        .as_str()
        .unwrap()
        .to_owned();
    let restored = {
        let app = App::from_settings(&Settings::from_pairs(settings.clone())).unwrap();
        let expected = names.len();
        move || {
            let target = app.source.container_client("restored").unwrap();
            async move {
                let present = support::list_all(&target).await.len();
                (present == expected)
                    .then_some(())
                    .ok_or(format!("{present} of {expected} blobs restored"))
            }
        }
    };
    let (status, lines) =
        worker::work_off_killing(&settings, &job, 20, 0xD1B5_4A32_D192_ED03, restored).await;
    assert_eq!(status["status"], "done", "{status}");
    assert_eq!(status["shards_failed"], 0, "{status}");
    assert_eq!(
        status["restored"],
        names.len(),
        "each blob counted once: {status}"
    );
    let mut reported: BTreeMap<String, usize> = BTreeMap::new();
    for line in &lines {
        assert_eq!(line["action"], "restore", "{line}");
        *reported
            .entry(line["blob"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(reported.len(), names.len(), "every blob reported");
    assert!(
        reported.values().all(|n| *n == 1),
        "each blob reported once: {reported:?}"
    );
    let target = app.source.container_client("restored").unwrap();
    for name in &names {
        assert_eq!(
            support::download(&target, name).await,
            format!("{name} v1").into_bytes(),
            "{name}"
        );
    }
}
