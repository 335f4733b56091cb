//! The demo (`scripts/demo.sh`): the whole story on this machine in one command. It starts Azurite, makes a
//! small lake with awkward names, runs the functions (the producer called as the Functions host
//! and ADF call it, the queue processed as in `lakebackup run`), then has an incident — a blob
//! corrupted, one deleted — reconciles, restores the container to the instant before the incident,
//! checks the restore is byte-identical, prints what happened, and stops everything.

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Duration};

use futures::TryStreamExt;
use lakebackup::{
    app::App,
    doctor,
    engine::{
        reconcile,
        restore::{self, RestoreFrom, RestoreRequest},
    },
    functions::producer::FUNCTION_NAME as PRODUCER,
    host::{
        server,
        standalone::{self, QueueBehaviour},
    },
    settings::{Settings, SettingsError},
    storage::{
        listing::{list_backups, list_with_snapshots},
        ErrorCode, StorageError,
    },
};
use serde_json::{json, Value};
use thiserror::Error;
use time::OffsetDateTime;

use crate::azurite::{Azurite, AzuriteError};

/// The sample lake: container → blobs.
const SAMPLE_LAKE: [(&str, &[&str]); 2] = [
    (
        "raw",
        &[
            "sales/2026/11/orders.csv",
            "sales/2026/11/orders \"final\".csv",
            "ünïcødé/données #1.json",
            "logs.v2/app 100%.log",
            "reports/q3 summary?.pdf",
        ],
    ),
    ("curated", &["dim/customers.parquet", "fact/sales.parquet"]),
];
const CORRUPTED: &str = "sales/2026/11/orders.csv";
const DELETED: &str = "ünïcødé/données #1.json";
const CREATED: &str = "sales/2026/11/returns.csv";

