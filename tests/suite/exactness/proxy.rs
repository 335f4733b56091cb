//! The fault-injecting proxy of the test support (`support::proxy`), against real Azurite and a
//! scripted stand-in upstream: that it changes nothing it should not, pages listings and keeps
//! their signatures valid, injects each kind of fault where and when it is told to, the same
//! way for the same seed, and none when told none.

use std::{
    io,
    time::{Duration, Instant},
};

use crate::support::{
    self,
    azurite::SOURCE_KEY,
    noise,
    proxy::{classify, FaultKind, Faults, OpClass, ProxiedAzurite, Proxy, ProxyConfig, Service},
    Azurite,
};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use lakebackup::{
    settings::Settings,
    storage::{
        sas::{AccountSasGrant, ReadBlobSas, SasProtocol},
        shared_key,
        testing::{account_sas, read_blob_sas, NewBlob},
        Container, StorageAccount,
    },
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn connect(value: &str) -> StorageAccount {
    StorageAccount::connect(
        "SOURCE_STORAGE",
        &Settings::from_pairs([("SOURCE_STORAGE", value)]),
    )
    .expect("connection string is accepted")
}

fn source_key() -> Vec<u8> {
    BASE64.decode(SOURCE_KEY).unwrap()
}

/// The names of each page of a listing of `container`, `maxresults` as asked by the caller.
async fn blob_pages(container: &Container, maxresults: Option<u32>) -> Vec<Vec<String>> {
    container
        .name_pages(maxresults)
        .await
        .expect("a listing page")
}

async fn container_pages(account: &StorageAccount) -> Vec<Vec<String>> {
    account
        .container_name_pages()
        .await
        .expect("a container page")
}

/// What a raw HTTP/1.1 client received on a connection of its own.
#[derive(Debug)]
struct RawAnswer {
    status: u16,
    /// Status line and headers, as received.
    head: String,
    body: Vec<u8>,
}

impl RawAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }
}

/// Sends `request` (head and body, exactly these bytes) and reads until the server closes:
/// every request says `Connection: close`, so the end of the stream ends the answer.
async fn raw_bytes(port: u16, request: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(request).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(answer)
}

/// A SharedKey-signed request for the `source` account, sent raw, so that what the proxy does
/// is seen without the SDK's retries.
async fn raw(port: u16, method: &str, target: &str, body: &[u8]) -> io::Result<RawAnswer> {
    let date = lakebackup::storage::testing::http_date(time::OffsetDateTime::now_utc());
    let length = body.len().to_string();
    let mut headers = vec![
        ("Host", format!("127.0.0.1:{port}")),
        ("x-ms-date", date),
        ("x-ms-version", "2026-04-06".to_owned()),
        ("Connection", "close".to_owned()),
    ];
    if method == "PUT" {
        headers.push(("Content-Length", length));
        headers.push(("x-ms-blob-type", "BlockBlob".to_owned()));
    }
    let url = url::Url::parse(&format!("http://127.0.0.1:{port}{target}")).unwrap();
    let authorization = shared_key::authorization(
        "source",
        &source_key(),
        method,
        &url,
        headers.iter().map(|(n, v)| (*n, v.as_str())),
    );
    headers.push(("Authorization", authorization));
    let mut request = format!("{method} {target} HTTP/1.1\r\n");
    for (name, value) in &headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    let answer = raw_bytes(port, &bytes).await?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no head"))?;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, head.clone()))?;
    Ok(RawAnswer {
        status,
        head,
        body: answer[split + 4..].to_vec(),
    })
}

