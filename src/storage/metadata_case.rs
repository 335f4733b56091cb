//! Metadata names as they were written, on the way out.
//!
//! Azure keeps a metadata name's case as it was written ("names preserve the case with which
//! they were created, but are case-insensitive when set or read"). A name travels as an
//! `x-ms-meta-{name}` header, and every layer of this process's HTTP stack lowercases header
//! names: the SDK's `HeaderName`, the `http` crate and hyper (which offers no public way to send
//! a name's own case). Reading is settled elsewhere: names are taken from listings, whose XML
//! keeps them (see `Blob::state`). Writing is settled here: a call that writes metadata names
//! with capitals marks its request ([`keep_case`]), and [`CaseKeepingClient`], the transport of
//! every client, sends such a request itself over HTTP/1.1 with those header names written as
//! given. Every other request goes through the shared client unchanged.
//!
//! Names go into neither signature nor token: the SharedKey string to sign lowercases header
//! names, so a request signed with lowercase names stays valid with their case restored.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{ready, Context as TaskContext, Poll},
    time::Duration,
};

use async_trait::async_trait;
use azure_core::{
    error::ErrorKind,
    http::{
        headers::{HeaderName, HeaderValue, Headers},
        request::Body,
        AsyncRawResponse, Context, HttpClient, Request, StatusCode,
    },
    Bytes,
};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The request header that carries the names to send as written, from the call to the
/// transport; never sent.
const NAMES_HEADER: &str = "x-lakebackup-metadata-names";
const META_PREFIX: &[u8] = b"x-ms-meta-";

/// As the shared client's (the SDK's reqwest defaults).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The metadata names of one call that carry capitals, comma-separated (names are C#
/// identifiers: no comma in any), for [`add_names_header`].
#[derive(Debug, Clone)]
pub(super) struct MetadataNames(String);

/// Marks a call that writes `metadata`, so that its names are sent as written; a call whose
/// names are all lowercase is left as it is (nothing to keep).
pub(super) fn keep_case(context: &mut Context<'_>, metadata: &HashMap<String, String>) {
    let names: Vec<&str> = metadata
        .keys()
        .map(String::as_str)
        // A name HTTP can carry (ASCII) with a capital to keep.
        .filter(|name| name.is_ascii() && name.bytes().any(|b| b.is_ascii_uppercase()))
        .collect();
    if !names.is_empty() {
        context.insert(MetadataNames(names.join(",")));
    }
}

/// The header carrying a marked call's names, added by the per-call policy.
pub(super) fn add_names_header(context: &Context<'_>, request: &mut Request) {
    if let Some(MetadataNames(names)) = context.value::<MetadataNames>() {
        request.insert_header(NAMES_HEADER, names.clone());
    }
}

/// The transport of every client: a request marked by [`keep_case`] is sent by this process
/// over HTTP/1.1 with its metadata names' case; every other one by the shared client.
#[derive(Debug)]
pub(super) struct CaseKeepingClient {
    inner: Arc<dyn HttpClient>,
}

impl CaseKeepingClient {
    pub(super) fn new(inner: Arc<dyn HttpClient>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl HttpClient for CaseKeepingClient {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let names_header = HeaderName::from_static(NAMES_HEADER);
        let Some(names) = request.headers().get_optional_string(&names_header) else {
            return self.inner.execute_request(request).await;
        };
        let mut request = request.clone();
        request.headers_mut().remove(names_header);
        let names: Vec<String> = names.split(',').map(str::to_owned).collect();
        if let Some(reason) = cannot_keep_case(&request) {
            warn_once(reason);
            return self.inner.execute_request(&request).await;
        }
        send_keeping_case(&request, names).await
    }
}

/// Why this request goes through the shared client after all (its names lowercased): a proxy
/// set for it in the environment (the shared client goes through it; this one cannot), or a
/// streamed body (the calls that write metadata send their bytes whole).
fn cannot_keep_case(request: &Request) -> Option<&'static str> {
    if matches!(request.body(), Body::SeekableStream(_)) {
        return Some("a streamed body");
    }
    proxy_set_for(request.url(), |name| std::env::var(name).ok())
        .then_some("a proxy is set in the environment")
}

