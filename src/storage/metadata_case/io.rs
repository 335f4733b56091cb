//! What `metadata_case`'s connections write and read through: each request's head held until
//! complete and sent with its metadata names spelled as given ([`CasedHead`]), and each byte
//! either way noted ([`Watched`]) for the idle timeout.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{ready, Context as TaskContext, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Instant,
};

use super::restore_names;

/// When a connection last sent or received a byte.
#[derive(Debug)]
pub(super) struct Progress {
    start: Instant,
    /// Milliseconds since `start`.
    last: AtomicU64,
}

impl Progress {
    pub(super) fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    pub(super) fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last.fetch_max(now, Ordering::Relaxed);
    }

    pub(super) fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

/// What one connection shares with the wrappers of its I/O: the names the next request's head
/// spells (armed for that request only), and its progress.
#[derive(Debug)]
pub(super) struct Exchange {
    names: Mutex<Vec<String>>,
    armed: AtomicBool,
    pub(super) progress: Progress,
}

impl Exchange {
    pub(super) fn new() -> Self {
        Self {
            names: Mutex::new(Vec::new()),
            armed: AtomicBool::new(false),
            progress: Progress::new(),
        }
    }

    pub(super) fn arm(&self, names: &[String]) {
        *self.names.lock().unwrap_or_else(|e| e.into_inner()) = names.to_vec();
        self.armed.store(true, Ordering::Release);
        self.progress.touch();
    }

    /// The names of the head about to be written, once.
    fn take_names(&self) -> Option<Vec<String>> {
        self.armed
            .swap(false, Ordering::AcqRel)
            .then(|| self.names.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// A connection's I/O that notes each byte sent or received (`Progress`).
pub(super) struct Watched<T> {
    pub(super) inner: T,
    pub(super) exchange: Arc<Exchange>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = ready!(Pin::new(&mut this.inner).poll_read(cx, buf));
        if read.is_ok() && buf.filled().len() > before {
            this.exchange.progress.touch();
        }
        Poll::Ready(read)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, buf));
        if matches!(written, Ok(n) if n > 0) {
            this.exchange.progress.touch();
        }
        Poll::Ready(written)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A connection's I/O on which each request's head — the first bytes written after the
/// connection was armed for it — is held until complete, and then sent with each
/// `x-ms-meta-{name}` header spelled as that request's names. Only the names' letter case
/// changes, so every length stays the same; bodies pass as they are.
pub(super) struct CasedHead<T> {
    inner: T,
    exchange: Arc<Exchange>,
    /// The head so far and the names to spell in it, until its blank line has been written.
    head: Option<(Vec<u8>, Vec<String>)>,
    /// Bytes accepted and not yet passed on, and how many of them were.
    pending: Vec<u8>,
    passed: usize,
}

impl<T> CasedHead<T> {
    pub(super) fn new(inner: T, exchange: Arc<Exchange>) -> Self {
        Self {
            inner,
            exchange,
            head: None,
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
        if this.head.is_none() {
            // A new request's first bytes: its head starts here.
            this.head = this.exchange.take_names().map(|names| (Vec::new(), names));
        }
        let Some((head, _)) = this.head.as_mut() else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        head.extend_from_slice(buf);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let (mut bytes, names) = this.head.take().unwrap_or_default();
            restore_names(&mut bytes[..end], &names);
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