/// The same GET of `target` through the proxy and made directly: both answered 200 with the same
/// head, but for the per-request headers (`Date`, `x-ms-request-id`). Both answers, for their
/// bodies.
async fn same_get(
    proxied: &ProxiedAzurite,
    azurite: &Azurite,
    target: &str,
) -> (RawAnswer, RawAnswer) {
    let via_proxy = raw(proxied.blob.port(), "GET", target, b"").await.unwrap();
    let direct = raw(azurite.blob_port, "GET", target, b"").await.unwrap();
    let stable = |head: &str| -> Vec<String> {
        head.lines()
            .filter(|line| {
                let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
                !matches!(name.as_str(), "date" | "x-ms-request-id")
            })
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(via_proxy.status, 200);
    assert_eq!(stable(&via_proxy.head), stable(&direct.head));
    (via_proxy, direct)
}

#[tokio::test(flavor = "multi_thread")]
async fn listings_come_in_clamped_pages_and_shared_key_stays_valid() {
    let azurite = Azurite::start();
    let proxied = ProxiedAzurite::start(&azurite, ProxyConfig::default().page_size(2))
        .expect("proxies start");
    let direct = connect(&azurite.source());
    let through = connect(&proxied.source());
    let names = [
        "a.csv",
        "dir/a b.csv",
        "dir/sub/c.parquet",
        "x?y=%41",
        "ünï #1.txt",
        "z/1",
        "z/2",
    ];
    let lake = direct.container("lake").unwrap();
    lake.create().await.unwrap();
    for name in names {
        support::upload(&lake, name, name.as_bytes()).await;
    }

    let direct_pages = blob_pages(&lake, None).await;
    assert_eq!(direct_pages.len(), 1, "{direct_pages:?}");
    // Every call goes through SharedKey: a clamped query not re-signed is refused with 403 and
    // the listing fails.
    let proxied_pages = blob_pages(&through.container("lake").unwrap(), None).await;
    assert_eq!(proxied_pages.len(), 4, "{proxied_pages:?}");
    assert!(proxied_pages.iter().all(|page| page.len() <= 2));
    assert_eq!(proxied_pages.concat(), direct_pages.concat());
    let stats = proxied.stats();
    assert_eq!(stats.requests_of(OpClass::List), 4, "{stats:?}");
    assert_eq!(
        (stats.listings_clamped, stats.re_signed),
        (4, 4),
        "{stats:?}"
    );

    // A caller's smaller page is left alone.
    let ones = blob_pages(&through.container("lake").unwrap(), Some(1)).await;
    assert_eq!(ones.len(), 7, "{ones:?}");
    assert_eq!(proxied.stats().listings_clamped, 4);

    // List Containers is a listing too.
    for container in ["lake-2", "lake-3"] {
        direct.container(container).unwrap().create().await.unwrap();
    }
    let containers = container_pages(&through).await;
    assert_eq!(containers.len(), 2, "{containers:?}");
    assert_eq!(containers.concat(), container_pages(&direct).await.concat());
    let stats = proxied.stats();
    assert_eq!(
        (stats.listings_clamped, stats.re_signed),
        (6, 6),
        "{stats:?}"
    );

    // A SAS does not sign maxresults: clamped, not re-signed.
    let sas = account_sas(
        "source",
        &source_key(),
        AccountSasGrant {
            services: "b",
            resource_types: "sco",
            permissions: "rl",
            expiry: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        },
    );
    let by_sas = connect(&format!(
        "BlobEndpoint={}/source;SharedAccessSignature={}",
        proxied.blob.url(),
        sas
    ));
    let sas_pages = blob_pages(&by_sas.container("lake").unwrap(), None).await;
    assert_eq!(sas_pages.len(), 4, "{sas_pages:?}");
    let stats = proxied.stats();
    assert_eq!(
        (stats.listings_clamped, stats.re_signed),
        (10, 6),
        "{stats:?}"
    );
    assert_eq!(stats.total_faults(), 0);

    // Without the account's key the proxy cannot re-sign, so it leaves the listing whole rather
    // than break its signature.
    let keyless = Proxy::start(
        &format!("http://127.0.0.1:{}", azurite.blob_port),
        Service::Blob,
        ProxyConfig::default().page_size(2),
    )
    .expect("proxy starts");
    let unclamped = connect(&format!(
        "AccountName=source;AccountKey={SOURCE_KEY};BlobEndpoint={}/source",
        keyless.url()
    ));
    assert_eq!(
        blob_pages(&unclamped.container("lake").unwrap(), None)
            .await
            .len(),
        1
    );
    let stats = keyless.stats();
    assert_eq!(
        (stats.listings_clamped, stats.listings_not_clamped),
        (0, 1),
        "{stats:?}"
    );
}

/// A stand-in upstream that records the request it gets and answers with `answer`, exactly.
async fn scripted_upstream(answer: &'static [u8]) -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        // The scripted requests end with an empty chunk.
        while !received.ends_with(b"0\r\n\r\n") {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "request cut short: {received:?}");
            received.extend_from_slice(&chunk[..n]);
        }
        stream.write_all(answer).await.unwrap();
        stream.shutdown().await.unwrap();
        received
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_and_answers_pass_byte_for_byte() {
    // Framing the proxy must follow without normalising anything: a chunked request, a chunked
    // answer with an extension and a trailer, an answer ended by the end of the stream, odd
    // header case and reason phrases.
    let request: &[u8] = b"PUT /source/lake/blob?comp=block&blockid=QUFB HTTP/1.1\r\n\
        Host: 127.0.0.1\r\nX-Odd-CASE:  kept as is \r\nTransfer-Encoding: chunked\r\n\
        Connection: close\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n";
    let answers: [&'static [u8]; 2] = [
        b"HTTP/1.1 201 Made It\r\nX-MS-Request-Id: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          3;name=value\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nserver: stand-in\r\n\r\nthe body ends with the stream",
    ];
    for answer in answers {
        let (port, upstream) = scripted_upstream(answer).await;
        let proxy = Proxy::start(
            &format!("http://127.0.0.1:{port}"),
            Service::Blob,
            ProxyConfig::azurite().page_size(1),
        )
        .expect("proxy starts");
        let received = raw_bytes(proxy.port(), request).await.expect("an answer");
        assert_eq!(
            String::from_utf8_lossy(&received),
            String::from_utf8_lossy(answer)
        );
        let forwarded = upstream.await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&forwarded),
            String::from_utf8_lossy(request)
        );
        assert_eq!(proxy.stats().requests_of(OpClass::Write), 1);
    }

    // A large blob through the SDK, both ways, against Azurite.
    let azurite = Azurite::start();
    let proxied = ProxiedAzurite::start(&azurite, ProxyConfig::default().page_size(1))
        .expect("proxies start");
    let direct = connect(&azurite.source()).container("lake").unwrap();
    let through = connect(&proxied.source()).container("lake").unwrap();
    through.create().await.unwrap();
    let bytes = noise(12 << 20, 7);
    support::upload(&through, "big.bin", &bytes).await;
    assert!(support::download(&direct, "big.bin").await == bytes);
    assert!(support::download(&through, "big.bin").await == bytes);

    // The same GET direct and through the proxy: the same head (but for the per-request
    // headers) and the same body.
    let (via_proxy, direct) = same_get(&proxied, &azurite, "/source/lake/big.bin").await;
    assert!(via_proxy.body == bytes && direct.body == bytes);
    assert_eq!(proxied.stats().upstream_errors, 0);
}

