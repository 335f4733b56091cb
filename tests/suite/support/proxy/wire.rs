//! HTTP/1.1 framing as the proxy needs it: a connection's buffered bytes ([`Wire`]), heads
//! parsed without normalising anything ([`Head`]), and whole requests and answers read with
//! every framing HTTP/1.1 allows (length, chunked with extensions and trailers, end of stream).

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::conn::Conn;

/// A connection with what has been read from it but not yet used.
pub(super) struct Wire {
    pub(super) stream: Conn,
    pub(super) buffer: Vec<u8>,
    /// Bytes received since the last request was sent: a failure after any of them means the
    /// peer did answer.
    pub(super) received: usize,
}

/// Heads (request line or status line and headers) larger than this are refused; Azure's own
/// limit is far lower.
pub(super) const MAX_HEAD: usize = 1 << 20;

impl Wire {
    pub(super) fn new(stream: Conn) -> Wire {
        Wire {
            stream,
            buffer: Vec::new(),
            received: 0,
        }
    }

    /// Reads more; `false` at the end of the stream.
    pub(super) async fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        self.received += n;
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The next head, CRLF CRLF included; `None` when the peer closed cleanly before sending
    /// any of it.
    pub(super) async fn head(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut searched = 0;
        loop {
            if let Some(at) = find(&self.buffer[searched..], b"\r\n\r\n") {
                let end = searched + at + 4;
                return Ok(Some(self.buffer.drain(..end).collect()));
            }
            searched = self.buffer.len().saturating_sub(3);
            if self.buffer.len() > MAX_HEAD {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
            }
            if !self.fill().await? {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }

    /// Exactly `n` bytes.
    pub(super) async fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        if self.buffer.len() >= n {
            return Ok(self.buffer.drain(..n).collect());
        }
        let mut bytes = std::mem::take(&mut self.buffer);
        let have = bytes.len();
        bytes.resize(n, 0);
        self.received += n - have;
        self.stream.read_exact(&mut bytes[have..]).await?;
        Ok(bytes)
    }

    /// One line, CRLF included.
    pub(super) async fn line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(at) = find(&self.buffer, b"\r\n") {
                return Ok(self.buffer.drain(..at + 2).collect());
            }
            if self.buffer.len() > MAX_HEAD {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            if !self.fill().await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// A chunked body exactly as sent: chunk sizes, extensions, data and trailers.
    pub(super) async fn chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut raw = Vec::new();
        loop {
            let line = self.line().await?;
            let size_text = String::from_utf8_lossy(&line);
            let size_text = size_text.trim_end().split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            raw.extend_from_slice(&line);
            if size == 0 {
                loop {
                    let trailer = self.line().await?;
                    raw.extend_from_slice(&trailer);
                    if trailer == b"\r\n" {
                        return Ok(raw);
                    }
                }
            }
            raw.extend(self.take(size + 2).await?);
        }
    }

    pub(super) async fn rest(&mut self) -> io::Result<Vec<u8>> {
        let mut bytes = std::mem::take(&mut self.buffer);
        self.received += self.stream.read_to_end(&mut bytes).await?;
        Ok(bytes)
    }

    /// Resets the connection (RST instead of FIN).
    pub(super) fn reset(self) {
        let _ = self.stream.set_zero_linger();
        drop(self.stream);
    }
}

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A parsed head: its first line and its headers, in order, as sent.
pub(super) struct Head {
    pub(super) first: String,
    pub(super) headers: Vec<(String, String)>,
}

impl Head {
    /// Lossy, because the raw bytes are what is forwarded; the text only steers.
    pub(super) fn parse(raw: &[u8]) -> Head {
        let text = String::from_utf8_lossy(raw);
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or("").to_owned();
        let headers = lines
            .filter(|line| !line.is_empty())
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.to_owned(), value.trim().to_owned()))
            .collect();
        Head { first, headers }
    }

    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    pub(super) fn content_length(&self) -> io::Result<Option<usize>> {
        self.header("content-length")
            .map(|v| {
                v.parse()
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))
            })
            .transpose()
    }

    /// The head rebuilt with `first` as its first line and `replace`'s headers in place of
    /// theirs; everything else as it came.
    pub(super) fn rebuild(&self, first: &str, replace: &[(&str, &str)]) -> Vec<u8> {
        let mut text = format!("{first}\r\n");
        for (name, value) in &self.headers {
            let value = replace
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map_or(value.as_str(), |(_, v)| v);
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        text.into_bytes()
    }
}

/// A request read whole from the client.
pub(super) struct Request {
    pub(super) raw_head: Vec<u8>,
    pub(super) head: Head,
    pub(super) method: String,
    pub(super) target: String,
    pub(super) body: Vec<u8>,
    /// The client asked for `100 Continue` and the proxy gave it, so Azurite's own is dropped.
    pub(super) continued: bool,
    pub(super) close: bool,
}

pub(super) async fn read_request(client: &mut Wire) -> io::Result<Option<Request>> {
    let Some(raw_head) = client.head().await? else {
        return Ok(None);
    };
    let head = Head::parse(&raw_head);
    let mut parts = head.first.split(' ');
    let (method, target, version) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    if method.is_empty() || target.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request line",
        ));
    }
    let continued = head.has_token("expect", "100-continue");
    if continued {
        // The body is read before anything is forwarded, so the client must be told to send it.
        client
            .stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await?;
    }
    let body = if head.has_token("transfer-encoding", "chunked") {
        client.chunked().await?
    } else {
        match head.content_length()? {
            Some(n) => client.take(n).await?,
            None => Vec::new(),
        }
    };
    let close = head.has_token("connection", "close")
        || (version == "HTTP/1.0" && !head.has_token("connection", "keep-alive"));
    Ok(Some(Request {
        raw_head,
        head,
        method,
        target,
        body,
        continued,
        close,
    }))
}

/// An answer read whole from Azurite, as raw bytes.
pub(super) struct Answer {
    /// Interim (1xx) answers to pass on before the final one.
    pub(super) interim: Vec<u8>,
    pub(super) head: Vec<u8>,
    pub(super) body: Vec<u8>,
    /// The client's connection must close after this answer (it says so, or ends at the end
    /// of the stream).
    pub(super) close: bool,
    /// Azurite's connection cannot carry another request.
    pub(super) spent: bool,
}

pub(super) async fn read_answer(upstream: &mut Wire, request: &Request) -> io::Result<Answer> {
    let mut interim = Vec::new();
    loop {
        let Some(raw) = upstream.head().await? else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        let head = Head::parse(&raw);
        let status: u16 = head
            .first
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
        if (100..200).contains(&status) && status != 101 {
            if !(request.continued && status == 100) {
                interim.extend_from_slice(&raw);
            }
            continue;
        }
        let bodiless =
            request.method.eq_ignore_ascii_case("HEAD") || matches!(status, 101 | 204 | 304);
        let mut close = head.has_token("connection", "close") || request.close;
        let body = if bodiless {
            Vec::new()
        } else if head.has_token("transfer-encoding", "chunked") {
            upstream.chunked().await?
        } else if let Some(n) = head.content_length()? {
            upstream.take(n).await?
        } else {
            close = true;
            upstream.rest().await?
        };
        // Bytes beyond the answer: Azurite's connection is in a state nobody can use.
        let spent = close || !upstream.buffer.is_empty();
        return Ok(Answer {
            interim,
            head: raw,
            body,
            close,
            spent,
        });
    }
}
