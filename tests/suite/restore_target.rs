//! A distributed restore writes only into the account its job names (issue 29, defect 4): the
//! job carries its target's account URL (never a secret), and a `lakebackup run` worker whose
//! connection reaches another account — `RESTORE_TARGET_STORAGE` for a restore into another
//! account, `SOURCE_STORAGE` for one into the lake — refuses the shard before it writes anything:
//! the job ends failed, naming both accounts, the shard is poisoned at its first delivery
//! (a worker's settings do not change between retries) and nothing is written anywhere.
//!
//! Two accounts of the suite's Azurite stand for the target accounts: the development account
//! (`devstoreaccount1`, X) and the jobs account (Y). Each holds a container of the target's name
//! beforehand, so a worker that wrote into the wrong one would succeed there.

use crate::support;

use std::{collections::BTreeMap, time::Duration};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use lakebackup::{
    app::App,
    settings::Settings,
    storage::{Container, StorageAccount},
};
use serde_json::Value;
use support::{
    azurite::{BACKUP_KEY, DEV_KEY, JOBS_KEY, SOURCE_KEY},
    worker, Lake,
};

const NAMES: [&str; 4] = ["top.csv", "dir/日本.txt", "dir/🦀.bin", "dir/x｡y/deep.txt"];

/// The lake with `NAMES` backed up.
async fn lake_backed_up() -> Lake {
    let lake = Lake::start(&["lake"]).await;
    let client = lake.lake("lake");
    for name in NAMES {
        support::upload(&client, name, format!("{name} bytes").as_bytes()).await;
    }
    support::produce(&lake.app, "lake").await;
    lake
}

fn account(connection: &str) -> StorageAccount {
    let settings = Settings::from_pairs([("ACCOUNT", connection)]);
    StorageAccount::connect("ACCOUNT", &settings).unwrap()
}

/// Every blob of `container` (none when it does not exist), snapshots included, with its bytes.
async fn blobs(client: &Container) -> BTreeMap<String, Vec<u8>> {
    let mut blobs = BTreeMap::new();
    if !client.exists().await.unwrap() {
        return blobs;
    }
    for (name, snapshot) in support::list_all(client).await {
        let bytes = match &snapshot {
            None => support::download(client, &name).await,
            Some(_) => Vec::new(),
        };
        blobs.insert(format!("{name}@{snapshot:?}"), bytes);
    }
    blobs
}

/// `restore ARGS --distributed` with `settings`: the job's id and its first line.
fn start(settings: &std::collections::HashMap<String, String>, args: &[&str]) -> (String, Value) {
    let mut full = vec!["restore", "--container", "lake"];
    full.extend(args);
    full.push("--distributed");
    let (code, out, err) = worker::run_once(settings, &full);
    assert_eq!(code, 0, "{out}{err}");
    let line: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    (line["job"].as_str().unwrap().to_owned(), line)
}

/// The job `job` ended failed by a refusal at its root shard's first delivery: the reason names
/// both accounts and `setting`, no key; its message went to the poison queue; its ledger has no
/// last-delivery entry (no retry was spent on it).
async fn assert_refused(
    app: &App,
    job: &str,
    (code, lines, status): (i32, Vec<Value>, Value),
    (named, theirs, setting): (&str, &str, &str),
) {
    assert_eq!(code, 1, "job --wait exits 1: {status}");
    assert_eq!(status["status"], "failed", "{status}");
    assert_eq!(status["restored"], 0, "{status}");
    assert!(lines.is_empty(), "no blob was acted on: {lines:?}");
    let reason = status["failures"][0]["reason"].as_str().unwrap_or_default();
    // A worker of another lake is refused for what it would read (the job's lake) before what
    // it would write: either way the reason names both accounts and the setting.
    assert!(
        (reason.contains(&format!("writes into account {named}"))
            || reason.contains(&format!("reads from account {named}")))
            && reason.contains(&format!("{setting} is {theirs}")),
        "the reason names both accounts: {reason}"
    );
    let text = status.to_string();
    for key in [SOURCE_KEY, BACKUP_KEY, JOBS_KEY, DEV_KEY] {
        assert!(!text.contains(key), "no key in the status: {text}");
    }
    let ledger = app.jobs.container("backup-requests-jobs").unwrap();
    let entries: Vec<String> = support::list_all(&ledger)
        .await
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with(job))
        .collect();
    assert!(
        !entries.iter().any(|e| e.contains("/last/")),
        "refused at its first delivery, no retry spent: {entries:?}"
    );
    let poisoned = app.jobs.queue("backup-requests-shards-poison").unwrap();
    let poisoned = support::drain_queue(&poisoned).await;
    assert!(
        poisoned.iter().any(|raw| {
            let text = BASE64.decode(raw).unwrap_or_default();
            String::from_utf8_lossy(&text).contains(job)
        }),
        "the refused shard is on the poison queue: {poisoned:?}"
    );
}

