//! Local stand-ins for the two services without an emulator: the App Service managed-identity
//! token endpoint (`IDENTITY_ENDPOINT`/`IDENTITY_HEADER`) and the two Data Factory REST calls.
//! They assert what they receive and, like ADF, really copy the blob on Azurite.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
    Json, Router,
};
use lakebackup::{
    adf::PipelineParameters,
    storage::{testing::LeaseState, StorageAccount},
};
use serde_json::{json, Value};

pub const IDENTITY_HEADER: &str = "identity-header-secret";
pub const ACCESS_TOKEN: &str = "stand-in-management-token";
pub const SUBSCRIPTION: &str = "sub-1";
pub const RESOURCE_GROUP: &str = "rg (lake)";
pub const FACTORY: &str = "factory-1";
pub const PIPELINE: &str = "copy-blob";

/// How the stand-in's pipeline runs end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    Succeeded,
    Failed,
}

/// One status poll as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Poll {
    pub run_id: String,
    /// The source blob's lease state at that moment.
    pub source_leased: bool,
}

#[derive(Default)]
pub struct Record {
    pub token_requests: usize,
    pub runs: Vec<PipelineParameters>,
    pub polls: Vec<Poll>,
    /// Run ids whose cancellation was asked for.
    pub cancels: Vec<String>,
    /// Statuses the next polls answer with instead of the run's (429 carries `Retry-After: 1`).
    pub poll_failures: std::collections::VecDeque<u16>,
    /// Anything received that the real service would refuse.
    pub violations: Vec<String>,
}

struct Inner {
    source: StorageAccount,
    backup: StorageAccount,
    polls_before_done: usize,
    end: RunEnd,
    record: Mutex<Record>,
}

pub struct AdfStandIn {
    inner: Arc<Inner>,
    pub base_url: String,
    server: tokio::task::JoinHandle<()>,
}

impl AdfStandIn {
    pub async fn start(
        source: StorageAccount,
        backup: StorageAccount,
        polls_before_done: usize,
        end: RunEnd,
    ) -> AdfStandIn {
        let inner = Arc::new(Inner {
            source,
            backup,
            polls_before_done,
            end,
            record: Mutex::new(Record::default()),
        });
        let factory = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.DataFactory/factories/{factory}";
        let router = Router::new()
            .route("/msi/token", get(token))
            .route(
                &format!("{factory}/pipelines/{{pipeline}}/createRun"),
                post(create_run),
            )
            .route(
                &format!("{factory}/pipelines/{{pipeline}}"),
                get(get_pipeline),
            )
            .route(
                &format!("{factory}/pipelineruns/{{run_id}}"),
                get(run_status),
            )
            .route(
                &format!("{factory}/pipelineruns/{{run_id}}/cancel"),
                post(cancel_run),
            )
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        AdfStandIn {
            inner,
            base_url,
            server,
        }
    }

    /// The stand-in copying between the source and backup accounts of `lake`.
    pub async fn on(lake: &super::Lake, polls_before_done: usize, end: RunEnd) -> AdfStandIn {
        let settings = lakebackup::settings::Settings::from_pairs(lake.settings());
        let account = |name| StorageAccount::connect(name, &settings).unwrap();
        AdfStandIn::start(
            account("SOURCE_STORAGE"),
            account("BACKUP_STORAGE"),
            polls_before_done,
            end,
        )
        .await
    }

    /// The worker settings that point the ADF engine and managed identity here.
    pub fn settings(&self) -> HashMap<String, String> {
        HashMap::from([
            (
                "IDENTITY_ENDPOINT".into(),
                format!("{}/msi/token", self.base_url),
            ),
            ("IDENTITY_HEADER".into(), IDENTITY_HEADER.into()),
            ("ADF_MANAGEMENT_ENDPOINT".into(), self.base_url.clone()),
            ("ADF_SUBSCRIPTION_ID".into(), SUBSCRIPTION.into()),
            ("ADF_RESOURCE_GROUP".into(), RESOURCE_GROUP.into()),
            ("ADF_FACTORY_NAME".into(), FACTORY.into()),
            ("ADF_PIPELINE_NAME".into(), PIPELINE.into()),
            ("ADF_POLL_INTERVAL_MS".into(), "50".into()),
        ])
    }

    pub fn record<T>(&self, read: impl FnOnce(&Record) -> T) -> T {
        read(&self.inner.record.lock().unwrap())
    }

    /// The next polls answer with these statuses, in order, before the run's own.
    pub fn fail_next_polls(&self, statuses: &[u16]) {
        self.inner
            .record
            .lock()
            .unwrap()
            .poll_failures
            .extend(statuses);
    }
}

impl Drop for AdfStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn violation(inner: &Inner, what: String) -> StatusCode {
    inner.record.lock().unwrap().violations.push(what);
    StatusCode::BAD_REQUEST
}

async fn token(
    State(inner): State<Arc<Inner>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, StatusCode> {
    if headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok())
        != Some(IDENTITY_HEADER)
    {
        return Err(violation(
            &inner,
            "token request without the identity header".into(),
        ));
    }
    if query.get("api-version").map(String::as_str) != Some("2019-08-01") {
        return Err(violation(
            &inner,
            format!("token api-version {:?}", query.get("api-version")),
        ));
    }
    let Some(resource) = query.get("resource").cloned() else {
        return Err(violation(&inner, "token request without a resource".into()));
    };
    inner.record.lock().unwrap().token_requests += 1;
    let expires_on = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    Ok(Json(json!({
        "access_token": ACCESS_TOKEN,
        "expires_on": expires_on.to_string(),
        "token_type": "Bearer",
        "resource": resource,
    })))
}

