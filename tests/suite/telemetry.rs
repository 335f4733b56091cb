//! Telemetry to Application Insights, through the real binary and a stand-in of the ingestion
//! endpoint (`support::ingestion`): what a backup run sends (its request, its blobs'
//! dependencies, the metrics with the right numbers), the RPO and failures when backups fail,
//! what `serve` sends while it runs (a poisoned message), and that the instrumentation key
//! appears in no output.

use std::{collections::HashMap, time::Duration};

use crate::support::{
    self,
    ingestion::{Ingestion, INSTRUMENTATION_KEY},
    proxy::{OpClass, ProxiedAzurite, ProxyConfig},
    worker,
};

const CONNECTION_STRING: &str = "APPLICATIONINSIGHTS_CONNECTION_STRING";

/// Runs `lakebackup ARGS` off the runtime (the stand-in answers on it meanwhile): (exit code,
/// stdout and stderr together).
async fn run(settings: &HashMap<String, String>, args: &[&str]) -> (i32, String) {
    let settings = settings.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = worker::run_once(&settings, &args);
        (code, format!("{stdout}{stderr}"))
    })
    .await
    .unwrap()
}

fn property<'a>(item: &'a serde_json::Value, key: &str) -> &'a str {
    item["properties"][key].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_run_sends_its_request_its_blobs_and_its_metrics() {
    let fixture = support::Lake::start(&["lake"]).await;
    let ingestion = Ingestion::start().await;
    let lake = fixture.lake("lake");
    let blobs: [(&str, &[u8]); 3] = [
        ("a.csv", b"alpha"),
        ("dir/\u{1F600} 表\u{FF61}.bin", &[0u8; 1000]),
        ("dir/sub/c.txt", b"see"),
    ];
    for (name, bytes) in blobs {
        support::upload(&lake, name, bytes).await;
    }
    let bytes: usize = blobs.iter().map(|(_, b)| b.len()).sum();
    let mut settings = fixture.settings();
    settings.extend(ingestion.settings());
    // A quiet log leaves the telemetry whole.
    settings.insert("RUST_LOG".into(), "warn".into());

    let (code, output) = run(&settings, &["produce", "--container", "lake"]).await;
    assert_eq!(code, 0, "{output}");
    assert!(!output.contains("INFO"), "RUST_LOG=warn: {output}");
    assert!(
        !output.contains(INSTRUMENTATION_KEY),
        "the instrumentation key in the output: {output}"
    );
    // Flushed when the command ended: everything is there once it has exited.
    assert_eq!(ingestion.problems(), Vec::<String>::new());

    let job = &backup_job_request(&ingestion);
    assert_eq!(property(job, "container"), "lake", "{job}");
    assert_eq!(property(job, "kind"), "backup", "{job}");
    assert_eq!(job["success"], true, "{job}");

    // Each blob's span, a dependency of the job, carries its name (astral, CJK, U+FF61 intact).
    let dependencies = ingestion.items("RemoteDependencyData");
    for (name, _) in blobs {
        assert!(
            dependencies
                .iter()
                .any(|d| d["name"] == "blob" && property(d, "blob") == name),
            "no dependency for {name:?}: {dependencies:#?}"
        );
    }
    assert!(
        dependencies
            .iter()
            .any(|d| d["name"] == "shard" && property(d, "container") == "lake"),
        "{dependencies:#?}"
    );

    let lake_only = [("container", "lake")];
    assert_eq!(
        ingestion.metric_total("lakebackup.versions_backed_up", &lake_only),
        3.0
    );
    assert_eq!(
        ingestion.metric_total("lakebackup.bytes_copied", &lake_only),
        bytes as f64
    );
    let rpo = ingestion.metric_max("lakebackup.rpo", &lake_only);
    assert_eq!(rpo, Some(0.0), "all caught up");
    assert_eq!(
        ingestion.metric_total("lakebackup.failures", &[]),
        0.0,
        "nothing failed"
    );
    let jobs = ingestion.metric_points("lakebackup.job.duration", &[("kind", "backup")]);
    assert_eq!(jobs.len(), 1, "one job: {jobs:?}");
    assert_eq!(jobs[0].1["succeeded"], "true", "{jobs:?}");
    assert!(!ingestion
        .metric_points("lakebackup.part.duration", &[("kind", "backup")])
        .is_empty());

    // A second run finds everything backed up: no version counted twice.
    let (code, output) = run(&settings, &["produce", "--container", "lake"]).await;
    assert_eq!(code, 0, "{output}");
    assert_eq!(
        ingestion.metric_total("lakebackup.versions_backed_up", &lake_only),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_that_fail_show_in_the_rpo_and_the_failures() {
    let fixture = support::Lake::start(&["lake"]).await;
    let ingestion = Ingestion::start().await;
    let lake = fixture.lake("lake");
    for name in ["old.csv", "dir/new.csv"] {
        support::upload(&lake, name, name.as_bytes()).await;
    }
    // The oldest version's write, to the second: the RPO the pass sees is its age then.
    let (_, written, _) = support::properties(&lake, "old.csv").await;
    // The backup account refuses every write and copy (as a role without write rights would).
    let refusing = ProxiedAzurite::start(
        &fixture.azurite,
        ProxyConfig::azurite().deny_classes([OpClass::Write, OpClass::Copy]),
    )
    .unwrap();
    let mut settings = fixture.settings();
    settings.extend(ingestion.settings());
    settings.insert("BACKUP_STORAGE".into(), refusing.backup());

    let before = time::OffsetDateTime::now_utc();
    let (code, output) = run(&settings, &["produce", "--container", "lake"]).await;
    let after = time::OffsetDateTime::now_utc();
    assert_eq!(code, 1, "the job failed: {output}");
    assert!(!output.contains(INSTRUMENTATION_KEY), "{output}");
    assert_eq!(ingestion.problems(), Vec::<String>::new());

    let lake_only = [("container", "lake")];
    assert_eq!(
        ingestion.metric_total("lakebackup.versions_backed_up", &lake_only),
        0.0
    );
    assert_eq!(
        ingestion.metric_total(
            "lakebackup.failures",
            &[("kind", "backup"), ("reason", "unit")]
        ),
        2.0
    );
    // Each directory's part saw its own version left behind: the worst is the oldest's age
    // while the pass ran (written within the second its Last-Modified names).
    let worst = ingestion
        .metric_max("lakebackup.rpo", &lake_only)
        .expect("the RPO");
    let seconds = |d: time::Duration| d.as_seconds_f64();
    let (least, most) = (
        seconds(before - written) - 1.0,
        seconds(after - written) + 1.0,
    );
    assert!(
        worst > 0.0 && (least..=most).contains(&worst),
        "{worst} not in {least}..={most}"
    );
    let job = &backup_job_request(&ingestion);
    assert_eq!(property(job, "container"), "lake", "{job}");
    assert_eq!(job["success"], false, "{job}");
    let failed = ingestion.metric_points("lakebackup.job.duration", &[("succeeded", "false")]);
    assert_eq!(failed.len(), 1, "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_sends_while_it_runs_counts_a_poisoned_message_and_reads_poison_depths() {
    let azurite = support::Azurite::start();
    let ingestion = Ingestion::start().await;
    let mut settings = worker::settings(&azurite);
    settings.extend(ingestion.settings());
    // Sooner than the defaults (5 s for spans, 60 s for metrics), so the test need not wait.
    settings.insert("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into());
    settings.insert("OTEL_METRIC_EXPORT_INTERVAL".into(), "500".into());
    let worker = worker::Worker::serve(&settings);

    let (status, reply) = support::deliver(&worker, "not a backup request", "msg-1", 1).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["ReturnValue"]["outcome"], "poisoned", "{reply}");
    // Sent while the worker runs: nothing waits for it to stop.
    support::wait_for(
        Duration::from_secs(20),
        "the poisoned message's metric",
        || async {
            let poisoned = ingestion.metric_total(
                "lakebackup.poisoned",
                &[("queue", "backup-requests"), ("why", "unusable")],
            );
            (poisoned == 1.0).then_some(())
        },
    )
    .await;
    let request = support::wait_for(
        Duration::from_secs(20),
        "the invocation's request",
        || async {
            ingestion
                .items("RequestData")
                .into_iter()
                .find(|r| r["name"] == "QueueCreateBlobBackupADFv2")
        },
    )
    .await;
    assert_eq!(property(&request, "message_id"), "msg-1", "{request}");
    // Its warning is a trace of the request, with its severity.
    let traces = ingestion.items("MessageData");
    assert!(
        traces.iter().any(
            |t| t["message"] == "message moved to the poison queue unchanged"
                && t["severityLevel"] == 2
        ),
        "{traces:#?}"
    );

    // The timer reads each poison queue's depth (the alert on a non-empty one), and its
    // invocation is a successful request.
    let response = reqwest::Client::new()
        .post(worker.url("/HttpSnapshotIncBackupStorageReconciliation"))
        .json(&serde_json::json!({
            "Data": {"timer": {"IsPastDue": false}},
            "Metadata": {"sys": {"MethodName": "HttpSnapshotIncBackupStorageReconciliation"}}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    support::wait_for(
        Duration::from_secs(20),
        "the poison queue's depth",
        || async {
            let depths =
                ingestion.metric_points("lakebackup.poison.depth", &[("queue", "backup-requests")]);
            depths.iter().any(|(depth, _)| *depth == 1.0).then_some(())
        },
    )
    .await;
    let timer = support::wait_for(Duration::from_secs(20), "the timer's request", || async {
        ingestion
            .items("RequestData")
            .into_iter()
            .find(|r| r["name"] == "HttpSnapshotIncBackupStorageReconciliation")
    })
    .await;
    assert_eq!(timer["success"], true, "{timer}");
    assert_eq!(ingestion.problems(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_connection_string_stops_nothing_and_is_named_never_its_value() {
    let fixture = support::Lake::start(&["lake"]).await;
    let mut settings = fixture.settings();
    let malformed = format!("InstrumentationKey{INSTRUMENTATION_KEY};IngestionEndpoint=http://x/");
    settings.insert(CONNECTION_STRING.into(), malformed);
    // The command runs (a restore in an incident must never wait on telemetry), and says why
    // it runs without it.
    let (code, output) = run(&settings, &["produce", "--container", "lake"]).await;
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains(CONNECTION_STRING) && output.contains("running without telemetry"),
        "{output}"
    );
    assert!(!output.contains(INSTRUMENTATION_KEY), "{output}");
    // doctor fails the setting, again without its value.
    let (_, output) = run(&settings, &["doctor", "--json"]).await;
    assert!(
        output.contains(&format!("settings: {CONNECTION_STRING}")),
        "{output}"
    );
    assert!(!output.contains(INSTRUMENTATION_KEY), "{output}");
}

/// The alert rules run the shipped queries word for word, and the queries name only metrics the
/// worker sends (and each alert's metric is one it sends).
#[test]
fn the_alert_rules_run_the_shipped_queries_over_metrics_the_worker_sends() {
    use lakebackup::telemetry::names;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let template: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("deploy/alerts.json")).unwrap())
            .unwrap();
    let queries: Vec<String> = template["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["type"] == "Microsoft.Insights/scheduledQueryRules")
        .map(|r| {
            r["properties"]["criteria"]["allOf"][0]["query"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(queries.len(), 4, "four alert rules");
    let sent = [
        names::VERSIONS_BACKED_UP,
        names::BYTES_COPIED,
        names::FAILURES,
        names::JOB_DURATION,
        names::PART_DURATION,
        names::POISONED,
        names::POISON_DEPTH,
        names::RPO,
    ];
    let mut shipped = Vec::new();
    for entry in std::fs::read_dir(root.join("deploy/telemetry")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "kql") {
            let text = std::fs::read_to_string(&path).unwrap();
            for quoted in text.split('"').skip(1).step_by(2) {
                if quoted.starts_with("lakebackup.") {
                    assert!(
                        sent.contains(&quoted),
                        "{}: {quoted} is not sent",
                        path.display()
                    );
                }
            }
            shipped.push(text);
        }
    }
    for query in &queries {
        assert!(
            shipped.contains(query),
            "an alert's query is not one of deploy/telemetry/*.kql: {query}"
        );
    }
}

/// The request the backup job was sent as.
fn backup_job_request(ingestion: &Ingestion) -> serde_json::Value {
    let requests = ingestion.items("RequestData");
    requests
        .iter()
        .find(|r| r["name"] == "backup job")
        .cloned()
        .unwrap_or_else(|| panic!("the job's request: {requests:#?}"))
}