#[tokio::test]
async fn a_restore_into_another_account_is_written_only_by_a_worker_of_that_account() {
    let fixture = lake_backed_up().await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    let x = azurite.connection_string("devstoreaccount1", DEV_KEY);
    let x_url = azurite.blob_endpoint("devstoreaccount1");
    let y = azurite.jobs();
    let y_url = azurite.blob_endpoint("jobs");
    let target_in = |connection: &str| account(connection).container("restored").unwrap();
    let (in_x, in_y) = (target_in(&x), target_in(&y));
    in_y.create().await.unwrap();

    let mut caller = worker::settings(azurite);
    caller.insert("RESTORE_TARGET_STORAGE".into(), x.clone());
    let args = [
        "--to-account",
        "--to-container",
        "restored",
        "--prefix",
        "dir/",
    ];
    let (job, line) = start(&caller, &args);
    let target = serde_json::json!({"account": x_url, "container": "restored", "prefix": "dir/"});
    assert_eq!(line["target"], target, "the job names its target: {line}");

    // A worker whose RESTORE_TARGET_STORAGE is Y: refused, nothing written in Y nor X.
    let mut on_y = worker::settings(azurite);
    on_y.insert("RESTORE_TARGET_STORAGE".into(), y.clone());
    let ended = worker::work_off_job(&on_y, &job, Duration::from_secs(120)).await;
    assert_eq!(ended.2["target"], target, "the status names the target");
    let setting = "RESTORE_TARGET_STORAGE";
    assert_refused(app, &job, ended, (&x_url, &y_url, setting)).await;
    assert!(blobs(&in_y).await.is_empty(), "nothing written into Y");
    assert!(blobs(&in_x).await.is_empty(), "nor into X");

    // A worker without RESTORE_TARGET_STORAGE: refused too.
    let (job, _) = start(&caller, &args);
    let plain = worker::settings(azurite);
    let ended = worker::work_off_job(&plain, &job, Duration::from_secs(120)).await;
    assert_eq!(ended.0, 1, "{}", ended.2);
    let reason = ended.2["failures"][0]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains(&x_url) && reason.contains("RESTORE_TARGET_STORAGE is not set"),
        "{reason}"
    );
    assert!(blobs(&in_x).await.is_empty() && blobs(&in_y).await.is_empty());

    // A worker of X, its endpoint spelled another way: the job is done, in X only.
    let (job, _) = start(&caller, &args);
    let mut on_x = worker::settings(azurite);
    on_x.insert(
        "RESTORE_TARGET_STORAGE".into(),
        format!("AccountName=devstoreaccount1;AccountKey={DEV_KEY};BlobEndpoint={x_url}/"),
    );
    let (code, lines, status) = worker::work_off_job(&on_x, &job, Duration::from_secs(120)).await;
    assert_eq!(code, 0, "{status}");
    assert_eq!(status["status"], "done", "{status}");
    assert_eq!(status["restored"], 3, "{status}");
    assert_eq!(lines.len(), 3, "{lines:?}");
    let restored: Vec<String> = blobs(&in_x).await.into_keys().collect();
    let expected: Vec<String> = NAMES[1..]
        .iter()
        .map(|name| format!("{name}@None"))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(restored, expected, "what dir/ held, in X");
    for name in &NAMES[1..] {
        assert_eq!(
            support::download(&in_x, name).await,
            format!("{name} bytes").into_bytes()
        );
    }
    assert!(blobs(&in_y).await.is_empty(), "still nothing in Y");
}

