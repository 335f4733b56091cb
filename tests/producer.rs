//! The producer end to end: the real `lakebackup serve` binary, called the way the Functions
//! host calls it, against Azurite.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use lakebackup::{settings::Settings, storage::StorageAccount};
use serde_json::{json, Value};
use support::{
    worker::{self, Worker},
    Azurite,
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

struct Lake {
    azurite: Azurite,
    source: StorageAccount,
    jobs: StorageAccount,
}

impl Lake {
    async fn new(container: &str, names: &[&str]) -> Lake {
        let azurite = Azurite::start();
        let settings = Settings::from_pairs(worker::settings(&azurite));
        let source = StorageAccount::connect("SOURCE_STORAGE", &settings).unwrap();
        let jobs = StorageAccount::connect("AzureWebJobsStorage", &settings).unwrap();
        let client = source.container(container).unwrap();
        client.create(None).await.unwrap();
        for name in names {
            support::upload(&client, name, format!("content of {name}").as_bytes()).await;
        }
        Lake {
            azurite,
            source,
            jobs,
        }
    }

    /// Snapshot count per base name.
    async fn snapshots(&self, container: &str) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (name, snapshot) in support::list_all(&self.source.container(container).unwrap()).await
        {
            let count = counts.entry(name).or_insert(0);
            if snapshot.is_some() {
                *count += 1;
            }
        }
        counts
    }

    /// The backup requests on the queue, decoded: (container, blob_name, etag).
    async fn requests(&self) -> Vec<(String, String, String)> {
        let queue = self.jobs.queue("backup-requests").unwrap();
        support::drain_queue(&queue)
            .await
            .into_iter()
            .map(|text| {
                let json = BASE64.decode(text).expect("messages are base64");
                let value: Value = serde_json::from_slice(&json).expect("messages are JSON");
                assert_eq!(value.as_object().unwrap().len(), 3, "{value}");
                (
                    value["container"].as_str().unwrap().to_owned(),
                    value["blob_name"].as_str().unwrap().to_owned(),
                    value["etag"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    async fn etag(&self, container: &str, name: &str) -> String {
        use azure_storage_blob::models::BlobClientGetPropertiesResultHeaders;
        let properties = self
            .source
            .container(container)
            .unwrap()
            .blob_client(name)
            .get_properties(None)
            .await
            .unwrap();
        properties
            .etag()
            .unwrap()
            .unwrap()
            .to_string()
            .trim_matches('"')
            .to_owned()
    }
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

#[tokio::test]
async fn host_post_snapshots_and_queues_every_awkward_blob_once() {
    let lake = Lake::new("lake", &AWKWARD_NAMES).await;
    let worker = Worker::serve(&worker::settings(&lake.azurite));

    let (status, res) = invoke(&worker, post_body("lake")).await;
    assert_eq!(status, 200);
    let (code, summary) = res_parts(&res);
    assert_eq!(code, 200, "{summary}");
    assert_eq!(summary["status"], "ok");
    assert_eq!(summary["container"], "lake");
    assert_eq!(summary["blobs"], 9);
    assert_eq!(summary["snapshots_created"], 9);
    assert_eq!(summary["backup_requests"], 9);
    assert!(summary["duration_ms"].is_u64());

    let snapshots = lake.snapshots("lake").await;
    let expected_names: BTreeSet<String> = AWKWARD_NAMES.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        snapshots.keys().cloned().collect::<BTreeSet<_>>(),
        expected_names
    );
    assert!(snapshots.values().all(|&n| n == 1), "{snapshots:?}");

    let mut expected = Vec::new();
    for name in AWKWARD_NAMES {
        expected.push((
            "lake".to_owned(),
            name.to_owned(),
            lake.etag("lake", name).await,
        ));
    }
    let mut requests = lake.requests().await;
    requests.sort();
    expected.sort();
    assert_eq!(requests, expected);
}

#[tokio::test]
async fn second_call_creates_nothing_and_changes_are_picked_up() {
    let lake = Lake::new("lake", &AWKWARD_NAMES[..4]).await;
    let worker = Worker::serve(&worker::settings(&lake.azurite));
    let container = lake.source.container("lake").unwrap();

    let (_, first) = forwarded_get(&worker, "container=lake").await;
    assert_eq!(first["snapshots_created"], 4, "{first}");
    lake.requests().await;

    // Several rounds of change: the listing then holds a base among many snapshots, in whatever
    // order Azurite returns them; an unchanged blob must never be snapshotted again.
    for round in 0..3 {
        let (status, again) = forwarded_get(&worker, "container=lake").await;
        assert_eq!(status, 200);
        assert_eq!(again["blobs"], 4 + round, "{again}");
        assert_eq!(again["snapshots_created"], 0, "round {round}: {again}");
        assert_eq!(again["backup_requests"], 0, "round {round}: {again}");
        assert!(lake.requests().await.is_empty());

        support::upload(&container, "plain.csv", format!("v{round}").as_bytes()).await;
        let new_name = format!("new-{round}.csv");
        support::upload(&container, &new_name, b"new").await;
        let (_, res) = invoke(&worker, post_body("lake")).await;
        let (_, changed) = res_parts(&res);
        assert_eq!(changed["snapshots_created"], 2, "{changed}");
        let etag = lake.etag("lake", "plain.csv").await;
        let mut requests = lake.requests().await;
        requests.sort();
        assert_eq!(
            requests,
            [
                (
                    "lake".into(),
                    new_name.clone(),
                    lake.etag("lake", &new_name).await
                ),
                ("lake".into(), "plain.csv".into(), etag),
            ]
        );
    }
    let snapshots = lake.snapshots("lake").await;
    assert_eq!(snapshots["plain.csv"], 4);
    assert_eq!(snapshots["quote\"d/it's \"here\".json"], 1);
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let lake = Lake::new("lake", &["a.txt"]).await;
    let worker = Worker::serve(&worker::settings(&lake.azurite));

    let missing = json!({"Method": "POST", "Query": {}, "Headers": {}, "Body": ""});
    let invalid = post_body("Not_A_Container");
    let absent = post_body("nosuchcontainer");
    let not_json = json!({"Method": "POST", "Body": "container=lake"});
    for (req, expected, mentions) in [
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
        lake.snapshots("lake").await["a.txt"] == 0,
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
    assert!(error.contains("listing container lake"), "{error}");
    assert!(
        error.to_lowercase().contains("connect"),
        "the cause is named: {error}"
    );
    assert!(!res.to_string().contains(support::azurite::SOURCE_KEY));
    assert_eq!(body["done"]["snapshots_created"], 0);
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