/// On a current-thread runtime: the proxy runs on its own.
#[tokio::test]
async fn each_fault_kind_does_what_it_says_on_its_class_only() {
    let azurite = Azurite::start();
    let proxy = Proxy::start(
        &format!("http://127.0.0.1:{}", azurite.blob_port),
        Service::Blob,
        ProxyConfig::azurite(),
    )
    .expect("proxy starts");
    let lake = connect(&azurite.source()).container("lake").unwrap();
    lake.create().await.unwrap();
    support::upload(&lake, "present", b"already here").await;
    let exists = |name: &'static str| {
        let blob = lake.blob(name);
        async move { blob.probe().await.unwrap().is_some() }
    };
    let port = proxy.port();
    let pause = Duration::from_millis(300);
    for kind in FaultKind::ALL {
        proxy.set_faults(
            Faults::new(1, 1.0)
                .classes([OpClass::Write])
                .kinds([kind])
                .delay(pause, pause),
        );
        // Reads are not chosen: untouched.
        let read = raw(port, "GET", "/source/lake/present", b"").await.unwrap();
        assert_eq!(
            (read.status, read.body.as_slice()),
            (200, &b"already here"[..])
        );

        let name: &'static str = format!("{kind:?}").leak();
        let target = format!("/source/lake/{name}");
        let started = Instant::now();
        let outcome = raw(port, "PUT", &target, b"the payload").await;
        match kind {
            FaultKind::InternalError | FaultKind::ServerBusy => {
                let answer = outcome.expect("an answer");
                let (status, code) = if kind == FaultKind::ServerBusy {
                    (503, "ServerBusy")
                } else {
                    (500, "InternalError")
                };
                assert_eq!(answer.status, status, "{answer:?}");
                assert_eq!(answer.header("x-ms-error-code"), Some(code));
                let body = String::from_utf8_lossy(&answer.body);
                assert!(body.contains(&format!("<Code>{code}</Code>")), "{body}");
                assert_eq!(
                    answer.header("retry-after"),
                    (kind == FaultKind::ServerBusy).then_some("1")
                );
                assert!(!exists(name).await, "{kind:?} must not reach Azurite");
            }
            FaultKind::ResetBeforeForwarding | FaultKind::ResetAfterForwarding => {
                let error = outcome.expect_err("the connection is reset");
                assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}");
                let written = kind == FaultKind::ResetAfterForwarding;
                assert_eq!(exists(name).await, written, "{kind:?}");
                if written {
                    assert_eq!(support::download(&lake, name).await, b"the payload");
                }
            }
            FaultKind::Delay => {
                let answer = outcome.expect("an answer");
                assert_eq!(answer.status, 201, "{answer:?}");
                assert!(started.elapsed() >= pause, "{:?}", started.elapsed());
                assert_eq!(support::download(&lake, name).await, b"the payload");
            }
        }
    }
    let stats = proxy.stats();
    for kind in FaultKind::ALL {
        assert_eq!(
            stats.faults.get(&(OpClass::Write, kind)),
            Some(&1),
            "{stats:?}"
        );
        assert_eq!(stats.faults_of_kind(kind), 1);
    }
    assert_eq!(stats.requests_of(OpClass::Write), 5);
    assert_eq!(stats.requests_of(OpClass::Read), 5);
    assert_eq!(stats.faults_in_class(OpClass::Read), 0);
    assert_eq!(stats.total_faults(), 5);
    assert_eq!(stats.injected.len(), 5);
    assert!(stats
        .injected
        .iter()
        .all(|i| i.class == OpClass::Write && i.method == "PUT" && i.draw == 0));
}

