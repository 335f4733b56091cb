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
use serde_json::{json, Value};
use tracing::{error, warn};

use super::protocol::{
    HttpTriggerRequest, InvokeRequest, InvokeResponse, JsonReply, QueueTrigger,
    HTTP_RESPONSE_BINDING,
};
use crate::{
    app::App,
    functions::{
        consumer::{self, QueueDelivery},
        producer::{self, ProducerError},
        reconciler, shard,
    },
};

pub const CONSUMER_FUNCTION: &str = consumer::FUNCTION_NAME;
pub const RECONCILER_FUNCTION: &str = reconciler::FUNCTION_NAME;
pub const SHARD_FUNCTION: &str = shard::FUNCTION_NAME;

/// Every route the Functions host calls.
pub fn router(app: Arc<App>) -> Router {
    producer_http_router()
        .route(
            &format!("/{}", producer::FUNCTION_NAME),
            post(producer_invocation),
        )
        .route(&format!("/{CONSUMER_FUNCTION}"), post(consumer_invocation))
        .route(&format!("/{SHARD_FUNCTION}"), post(shard_invocation))
        .route(
            &format!("/{RECONCILER_FUNCTION}"),
            post(reconciler_invocation),
        )
        .with_state(app)
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
    let log = format!(
        "{} answered {}: {}",
        producer::FUNCTION_NAME,
        reply.status,
        reply.body
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
    (status, Json(reply.body)).into_response()
}

/// The producer behind either HTTP route: reads the container from the JSON body
/// (`{"container": "…"}`, as the ADF activity sends it) or from `?container=`.
async fn run_producer(app: &App, request: &HttpTriggerRequest) -> JsonReply {
    if !matches!(request.method.as_str(), "GET" | "POST" | "") {
        return error_reply(
            405,
            format!("method {} is not allowed; use GET or POST", request.method),
        );
    }
    let from_body = match request.json_body() {
        Ok(body) => body.and_then(|b| b.get("container").cloned()),
        Err(e) => return error_reply(400, e.to_string()),
    };
    let container = match from_body {
        Some(Value::String(name)) => name,
        Some(_) => return error_reply(400, "\"container\" must be a string".into()),
        None => match request.query.get("container") {
            Some(name) => name.clone(),
            None => {
                return error_reply(
                    400,
                    "missing container: POST {\"container\": \"…\"} or GET ?container=…".into(),
                )
            }
        },
    };
    match producer::produce(app, &container).await {
        Ok(summary) => JsonReply {
            status: 200,
            body: serde_json::to_value(summary).unwrap_or(Value::Null),
        },
        Err(ProducerError::InvalidContainer(e)) => error_reply(400, e.to_string()),
        Err(e @ ProducerError::ContainerNotFound(_)) => error_reply(404, e.to_string()),
        Err(ProducerError::Storage { source, done }) => {
            error!(error = %source, "producer failed");
            let status = if source.is_unreachable() { 503 } else { 502 };
            let mut body = json!({"status": "error", "error": source.to_string()});
            body["done"] = serde_json::to_value(&done).unwrap_or(Value::Null);
            JsonReply { status, body }
        }
    }
}

fn error_reply(status: u16, message: String) -> JsonReply {
    JsonReply {
        status,
        body: json!({"status": "error", "error": message}),
    }
}

async fn consumer_invocation(State(app): State<Arc<App>>, body: Bytes) -> Response {
    queue_invocation(&body, CONSUMER_FUNCTION, |delivery| async move {
        consumer::consume(&app, &delivery).await
    })
    .await
}

async fn shard_invocation(State(app): State<Arc<App>>, body: Bytes) -> Response {
    queue_invocation(&body, SHARD_FUNCTION, |delivery| async move {
        shard::consume(&app, &delivery).await
    })
    .await
}

/// A queue-triggered invocation: the message to `handle`, its outcome as the return value; a
/// failure fails the invocation, and the host makes the message visible again and retries it.
async fn queue_invocation<T, E, F>(
    body: &Bytes,
    function: &str,
    handle: impl FnOnce(QueueDelivery) -> F,
) -> Response
where
    T: serde::Serialize,
    E: std::fmt::Display,
    F: Future<Output = Result<T, E>>,
{
    let invoke = match parse_invocation(body) {
        Ok(invoke) => invoke,
        Err(response) => return *response,
    };
    let trigger = match QueueTrigger::from_invoke(&invoke) {
        Ok(trigger) => trigger,
        Err(e) => return failed_invocation(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let message_id = trigger.message_id.clone();
    let delivery = QueueDelivery {
        text: consumer::message_text(&trigger.message),
        raw: None,
        message_id: trigger.message_id,
        dequeue_count: trigger.dequeue_count,
    };
    match handle(delivery).await {
        Ok(outcome) => {
            let return_value = serde_json::to_value(&outcome).unwrap_or(Value::Null);
            Json(InvokeResponse {
                logs: vec![format!("{function} message {message_id}: {return_value}")],
                return_value,
                ..Default::default()
            })
            .into_response()
        }
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
    if past_due {
        warn!("the reconciliation timer is past due");
    }
    let summary = reconciler::schedule(&app, app.config.reconcile_containers.as_deref()).await;
    let return_value = serde_json::to_value(&summary).unwrap_or(Value::Null);
    let status = if summary.status == "queued" {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let reply = InvokeResponse {
        logs: vec![format!("{RECONCILER_FUNCTION}: {return_value}")],
        return_value,
        ..Default::default()
    };
    (status, Json(reply)).into_response()
}
