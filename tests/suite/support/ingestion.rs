//! A local stand-in for Application Insights' ingestion endpoint (the `IngestionEndpoint` of a
//! connection string), over HTTPS (the exporter sends to `https://` whatever the connection
//! string says; its test CA is the worker's `SSL_CERT_FILE`, never this process's):
//! `POST /v2/track` and `/v2.1/track`, as the Track API publishes them
//! (azure-rest-api-specs, `applicationinsights/data-plane/Monitor.Exporters`: a JSON array of
//! envelopes, `application/json`, gzip when `Content-Encoding` says so; the answer a
//! `TrackResponse`: `itemsReceived`, `itemsAccepted`, `errors`). It checks each request and
//! envelope as the service would (the problems it finds are kept for the test to assert none)
//! and keeps the envelopes for the test to look into.

use std::{
    io::Read,
    sync::{Arc, Mutex},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
    Json, Router,
};
use serde_json::{json, Value};

/// The instrumentation key of the stand-in's connection string: it must never appear in the
/// worker's output.
pub const INSTRUMENTATION_KEY: &str = "5e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b";

#[derive(Default)]
struct Received {
    envelopes: Vec<Value>,
    problems: Vec<String>,
}

pub struct Ingestion {
    received: Arc<Mutex<Received>>,
    pub url: String,
    server: tokio::task::JoinHandle<()>,
    tls: super::keys_off::TestTls,
}

impl Drop for Ingestion {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Ingestion {
    pub async fn start() -> Ingestion {
        let received = Arc::new(Mutex::new(Received::default()));
        let router = Router::new()
            .route("/v2/track", post(track))
            .route("/v2.1/track", post(track))
            .fallback(|uri: axum::http::Uri| async move {
                (StatusCode::NOT_FOUND, format!("no such endpoint: {uri}"))
            })
            .with_state(received.clone());
        let tls = super::keys_off::TestTls::make();
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, router) = (acceptor.clone(), router.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(router);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ingestion {
            received,
            url,
            server,
            tls,
        }
    }

    /// The settings that make a worker send to the stand-in and trust its certificate.
    pub fn settings(&self) -> [(String, String); 2] {
        [
            (
                "APPLICATIONINSIGHTS_CONNECTION_STRING".to_owned(),
                self.connection_string(),
            ),
            (
                "SSL_CERT_FILE".to_owned(),
                self.tls.files.ca.display().to_string(),
            ),
        ]
    }

    /// A connection string pointing at the stand-in, as the portal shows one.
    pub fn connection_string(&self) -> String {
        format!(
            "InstrumentationKey={INSTRUMENTATION_KEY};IngestionEndpoint={}/;\
             LiveEndpoint=http://127.0.0.1:9/;ApplicationId=00000000-0000-0000-0000-000000000000",
            self.url
        )
    }

    /// Every envelope received so far.
    pub fn envelopes(&self) -> Vec<Value> {
        self.received.lock().unwrap().envelopes.clone()
    }

    /// What the stand-in refused or found wrong; a test asserts it is empty.
    pub fn problems(&self) -> Vec<String> {
        self.received.lock().unwrap().problems.clone()
    }

    /// The `baseData` of each item of `base_type` (`RequestData`, `RemoteDependencyData`,
    /// `MessageData`, `MetricData`, ...).
    pub fn items(&self, base_type: &str) -> Vec<Value> {
        self.envelopes()
            .into_iter()
            .filter(|e| e["data"]["baseType"] == base_type)
            .map(|e| e["data"]["baseData"].clone())
            .collect()
    }

    /// Each data point of metric `name` whose properties hold every one of `with`: (its value,
    /// its properties).
    pub fn metric_points(&self, name: &str, with: &[(&str, &str)]) -> Vec<(f64, Value)> {
        self.items("MetricData")
            .into_iter()
            .filter(|data| {
                with.iter()
                    .all(|(key, value)| data["properties"][*key] == *value)
            })
            .flat_map(|data| {
                let properties = data["properties"].clone();
                data["metrics"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|point| point["name"] == name)
                    .map(move |point| {
                        (
                            point["value"].as_f64().unwrap_or(f64::NAN),
                            properties.clone(),
                        )
                    })
            })
            .collect()
    }

    /// The largest value metric `name` recorded (a histogram's `max`, else its value).
    pub fn metric_max(&self, name: &str, with: &[(&str, &str)]) -> Option<f64> {
        self.items("MetricData")
            .into_iter()
            .filter(|data| {
                with.iter()
                    .all(|(key, value)| data["properties"][*key] == *value)
            })
            .flat_map(|data| data["metrics"].as_array().cloned().unwrap_or_default())
            .filter(|point| point["name"] == name)
            .filter_map(|point| point["max"].as_f64().or(point["value"].as_f64()))
            .reduce(f64::max)
    }

    /// The sum of metric `name`'s values (a counter's deltas add up to its total).
    pub fn metric_total(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.metric_points(name, with).iter().map(|(v, _)| v).sum()
    }
}

async fn track(
    State(received): State<Arc<Mutex<Received>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut problems = Vec::new();
    if !header("content-type").starts_with("application/json") {
        problems.push(format!("content-type {:?}", header("content-type")));
    }
    let text = if header("content-encoding") == "gzip" {
        let mut text = Vec::new();
        match flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut text) {
            Ok(_) => text,
            Err(e) => {
                problems.push(format!("not gzip: {e}"));
                Vec::new()
            }
        }
    } else {
        body.to_vec()
    };
    let envelopes: Vec<Value> = match serde_json::from_slice(&text) {
        Ok(Value::Array(envelopes)) => envelopes,
        other => {
            problems.push(format!("not a JSON array of envelopes: {other:?}"));
            Vec::new()
        }
    };
    for envelope in &envelopes {
        problems.extend(envelope_problem(envelope));
    }
    let count = envelopes.len();
    let mut received = received.lock().unwrap();
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    received.problems.extend(problems);
    received.envelopes.extend(envelopes);
    let accepted = if status == StatusCode::OK { count } else { 0 };
    (
        status,
        Json(json!({"itemsReceived": count, "itemsAccepted": accepted, "errors": []})),
    )
}

/// What the service would refuse in one envelope: its key, its name and type, its time.
fn envelope_problem(envelope: &Value) -> Option<String> {
    const TYPES: [(&str, &str); 6] = [
        ("Microsoft.ApplicationInsights.Request", "RequestData"),
        (
            "Microsoft.ApplicationInsights.RemoteDependency",
            "RemoteDependencyData",
        ),
        ("Microsoft.ApplicationInsights.Message", "MessageData"),
        ("Microsoft.ApplicationInsights.Metric", "MetricData"),
        ("Microsoft.ApplicationInsights.Exception", "ExceptionData"),
        ("Microsoft.ApplicationInsights.Event", "EventData"),
    ];
    if envelope["iKey"] != INSTRUMENTATION_KEY {
        return Some(format!("an envelope without the key: {envelope}"));
    }
    let name = envelope["name"].as_str().unwrap_or("");
    let base_type = envelope["data"]["baseType"].as_str().unwrap_or("");
    if !TYPES.contains(&(name, base_type)) {
        return Some(format!("name {name:?} with baseType {base_type:?}"));
    }
    let time = envelope["time"].as_str().unwrap_or("");
    if time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).is_err() {
        return Some(format!("time {time:?} is not RFC 3339"));
    }
    None
}

/// TLS with the test CA's leaf for 127.0.0.1.
fn server_config(tls: &super::keys_off::TestTls) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.files.cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&tls.files.key).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    Arc::new(config)
}
