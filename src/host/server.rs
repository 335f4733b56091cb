//! `lakebackup serve`: the axum server the Functions host calls. Handlers only translate between
//! the protocol and the functions' typed inputs and summaries.
//!
//! Routes: `POST /{FunctionName}` with an invocation payload (every trigger), and, for the HTTP
//! trigger with `enableForwardingHttpRequest`, the raw request at `/api/{FunctionName}`.

use std::{future::Future, sync::Arc};

use tokio::net::TcpListener;

use axum::{
    body::Bytes,
    extract::{RawQuery, State},
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{any, post},
    Json, Router,
};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use serde_json::{json, Value};
use tracing::{error, warn, Instrument};

use super::{
    dispatch::{self, QueueMessage, Trigger, FUNCTIONS},
    protocol::{
        HttpTriggerRequest, InvokeRequest, InvokeResponse, JsonReply, QueueTrigger,
        HTTP_RESPONSE_BINDING,
    },
};
use crate::{
    app::{App, WorkQueue},
    core::job::JobState,
    engine::jobs::{scope::ScopeError, JobStatus},
    functions::{
        producer::{self, ProduceRequest, ProducerError},
        reconciliation,
    },
};

/// Every route the Functions host calls: one per function of [`FUNCTIONS`].
pub fn router(app: Arc<App>) -> Router {
    let mut routes = producer_http_router();
    for function in FUNCTIONS {
        let path = format!("/{}", function.name);
        routes = match function.trigger {
            Trigger::Http => routes.route(&path, post(producer_invocation)),
            Trigger::Timer => routes.route(&path, post(reconciler_invocation)),
            Trigger::Queue(queue) => routes.route(
                &path,
                post(move |State(app): State<Arc<App>>, body: Bytes| async move {
                    queue_invocation(&app, queue, function.name, &body).await
                }),
            ),
        };
    }
    routes.with_state(app)
}

/// Only the producer as a plain HTTP endpoint (standalone mode): the invocation routes of the
/// queue and timer functions are for the host alone.
pub fn producer_http_router() -> Router<Arc<App>> {
    Router::new().route(
        &format!("/api/{}", producer::FUNCTION_NAME),
        any(producer_forwarded),
    )
}

/// Serves `routes` on `listener` until `shutdown` completes.
pub async fn serve(
    routes: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "listening");
    }
    axum::serve(listener, routes)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Parses an invocation payload; a malformed one fails the invocation with a reason.
fn parse_invocation(body: &Bytes) -> Result<InvokeRequest, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        warn!(error = %e, "invocation payload is not valid JSON");
        Box::new(failed_invocation(
            StatusCode::BAD_REQUEST,
            format!("invocation payload is not valid JSON: {e}"),
        ))
    })
}

fn failed_invocation(status: StatusCode, log: String) -> Response {
    let reply = InvokeResponse {
        logs: vec![log],
        ..Default::default()
    };
    (status, Json(reply)).into_response()
}

async fn producer_invocation(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let invoke = match parse_invocation(&body) {
        Ok(invoke) => invoke,
        Err(response) => return *response,
    };
    let reply = match HttpTriggerRequest::from_invoke(&invoke) {
        Ok(request) => run_producer(&app, &request).await,
        Err(e) => error_reply(400, e.to_string()),
    };
    // The status URL carries the caller's function key: the reply has it, the log must not.
    let mut logged = reply.body.clone();
    if let Some(body) = logged.as_object_mut() {
        body.remove("statusQueryGetUri");
    }
    let log = format!(
        "{} answered {}: {}",
        producer::FUNCTION_NAME,
        reply.status,
        logged
    );
    let mut response = InvokeResponse {
        logs: vec![log],
        ..Default::default()
    };
    // The HTTP caller's status travels in the binding; the invocation itself succeeded.
    response
        .outputs
        .insert(HTTP_RESPONSE_BINDING.to_owned(), reply.into_output());
    Json(response).into_response()
}

async fn producer_forwarded(
    State(app): State<Arc<App>>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = match String::from_utf8(body.to_vec()) {
        Ok(body) => {
            let request = HttpTriggerRequest {
                method: method.as_str().to_owned(),
                url: String::new(),
                query: url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                    .into_owned()
                    .collect(),
                headers: headers
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                    .collect(),
                body: (!body.is_empty()).then_some(body),
            };
            run_producer(&app, &request).await
        }
        Err(_) => error_reply(400, "request body is not UTF-8".into()),
    };
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let location = reply.location.clone();
    let mut response = (status, Json(reply.body)).into_response();
    if let Some(value) = location.and_then(|l| axum::http::HeaderValue::from_str(&l).ok()) {
        response
            .headers_mut()
            .insert(axum::http::header::LOCATION, value);
    }
    response
}

