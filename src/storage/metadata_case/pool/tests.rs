//! The pool against a loopback server that answers as each test needs: reuse, `Connection:
//! close`, answers and uploads slower in all than the idle timeout, silence, a closed port.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use super::*;

/// How the test server answers.
#[derive(Clone, Copy)]
enum Answer {
    /// At once, keeping the connection.
    KeepAlive,
    /// At once, with `Connection: close`.
    Close,
    /// Its head one byte at a time, `pause` apart.
    Dripping(Duration),
    /// Never.
    Silent,
}

/// A request as the server read it: its head, and its body's length.
async fn read_request(
    stream: &mut tokio::net::TcpStream,
    buffer: &mut Vec<u8>,
) -> Option<(String, usize)> {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while buffer.len() < end + 4 + length {
                let mut chunk = [0u8; 65536];
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buffer.extend_from_slice(&chunk[..n]);
            }
            buffer.drain(..end + 4 + length);
            return Some((head, length));
        }
        let mut chunk = [0u8; 65536];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// A server on a free loopback port: the connections it accepted, and the heads it read.
async fn server(answer: Answer) -> (url::Url, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!(
        "http://127.0.0.1:{}/acct/c/b",
        listener.local_addr().unwrap().port()
    ))
    .unwrap();
    let (accepted, heads) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let (counted, seen) = (accepted.clone(), heads.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                while let Some((head, _)) = read_request(&mut stream, &mut buffer).await {
                    seen.lock().unwrap().push(head);
                    let close = matches!(answer, Answer::Close);
                    let reply = format!(
                        "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n{}\r\nok",
                        if close { "Connection: close\r\n" } else { "" }
                    );
                    match answer {
                        Answer::Silent => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            return;
                        }
                        Answer::Dripping(pause) => {
                            for byte in reply.as_bytes() {
                                tokio::time::sleep(pause).await;
                                if stream.write_all(&[*byte]).await.is_err() {
                                    return;
                                }
                            }
                        }
                        _ => {
                            if stream.write_all(reply.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                    if close {
                        return;
                    }
                }
            });
        }
    });
    (url, accepted, heads)
}

fn put(url: &url::Url, body: Vec<u8>) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method("PUT")
        .uri(&url[url::Position::BeforePath..])
        .header(http::header::HOST, url.host_str().unwrap())
        .header("x-ms-meta-owner", "alice")
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn read_to_end(response: AsyncRawResponse) -> azure_core::Result<(u16, Vec<u8>)> {
    let status = u16::from(response.status());
    let body = response.try_into_raw_response().await?;
    Ok((status, body.body().to_vec()))
}

#[tokio::test]
async fn requests_in_a_row_share_one_connection_with_each_ones_names() {
    let (url, accepted, heads) = server(Answer::KeepAlive).await;
    for (i, name) in ["Owner", "OWNER", "oWnEr"].into_iter().enumerate() {
        let names = vec![name.to_owned()];
        let response = send(&url, put(&url, vec![i as u8; 10]), &names)
            .await
            .unwrap();
        assert_eq!(read_to_end(response).await.unwrap(), (201, b"ok".to_vec()));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection, reused");
    let heads = heads.lock().unwrap().clone();
    for (head, name) in heads.iter().zip(["Owner", "OWNER", "oWnEr"]) {
        assert!(
            head.contains(&format!("\r\nx-ms-meta-{name}: alice")),
            "{head}"
        );
    }
}

#[tokio::test]
async fn a_connection_the_service_closes_is_not_reused() {
    let (url, accepted, _) = server(Answer::Close).await;
    for _ in 0..3 {
        let response = send(&url, put(&url, vec![1; 10]), &[]).await.unwrap();
        assert_eq!(read_to_end(response).await.unwrap().0, 201);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_answer_that_keeps_coming_is_not_cut_however_long_it_takes() {
    // 60 bytes of head 40 ms apart: 2.4 s in all, never 0.5 s without a byte.
    let (url, _, _) = server(Answer::Dripping(Duration::from_millis(40))).await;
    let timeouts = Timeouts {
        connect: Duration::from_secs(5),
        idle: Duration::from_millis(500),
    };
    let started = Instant::now();
    let response = send_with(&url, put(&url, vec![1; 10]), &[], timeouts)
        .await
        .unwrap();
    assert_eq!(read_to_end(response).await.unwrap().0, 201);
    assert!(started.elapsed() > timeouts.idle * 3);
}

#[tokio::test]
async fn an_upload_that_keeps_going_is_not_cut_however_long_it_takes() {
    // A pipe of 1 KiB the service drains 1 KiB every 20 ms: 64 KiB take 1.3 s, never 0.3 s
    // without a byte sent.
    let (client, mut service) = tokio::io::duplex(1024);
    let endpoint = Endpoint("http://slow.test".into());
    let conn = Conn::over(client, &endpoint).await.unwrap();
    let body = vec![7u8; 64 * 1024];
    tokio::spawn(async move {
        let mut read = 0;
        let mut chunk = [0u8; 1024];
        // The head is far smaller than a chunk: once the body's length is in, so is it.
        while read < 64 * 1024 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            match service.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read += n,
            }
        }
        let _ = service
            .write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
            .await;
        // Keep the pipe open until the client has read the answer.
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let timeouts = Timeouts {
        connect: Duration::from_secs(5),
        idle: Duration::from_millis(300),
    };
    let url = url::Url::parse("http://slow.test/acct/c/b").unwrap();
    let started = Instant::now();
    match exchange(conn, put(&url, body), &[], timeouts, &endpoint).await {
        Sent::Answered(response) => assert_eq!(read_to_end(response).await.unwrap().0, 201),
        Sent::Unsent(_) => panic!("not sent"),
        Sent::Failed(e) => panic!("{e}"),
    }
    assert!(started.elapsed() > timeouts.idle * 3);
}

#[tokio::test]
async fn a_silent_service_fails_in_one_line_naming_its_endpoint() {
    let (url, _, _) = server(Answer::Silent).await;
    let timeouts = Timeouts {
        connect: Duration::from_secs(5),
        idle: Duration::from_millis(300),
    };
    let error = send_with(&url, put(&url, vec![1; 10]), &[], timeouts)
        .await
        .unwrap_err();
    let line = crate::storage::StorageError::new("writing b", error).to_string();
    assert_eq!(
        line,
        format!(
            "writing b: no answer from http://127.0.0.1:{}: nothing sent or received for 0.3 s",
            url.port().unwrap()
        )
    );
}

#[tokio::test]
async fn a_closed_port_fails_in_one_line_naming_its_endpoint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = url::Url::parse(&format!("http://127.0.0.1:{port}/acct/c/b?sig=secret")).unwrap();
    let error = send(&url, put(&url, vec![1; 10]), &[]).await.unwrap_err();
    assert!(matches!(error.kind(), ErrorKind::Connection));
    let line = crate::storage::StorageError::new("writing b", error).to_string();
    assert!(
        line.starts_with(&format!(
            "writing b: could not connect to http://127.0.0.1:{port}: "
        )),
        "{line}"
    );
    assert!(!line.contains("secret") && !line.contains('\n'), "{line}");
}