fn warn_once(reason: &'static str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            reason,
            "metadata names are written in lowercase: only a direct request keeps their case"
        );
    });
}

/// Whether `HTTP(S)_PROXY` or `ALL_PROXY` applies to `url`, as the shared client reads them
/// (`NO_PROXY` names hosts, domains with their subdomains, or `*`).
fn proxy_set_for(url: &url::Url, env: impl Fn(&str) -> Option<String>) -> bool {
    let variable = |name: &str| {
        env(name)
            .or_else(|| env(&name.to_ascii_lowercase()))
            .filter(|value| !value.trim().is_empty())
    };
    let scheme = if url.scheme() == "https" {
        "HTTPS_PROXY"
    } else {
        "HTTP_PROXY"
    };
    if variable(scheme).or_else(|| variable("ALL_PROXY")).is_none() {
        return false;
    }
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
    let exempt = variable("NO_PROXY").is_some_and(|list| {
        list.split(',').map(str::trim).any(|entry| {
            let domain = entry.trim_start_matches('.');
            entry == "*"
                || (!domain.is_empty()
                    && (host.eq_ignore_ascii_case(domain)
                        || host
                            .to_ascii_lowercase()
                            .ends_with(&format!(".{}", domain.to_ascii_lowercase()))))
        })
    });
    !exempt
}

/// Sends `request` on a connection of its own, its `x-ms-meta-*` header names spelled as in
/// `names`.
async fn send_keeping_case(
    request: &Request,
    names: Vec<String>,
) -> azure_core::Result<AsyncRawResponse> {
    let url = request.url();
    let io = connect(url).await?;
    let io = hyper_util::rt::TokioIo::new(CasedHead::new(io, names));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| io_error(e, "starting an HTTP/1.1 exchange"))?;
    tokio::spawn(async move {
        // Ends when the response has been read and the sender dropped.
        let _ = connection.await;
    });
    let outgoing = http_request(request)?;
    let response = tokio::time::timeout(READ_TIMEOUT, sender.send_request(outgoing))
        .await
        .map_err(|e| io_error(e, "waiting for the service's answer"))?
        .map_err(|e| io_error(e, "sending a request that writes metadata"))?;
    drop(sender);
    let status = StatusCode::from(response.status().as_u16());
    let mut headers = Headers::new();
    for (name, value) in response.headers() {
        if let Ok(value) = value.to_str() {
            headers.insert(
                HeaderName::from(name.as_str().to_owned()),
                HeaderValue::from(value.to_owned()),
            );
        }
    }
    let body = futures::stream::try_unfold(response.into_body(), |mut body| async move {
        loop {
            let frame = tokio::time::timeout(READ_TIMEOUT, body.frame())
                .await
                .map_err(|e| io_error(e, "reading the service's answer"))?;
            match frame {
                None => return Ok(None),
                Some(Err(e)) => return Err(io_error(e, "reading the service's answer")),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some((data, body)));
                    }
                }
            }
        }
    });
    Ok(AsyncRawResponse::new(status, headers, Box::pin(body)))
}

/// The request as hyper sends it: its own headers (names lowercase: [`CasedHead`] restores
/// the metadata names), `Host`, and the body's length.
fn http_request(request: &Request) -> azure_core::Result<http::Request<Full<Bytes>>> {
    let url = request.url();
    let body = match request.body() {
        Body::Bytes(bytes) => bytes.clone(),
        Body::SeekableStream(_) => Bytes::new(),
    };
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let mut builder = http::Request::builder()
        .method(request.method().as_ref())
        .uri(&url[url::Position::BeforePath..])
        .header(http::header::HOST, host);
    let mut has_length = false;
    for (name, value) in request.headers().iter() {
        has_length |= name.as_str() == "content-length";
        builder = builder.header(name.as_str(), value.as_str());
    }
    if !has_length {
        builder = builder.header(http::header::CONTENT_LENGTH, body.len());
    }
    builder
        .body(Full::new(body))
        .map_err(|e| azure_core::Error::with_error(ErrorKind::Other, e, "building a request"))
}

trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// A connection to `url`'s host: TCP, with TLS for `https` (verified as the shared client
/// verifies: the platform's trust, which honours `SSL_CERT_FILE`).
async fn connect(url: &url::Url) -> azure_core::Result<Box<dyn Connection>> {
    let host = url
        .host()
        .ok_or_else(|| azure_core::Error::with_message(ErrorKind::Other, "a URL without a host"))?;
    let port = url.port_or_known_default().unwrap_or(443);
    let address = match &host {
        url::Host::Domain(domain) => format!("{domain}:{port}"),
        url::Host::Ipv4(ip) => format!("{ip}:{port}"),
        url::Host::Ipv6(ip) => format!("[{ip}]:{port}"),
    };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|e| connection_error(e, url))?
        .map_err(|e| connection_error(e, url))?;
    let _ = tcp.set_nodelay(true);
    match url.scheme() {
        "http" => Ok(Box::new(tcp)),
        "https" => {
            let server_name = match host {
                url::Host::Domain(domain) => {
                    rustls::pki_types::ServerName::try_from(domain.to_owned())
                        .map_err(|e| connection_error(e, url))?
                }
                url::Host::Ipv4(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
                url::Host::Ipv6(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
            };
            let tls = tokio_rustls::TlsConnector::from(tls_config()?)
                .connect(server_name, tcp)
                .await
                .map_err(|e| connection_error(e, url))?;
            Ok(Box::new(tls))
        }
        other => Err(azure_core::Error::with_message(
            ErrorKind::Other,
            format!("cannot send a request over {other}"),
        )),
    }
}

/// The TLS set-up, made once: the installed crypto provider (else aws-lc-rs, as the shared
/// client's), the platform verifier, HTTP/1.1 only.
fn tls_config() -> azure_core::Result<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            use rustls_platform_verifier::BuilderVerifierExt;
            let provider = rustls::crypto::CryptoProvider::get_default()
                .cloned()
                .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .and_then(|builder| builder.with_platform_verifier())
                .map_err(|e| e.to_string())?
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
        .map_err(|e| {
            azure_core::Error::with_message(ErrorKind::Other, format!("setting up TLS: {e}"))
        })
}

fn connection_error(
    error: impl std::error::Error + Send + Sync + 'static,
    url: &url::Url,
) -> azure_core::Error {
    // The host only: a URL may carry a SAS.
    let host = url.host_str().unwrap_or_default().to_owned();
    azure_core::Error::with_error(
        ErrorKind::Connection,
        error,
        format!("connecting to {host}"),
    )
}

fn io_error(
    error: impl std::error::Error + Send + Sync + 'static,
    doing: &'static str,
) -> azure_core::Error {
    azure_core::Error::with_error(ErrorKind::Io, error, doing)
}

/// A connection whose first bytes written — the request's head — are held until the head is
/// complete, and then sent with each `x-ms-meta-{name}` header spelled as in `names`. Only the
/// names' letter case changes, so every length stays the same; the body passes as it is.
struct CasedHead<T> {
    inner: T,
    names: Vec<String>,
    /// The head so far, until its blank line has been written.
    head: Option<Vec<u8>>,
    /// Bytes accepted and not yet passed on, and how many of them were.
    pending: Vec<u8>,
    passed: usize,
}

