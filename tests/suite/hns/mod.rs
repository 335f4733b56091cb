//! Lakes with a hierarchical namespace (ADLS Gen2), against the dfs stand-in
//! (`support::proxy::hns`): the stand-in itself, the namespace detected (and said by `doctor`),
//! the snapshot-free backup of such a lake, and its verify (ACLs compared).

mod backup;
mod directories;
mod directory_events;
mod doctor;
mod figure;
mod live;
mod metadata_limit;
mod namespace;
mod restore;
mod restore_exact;
mod restore_pinned;
mod restore_target;
mod root;
mod stand_in;
mod verify;

use lakebackup::storage::shared_key;

use crate::support::{
    azurite::SOURCE_KEY,
    proxy::{ProxiedAzurite, ProxyConfig},
    Azurite,
};

/// Azurite behind the dfs stand-in, which plays the `source` account as an HNS lake.
pub fn hns_lake(azurite: &Azurite) -> ProxiedAzurite {
    ProxiedAzurite::start_hns(azurite, ProxyConfig::azurite(), &["source"]).expect("proxies start")
}

/// What a raw request to the stand-in came back with.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A dfs call (or any blob call) to the `source` account through the stand-in, signed with its
/// key: `path` is `container/path` (unencoded), `query` as sent.
pub async fn dfs(
    proxied: &ProxiedAzurite,
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> Reply {
    use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
    let mut url = url::Url::parse(&proxied.blob.url()).unwrap();
    url.path_segments_mut()
        .unwrap()
        .push("source")
        .extend(path.split('/'));
    if !query.is_empty() {
        url.set_query(Some(query));
    }
    let date = lakebackup::storage::testing::http_date(time::OffsetDateTime::now_utc());
    let mut all: Vec<(String, String)> = vec![
        ("x-ms-date".into(), date),
        ("x-ms-version".into(), "2026-04-06".into()),
    ];
    if !matches!(method, "GET" | "HEAD") {
        all.push(("content-length".into(), "0".into()));
    }
    all.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    let key = BASE64.decode(SOURCE_KEY).unwrap();
    let authorization = shared_key::authorization(
        "source",
        &key,
        method,
        &url,
        all.iter().map(|(n, v)| (n.as_str(), v.as_str())),
    );
    let client = reqwest::Client::new();
    let mut request = client.request(method.parse().unwrap(), url);
    for (name, value) in &all {
        if name != "content-length" {
            request = request.header(name, value);
        }
    }
    if !matches!(method, "GET" | "HEAD") {
        request = request.body(Vec::<u8>::new());
    }
    let response = request
        .header("authorization", authorization)
        .send()
        .await
        .expect("the stand-in answers");
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap_or_default(),
    }
}
