//! The producer end to end: the real `lakebackup serve` binary, called the way the Functions
//! host calls it (the HTTP trigger, and the shard queue's trigger), against Azurite.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};

use lakebackup::core::{naming, stamp};
use serde_json::{json, Value};
use support::{
    worker::{self, Worker},
    Azurite, Lake, ShardPump,
};

const FUNCTION: &str = "HttpSnapshotIncBackupContainerProducer";

/// Names that break string-built JSON, naive URL handling or extension parsing.
const AWKWARD_NAMES: [&str; 9] = [
    "plain.csv",
    "with space/and more spaces.txt",
    "quote\"d/it's \"here\".json",
    "hash#and?question.csv",
    "percent%20not-a-space%2F.bin",
    "ünïcødé/数据/файл.parquet",
    "deep/a/b/c/d/e/f/g/h/i/j/k/l/m.txt",
    "dots.in.dir.v2/file.tar.gz",
    "curly {braces} [brackets] & plus+sign ~.txt",
];

/// The common lake with `container` holding `names`.
async fn lake_of(container: &str, names: &[&str]) -> Lake {
    let lake = Lake::start(&[container]).await;
    let client = lake.lake(container);
    for name in names {
        support::upload(&client, name, format!("content of {name}").as_bytes()).await;
    }
    lake
}

/// Snapshot count per base name.
async fn snapshots(lake: &Lake, container: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (name, snapshot) in support::list_all(&lake.lake(container)).await {
        let count = counts.entry(name).or_insert(0);
        if snapshot.is_some() {
            *count += 1;
        }
    }
    counts
}

/// The stamped backups in `{container}bak`: source name → the ETags they are stamped with.
async fn backups(lake: &Lake, container: &str) -> BTreeMap<String, Vec<String>> {
    let vault = lake.vault(container);
    let mut backups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if !vault.exists().await.unwrap() {
        return backups;
    }
    for (name, _) in support::list_all(&vault).await {
        let (_, _, metadata) = support::properties(&vault, &name).await;
        let source = naming::parse_backup_blob_name(&name).unwrap().source_name;
        let etag = stamp::stamped_etag(&metadata).expect("stamped").to_owned();
        backups.entry(source).or_default().push(etag);
    }
    backups
}

/// Nothing left on the per-blob backup queue (the direct engine copies in the shards).
async fn no_requests(lake: &Lake) -> bool {
    let queue = lake.queue("backup-requests");
    !support::queue_exists(&queue).await || support::drain_queue(&queue).await.is_empty()
}

async fn etag(lake: &Lake, container: &str, name: &str) -> String {
    support::properties(&lake.lake(container), name).await.0
}