impl<T> CasedHead<T> {
    fn new(inner: T, names: Vec<String>) -> Self {
        Self {
            inner,
            names,
            head: Some(Vec::new()),
            pending: Vec::new(),
            passed: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> CasedHead<T> {
    fn poll_pass_on(&mut self, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        while self.passed < self.pending.len() {
            let written =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.passed..]))?;
            if written == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.passed += written;
        }
        self.pending.clear();
        self.passed = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CasedHead<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pass_on(cx))?;
        let Some(head) = this.head.as_mut() else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        head.extend_from_slice(buf);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let mut bytes = this.head.take().unwrap_or_default();
            restore_names(&mut bytes[..end], &this.names);
            this.pending = bytes;
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pass_on(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pass_on(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CasedHead<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

/// Spells each `x-ms-meta-{name}` header name of `head` (a request's head, without its blank
/// line) as the name in `names` it equals case-insensitively.
fn restore_names(head: &mut [u8], names: &[String]) {
    // The request line is no header.
    for line in head.split_mut(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let header = &mut line[..colon];
        if header.len() <= META_PREFIX.len()
            || !header[..META_PREFIX.len()].eq_ignore_ascii_case(META_PREFIX)
        {
            continue;
        }
        let name = &mut header[META_PREFIX.len()..];
        if let Some(spelled) = names
            .iter()
            .find(|spelled| spelled.as_bytes().eq_ignore_ascii_case(name))
        {
            name.copy_from_slice(spelled.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_metadata_names_get_their_case_back() {
        let mut head =
            b"PUT /c/x-ms-meta-owner:1 HTTP/1.1\r\nhost: h\r\nx-ms-meta-owner: alice\r\n\
            x-ms-meta-camelcasekey: v\r\nx-ms-meta-lower: x\r\nx-ms-owner: y\r\nowner: z"
                .to_vec();
        restore_names(&mut head, &["Owner".to_owned(), "CamelCaseKey".to_owned()]);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "PUT /c/x-ms-meta-owner:1 HTTP/1.1\r\nhost: h\r\nx-ms-meta-Owner: alice\r\n\
             x-ms-meta-CamelCaseKey: v\r\nx-ms-meta-lower: x\r\nx-ms-owner: y\r\nowner: z"
        );
    }

    #[test]
    fn a_proxy_in_the_environment_is_seen_as_the_shared_client_sees_it() {
        let url = |u: &str| url::Url::parse(u).unwrap();
        let env = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            }
        };
        let azure = url("https://lake.blob.core.windows.net/c/b");
        assert!(!proxy_set_for(&azure, env(&[])));
        assert!(proxy_set_for(
            &azure,
            env(&[("HTTPS_PROXY", "http://p:3128")])
        ));
        assert!(proxy_set_for(
            &azure,
            env(&[("https_proxy", "http://p:3128")])
        ));
        assert!(proxy_set_for(
            &azure,
            env(&[("ALL_PROXY", "http://p:3128")])
        ));
        assert!(!proxy_set_for(
            &azure,
            env(&[("HTTP_PROXY", "http://p:3128")])
        ));
        for exempt in [
            "*",
            ".core.windows.net",
            "blob.core.windows.net",
            "LAKE.blob.core.windows.net",
        ] {
            let pairs = [("HTTPS_PROXY", "http://p:3128"), ("NO_PROXY", exempt)];
            assert!(!proxy_set_for(&azure, env(&pairs)), "{exempt}");
        }
        assert!(proxy_set_for(
            &azure,
            env(&[
                ("HTTPS_PROXY", "http://p:3128"),
                ("NO_PROXY", "windows.org,ake.blob.core.windows.net")
            ])
        ));
        let local = url("http://127.0.0.1:10000/acct/c/b");
        assert!(!proxy_set_for(
            &local,
            env(&[
                ("HTTP_PROXY", "http://p:3128"),
                ("NO_PROXY", "localhost,127.0.0.1")
            ])
        ));
    }

    #[test]
    fn a_call_is_marked_only_when_a_name_has_a_capital() {
        let mut context = Context::new();
        keep_case(
            &mut context,
            &HashMap::from([("owner".to_owned(), "a".to_owned())]),
        );
        assert!(context.value::<MetadataNames>().is_none());
        keep_case(
            &mut context,
            &HashMap::from([
                ("Owner".to_owned(), "a".to_owned()),
                ("lower".to_owned(), "b".to_owned()),
            ]),
        );
        assert_eq!(
            context.value::<MetadataNames>().map(|n| n.0.as_str()),
            Some("Owner")
        );
    }
}
