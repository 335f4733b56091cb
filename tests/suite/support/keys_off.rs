//! What a keys-off test needs besides Azurite: a test CA and a certificate for 127.0.0.1 (Azurite
//! serves HTTPS in OAuth mode; the worker trusts the CA through the standard `SSL_CERT_FILE`),
//! and a stand-in of the App Service managed-identity endpoint (`IDENTITY_ENDPOINT` /
//! `IDENTITY_HEADER`, API version 2019-08-01) that checks what it is asked and issues tokens of
//! the shape Azurite accepts.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL, Engine as _};
use lakebackup_devtools::azurite::AzuriteTls;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The test CA and Azurite's certificate, in a directory removed on drop.
pub struct TestTls {
    pub files: AzuriteTls,
    _dir: tempfile::TempDir,
}

impl TestTls {
    /// The test process's one CA and certificate, trusted by this process (see
    /// [`TestTls::trust_in_this_process`]): its HTTP client reads its roots once, so every test
    /// in the process must use the same CA.
    pub fn shared() -> &'static TestTls {
        static TLS: std::sync::OnceLock<TestTls> = std::sync::OnceLock::new();
        TLS.get_or_init(|| {
            let tls = TestTls::make();
            tls.trust_in_this_process();
            tls
        })
    }

    /// A CA, and a leaf for `IP:127.0.0.1` signed by it (rustls refuses a self-signed
    /// certificate that is its own CA). Trusted by no one until told (the App Insights
    /// stand-in, `support::ingestion`, gives it to the worker only).
    pub fn make() -> TestTls {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "lakebackup test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        leaf_params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

        let files = AzuriteTls {
            cert: dir.path().join("azurite.pem"),
            key: dir.path().join("azurite-key.pem"),
            ca: dir.path().join("ca.pem"),
        };
        std::fs::write(&files.cert, leaf.pem()).unwrap();
        std::fs::write(&files.key, leaf_key.serialize_pem()).unwrap();
        std::fs::write(&files.ca, ca_cert.pem()).unwrap();
        TestTls { files, _dir: dir }
    }

    /// Makes this test process trust the CA, as the worker does, through `SSL_CERT_FILE`; it
    /// must come before the process's first HTTP client.
    fn trust_in_this_process(&self) {
        std::env::set_var("SSL_CERT_FILE", &self.files.ca);
    }
}

/// The tenant and object id the stand-in's identities carry.
pub const TENANT_ID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const SYSTEM_OBJECT_ID: &str = "0b1f5b3e-9f1c-4d7e-8a55-5a1d0e2f0001";
pub const USER_ASSIGNED_OBJECT_ID: &str = "0b1f5b3e-9f1c-4d7e-8a55-5a1d0e2f0002";

#[derive(Default)]
struct Issued {
    /// `client_id` of every token issued (`None`: the system-assigned identity).
    identities: Vec<Option<String>>,
    /// Requests refused, with why: a wrong header, API version or resource.
    refused: Vec<String>,
}

struct StandIn {
    header: String,
    issued: Mutex<Issued>,
    expired: AtomicBool,
}

/// The App Service identity endpoint, on a free loopback port; stops when dropped. It runs on
/// its own thread, so it answers while the test waits for a worker process.
pub struct IdentityEndpoint {
    pub url: String,
    pub header: String,
    state: Arc<StandIn>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl IdentityEndpoint {
    pub fn start() -> IdentityEndpoint {
        let state = Arc::new(StandIn {
            header: format!("identity-header-{}", std::process::id()),
            issued: Mutex::default(),
            expired: AtomicBool::new(false),
        });
        let app = Router::new()
            .route("/msi/token", get(token))
            .with_state(state.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/msi/token", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        IdentityEndpoint {
            url,
            header: state.header.clone(),
            state,
            stop: Some(stop),
        }
    }

    /// From now on, issue tokens that expired an hour ago (while telling the client they are
    /// fresh, as a skewed clock would).
    pub fn issue_expired(&self) {
        self.state.expired.store(true, Ordering::SeqCst);
    }

    /// The `client_id` of every token issued so far.
    pub fn identities(&self) -> Vec<Option<String>> {
        self.state.issued.lock().unwrap().identities.clone()
    }

    pub fn refused(&self) -> Vec<String> {
        self.state.issued.lock().unwrap().refused.clone()
    }
}

impl Drop for IdentityEndpoint {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn token(
    State(state): State<Arc<StandIn>>,
    headers: HeaderMap,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let refuse = |why: String| {
        state.issued.lock().unwrap().refused.push(why.clone());
        (StatusCode::BAD_REQUEST, why).into_response()
    };
    let header = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok());
    if header != Some(state.header.as_str()) {
        return refuse(format!("X-IDENTITY-HEADER was {header:?}"));
    }
    if query.get("api-version").map(String::as_str) != Some("2019-08-01") {
        return refuse(format!("api-version was {:?}", query.get("api-version")));
    }
    let resource = query.get("resource").map(String::as_str);
    if resource != Some("https://storage.azure.com") {
        return refuse(format!("resource was {resource:?}"));
    }
    let client_id = query.get("client_id").cloned();
    let object_id = match client_id.as_deref() {
        None => SYSTEM_OBJECT_ID,
        Some(_) => USER_ASSIGNED_OBJECT_ID,
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (not_before, expires) = if state.expired.load(Ordering::SeqCst) {
        (now - 7200, now - 3600)
    } else {
        (now - 60, now + 3600)
    };
    let claims = serde_json::json!({
        "aud": "https://storage.azure.com",
        "iss": format!("https://sts.windows.net/{TENANT_ID}/"),
        "iat": not_before,
        "nbf": not_before,
        "exp": expires,
        "oid": object_id,
        "tid": TENANT_ID,
        "sub": object_id,
    });
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    let jwt = format!(
        "{}.{}.{}",
        BASE64URL.encode(header.to_string()),
        BASE64URL.encode(claims.to_string()),
        BASE64URL.encode("not-checked-by-azurite")
    );
    state
        .issued
        .lock()
        .unwrap()
        .identities
        .push(client_id.clone());
    Json(serde_json::json!({
        "access_token": jwt,
        // What the client believes: an hour from now, even for an expired token.
        "expires_on": (now + 3600).to_string(),
        "resource": "https://storage.azure.com",
        "token_type": "Bearer",
        "client_id": client_id.unwrap_or_else(|| "system-assigned".to_owned()),
    }))
    .into_response()
}
