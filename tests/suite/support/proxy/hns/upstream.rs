//! The stand-in's own requests to Azurite (placeholders, deletions, reads of a path's
//! properties, rewrites): signed with the account's key, sent through the proxy's pool, neither
//! counted nor faulted.

use std::io;

use super::{
    super::{
        serve::forward,
        wire::{Head, Request},
        Shared,
    },
    PathKey,
};

/// The service version of the stand-in's own requests (the SDK's).
const VERSION: &str = "2026-04-06";

/// What Azurite answered: status, head, body.
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) head: Head,
}

impl Reply {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }
}

/// One request for `key` (its path-style target and `query`), SharedKey-signed.
pub(super) async fn send(
    shared: &Shared,
    key: &PathKey,
    method: &str,
    query: &str,
    extra: &[(&str, &str)],
    body: Vec<u8>,
) -> io::Result<Reply> {
    let mut target = key.target();
    if !query.is_empty() {
        target.push('?');
        target.push_str(query);
    }
    let date = lakebackup::storage::testing::http_date(time::OffsetDateTime::now_utc());
    let mut headers: Vec<(String, String)> = vec![
        ("Host".into(), "127.0.0.1".into()),
        ("x-ms-date".into(), date),
        ("x-ms-version".into(), VERSION.into()),
    ];
    if method != "GET" && method != "HEAD" {
        headers.push(("Content-Length".into(), body.len().to_string()));
    }
    headers.extend(
        extra
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
    );
    let secret = shared.state().keys.get(&key.account).cloned();
    let Some(secret) = secret else {
        return Err(io::Error::other(format!(
            "no key for account {}",
            key.account
        )));
    };
    let url = url::Url::parse(&format!("http://proxy{target}")).map_err(io::Error::other)?;
    let authorization = lakebackup::storage::shared_key::authorization(
        &key.account,
        &secret,
        method,
        &url,
        headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
    );
    headers.push(("Authorization".into(), authorization));
    let mut text = format!("{method} {target} HTTP/1.1\r\n");
    for (name, value) in &headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    let raw_head = text.into_bytes();
    let request = Request {
        head: Head::parse(&raw_head),
        raw_head: raw_head.clone(),
        method: method.to_owned(),
        target,
        body,
        continued: false,
        close: false,
    };
    let answer = forward(shared, &request, &raw_head).await?;
    let head = Head::parse(&answer.head);
    let status = head
        .first
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(Reply { status, head })
}

/// Put Blob of `bytes` at `key`, with `extra` headers (metadata, conditions).
pub(super) async fn put_blob(
    shared: &Shared,
    key: &PathKey,
    bytes: Vec<u8>,
    extra: &[(&str, &str)],
) -> io::Result<Reply> {
    let mut headers = vec![("x-ms-blob-type", "BlockBlob")];
    headers.extend_from_slice(extra);
    send(shared, key, "PUT", "", &headers, bytes).await
}

/// Get Blob Properties of `key`; of its container for the root directory (`""`), whose
/// ETag and Last-Modified are the file system's.
pub(super) async fn properties(shared: &Shared, key: &PathKey) -> io::Result<Reply> {
    let query = match key.path.is_empty() {
        true => "restype=container",
        false => "",
    };
    send(shared, key, "HEAD", query, &[], Vec::new()).await
}

/// Delete Blob of `key` (its snapshots with it).
pub(super) async fn delete(shared: &Shared, key: &PathKey) -> io::Result<Reply> {
    send(
        shared,
        key,
        "DELETE",
        "",
        &[("x-ms-delete-snapshots", "include")],
        Vec::new(),
    )
    .await
}
