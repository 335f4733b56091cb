//! Benchmark: the first full backup (`lakebackup shard` + `lakebackup run`, release binary,
//! direct engine, as `first_backup` times it) with telemetry off and on, in one table.
//!
//! On, `APPLICATIONINSIGHTS_CONNECTION_STRING` points at a local HTTPS sink that accepts every
//! `POST /v2/track` (gzip, as the exporter sends it) and counts the envelopes, so the worker
//! does everything it does in Azure — spans per function, job, shard and blob, metrics —
//! except the network to Azure. Its default intervals stay (spans every 5 s, metrics every
//! 60 s). Off, the same settings without it.
//!
//! Each case runs `BENCH_REPEATS` times each way (default 2), off then on in even rounds and on
//! then off in odd ones, each on a fresh Azurite and a freshly seeded lake; the table shows the
//! median of each, their ratio, the spread (slowest / fastest) of each way, and the envelopes
//! the sink received. `RUST_LOG` is `warn` (`BENCH_LOG`), as in `first_backup`; telemetry gets
//! the log's default level whatever it says.
//!
//! Run: `scripts/bench.sh first-backup-telemetry [NxSIZE ...]` (default 10000x1024).

use std::{
    collections::HashMap,
    io::Read,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use lakebackup::{settings::Settings, storage::StorageAccount};
use lakebackup_devtools::azurite::Azurite;

const CONTAINER: &str = "lake";

fn main() {
    let cases: Vec<(usize, usize)> = std::env::args()
        .skip(1)
        .filter_map(|a| {
            let (n, size) = a.split_once('x')?;
            Some((n.parse().ok()?, size.parse().ok()?))
        })
        .collect();
    let cases = if cases.is_empty() {
        vec![(10_000, 1024)]
    } else {
        cases
    };
    let repeats: usize = std::env::var("BENCH_REPEATS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2)
        .max(1);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let sink = runtime.block_on(Sink::start());
    let mut rows = Vec::new();
    for (n, size) in cases {
        let (mut off, mut on) = (Vec::new(), Vec::new());
        let sent_before = sink.envelopes();
        for round in 0..repeats {
            // Off first in even rounds, on first in odd ones: neither way always runs second.
            for telemetry_on in [round % 2 == 1, round % 2 == 0] {
                let took = runtime.block_on(first_backup(n, size, telemetry_on.then_some(&sink)));
                let way = if telemetry_on { "on" } else { "off" };
                eprintln!(
                    "{n}×{size} round {round}: {way} {:.2} s",
                    took.as_secs_f64()
                );
                if telemetry_on { &mut on } else { &mut off }.push(took);
            }
        }
        rows.push((n, size, off, on, sink.envelopes() - sent_before));
    }
    println!();
    println!("first backup with telemetry off and on (medians of {repeats} runs each)");
    println!(
        "{:>7} {:>7} {:>8} {:>8} {:>7} {:>12} {:>12} {:>15}",
        "N", "size", "off s", "on s", "ratio", "spread off", "spread on", "items sent"
    );
    for (n, size, off, on, sent) in rows {
        let (off_median, on_median) = (median(&off), median(&on));
        println!(
            "{:>7} {:>7} {:>8.2} {:>8.2} {:>7.3} {:>12.3} {:>12.3} {:>15}",
            n,
            size,
            off_median,
            on_median,
            on_median / off_median,
            spread(&off),
            spread(&on),
            sent
        );
    }
}

fn median(times: &[Duration]) -> f64 {
    let mut secs: Vec<f64> = times.iter().map(Duration::as_secs_f64).collect();
    secs.sort_by(f64::total_cmp);
    let mid = secs.len() / 2;
    if secs.len().is_multiple_of(2) {
        (secs[mid - 1] + secs[mid]) / 2.0
    } else {
        secs[mid]
    }
}

/// Slowest over fastest.
fn spread(times: &[Duration]) -> f64 {
    let secs = times.iter().map(Duration::as_secs_f64);
    secs.clone().fold(0.0, f64::max) / secs.fold(f64::INFINITY, f64::min)
}

/// One first backup of `n` blobs of `size` bytes on a fresh Azurite, telemetry to `sink` when
/// given: the time from `lakebackup shard` until the shard queue is empty (every version then
/// has its stamped backup; the count is checked).
async fn first_backup(n: usize, size: usize, sink: Option<&Sink>) -> Duration {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let azurite = Azurite::start_in_with(root, &[]).expect("Azurite starts (run `npm ci` first)");
    let mut settings = HashMap::from([
        ("SOURCE_STORAGE".to_owned(), azurite.source()),
        ("BACKUP_STORAGE".to_owned(), azurite.backup()),
        ("AzureWebJobsStorage".to_owned(), azurite.jobs()),
        (
            "RUST_LOG".to_owned(),
            std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        ),
    ]);
    if let Some(sink) = sink {
        settings.extend(sink.settings());
    }
    let accounts = Settings::from_pairs(settings.clone());
    let source = StorageAccount::connect("SOURCE_STORAGE", &accounts).unwrap();
    seed(&source, n, size).await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root.join("host.json"), dir.path().join("host.json")).unwrap();
    let started = Instant::now();
    let queued = Command::new(env!("CARGO_BIN_EXE_lakebackup"))
        .args(["shard", "--container", CONTAINER])
        .env_clear()
        .envs(&settings)
        .output()
        .expect("lakebackup shard runs");
    assert!(queued.status.success(), "{queued:?}");
    let mut run = Command::new(env!("CARGO_BIN_EXE_lakebackup"))
        .arg("run")
        .current_dir(dir.path())
        .env_clear()
        .envs(&settings)
        .stdin(Stdio::null())
        .spawn()
        .expect("lakebackup run starts");
    let jobs = StorageAccount::connect("AzureWebJobsStorage", &accounts).unwrap();
    let shards = jobs.queue("backup-requests-shards").unwrap();
    let took = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if shards.depth().await.ok().flatten() == Some(0) {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(3_600),
            "shards still queued after an hour"
        );
    };
    let backup = StorageAccount::connect("BACKUP_STORAGE", &accounts).unwrap();
    let backups = backup.container("lakebak").unwrap();
    let pages = lakebackup::storage::listing::list_backups(&backups, None).unwrap();
    futures::pin_mut!(pages);
    let mut stamped = 0;
    while let Some(page) = futures::TryStreamExt::try_next(&mut pages).await.unwrap() {
        stamped += page.iter().filter(|b| b.stamped_etag().is_some()).count();
    }
    assert_eq!(stamped, n, "every version has a stamped backup");
    // SIGTERM: `run` stops cleanly and flushes its telemetry (outside the timed span).
    let _ = Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status();
    let _ = run.wait();
    took
}

