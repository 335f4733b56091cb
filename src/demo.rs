//! `lakebackup demo`: the whole flow on this machine in one command. Starts Azurite, makes a small
//! lake with awkward names, serves the functions, calls the producer the way the Functions host
//! and ADF do, changes the lake, calls again, prints what happened, and stops everything.

use std::{path::Path, sync::Arc};

use azure_core::http::RequestContent;
use serde_json::{json, Value};
use thiserror::Error;

use crate::{
    app::App,
    azurite::{Azurite, AzuriteError},
    functions::producer::FUNCTION_NAME as PRODUCER,
    host::server,
    settings::{Settings, SettingsError},
    storage::{StorageError, StorageResultExt},
};

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

struct Row {
    step: &'static str,
    container: String,
    summary: Value,
}

/// Runs the demo; prints progress to stderr and the result table to stdout.
pub async fn run(project_root: &Path) -> Result<(), DemoError> {
    eprintln!("[1/5] starting Azurite (in memory, free ports)…");
    let azurite = Azurite::start_in(project_root)?;
    let settings = Settings::from_pairs([
        ("SOURCE_STORAGE", azurite.source()),
        ("BACKUP_STORAGE", azurite.backup()),
        ("AzureWebJobsStorage", azurite.jobs()),
    ]);
    let app = Arc::new(App::from_settings(&settings)?);

    eprintln!("[2/5] creating the sample lake…");
    for (container, names) in SAMPLE_LAKE {
        let client = app.source.container(container)?;
        client
            .create(None)
            .await
            .during(|| format!("creating container {container}"))?;
        for name in names {
            upload(&app, container, name, format!("{name} v1").into_bytes()).await?;
        }
    }

    eprintln!("[3/5] serving the functions on a free loopback port…");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| DemoError::Http(e.to_string()))?;
    let base = format!(
        "http://{}",
        listener
            .local_addr()
            .map_err(|e| DemoError::Http(e.to_string()))?
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(app.clone(), listener, async {
        let _ = stop_rx.await;
    }));
    let http = reqwest::Client::new();

    eprintln!("[4/5] calling the producer as the Functions host and ADF would…");
    let mut rows = Vec::new();
    for (container, _) in SAMPLE_LAKE {
        let summary = host_invocation(&http, &base, container).await?;
        rows.push(Row {
            step: "first run (host POST)",
            container: container.into(),
            summary,
        });
    }
    for (container, _) in SAMPLE_LAKE {
        let summary = forwarded_get(&http, &base, container).await?;
        expect(
            &summary,
            "snapshots_created",
            0,
            "a second run with no change",
        )?;
        rows.push(Row {
            step: "again, nothing changed (GET)",
            container: container.into(),
            summary,
        });
    }
    upload(
        &app,
        "raw",
        "sales/2026/11/orders.csv",
        b"orders v2".to_vec(),
    )
    .await?;
    upload(
        &app,
        "raw",
        "sales/2026/11/returns.csv",
        b"returns v1".to_vec(),
    )
    .await?;
    let summary = host_invocation(&http, &base, "raw").await?;
    expect(
        &summary,
        "snapshots_created",
        2,
        "one changed and one new blob",
    )?;
    rows.push(Row {
        step: "after 1 change + 1 new blob",
        container: "raw".into(),
        summary,
    });

    eprintln!("[5/5] stopping the server and Azurite…");
    let _ = stop_tx.send(());
    let _ = server.await;
    drop(azurite);

    print_table(&rows);
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
        .blob_client(name)
        .upload(RequestContent::from(bytes), None)
        .await
        .during(|| format!("uploading {container}/{name}"))?;
    Ok(())
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
        "\n{:<30} {:<9} {:>6} {:>10} {:>16}",
        "step", "container", "blobs", "snapshots", "backup requests"
    );
    println!("{}", "-".repeat(75));
    for row in rows {
        let number = |field: &str| row.summary[field].as_u64().unwrap_or(0);
        println!(
            "{:<30} {:<9} {:>6} {:>10} {:>16}",
            row.step,
            row.container,
            number("blobs"),
            number("snapshots_created"),
            number("backup_requests")
        );
    }
    println!(
        "\nEvery new or changed blob got one snapshot and one backup request; unchanged blobs got none."
    );
}