/// Checks the parts every ADF call shares; returns what is wrong.
fn check_call(
    path: &HashMap<String, String>,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Option<String> {
    let bearer = format!("Bearer {ACCESS_TOKEN}");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(bearer.as_str()) {
        return Some("missing or wrong bearer token".into());
    }
    if query.get("api-version").map(String::as_str) != Some("2018-06-01") {
        return Some(format!("api-version {:?}", query.get("api-version")));
    }
    for (key, expected) in [
        ("sub", SUBSCRIPTION),
        ("rg", RESOURCE_GROUP),
        ("factory", FACTORY),
    ] {
        if path.get(key).map(String::as_str) != Some(expected) {
            return Some(format!("path {key} = {:?}", path.get(key)));
        }
    }
    None
}

/// Get Pipeline: the pipeline's resource, for the one pipeline the factory has.
async fn get_pipeline(
    State(inner): State<Arc<Inner>>,
    Path(path): Path<HashMap<String, String>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, StatusCode> {
    if let Some(wrong) = check_call(&path, &query, &headers) {
        return Err(violation(&inner, format!("get pipeline: {wrong}")));
    }
    if path.get("pipeline").map(String::as_str) != Some(PIPELINE) {
        return Err(StatusCode::NOT_FOUND);
    }
    Ok(Json(
        serde_json::json!({"name": PIPELINE, "properties": {"activities": []}}),
    ))
}

async fn create_run(
    State(inner): State<Arc<Inner>>,
    Path(path): Path<HashMap<String, String>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, StatusCode> {
    if let Some(wrong) = check_call(&path, &query, &headers) {
        return Err(violation(&inner, format!("createRun: {wrong}")));
    }
    if path.get("pipeline").map(String::as_str) != Some(PIPELINE) {
        return Err(violation(
            &inner,
            format!("createRun pipeline {:?}", path.get("pipeline")),
        ));
    }
    let parameters: PipelineParameters = match serde_json::from_slice::<Value>(&body) {
        Ok(value) if value.as_object().is_some_and(|o| o.len() == 4) => {
            serde_json::from_value(value).map_err(|e| violation(&inner, e.to_string()))?
        }
        _ => {
            return Err(violation(
                &inner,
                "createRun body is not the four parameters".into(),
            ))
        }
    };
    let mut record = inner.record.lock().unwrap();
    record.runs.push(parameters);
    Ok(Json(json!({"runId": format!("run-{}", record.runs.len())})))
}

async fn cancel_run(
    State(inner): State<Arc<Inner>>,
    Path(path): Path<HashMap<String, String>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> StatusCode {
    if let Some(wrong) = check_call(&path, &query, &headers) {
        return violation(&inner, format!("cancel: {wrong}"));
    }
    let run_id = path.get("run_id").cloned().unwrap_or_default();
    inner.record.lock().unwrap().cancels.push(run_id);
    StatusCode::OK
}

async fn run_status(
    State(inner): State<Arc<Inner>>,
    Path(path): Path<HashMap<String, String>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<axum::response::Response, StatusCode> {
    use axum::response::IntoResponse;
    if let Some(wrong) = check_call(&path, &query, &headers) {
        return Err(violation(&inner, format!("pipelineruns: {wrong}")));
    }
    let run_id = path.get("run_id").cloned().unwrap_or_default();
    let failure = inner.record.lock().unwrap().poll_failures.pop_front();
    if let Some(status) = failure {
        let status = StatusCode::from_u16(status).unwrap();
        return Ok((status, [("retry-after", "1")], "stand-in transient failure").into_response());
    }
    if inner.record.lock().unwrap().cancels.contains(&run_id) {
        return Ok(
            Json(json!({"runId": run_id, "status": "Cancelled", "message": ""})).into_response(),
        );
    }
    run_status_of(inner, run_id)
        .await
        .map(IntoResponse::into_response)
}

async fn run_status_of(inner: Arc<Inner>, run_id: String) -> Result<Json<Value>, StatusCode> {
    let index: usize = match run_id
        .strip_prefix("run-")
        .and_then(|n| n.parse::<usize>().ok())
    {
        Some(n) if n >= 1 => n - 1,
        _ => return Err(violation(&inner, format!("unknown run {run_id}"))),
    };
    let Some(parameters) = inner.record.lock().unwrap().runs.get(index).cloned() else {
        return Err(violation(&inner, format!("unknown run {run_id}")));
    };
    let source_blob = inner
        .source
        .container(&parameters.container)
        .unwrap()
        .blob(&parameters.blob_name);
    let source_leased = matches!(
        source_blob.lease_state().await,
        Ok(Some(LeaseState::Leased))
    );
    let polls_so_far = {
        let mut record = inner.record.lock().unwrap();
        record.polls.push(Poll {
            run_id: run_id.clone(),
            source_leased,
        });
        record.polls.iter().filter(|p| p.run_id == run_id).count()
    };
    if polls_so_far < inner.polls_before_done {
        return Ok(Json(
            json!({"runId": run_id, "status": "InProgress", "message": ""}),
        ));
    }
    if inner.end == RunEnd::Failed {
        return Ok(Json(json!({
            "runId": run_id,
            "status": "Failed",
            "message": "Operation on target Copy failed: stand-in failure",
        })));
    }
    // Do what the pipeline's Copy activity does: read the source, write the sink.
    let bytes = source_blob.read(None).await.unwrap().bytes;
    let backup_container = inner
        .backup
        .container(&parameters.container_backup)
        .unwrap();
    let _ = backup_container.create().await;
    backup_container
        .blob(&parameters.blob_name_backup)
        .upload(bytes)
        .await
        .unwrap();
    Ok(Json(
        json!({"runId": run_id, "status": "Succeeded", "message": ""}),
    ))
}
