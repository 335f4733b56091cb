//! The HTTP/1.1 connections `metadata_case` sends its requests on: a small pool of idle
//! connections per endpoint (scheme, host, port), as the shared client keeps, so a run of
//! writes reuses one connection rather than opening (and, over HTTPS, handshaking) one per
//! request and leaving each socket in TIME_WAIT — on Functions, outbound connections are a
//! counted resource (SNAT ports).
//!
//! A connection goes back to the pool only once its answer was read to the end and it did not
//! say `Connection: close`; it is taken again only if it is still open and was idle less than
//! [`POOL_IDLE_TIMEOUT`], at most [`MAX_IDLE_PER_ENDPOINT`] wait per endpoint. A request found
//! unsendable on a pooled connection (closed meanwhile, never written) goes on a new one.
//!
//! Timeouts are the shared client's: [`CONNECT_TIMEOUT`] for TCP and TLS, and an idle timeout
//! ([`IDLE_TIMEOUT`]) that any byte sent or received resets — never a limit on a whole exchange,
//! which a large body on a slow link would always exceed. A request that got no answer fails
//! with the endpoint it went to ([`Unanswered`]), which `storage::error` puts in its one line.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use azure_core::{
    error::ErrorKind,
    http::{
        headers::{HeaderName, HeaderValue, Headers},
        AsyncRawResponse, StatusCode,
    },
    Bytes,
};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::Instant,
};

use super::io::{CasedHead, Exchange, Progress, Watched};

/// As the shared client's (the SDK's reqwest defaults): TCP and TLS together.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// As the shared client's read timeout, for bytes either way: a request fails when nothing was
/// sent or received for this long.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A connection idle longer is not reused (the service may have closed it).
pub(super) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many idle connections wait per endpoint.
pub(super) const MAX_IDLE_PER_ENDPOINT: usize = 8;
/// How long a pooled connection may take to say it is ready for the next request.
const READY_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub connect: Duration,
    pub idle: Duration,
}

impl Timeouts {
    pub(super) const DEFAULT: Timeouts = Timeouts {
        connect: CONNECT_TIMEOUT,
        idle: IDLE_TIMEOUT,
    };
}

/// A request that got no answer: where it went (`scheme://host[:port]`, never a path or
/// query, which may carry a SAS), whether it failed connecting, and why.
#[derive(Debug)]
pub(crate) struct Unanswered {
    pub(crate) endpoint: String,
    pub(crate) connect: bool,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl fmt::Display for Unanswered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.connect {
            write!(f, "could not connect to {}", self.endpoint)
        } else {
            write!(f, "no answer from {}", self.endpoint)
        }
    }
}

impl std::error::Error for Unanswered {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Where a request goes, as the pool keys connections and errors name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Endpoint(String);

impl Endpoint {
    pub(super) fn of(url: &url::Url) -> Self {
        // As `storage::error` names the shared client's endpoints: the port when the URL has one.
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        Endpoint(format!(
            "{}://{}{port}",
            url.scheme(),
            url.host_str().unwrap_or_default()
        ))
    }

    pub(super) fn failed(
        &self,
        connect: bool,
        error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> azure_core::Error {
        let kind = if connect {
            ErrorKind::Connection
        } else {
            ErrorKind::Io
        };
        azure_core::Error::new(
            kind,
            Unanswered {
                endpoint: self.0.clone(),
                connect,
                source: error.into(),
            },
        )
    }
}

fn silence(idle: Duration) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("nothing sent or received for {} s", idle.as_secs_f64()),
    )
}

/// `work`, failed once nothing was sent or received for `idle` (any byte resets the wait).
async fn within_idle<F: std::future::Future>(
    work: F,
    progress: &Progress,
    idle: Duration,
) -> Result<F::Output, std::io::Error> {
    tokio::pin!(work);
    loop {
        let deadline = progress.last() + idle;
        tokio::select! {
            done = &mut work => return Ok(done),
            () = tokio::time::sleep_until(deadline) => {
                if progress.last() + idle <= Instant::now() {
                    return Err(silence(idle));
                }
            }
        }
    }
}

type Sender = SendRequest<Full<Bytes>>;

/// One HTTP/1.1 connection.
struct Conn {
    sender: Sender,
    exchange: Arc<Exchange>,
}

impl Conn {
    /// A connection over `io`, driven by a task of its own until it closes.
    async fn over<T>(io: T, endpoint: &Endpoint) -> azure_core::Result<Conn>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let exchange = Arc::new(Exchange::new());
        let io = Watched {
            inner: io,
            exchange: exchange.clone(),
        };
        let io = hyper_util::rt::TokioIo::new(CasedHead::new(io, exchange.clone()));
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| endpoint.failed(true, e))?;
        tokio::spawn(async move {
            // Ends when the peer closes, or every sender is dropped and the exchange is over.
            let _ = connection.await;
        });
        Ok(Conn { sender, exchange })
    }
}

/// The idle connections of each endpoint, newest last.
struct Pool {
    idle: Mutex<HashMap<Endpoint, Vec<(Conn, Instant)>>>,
}