/// The producer behind either HTTP route. `?job=` asks for a job's status; otherwise the
/// container (and optional prefix) come from the JSON body (`{"container": "…", "prefix": "…"}`,
/// as ADF sends it) or from `?container=&prefix=`. 200 with the totals when the job is done
/// within `PRODUCER_WAIT_SECONDS`; else 202 with `Location` (the status URL), which ADF's Web
/// activity follows until it gets a 200.
async fn run_producer(app: &App, request: &HttpTriggerRequest) -> JsonReply {
    if !matches!(request.method.as_str(), "GET" | "POST" | "") {
        return error_reply(
            405,
            format!("method {} is not allowed; use GET or POST", request.method),
        );
    }
    if let Some(job) = request.query.get("job") {
        return match producer::status(app, job).await {
            Ok(status) => job_reply(request, status),
            Err(e) => producer_error(e),
        };
    }
    let body = match request.json_body() {
        Ok(body) => body,
        Err(e) => return error_reply(400, e.to_string()),
    };
    let field = |name: &str| -> Result<Option<String>, JsonReply> {
        match body.as_ref().and_then(|b| b.get(name)) {
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(Value::Null) | None => Ok(request.query.get(name).cloned()),
            Some(_) => Err(error_reply(400, format!("\"{name}\" must be a string"))),
        }
    };
    let (container, prefix) = match (field("container"), field("prefix")) {
        (Ok(Some(container)), Ok(prefix)) => (container, prefix.unwrap_or_default()),
        (Ok(None), _) => {
            return error_reply(
                400,
                "missing container: POST {\"container\": \"…\", \"prefix\": \"…\"} or GET \
                 ?container=…&prefix=…"
                    .into(),
            )
        }
        (Err(reply), _) | (_, Err(reply)) => return reply,
    };
    let request_for = ProduceRequest { container, prefix };
    let span = tracing::info_span!(
        "function",
        function = producer::FUNCTION_NAME,
        otel.name = producer::FUNCTION_NAME,
        otel.kind = "server"
    );
    match producer::produce(app, &request_for).instrument(span).await {
        Ok(status) => job_reply(request, status),
        Err(e) => producer_error(e),
    }
}

/// A job's status as the HTTP reply: 200 when done, 500 when a shard failed for good, 202 with
/// the status URL while it runs.
fn job_reply(request: &HttpTriggerRequest, status: JobStatus) -> JsonReply {
    let mut body = serde_json::to_value(&status).unwrap_or(Value::Null);
    match status.progress.state {
        JobState::Done => JsonReply::new(200, body),
        JobState::Failed => JsonReply::new(500, body),
        JobState::Running => {
            let url = status_url(request, &status.job);
            body["statusQueryGetUri"] = Value::String(url.clone());
            JsonReply {
                location: Some(url),
                ..JsonReply::new(202, body)
            }
        }
    }
}

/// The producer's own URL with `?job=`, keeping the caller's function key (`code`) so that the
/// status call is let in as the first call was.
fn status_url(request: &HttpTriggerRequest, job: &str) -> String {
    let base = url::Url::parse(&request.url).ok().or_else(|| {
        let host = request.headers.get("host")?;
        let scheme = request
            .headers
            .get("x-forwarded-proto")
            .map_or("http", String::as_str);
        url::Url::parse(&format!(
            "{scheme}://{host}/api/{}",
            producer::FUNCTION_NAME
        ))
        .ok()
    });
    let Some(mut url) = base else {
        return format!("/api/{}?job={job}", producer::FUNCTION_NAME);
    };
    let code = request.query.get("code").cloned();
    url.set_query(None);
    {
        let mut query = url.query_pairs_mut();
        if let Some(code) = code {
            query.append_pair("code", &code);
        }
        query.append_pair("job", job);
    }
    url.to_string()
}

fn producer_error(error: ProducerError) -> JsonReply {
    match error {
        ProducerError::Scope(ScopeError::InvalidContainer(_) | ScopeError::InvalidPrefix(_)) => {
            error_reply(400, error.to_string())
        }
        ProducerError::Scope(
            ScopeError::ContainerNotFound(_) | ScopeError::NothingUnderPrefix { .. },
        )
        | ProducerError::UnknownJob(_) => error_reply(404, error.to_string()),
        ProducerError::Storage(source) | ProducerError::Scope(ScopeError::Storage(source)) => {
            error!(error = %source, "producer failed");
            let status = if source.is_unreachable() { 503 } else { 502 };
            error_reply(status, source.to_string())
        }
    }
}

fn error_reply(status: u16, message: String) -> JsonReply {
    JsonReply::new(status, json!({"status": "error", "error": message}))
}

/// A queue-triggered invocation: the message to its function (through the one dispatch path),
/// its outcome as the return value; a failure fails the invocation, and the host makes the
/// message visible again and retries it.
async fn queue_invocation(app: &App, queue: WorkQueue, function: &str, body: &Bytes) -> Response {
    let invoke = match parse_invocation(body) {
        Ok(invoke) => invoke,
        Err(response) => return *response,
    };
    let trigger = match QueueTrigger::from_invoke(&invoke) {
        Ok(trigger) => trigger,
        Err(e) => return failed_invocation(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let text = trigger.text();
    let message = QueueMessage {
        // The host decoded the queue's base64: encoded again, a poison copy is as it was.
        raw: BASE64.encode(&text),
        text,
        message_id: trigger.message_id,
        dequeue_count: trigger.dequeue_count,
    };
    let message_id = &message.message_id;
    match dispatch::invoke_queue_function(app, queue, &message).await {
        Ok(return_value) => Json(InvokeResponse {
            logs: vec![format!("{function} message {message_id}: {return_value}")],
            return_value,
            ..Default::default()
        })
        .into_response(),
        Err(e) => failed_invocation(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{function} message {message_id}: {e}"),
        ),
    }
}

/// The timer starts a reconciliation of `RECONCILE_CONTAINERS` (or every container) as one
/// root shard per container, and returns within seconds. A failure to queue fails the
/// invocation, so monitoring sees it.
async fn reconciler_invocation(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let invoke = match parse_invocation(&body) {
        Ok(invoke) => invoke,
        Err(response) => return *response,
    };
    let past_due = invoke
        .data
        .values()
        .find_map(|timer| timer.get("IsPastDue").and_then(Value::as_bool))
        .unwrap_or(false);
    let summary = dispatch::reconciliation_timer(&app, past_due).await;
    let return_value = serde_json::to_value(&summary).unwrap_or(Value::Null);
    let status = if summary.status == "queued" {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let reply = InvokeResponse {
        logs: vec![format!("{}: {return_value}", reconciliation::FUNCTION_NAME)],
        return_value,
        ..Default::default()
    };
    (status, Json(reply)).into_response()
}
