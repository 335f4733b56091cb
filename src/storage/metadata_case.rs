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
//! given, on connections it keeps and reuses as the shared client does (`pool`: idle
//! connections per endpoint; a connect timeout and an idle timeout that any byte resets; errors
//! that name the endpoint). Every other request goes through the shared client unchanged.
//!
//! Names go into neither signature nor token: the SharedKey string to sign lowercases header
//! names, so a request signed with lowercase names stays valid with their case restored.

mod connect;
mod io;
mod pool;

pub(crate) use pool::Unanswered;

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use azure_core::{
    error::ErrorKind,
    http::{headers::HeaderName, request::Body, AsyncRawResponse, Context, HttpClient, Request},
    Bytes,
};
use http_body_util::Full;

/// The request header that carries the names to send as written, from the call to the
/// transport; never sent.
const NAMES_HEADER: &str = "x-lakebackup-metadata-names";
const META_PREFIX: &[u8] = b"x-ms-meta-";

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
        pool::send(request.url(), http_request(&request)?, &names).await
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

/// Spells each `x-ms-meta-{name}` header name of `head` (a request's head, without its blank
/// line) as the name in `names` it equals case-insensitively.
pub(super) fn restore_names(head: &mut [u8], names: &[String]) {
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