impl Pool {
    fn new() -> Self {
        Self {
            idle: Mutex::new(HashMap::new()),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<Endpoint, Vec<(Conn, Instant)>>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest idle connection to `endpoint` that is still open and ready; stale ones are
    /// dropped (which closes them).
    async fn checkout(&self, endpoint: &Endpoint) -> Option<Conn> {
        loop {
            let (mut conn, since) = self.idle().get_mut(endpoint)?.pop()?;
            if since.elapsed() >= POOL_IDLE_TIMEOUT || conn.sender.is_closed() {
                continue;
            }
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, conn.sender.ready()).await {
                return Some(conn);
            }
        }
    }

    fn checkin(&self, endpoint: &Endpoint, conn: Conn) {
        let mut idle = self.idle();
        let waiting = idle.entry(endpoint.clone()).or_default();
        waiting.retain(|(conn, since)| {
            since.elapsed() < POOL_IDLE_TIMEOUT && !conn.sender.is_closed()
        });
        if waiting.len() < MAX_IDLE_PER_ENDPOINT {
            waiting.push((conn, Instant::now()));
        }
    }
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(Pool::new)
}

/// How sending on one connection ended.
enum Sent {
    Answered(AsyncRawResponse),
    /// The connection closed before the request was written: it may go on another.
    Unsent(http::Request<Full<Bytes>>),
    Failed(azure_core::Error),
}

/// Sends `request` to `url`'s endpoint on a pooled connection or a new one, its
/// `x-ms-meta-*` header names spelled as in `names`.
pub(super) async fn send(
    url: &url::Url,
    request: http::Request<Full<Bytes>>,
    names: &[String],
) -> azure_core::Result<AsyncRawResponse> {
    send_with(url, request, names, Timeouts::DEFAULT).await
}

pub(super) async fn send_with(
    url: &url::Url,
    request: http::Request<Full<Bytes>>,
    names: &[String],
    timeouts: Timeouts,
) -> azure_core::Result<AsyncRawResponse> {
    let endpoint = Endpoint::of(url);
    let mut request = request;
    while let Some(conn) = pool().checkout(&endpoint).await {
        match exchange(conn, request, names, timeouts, &endpoint).await {
            Sent::Answered(response) => return Ok(response),
            Sent::Unsent(unsent) => request = unsent,
            Sent::Failed(e) => return Err(e),
        }
    }
    let io = tokio::time::timeout(timeouts.connect, super::connect::connect(url, &endpoint))
        .await
        .map_err(|_| endpoint.failed(true, silence(timeouts.connect)))??;
    let conn = Conn::over(io, &endpoint).await?;
    match exchange(conn, request, names, timeouts, &endpoint).await {
        Sent::Answered(response) => Ok(response),
        Sent::Unsent(_) => Err(endpoint.failed(
            false,
            "the connection closed before the request was written",
        )),
        Sent::Failed(e) => Err(e),
    }
}

/// One request and its answer on `conn`; the connection goes back to the pool once the answer
/// was read to its end, unless it said `Connection: close`.
async fn exchange(
    mut conn: Conn,
    request: http::Request<Full<Bytes>>,
    names: &[String],
    timeouts: Timeouts,
    endpoint: &Endpoint,
) -> Sent {
    conn.exchange.arm(names);
    let sending = conn.sender.try_send_request(request);
    let response = match within_idle(sending, &conn.exchange.progress, timeouts.idle).await {
        Err(silent) => return Sent::Failed(endpoint.failed(false, silent)),
        Ok(Err(mut error)) => {
            return match error.take_message() {
                Some(unsent) => Sent::Unsent(unsent),
                None => Sent::Failed(endpoint.failed(false, error.into_error())),
            }
        }
        Ok(Ok(response)) => response,
    };
    let status = StatusCode::from(response.status().as_u16());
    let closes = response.version() != http::Version::HTTP_11
        || response
            .headers()
            .get_all(http::header::CONNECTION)
            .iter()
            .any(|value| {
                value
                    .to_str()
                    .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
            });
    let mut headers = Headers::new();
    for (name, value) in response.headers() {
        if let Ok(value) = value.to_str() {
            headers.insert(
                HeaderName::from(name.as_str().to_owned()),
                HeaderValue::from(value.to_owned()),
            );
        }
    }
    let reading = Reading {
        body: response.into_body(),
        conn: (!closes).then_some(conn.sender),
        exchange: conn.exchange,
        endpoint: endpoint.clone(),
        idle: timeouts.idle,
    };
    let body = futures::stream::try_unfold(reading, |mut reading| async move {
        loop {
            let frame = within_idle(
                reading.body.frame(),
                &reading.exchange.progress,
                reading.idle,
            )
            .await
            .map_err(|silent| reading.endpoint.failed(false, silent))?;
            match frame {
                None => {
                    reading.release();
                    return Ok(None);
                }
                Some(Err(e)) => return Err(reading.endpoint.failed(false, e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some((data, reading)));
                    }
                }
            }
        }
    });
    Sent::Answered(AsyncRawResponse::new(status, headers, Box::pin(body)))
}

/// An answer being read, and the connection it came on.
struct Reading {
    body: hyper::body::Incoming,
    /// `None` when the connection closes after this answer.
    conn: Option<Sender>,
    exchange: Arc<Exchange>,
    endpoint: Endpoint,
    idle: Duration,
}

impl Reading {
    /// The answer was read to its end: the connection may serve the next request.
    fn release(&mut self) {
        if let Some(sender) = self.conn.take() {
            let conn = Conn {
                sender,
                exchange: self.exchange.clone(),
            };
            pool().checkin(&self.endpoint, conn);
        }
    }
}

#[cfg(test)]
mod tests;
