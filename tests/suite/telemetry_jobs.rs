//! Telemetry of queued work, through the real binary and the ingestion stand-in
//! (`support::ingestion`): a queued job's duration is recorded once, when it ends, by whichever
//! worker ends it, with its kind, what started it and how it ended (the "no reconciliation"
//! alert counts reconciliation jobs that ended done); and a blob event that leaves its version
//! without a backup records the RPO it sees.

use std::{collections::HashMap, time::Duration};

use lakebackup::engine::jobs::{self, NewJob};

use crate::support::{self, ingestion::Ingestion, worker};

/// How many jobs metric `lakebackup.job.duration` counted with every one of `with` (each
/// point of a histogram carries its count of the interval: delta temporality).
fn jobs_counted(ingestion: &Ingestion, with: &[(&str, &str)]) -> u64 {
    ingestion
        .items("MetricData")
        .into_iter()
        .filter(|data| {
            with.iter()
                .all(|(key, value)| data["properties"][*key] == *value)
        })
        .flat_map(|data| data["metrics"].as_array().cloned().unwrap_or_default())
        .filter(|point| point["name"] == "lakebackup.job.duration")
        .map(|point| point["count"].as_u64().unwrap_or(1))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_records_its_duration_once_when_it_ends_by_kind_origin_and_state() {
    let fixture = support::Lake::start(&["lake", "other"]).await;
    let ingestion = Ingestion::start().await;
    for name in ["a.csv", "dir/b.csv", "dir/sub/c.csv", "dir2/d.csv"] {
        support::upload(&fixture.lake("lake"), name, name.as_bytes()).await;
    }
    support::upload(&fixture.lake("other"), "e.csv", b"e").await;
    let mut settings = fixture.settings();
    settings.extend(ingestion.settings());
    settings.insert("OTEL_METRIC_EXPORT_INTERVAL".into(), "500".into());

    // The timer's job: a reconciliation, queued; four shards, ended by a `run` worker taking
    // four at a time.
    let reconciliation = jobs::queue(&fixture.app, NewJob::reconciliation("lake"))
        .await
        .unwrap()
        .job;
    let (code, _, status) =
        worker::work_off_job(&settings, &reconciliation, Duration::from_secs(120)).await;
    assert_eq!(
        (code, status["status"].as_str()),
        (0, Some("done")),
        "{status}"
    );
    // A verify of a container with no backup: queued, it ends failed.
    let (code, stdout, _) = fixture.run(&["verify", "--container", "other", "--distributed"]);
    assert_eq!(code, 0, "{stdout}");
    let verify: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let verify = verify["job"].as_str().unwrap().to_owned();
    let (code, _, status) =
        worker::work_off_job(&settings, &verify, Duration::from_secs(120)).await;
    assert_eq!(
        (code, status["status"].as_str()),
        (1, Some("failed")),
        "{status}"
    );

    // Both `run` processes flushed their metrics when they stopped.
    assert_eq!(ingestion.problems(), Vec::<String>::new());
    let done = [
        ("kind", "backup"),
        ("origin", "reconcile"),
        ("succeeded", "true"),
    ];
    assert_eq!(
        jobs_counted(&ingestion, &done),
        1,
        "the reconciliation, once"
    );
    let failed = [
        ("kind", "verify"),
        ("origin", "verify"),
        ("succeeded", "false"),
    ];
    assert_eq!(
        jobs_counted(&ingestion, &failed),
        1,
        "the failed verify, once"
    );
    assert_eq!(
        jobs_counted(&ingestion, &[]),
        2,
        "no other job, no job twice"
    );
    let durations = ingestion.metric_points("lakebackup.job.duration", &done);
    assert!(
        durations
            .iter()
            .all(|(seconds, _)| (0.0..120.0).contains(seconds)),
        "{durations:?}"
    );
}

/// Delivers `text` to the events function of `worker` as the Functions host does: the
/// invocation's HTTP status and reply.
async fn deliver_event(worker: &worker::Worker, text: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(worker.url("/QueueBlobEvents"))
        .json(&serde_json::json!({
            "Data": {"message": text},
            "Metadata": {
                "Id": "event-1",
                "DequeueCount": 1,
                "PopReceipt": "receipt",
                "InsertionTime": "2026-11-25T12:00:00+00:00",
                "sys": {"MethodName": "QueueBlobEvents"}
            }
        }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_leaves_its_version_without_a_backup_records_the_rpo_it_sees() {
    let fixture = support::Lake::start(&["lake"]).await;
    let ingestion = Ingestion::start().await;
    let lake = fixture.lake("lake");
    support::upload(&lake, "dir/数据.csv", b"data").await;
    let version = lake
        .blob("dir/数据.csv")
        .probe()
        .await
        .unwrap()
        .unwrap()
        .version;
    let (etag, written) = (version.etag, version.last_modified);
    let mut settings: HashMap<String, String> = fixture.settings();
    settings.extend(ingestion.settings());
    settings.insert("OTEL_METRIC_EXPORT_INTERVAL".into(), "500".into());
    // The ADF engine: an event only requests the copy (the backup queue), so its version is
    // left without a backup for now, as a pass counts it.
    for (key, value) in [
        ("BACKUP_COPY_ENGINE", "adf"),
        (
            "ADF_SUBSCRIPTION_ID",
            "00000000-0000-0000-0000-000000000000",
        ),
        ("ADF_RESOURCE_GROUP", "rg"),
        ("ADF_FACTORY_NAME", "factory"),
        ("ADF_PIPELINE_NAME", "lakebackup-copy-blob"),
    ] {
        settings.insert(key.into(), value.into());
    }
    let worker = worker::Worker::serve(&settings);

    let event = crate::events::event_grid("BlobCreated", "source", "lake", "dir/数据.csv", &etag);
    let before = time::OffsetDateTime::now_utc();
    let (status, reply) = deliver_event(&worker, &event.to_string()).await;
    let after = time::OffsetDateTime::now_utc();
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["ReturnValue"]["backup"], "requested", "{reply}");
    let rpo = support::wait_for(Duration::from_secs(20), "the event's RPO", || async {
        ingestion.metric_max("lakebackup.rpo", &[("container", "lake")])
    })
    .await;
    // The version's age while the event was handled (written within the second its
    // Last-Modified names).
    let (least, most) = (
        (before - written).as_seconds_f64() - 1.0,
        (after - written).as_seconds_f64() + 1.0,
    );
    assert!(
        rpo > 0.0 && (least..=most).contains(&rpo),
        "the version's age: {rpo} not in {least}..={most}"
    );
    assert_eq!(ingestion.problems(), Vec::<String>::new());
}