#[derive(Debug, Error)]
pub enum DemoError {
    #[error(transparent)]
    Azurite(#[from] AzuriteError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("calling the custom handler: {0}")]
    Http(String),
    #[error("check failed: {0}")]
    Check(String),
}

/// One line of the result table.
struct Row {
    step: String,
    container: &'static str,
    blobs: u64,
    snapshots: u64,
    backup_versions: u64,
    note: String,
}

/// Runs the demo; prints progress to stderr and the result table to stdout.
pub async fn run(project_root: &Path) -> Result<(), DemoError> {
    let steps = 9;
    let step = |n: usize, text: &str| eprintln!("[{n}/{steps}] {text}");
    step(1, "starting Azurite (in memory, free loopback ports)…");
    let azurite = Azurite::start_in(project_root)?;
    let pairs = [
        ("SOURCE_STORAGE", azurite.source()),
        ("BACKUP_STORAGE", azurite.backup()),
        ("AzureWebJobsStorage", azurite.jobs()),
        ("COPY_POLL_INTERVAL_MS", "50".to_owned()),
    ];
    let settings = Settings::from_pairs(pairs.clone());
    let app = Arc::new(App::from_settings(&settings)?);

    step(
        2,
        "creating a sample lake: 2 containers, nested paths, awkward names…",
    );
    for (container, names) in SAMPLE_LAKE {
        app.source.container(container)?.create_if_missing().await?;
        for name in names {
            upload(
                &app,
                container,
                name,
                format!("{container}/{name}, version 1\n").into_bytes(),
            )
            .await?;
        }
    }

    step(
        3,
        "starting the functions: custom handler (as `serve`), queue processing (as `run`)…",
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| DemoError::Http(e.to_string()))?;
    let base = format!(
        "http://{}",
        listener
            .local_addr()
            .map_err(|e| DemoError::Http(e.to_string()))?
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let handler = tokio::spawn(server::serve(
        server::router(app.clone()),
        listener,
        stopped(stop_rx.clone()),
    ));
    let behaviour = QueueBehaviour {
        poll_interval: Duration::from_millis(100),
        ..QueueBehaviour::default()
    };
    let queue_worker = tokio::spawn(standalone::run(
        app.clone(),
        behaviour,
        None,
        None,
        stopped(stop_rx),
    ));
    let http = reqwest::Client::new();
    let mut rows = Vec::new();

    step(
        4,
        "calling the producer as the Functions host (POST) and by hand (GET)…",
    );
    for (container, names) in SAMPLE_LAKE {
        let summary = host_invocation(&http, &base, container).await?;
        expect(
            &summary,
            "snapshots_created",
            names.len() as u64,
            "a first run",
        )?;
        wait_for_backups(&app, container, names.len() as u64).await?;
        rows.push(
            row(
                &app,
                "producer, first run",
                container,
                "every blob: snapshot + backup",
            )
            .await?,
        );
    }
    let summary = forwarded_get(&http, &base, "raw").await?;
    expect(
        &summary,
        "snapshots_created",
        0,
        "a second run with no change",
    )?;
    rows.push(row(&app, "producer, nothing changed", "raw", "nothing to do").await?);

    let before = contents(&app, "raw").await?;
    // Last-Modified has one-second resolution: keep the incident clearly after the instant.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let instant = OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    step(
        5,
        "an incident: one blob corrupted, one deleted, one created — nobody calls the producer…",
    );
    upload(&app, "raw", CORRUPTED, b"\0\0 CORRUPTED \0\0".to_vec()).await?;
    upload(
        &app,
        "raw",
        CREATED,
        b"returns, created after the instant\n".to_vec(),
    )
    .await?;
    // The lake's own user deletes it, snapshots and all (the product never would).
    app.source
        .container("raw")?
        .blob(DELETED)
        .delete_with_snapshots()
        .await?;
    rows.push(
        row(
            &app,
            "after the incident",
            "raw",
            "1 corrupted, 1 deleted, 1 new",
        )
        .await?,
    );

    step(6, "the scheduled reconciler catches up…");
    let reconciled = reconcile::reconcile(&app, None, false).await;
    if !reconciled.succeeded() {
        return Err(DemoError::Check(format!(
            "reconciliation failed: {:?}",
            reconciled.error
        )));
    }
    let expected_versions = SAMPLE_LAKE[0].1.len() as u64 + 2;
    wait_for_backups(&app, "raw", expected_versions).await?;
    rows.push(
        row(
            &app,
            "reconciler",
            "raw",
            &format!(
                "{} snapshots, {} backups",
                reconciled.total.counts.get("snapshots_created"),
                reconciled.total.counts.get("backups_copied")
                    + reconciled.total.counts.get("backup_requests")
            ),
        )
        .await?,
    );

    step(
        7,
        "restoring raw to the instant before the incident, from the backup account…",
    );
    let mut failures = Vec::new();
    let restored = restore::restore(
        &app,
        &RestoreRequest {
            to_account: false,
            container: "raw".into(),
            prefix: None,
            blob: None,
            as_of: Some(instant),
            from: RestoreFrom::Backup,
            to_container: None,
            dry_run: false,
            verify_content: false,
        },
        &mut |action| {
            if action.error.is_some() {
                failures.push(action);
            }
        },
    )
    .await;
    if !restored.succeeded() {
        return Err(DemoError::Check(format!(
            "restore failed: {:?} {failures:?}",
            restored.error
        )));
    }
    let after = contents(&app, "raw").await?;
    for (name, bytes) in &before {
        if after.get(name) != Some(bytes) {
            return Err(DemoError::Check(format!(
                "raw/{name} is not byte-identical after the restore"
            )));
        }
    }
    rows.push(
        row(
            &app,
            "restore --as-of (backup)",
            "raw",
            &format!(
                "{} restored, {} unchanged, {} newer kept",
                restored.restored, restored.unchanged, restored.missing_version
            ),
        )
        .await?,
    );

    step(8, "lakebackup doctor: is this set up right?…");
    // As a Function App has them: the settings the host resolves in the function folders too.
    let deployed = Settings::from_pairs(pairs.into_iter().chain([
        ("BACKUP_QUEUE_NAME", "backup-requests".to_owned()),
        ("RECONCILE_SCHEDULE", "0 0 2 * * *".to_owned()),
        ("EVENTS_QUEUE_NAME", "lake-events".to_owned()),
    ]));
    let started = std::time::Instant::now();
    let report = doctor::doctor(&deployed, &project_root.join("host.json"), project_root).await;
    let doctor_took = started.elapsed();
    if report.status == doctor::Status::Fail {
        return Err(DemoError::Check(format!(
            "doctor failed:\n{}",
            doctor::table(&report)
        )));
    }

    step(9, "stopping the functions and Azurite…");
    let _ = stop_tx.send(true);
    let _ = handler.await;
    let _ = queue_worker.await;
    drop(azurite);

    print_table(&rows);
    println!(
        "\nRestore check: all {} blobs of raw are byte-identical to {}; the blob created later is kept.",
        before.len(),
        instant
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    );
    let warnings: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| c.status == doctor::Status::Warn)
        .map(|c| c.name.as_str())
        .collect();
    println!(
        "Doctor: {} in {:.2} s, {} checks, none failed; warnings (Azurite's defaults): {}.",
        report.status.as_str(),
        doctor_took.as_secs_f64(),
        report.checks.len(),
        warnings.join("; ")
    );
    Ok(())
}