async fn seed(source: &StorageAccount, n: usize, size: usize) {
    let lake = source.container(CONTAINER).unwrap();
    lake.create().await.unwrap();
    let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    futures::stream::iter(0..n)
        .for_each_concurrent(64, |i| {
            let (lake, body) = (&lake, &body);
            async move {
                let name = format!("dir{:03}/blob-{i:07}.dat", i % 100);
                lake.blob(&name).upload(body.clone()).await.unwrap();
            }
        })
        .await;
}

/// A minimal HTTPS ingestion endpoint: answers every track request 200 and counts envelopes.
struct Sink {
    url: String,
    ca: tempfile::NamedTempFile,
    envelopes: Arc<AtomicU64>,
}

impl Sink {
    async fn start() -> Sink {
        let (ca, config) = tls();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let envelopes = Arc::new(AtomicU64::new(0));
        let counted = envelopes.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, counted) = (acceptor.clone(), counted.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let counted = counted.clone();
                        async move { track(request, &counted).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Sink { url, ca, envelopes }
    }

    fn settings(&self) -> [(String, String); 2] {
        [
            (
                "APPLICATIONINSIGHTS_CONNECTION_STRING".to_owned(),
                format!(
                    "InstrumentationKey=00000000-0000-0000-0000-000000000001;\
                     IngestionEndpoint={}/",
                    self.url
                ),
            ),
            (
                "SSL_CERT_FILE".to_owned(),
                self.ca.path().display().to_string(),
            ),
        ]
    }

    fn envelopes(&self) -> u64 {
        self.envelopes.load(Ordering::Relaxed)
    }
}

async fn track(
    request: hyper::Request<hyper::body::Incoming>,
    counted: &AtomicU64,
) -> Result<hyper::Response<http_body_util::Full<axum::body::Bytes>>, hyper::Error> {
    use http_body_util::BodyExt;
    let body = request.into_body().collect().await?.to_bytes();
    let mut json = Vec::new();
    if flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut json)
        .is_err()
    {
        json = body.to_vec();
    }
    let items = serde_json::from_slice::<Vec<serde_json::Value>>(&json)
        .map(|items| items.len())
        .unwrap_or(0);
    counted.fetch_add(items as u64, Ordering::Relaxed);
    let answer = format!(r#"{{"itemsReceived":{items},"itemsAccepted":{items},"errors":[]}}"#);
    Ok(hyper::Response::new(http_body_util::Full::new(
        answer.into(),
    )))
}

/// A test CA (its PEM in a file, for the worker's `SSL_CERT_FILE`) and a server config with a
/// leaf it signed for 127.0.0.1.
fn tls() -> (tempfile::NamedTempFile, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf_params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), ca_cert.pem()).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(leaf.der().to_vec())], key)
        .unwrap();
    (ca, Arc::new(config))
}