/// The statuses of `count` GETs of one blob through `proxy` (`None` for a reset), with a HEAD
/// before each when `interleave`.
async fn statuses(proxy: &Proxy, count: usize, interleave: bool) -> Vec<Option<u16>> {
    let mut seen = Vec::new();
    for _ in 0..count {
        if interleave {
            raw(proxy.port(), "HEAD", "/source/lake/blob", b"")
                .await
                .unwrap();
        }
        seen.push(
            raw(proxy.port(), "GET", "/source/lake/blob", b"")
                .await
                .ok()
                .map(|answer| answer.status),
        );
    }
    seen
}

/// On a current-thread runtime: the proxy runs on its own.
#[tokio::test]
async fn the_same_seed_makes_the_same_decisions() {
    let azurite = Azurite::start();
    let lake = connect(&azurite.source()).container("lake").unwrap();
    lake.create().await.unwrap();
    support::upload(&lake, "blob", b"x").await;
    let faults = |seed| {
        Faults::new(seed, 0.5).classes([OpClass::Read]).kinds([
            FaultKind::InternalError,
            FaultKind::ServerBusy,
            FaultKind::ResetBeforeForwarding,
        ])
    };
    let start = |seed| {
        Proxy::start(
            &format!("http://127.0.0.1:{}", azurite.blob_port),
            Service::Blob,
            ProxyConfig::azurite().faults(faults(seed)),
        )
        .expect("proxy starts")
    };
    let (first, second, other) = (start(42), start(42), start(43));
    let decided = statuses(&first, 40, false).await;
    for outcome in [Some(200), Some(500), Some(503), None] {
        assert!(decided.contains(&outcome), "{outcome:?} in {decided:?}");
    }
    // Requests of another class in between draw from their own stream.
    assert_eq!(statuses(&second, 40, true).await, decided);
    assert_eq!(second.stats().requests_of(OpClass::Head), 40);
    assert_ne!(statuses(&other, 40, false).await, decided);
    let draws = |proxy: &Proxy| -> Vec<(u64, FaultKind)> {
        proxy
            .stats()
            .injected
            .iter()
            .map(|i| (i.draw, i.kind))
            .collect()
    };
    assert_eq!(draws(&first), draws(&second));
    // Setting the faults again starts their streams again.
    first.set_faults(faults(42));
    assert_eq!(statuses(&first, 40, false).await, decided);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_faults_off_nothing_is_injected_and_every_class_is_counted() {
    let azurite = Azurite::start();
    let proxied = ProxiedAzurite::start(&azurite, ProxyConfig::default()).expect("proxies start");
    let source = connect(&proxied.source());
    let backup = connect(&proxied.backup());
    let jobs = connect(&proxied.jobs());
    let lake = source.container("lake").unwrap();
    lake.create().await.unwrap();
    support::upload(&lake, "a.csv", b"a,b\n1,2\n").await;
    let blob = lake.blob("a.csv");
    blob.probe().await.unwrap().expect("a.csv exists");
    assert_eq!(support::download(&lake, "a.csv").await, b"a,b\n1,2\n");
    let metadata = std::collections::HashMap::from([("k".to_owned(), "v".to_owned())]);
    blob.replace_metadata(&metadata).await.unwrap();
    blob.take_snapshot(None).await.unwrap();
    let lease_id = blob.acquire_lease(15).await.unwrap();
    blob.release_lease(&lease_id).await.unwrap();
    assert_eq!(support::list_all(&lake).await.len(), 2);

    // A cross-account copy whose source URL is the proxy's: Azurite checks the source with a
    // HEAD through the proxy.
    let heads_before = proxied.stats().requests_of(OpClass::Head);
    let grant = ReadBlobSas {
        account: "source",
        container: "lake",
        blob: "a.csv",
        snapshot: None,
        expiry: time::OffsetDateTime::now_utc() + time::Duration::minutes(10),
        protocol: SasProtocol::Any,
    };
    let sas = read_blob_sas(grant, &source_key());
    let copy_source = format!("{}/source/lake/a.csv?{sas}", proxied.blob.url());
    let bak = backup.container("lakebak").unwrap();
    bak.create().await.unwrap();
    bak.blob("a.csv")
        .start_copy_from(&copy_source)
        .await
        .expect("copy through the proxy is accepted");
    assert_eq!(support::download(&bak, "a.csv").await, b"a,b\n1,2\n");
    assert_eq!(
        proxied.stats().requests_of(OpClass::Head),
        heads_before + 1,
        "Azurite's copy-source check"
    );

    support::upload(&lake, "gone.csv", b"").await;
    lake.blob("gone.csv").delete(None).await.unwrap();
    let queue = jobs.queue("work").unwrap();
    queue.create_if_missing().await.unwrap();
    queue.send("hello".into(), None, "a message").await.unwrap();
    assert_eq!(support::drain_queue(&queue).await, ["hello"]);

    let stats = proxied.stats();
    assert_eq!(stats.total_faults(), 0, "{stats:?}");
    assert!(stats.injected.is_empty());
    // Every class but `Other`: nothing here is unclassified.
    for class in OpClass::ALL.into_iter().filter(|c| *c != OpClass::Other) {
        assert!(stats.requests_of(class) > 0, "{class:?} in {stats:?}");
    }
    assert_eq!(stats.upstream_errors, 0);
    assert_eq!(stats.listings_clamped, 0, "no page size, no clamping");

    // Turned on at run time, then off again.
    proxied.set_faults(
        Faults::new(9, 1.0)
            .classes([OpClass::Properties])
            .kinds([FaultKind::InternalError]),
    );
    let other = lake.blob("b.csv");
    other.upload(b"b".to_vec()).await.unwrap();
    let error = other
        .replace_metadata(&metadata)
        .await
        .expect_err("every try fails");
    assert_eq!(
        (error.status, error.code.clone()),
        (
            Some(500),
            Some(lakebackup::storage::ErrorCode::parse("InternalError"))
        ),
        "{error}"
    );
    let faulted = proxied.stats().faults_in_class(OpClass::Properties);
    assert!(faulted >= 1, "{faulted}");
    proxied.set_faults(Faults::off());
    other.replace_metadata(&metadata).await.unwrap();
    assert_eq!(proxied.stats().total_faults(), faulted);
}

#[test]
fn requests_are_classified_by_what_they_do() {
    let copy = [("X-MS-Copy-Source".to_owned(), "http://x/y".to_owned())];
    let cases = [
        (
            Service::Blob,
            "GET",
            "/source?comp=list",
            &[][..],
            OpClass::List,
        ),
        (
            Service::Blob,
            "GET",
            "/source/lake?restype=container&comp=list",
            &[],
            OpClass::List,
        ),
        (
            Service::Blob,
            "GET",
            "/source/lake/d/a.csv",
            &[],
            OpClass::Read,
        ),
        (
            Service::Blob,
            "GET",
            "/source/lake/a?comp=blocklist",
            &[],
            OpClass::Read,
        ),
        (Service::Blob, "HEAD", "/source/lake/a", &[], OpClass::Head),
        (Service::Blob, "PUT", "/source/lake/a", &[], OpClass::Write),
        (
            Service::Blob,
            "PUT",
            "/source/lake/a?comp=block&blockid=AA",
            &[],
            OpClass::Write,
        ),
        (
            Service::Blob,
            "PUT",
            "/source/lake/a?comp=blocklist",
            &[],
            OpClass::Write,
        ),
        (
            Service::Blob,
            "PUT",
            "/source/lake/a?comp=appendblock",
            &[],
            OpClass::Write,
        ),
        (
            Service::Blob,
            "PUT",
            "/source/lake/a",
            &copy[..],
            OpClass::Copy,
        ),
        (
            Service::Blob,
            "PUT",
            "/source/lake/a?comp=copy&copyid=1",
            &[],
            OpClass::Copy,
        ),
        (
            Service::Blob,
            "PUT",
            "/source/lake/a?comp=metadata",
            &[],
            OpClass::Properties,
        ),
        (
            Service::Blob,
            "GET",
            "/source/lake/a?comp=tags",
            &[],
            OpClass::Properties,
        ),
        (
            Service::Blob,
            "PUT",
            "/source/lake/a?comp=tier",
            &[],
            OpClass::Properties,
        ),
        (
            Service::Blob,
            "PUT",
            "/source/lake/a?comp=properties",
            &[],
            OpClass::Properties,
        ),
        (
            Service::Blob,
            "PUT",
            "/source/lake/a?comp=snapshot",
            &[],
            OpClass::Snapshot,
        ),
        (
            Service::Blob,
            "DELETE",
            "/source/lake/a?snapshot=x",
            &[],
            OpClass::Delete,
        ),
        (
            Service::Blob,
            "PUT",
            "/source/lake/a?comp=lease",
            &[],
            OpClass::Lease,
        ),
        (
            Service::Blob,
            "PUT",
            "/source/lake?comp=lease&restype=container",
            &[],
            OpClass::Lease,
        ),
        (
            Service::Blob,
            "PUT",
            "/source/lake?restype=container",
            &[],
            OpClass::Container,
        ),
        (
            Service::Blob,
            "DELETE",
            "/source/lake?restype=container",
            &[],
            OpClass::Container,
        ),
        (
            Service::Blob,
            "POST",
            "/source?restype=service&comp=userdelegationkey",
            &[],
            OpClass::Other,
        ),
        (
            Service::Queue,
            "GET",
            "/jobs/work/messages",
            &[],
            OpClass::Queue,
        ),
        (
            Service::Queue,
            "GET",
            "/jobs?comp=list",
            &[],
            OpClass::Queue,
        ),
    ];
    for (service, method, target, headers, expected) in cases {
        assert_eq!(
            classify(service, method, target, headers),
            expected,
            "{method} {target}"
        );
    }
}

/// The Azure rules (`ProxyConfig::azure_rules`), against Azurite 3.37, which accepts both: Copy
/// Blob From URL of an append or page blob is refused with 409 `CannotVerifyCopySource`, and
/// Copy Blob onto an existing blob of another type with 409 `InvalidBlobType`, by the proxy,
/// before Azurite sees them; every other copy, and everything else, is Azurite's own answer.
#[tokio::test(flavor = "multi_thread")]
async fn azure_rules_refuse_what_azure_refuses_and_forward_the_rest() {
    use lakebackup::{
        core::properties::BlobType,
        storage::copy::{copy_server_side, CopyAttributes, Overwrite, ServerCopy},
    };

    let azurite = Azurite::start();
    let proxied = ProxiedAzurite::start(&azurite, ProxyConfig::default().azure_rules(true))
        .expect("proxies start");
    let source = connect(&proxied.source());
    let backup = StorageAccount::connect(
        "BACKUP_STORAGE",
        &Settings::from_pairs([("BACKUP_STORAGE", proxied.backup())]),
    )
    .unwrap();
    let lake = source.container("lake").unwrap();
    let vault = backup.container("vault").unwrap();
    lake.create().await.unwrap();
    vault.create().await.unwrap();
    support::upload(&lake, "block.bin", b"a block blob").await;
    let append = lake.blob("append.log");
    append
        .create_append_blob(&NewBlob::default())
        .await
        .unwrap();
    append.append(b"appended").await.unwrap();
    let page = lake.blob("page.vhd");
    page.create_page_blob(512, &NewBlob::default())
        .await
        .unwrap();
    page.put_pages(0, &noise(512, 11)).await.unwrap();
    let expiry = time::OffsetDateTime::now_utc() + time::Duration::minutes(10);
    let url_of = |name: &'static str| {
        let source = &source;
        async move {
            source
                .readable_blob_url("lake", name, None, expiry)
                .await
                .unwrap()
        }
    };
    let blob_type = |name: &'static str| {
        let vault = &vault;
        async move {
            vault
                .blob(name)
                .probe()
                .await
                .unwrap()
                .unwrap()
                .version
                .properties
                .blob_type
        }
    };
    async fn copy_to(
        vault: &lakebackup::storage::Container,
        to: &str,
        from: url::Url,
        path: ServerCopy,
        overwrite: Overwrite<'_>,
    ) -> Result<lakebackup::storage::copy::Copied, lakebackup::storage::StorageError> {
        copy_server_side(
            &vault.blob(to),
            &from,
            None,
            &CopyAttributes::default(),
            path,
            overwrite,
        )
        .await
    }
    let vault_container = backup.container("vault").unwrap();
    let copy = |to, from, path, overwrite| copy_to(&vault_container, to, from, path, overwrite);

    // Copy Blob From URL: a block blob is copied; append and page blobs are refused as Azure
    // refuses them, and nothing is created.
    copy(
        "sync-block",
        url_of("block.bin").await,
        ServerCopy::Sync,
        Overwrite::Never,
    )
    .await
    .expect("a block blob is copied synchronously");
    assert_eq!(blob_type("sync-block").await, BlobType::Block);
    for (to, from) in [("sync-append", "append.log"), ("sync-page", "page.vhd")] {
        let refused = copy(to, url_of(from).await, ServerCopy::Sync, Overwrite::Never)
            .await
            .expect_err("Azure refuses a synchronous copy of an append or page blob");
        assert_eq!(refused.status, Some(409), "{refused}");
        assert!(
            refused.is(lakebackup::storage::ErrorCode::parse(
                "CannotVerifyCopySource"
            )),
            "{refused}"
        );
        assert!(
            refused
                .to_string()
                .contains("The copy source must be a block blob."),
            "{refused}"
        );
        assert!(vault.blob(to).probe().await.unwrap().is_none(), "{to}");
    }

    // Copy Blob: any type onto nothing, or onto its own type; never onto another type.
    copy(
        "async-append",
        url_of("append.log").await,
        ServerCopy::Async,
        Overwrite::Never,
    )
    .await
    .expect("an append blob is copied asynchronously");
    assert_eq!(blob_type("async-append").await, BlobType::Append);
    support::upload(&vault, "existing", b"a block blob in the way").await;
    let (etag, _, _) = support::properties(&vault, "existing").await;
    let refused = copy(
        "existing",
        url_of("append.log").await,
        ServerCopy::Async,
        Overwrite::IfMatch(&etag),
    )
    .await
    .expect_err("Azure refuses a copy onto a blob of another type");
    assert_eq!(refused.status, Some(409), "{refused}");
    assert!(
        refused.is(lakebackup::storage::ErrorCode::parse("InvalidBlobType")),
        "{refused}"
    );
    let (unchanged, _, _) = support::properties(&vault, "existing").await;
    assert_eq!(unchanged, etag, "Azurite never saw the copy");
    assert_eq!(blob_type("existing").await, BlobType::Block);
    copy(
        "existing",
        url_of("block.bin").await,
        ServerCopy::Async,
        Overwrite::IfMatch(&etag),
    )
    .await
    .expect("a block blob is copied over a block blob");
    assert_eq!(support::download(&vault, "existing").await, b"a block blob");
    // Create-only onto an existing blob: Azure and Azurite both answer BlobAlreadyExists, and
    // the rules leave that answer to Azurite.
    let exists = copy(
        "existing",
        url_of("append.log").await,
        ServerCopy::Async,
        Overwrite::Never,
    )
    .await
    .expect_err("the destination exists");
    assert!(
        exists.is(lakebackup::storage::ErrorCode::parse("BlobAlreadyExists")),
        "{exists}"
    );

    let refusals: Vec<String> = proxied
        .stats()
        .azure_refusals
        .into_iter()
        .map(|(code, path)| format!("{code} {path}"))
        .collect();
    assert_eq!(
        refusals,
        [
            "CannotVerifyCopySource /backup/vault/sync-append",
            "CannotVerifyCopySource /backup/vault/sync-page",
            "InvalidBlobType /backup/vault/existing",
        ]
    );

    // What the rules forward is Azurite's answer as it was: a GET through the proxy is the GET
    // made directly (but for the per-request headers).
    let (via_proxy, direct) = same_get(&proxied, &azurite, "/source/lake/append.log").await;
    assert_eq!(via_proxy.body, direct.body);

    // Rules off, Azurite copies an append blob synchronously (Azure would not).
    proxied.set_config(ProxyConfig::azurite());
    copy(
        "sync-append",
        url_of("append.log").await,
        ServerCopy::Sync,
        Overwrite::Never,
    )
    .await
    .expect("Azurite 3.37 accepts an append blob as the source of Copy Blob From URL");
    assert_eq!(blob_type("sync-append").await, BlobType::Append);
    assert_eq!(proxied.stats().azure_refusals.len(), 3);
}