#[tokio::test]
async fn a_restore_into_the_lake_is_refused_by_another_lakes_worker() {
    let fixture = lake_backed_up().await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    let lake_url = azurite.blob_endpoint("source");
    let other_lake = azurite.connection_string("devstoreaccount1", DEV_KEY);
    let other_url = azurite.blob_endpoint("devstoreaccount1");
    let other = account(&other_lake);
    let mut on_other = worker::settings(azurite);
    on_other.insert("SOURCE_STORAGE".into(), other_lake.clone());
    let caller = worker::settings(azurite);

    // In place, and into another container of the lake: the other lake holds both containers,
    // so a worker that wrote there would succeed.
    for (args, container) in [(&[][..], "lake"), (&["--to-container", "copy"][..], "copy")] {
        let there = other.container(container).unwrap();
        there.create().await.unwrap();
        let (job, line) = start(&caller, args);
        let target = serde_json::json!({"account": lake_url, "container": container, "prefix": ""});
        assert_eq!(line["target"], target, "{line}");
        let ended = worker::work_off_job(&on_other, &job, Duration::from_secs(120)).await;
        assert_eq!(ended.2["target"], target, "{}", ended.2);
        let accounts = (lake_url.as_str(), other_url.as_str(), "SOURCE_STORAGE");
        assert_refused(app, &job, ended, accounts).await;
        assert!(
            blobs(&there).await.is_empty(),
            "nothing written in the other lake"
        );
    }
    let copy = app.source.container("copy").unwrap();
    assert!(blobs(&copy).await.is_empty(), "nor in the lake's copy");
}

#[tokio::test]
async fn a_shard_of_an_earlier_release_into_another_account_is_refused_never_guessed() {
    use lakebackup::{
        core::restore_plan::RestoreOptions,
        engine::jobs::{self, restore::RestoreKind, JobOrigin, NewJob, Root},
        functions::{shards, Delivery, Handled},
    };
    let fixture = lake_backed_up().await;
    let azurite = &fixture.azurite;
    let x = azurite.connection_string("devstoreaccount1", DEV_KEY);
    let mut settings = worker::settings(azurite);
    settings.insert("RESTORE_TARGET_STORAGE".into(), x.clone());
    let app = App::from_settings(&Settings::from_pairs(settings)).unwrap();
    let in_x = account(&x).container("restored").unwrap();
    in_x.create().await.unwrap();

    // Its shards said "another account", never which.
    let options: RestoreOptions = serde_json::from_value(serde_json::json!({
        "from": "backup", "to_container": "restored", "to_account": true
    }))
    .unwrap();
    let new = NewJob::<RestoreKind> {
        origin: JobOrigin::Restore,
        container: "lake".into(),
        roots: vec![Root::directory("")],
        options,
    };
    let queued = jobs::queue(&app, new).await.unwrap();
    let delivery = Delivery {
        text: serde_json::to_string(&queued.roots[0]).unwrap(),
        message_id: "m".into(),
        last_attempt: false,
    };
    let reason = match shards::handle(&app, &delivery).await {
        Ok(Handled::Unusable(reason)) => reason,
        Ok(Handled::Done(done)) => panic!("the shard ran: {done:?}"),
        Err(e) => panic!("{e}"),
    };
    assert!(reason.contains("earlier release"), "{reason}");
    let status = jobs::status(&app, &queued.job).await.unwrap().unwrap();
    assert_eq!(
        status.progress.state,
        lakebackup::core::job::JobState::Failed,
        "{status:?}"
    );
    assert!(blobs(&in_x).await.is_empty(), "nothing written into X");
}