async fn upload(
    app: &App,
    container: &str,
    name: &str,
    bytes: Vec<u8>,
) -> Result<(), StorageError> {
    app.source
        .container(container)?
        .blob(name)
        .put(bytes, Default::default())
        .await
}

/// Base blob name → content.
async fn contents(app: &App, container: &str) -> Result<BTreeMap<String, Vec<u8>>, StorageError> {
    let lake = app.source.container(container)?;
    let pages = list_with_snapshots(&lake, None)?;
    futures::pin_mut!(pages);
    let mut contents = BTreeMap::new();
    while let Some(page) = pages.try_next().await? {
        for entry in page.into_iter().filter(|e| e.snapshot.is_none()) {
            let read = lake.blob(&entry.name).read(None).await?;
            contents.insert(entry.name, read.bytes);
        }
    }
    Ok(contents)
}

/// Complete backup versions of `container`.
async fn backup_versions(app: &App, container: &str) -> Result<u64, StorageError> {
    let pages = list_backups(&app.vault_of(container)?, None)?;
    futures::pin_mut!(pages);
    let mut count = 0;
    loop {
        match pages.try_next().await {
            Ok(Some(page)) => {
                count += page.iter().filter(|b| b.stamped_etag().is_some()).count() as u64
            }
            Ok(None) => return Ok(count),
            Err(e) if e.is(ErrorCode::ContainerNotFound) => return Ok(0),
            Err(e) => return Err(e),
        }
    }
}

async fn wait_for_backups(app: &App, container: &str, expected: u64) -> Result<(), DemoError> {
    for _ in 0..300 {
        let done = backup_versions(app, container).await?;
        eprint!("\r      queue processing: {done}/{expected} backup versions of {container}   ");
        if done >= expected {
            eprintln!();
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!();
    Err(DemoError::Check(format!(
        "{container}: fewer than {expected} backup versions after 30 s"
    )))
}

async fn row(
    app: &App,
    step: &str,
    container: &'static str,
    note: &str,
) -> Result<Row, StorageError> {
    let lake = app.source.container(container)?;
    let pages = list_with_snapshots(&lake, None)?;
    futures::pin_mut!(pages);
    let (mut blobs, mut snapshots) = (0, 0);
    while let Some(page) = pages.try_next().await? {
        for entry in page {
            match entry.snapshot {
                Some(_) => snapshots += 1,
                None => blobs += 1,
            }
        }
    }
    Ok(Row {
        step: step.to_owned(),
        container,
        blobs,
        snapshots,
        backup_versions: backup_versions(app, container).await?,
        note: note.to_owned(),
    })
}

async fn host_invocation(
    http: &reqwest::Client,
    base: &str,
    container: &str,
) -> Result<Value, DemoError> {
    let invocation = json!({
        "Data": {"req": {
            "Url": format!("http://localhost:7071/api/{PRODUCER}"),
            "Method": "POST",
            "Query": {},
            "Headers": {"Content-Type": ["application/json"]},
            "Params": {},
            "Body": json!({"container": container}).to_string(),
        }},
        "Metadata": {},
    });
    let reply: Value = http
        .post(format!("{base}/{PRODUCER}"))
        .json(&invocation)
        .send()
        .await
        .map_err(|e| DemoError::Http(e.to_string()))?
        .json()
        .await
        .map_err(|e| DemoError::Http(e.to_string()))?;
    let body = reply["Outputs"]["res"]["body"].as_str().unwrap_or("null");
    serde_json::from_str(body).map_err(|e| DemoError::Http(e.to_string()))
}

async fn forwarded_get(
    http: &reqwest::Client,
    base: &str,
    container: &str,
) -> Result<Value, DemoError> {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("container", container)
        .finish();
    http.get(format!("{base}/api/{PRODUCER}?{query}"))
        .send()
        .await
        .map_err(|e| DemoError::Http(e.to_string()))?
        .json()
        .await
        .map_err(|e| DemoError::Http(e.to_string()))
}

fn expect(summary: &Value, field: &str, expected: u64, what: &str) -> Result<(), DemoError> {
    match summary[field].as_u64() {
        Some(n) if n == expected => Ok(()),
        _ => Err(DemoError::Check(format!(
            "{what} should give {field} = {expected}, got {summary}"
        ))),
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "\n{:<27} {:<9} {:>6} {:>10} {:>16}  what happened",
        "step", "container", "blobs", "snapshots", "backup versions"
    );
    println!("{}", "-".repeat(105));
    for row in rows {
        println!(
            "{:<27} {:<9} {:>6} {:>10} {:>16}  {}",
            row.step, row.container, row.blobs, row.snapshots, row.backup_versions, row.note
        );
    }
}