/// POSTs a host-shaped HTTP-trigger invocation; returns (invocation status, res binding).
async fn invoke(worker: &Worker, req: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(worker.url(&format!("/{FUNCTION}")))
        .json(&json!({
            "Data": {"req": req},
            "Metadata": {"sys": {"MethodName": FUNCTION, "UtcNow": "2026-11-25T12:00:00Z"}}
        }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let reply: Value = response.json().await.unwrap();
    assert!(reply["Logs"].is_array(), "{reply}");
    (status, reply["Outputs"]["res"].clone())
}

/// The `res` binding's status and parsed JSON body.
fn res_parts(res: &Value) -> (u64, Value) {
    let body: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    assert!(body.is_object(), "ADF needs a JSON object: {body}");
    (res["statusCode"].as_u64().unwrap(), body)
}

fn post_body(container: &str) -> Value {
    json!({
        "Url": format!("http://localhost:7071/api/{FUNCTION}"),
        "Method": "POST",
        "Query": {},
        "Headers": {"Content-Type": ["application/json"]},
        "Params": {},
        "Body": json!({"container": container}).to_string(),
    })
}

async fn forwarded_get(worker: &Worker, query: &str) -> (u16, Value) {
    let response = reqwest::get(worker.url(&format!("/api/{FUNCTION}?{query}")))
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// `lakebackup serve` on the lake, with the host's queue trigger for the shard function.
fn serve_with_shards(lake: &Lake, extra: &[(&str, &str)]) -> (Worker, ShardPump) {
    let worker = lake.serve(extra);
    let pump = ShardPump::start(&worker, &lake.app.jobs);
    (worker, pump)
}

#[tokio::test]
async fn host_post_snapshots_and_backs_up_every_awkward_blob_once() {
    let lake = lake_of("lake", &AWKWARD_NAMES).await;
    let (worker, _pump) = serve_with_shards(&lake, &[]);

    let (status, res) = invoke(&worker, post_body("lake")).await;
    assert_eq!(status, 200);
    let (code, summary) = res_parts(&res);
    assert_eq!(code, 200, "{summary}");
    assert_eq!(summary["status"], "done");
    assert_eq!(summary["container"], "lake");
    assert_eq!(summary["kind"], "producer");
    assert_eq!(summary["blobs"], 9);
    assert_eq!(summary["snapshots_created"], 9);
    assert_eq!(summary["backups_copied"], 9);
    assert!(
        summary["shards_finished"].as_u64().unwrap() > 1,
        "nested: {summary}"
    );

    let snapshots = snapshots(&lake, "lake").await;
    let expected_names: BTreeSet<String> = AWKWARD_NAMES.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        snapshots.keys().cloned().collect::<BTreeSet<_>>(),
        expected_names
    );
    assert!(snapshots.values().all(|&n| n == 1), "{snapshots:?}");
    let backups = backups(&lake, "lake").await;
    for name in AWKWARD_NAMES {
        assert_eq!(backups[name], [etag(&lake, "lake", name).await], "{name}");
    }
    assert!(no_requests(&lake).await);
}

#[tokio::test]
async fn second_call_creates_nothing_and_changes_are_picked_up() {
    let lake = lake_of("lake", &AWKWARD_NAMES[..4]).await;
    let (worker, _pump) = serve_with_shards(&lake, &[]);
    let container = lake.lake("lake");

    let (_, first) = forwarded_get(&worker, "container=lake").await;
    assert_eq!(first["snapshots_created"], 4, "{first}");

    // Several rounds of change: the listing then holds a base among many snapshots, in whatever
    // order Azurite returns them; an unchanged blob must never be snapshotted again.
    for round in 0..3 {
        let (status, again) = forwarded_get(&worker, "container=lake").await;
        assert_eq!(status, 200);
        assert_eq!(again["blobs"], 4 + round, "{again}");
        assert_eq!(again["snapshots_created"], 0, "round {round}: {again}");
        assert_eq!(again["backups_copied"], 0, "round {round}: {again}");

        support::upload(&container, "plain.csv", format!("v{round}").as_bytes()).await;
        let new_name = format!("new-{round}.csv");
        support::upload(&container, &new_name, b"new").await;
        let (_, res) = invoke(&worker, post_body("lake")).await;
        let (_, changed) = res_parts(&res);
        assert_eq!(changed["snapshots_created"], 2, "{changed}");
        assert_eq!(changed["backups_copied"], 2, "{changed}");
        let backups = backups(&lake, "lake").await;
        assert_eq!(backups[&new_name], [etag(&lake, "lake", &new_name).await]);
        assert!(backups["plain.csv"].contains(&etag(&lake, "lake", "plain.csv").await));
    }
    let snapshots = snapshots(&lake, "lake").await;
    assert_eq!(snapshots["plain.csv"], 4);
    assert_eq!(snapshots["quote\"d/it's \"here\".json"], 1);
    assert_eq!(backups(&lake, "lake").await["plain.csv"].len(), 4);
}

#[tokio::test]
async fn a_prefix_limits_the_job_to_that_directory_tree() {
    let lake = lake_of("lake", &AWKWARD_NAMES).await;
    let (worker, _pump) = serve_with_shards(&lake, &[]);
    let mut req = post_body("lake");
    req["Body"] = json!({"container": "lake", "prefix": "deep/a/b"})
        .to_string()
        .into();
    let (_, res) = invoke(&worker, req).await;
    let (code, summary) = res_parts(&res);
    assert_eq!(code, 200, "{summary}");
    assert_eq!(summary["prefix"], "deep/a/b/");
    assert_eq!(
        (
            summary["blobs"].as_u64(),
            summary["backups_copied"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let (_, by_query) = forwarded_get(
        &worker,
        "container=lake&prefix=%C3%BCn%C3%AFc%C3%B8d%C3%A9%2F",
    )
    .await;
    assert_eq!(by_query["backups_copied"], 1, "{by_query}");
    let snapshotted: Vec<String> = snapshots(&lake, "lake")
        .await
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        snapshotted,
        [
            "deep/a/b/c/d/e/f/g/h/i/j/k/l/m.txt",
            "ünïcødé/数据/файл.parquet"
        ]
    );
}

#[tokio::test]
async fn a_job_longer_than_the_wait_is_answered_202_and_its_status_url_leads_to_the_totals() {
    let lake = lake_of("lake", &AWKWARD_NAMES).await;
    // No wait at all, and at first nobody to run the shards: the job cannot be done.
    let worker = lake.serve(&[("PRODUCER_WAIT_SECONDS", "0")]);
    let mut req = post_body("lake");
    req["Url"] = format!("https://app.azurewebsites.net/api/{FUNCTION}?code=key-1").into();
    req["Query"] = json!({"code": "key-1"});
    let response = reqwest::Client::new()
        .post(worker.url(&format!("/{FUNCTION}")))
        .json(&json!({"Data": {"req": req}, "Metadata": {}}))
        .send()
        .await
        .unwrap();
    let reply: Value = response.json().await.unwrap();
    assert!(
        !reply["Logs"].to_string().contains("key-1"),
        "the function key must not reach the logs: {}",
        reply["Logs"]
    );
    let res = reply["Outputs"]["res"].clone();
    let (code, accepted) = res_parts(&res);
    assert_eq!(code, 202, "{accepted}");
    assert_eq!(accepted["status"], "running");
    let job = accepted["job"].as_str().unwrap().to_owned();
    let location = res["headers"]["Location"].as_str().unwrap().to_owned();
    assert_eq!(accepted["statusQueryGetUri"], location.as_str());
    assert_eq!(
        location,
        format!("https://app.azurewebsites.net/api/{FUNCTION}?code=key-1&job={job}"),
        "the status URL keeps the function key, so ADF's Web activity is let in"
    );

    // What ADF's Web activity does: GET the Location until it is no longer 202.
    let get_status = |url: String| {
        let worker = &worker;
        async move {
            let query: serde_json::Map<String, Value> = url::Url::parse(&url)
                .unwrap()
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect();
            let (_, res) = invoke(
                worker,
                json!({"Url": url, "Method": "GET", "Query": query, "Headers": {}, "Body": ""}),
            )
            .await;
            res
        }
    };
    let (code, running) = res_parts(&get_status(location.clone()).await);
    assert_eq!(code, 202, "{running}");
    assert_eq!(
        (
            running["shards_queued"].as_u64(),
            running["shards_finished"].as_u64()
        ),
        (Some(1), Some(0))
    );

    let _pump = ShardPump::start(&worker, &lake.app.jobs);
    let within = std::time::Duration::from_secs(60);
    let done = support::wait_for(within, "the job's end", || async {
        let res = get_status(location.clone()).await;
        let (code, body) = res_parts(&res);
        if code != 202 {
            assert_eq!(code, 200, "{body}");
            return Some(body);
        }
        assert_eq!(res["headers"]["Location"], location.as_str());
        None
    })
    .await;
    assert_eq!(done["status"], "done");
    assert_eq!(done["job"], job.as_str());
    assert_eq!(done["backups_copied"], 9, "{done}");
    assert_eq!(done["shards_queued"], done["shards_finished"]);
    assert_eq!(backups(&lake, "lake").await.len(), 9);

    // Standalone's plain route answers with the header itself.
    let (status, unknown) = forwarded_get(&worker, "job=job-nope").await;
    assert_eq!((status, unknown["status"].as_str()), (404, Some("error")));
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let lake = lake_of("lake", &["a.txt"]).await;
    let worker = lake.serve(&[]);

    let missing = json!({"Method": "POST", "Query": {}, "Headers": {}, "Body": ""});
    let invalid = post_body("Not_A_Container");
    let absent = post_body("nosuchcontainer");
    let not_json = json!({"Method": "POST", "Body": "container=lake"});
    let mut bad_prefix = post_body("lake");
    bad_prefix["Body"] = json!({"container": "lake", "prefix": 7}).to_string().into();
    for (req, expected, mentions) in [
        (bad_prefix, 400, "\"prefix\" must be a string"),
        (missing, 400, "missing container"),
        (invalid, 400, "invalid container name"),
        (absent, 404, "does not exist"),
        (not_json, 400, "JSON object"),
    ] {
        let (status, res) = invoke(&worker, req).await;
        assert_eq!(status, 200, "the invocation itself succeeds");
        let (code, body) = res_parts(&res);
        assert_eq!(code, expected, "{body}");
        assert_eq!(body["status"], "error");
        assert!(body["error"].as_str().unwrap().contains(mentions), "{body}");
    }

    let (status, body) = forwarded_get(&worker, "container=nosuchcontainer").await;
    assert_eq!((status, body["status"].as_str()), (404, Some("error")));
    let (status, _) = forwarded_get(&worker, "").await;
    assert_eq!(status, 400);

    let garbage = reqwest::Client::new()
        .post(worker.url(&format!("/{FUNCTION}")))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status().as_u16(), 400);
    assert!(
        snapshots(&lake, "lake").await["a.txt"] == 0,
        "nothing was done"
    );
}

#[tokio::test]
async fn unreachable_storage_is_a_5xx_with_the_cause_and_no_secret() {
    let azurite = Azurite::start();
    let mut settings = worker::settings(&azurite);
    let unreachable = support::unreachable_connection("source", support::azurite::SOURCE_KEY);
    settings.insert("SOURCE_STORAGE".into(), unreachable);
    let worker = Worker::serve(&settings);
    let (status, res) = invoke(&worker, post_body("lake")).await;
    assert_eq!(status, 200);
    let (code, body) = res_parts(&res);
    assert_eq!(code, 503, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("reading container lake"), "{error}");
    assert!(
        error.to_lowercase().contains("connect"),
        "the cause is named: {error}"
    );
    assert!(!res.to_string().contains(support::azurite::SOURCE_KEY));
}

#[test]
fn missing_or_malformed_settings_stop_start_up_with_the_setting_named() {
    let azurite = Azurite::start();
    let mut settings = worker::settings(&azurite);
    settings.remove("BACKUP_STORAGE");
    let (code, _, stderr) = worker::run_once(&settings, &["produce", "--container", "lake"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("setting BACKUP_STORAGE: is not set"),
        "{stderr}"
    );

    let mut settings = worker::settings(&azurite);
    let secret = "AccountName=source;AccountKey=%%not-base64-secret%%";
    settings.insert("SOURCE_STORAGE".into(), secret.into());
    settings.insert("FUNCTIONS_CUSTOMHANDLER_PORT".into(), "1".into());
    let (code, _, stderr) = worker::run_once(&settings, &["serve"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("setting SOURCE_STORAGE"), "{stderr}");
    assert!(!stderr.contains("not-base64-secret"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
