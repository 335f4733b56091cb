//! SharedKey request signing, as a policy in the SDK's pipeline.
//!
//! The GA Azure SDK for Rust authenticates with Entra ID tokens only; account-key connection
//! strings (Azurite, many real apps) need the Storage SharedKey scheme. The policy runs last before
//! the transport, so it signs the final URL and headers of every try.
//! Reference: "Authorize with Shared Key" in the Azure Storage REST documentation.

use std::{collections::BTreeMap, sync::Arc};

use async_trait::async_trait;
use azure_core::{
    credentials::SecretBytes,
    http::{
        policies::{Policy, PolicyResult},
        Context, Request, Url,
    },
};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;

/// The headers whose values go into the string to sign, in order, after the verb.
const SIGNED_STANDARD_HEADERS: [&str; 11] = [
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
];

pub struct SharedKeyPolicy {
    account: String,
    key: SecretBytes,
}

impl std::fmt::Debug for SharedKeyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedKeyPolicy({})", self.account)
    }
}

impl SharedKeyPolicy {
    pub fn new(account: String, key: SecretBytes) -> Self {
        Self { account, key }
    }
}

#[async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let date = azure_core::time::to_rfc7231(&OffsetDateTime::now_utc());
        request.insert_header("x-ms-date", date);
        let authorization = request_authorization(&self.account, self.key.bytes(), request);
        request.insert_header("authorization", authorization);
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// The `Authorization` value (`SharedKey {account}:{signature}`) of a request made of `method`,
/// `url` and `headers` (names in any case; `x-ms-date` and, with a body, `content-length`
/// among them), signed with the account's decoded `key`. The policy signs through it, and so
/// can whoever must sign a request the SDK did not build (a test proxy that changed a query).
pub fn authorization<'a>(
    account: &str,
    key: &[u8],
    method: &str,
    url: &Url,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let headers: Vec<(String, &str)> = headers
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .collect();
    let string_to_sign = string_to_sign(account, method, url, &headers);
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key).expect("HMAC-SHA256 accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    format!(
        "SharedKey {account}:{}",
        BASE64.encode(mac.finalize().into_bytes())
    )
}

/// The SDK sets `content-length` only in the transport, after signing: the body's length
/// stands in for it.
fn request_authorization(account: &str, key: &[u8], request: &Request) -> String {
    let body_length = request.body().len().unwrap_or(0).to_string();
    let mut headers: Vec<(&str, &str)> = request
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-length"))
    {
        headers.push(("content-length", &body_length));
    }
    authorization(
        account,
        key,
        request.method().as_ref(),
        request.url(),
        headers,
    )
}

/// The string to sign; `headers` have lower-case names.
fn string_to_sign(account: &str, method: &str, url: &Url, headers: &[(String, &str)]) -> String {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| (*value).to_owned())
            .unwrap_or_default()
    };
    let mut lines = vec![method.to_ascii_uppercase()];
    for name in SIGNED_STANDARD_HEADERS {
        let value = match name {
            // Since version 2015-02-21 a zero length signs as empty.
            "content-length" => {
                let length = header(name);
                if length == "0" {
                    String::new()
                } else {
                    length
                }
            }
            _ => header(name),
        };
        lines.push(value);
    }
    let mut text = lines.join("\n");
    text.push('\n');

    // A header sent more than once signs as its values joined by commas.
    let mut ms_headers: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        if name.starts_with("x-ms-") {
            ms_headers
                .entry(name.as_str())
                .or_default()
                .push(value.trim().to_owned());
        }
    }
    for (name, values) in ms_headers {
        text.push_str(&format!("{name}:{}\n", values.join(",")));
    }

    text.push_str(&format!("/{account}{}", url.path()));
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in url.query_pairs() {
        params
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(value.into_owned());
    }
    for (name, mut values) in params {
        values.sort();
        text.push_str(&format!("\n{name}:{}", values.join(",")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::{Method, Url};

    fn lower_case_headers(request: &Request) -> Vec<(String, &str)> {
        request
            .headers()
            .iter()
            .map(|(name, value)| (name.as_str().to_ascii_lowercase(), value.as_str()))
            .collect()
    }

    fn hmac_base64(key: &[u8], text: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(text.as_bytes());
        BASE64.encode(mac.finalize().into_bytes())
    }

    #[test]
    fn string_to_sign_follows_the_documented_layout() {
        let url = Url::parse(
            "http://127.0.0.1:10000/source/sales/a%20b.csv?comp=snapshot&Timeout=30&include=snapshots,metadata",
        )
        .unwrap();
        let mut request = Request::new(url, Method::Put);
        request.insert_header("x-ms-version", "2026-02-06");
        request.insert_header("x-ms-date", "Wed, 25 Nov 2026 12:00:00 GMT");
        request.insert_header("if-match", "\"0x1\"");
        request.insert_header("x-ms-meta-b", " two ");
        let expected = "PUT\n\n\n\n\n\n\n\n\"0x1\"\n\n\n\n\
            x-ms-date:Wed, 25 Nov 2026 12:00:00 GMT\nx-ms-meta-b:two\nx-ms-version:2026-02-06\n\
            /source/source/sales/a%20b.csv\ncomp:snapshot\ninclude:snapshots,metadata\ntimeout:30";
        let headers = lower_case_headers(&request);
        assert_eq!(
            string_to_sign("source", "PUT", request.url(), &headers),
            expected
        );
        let mut with_length = headers.clone();
        with_length.push(("content-length".into(), "12"));
        let with_body = string_to_sign("source", "PUT", request.url(), &with_length);
        assert!(with_body.starts_with("PUT\n\n\n12\n"), "{with_body}");
        with_length.push(("x-ms-meta-b".into(), "three"));
        let repeated = string_to_sign("source", "PUT", request.url(), &with_length);
        assert!(repeated.contains("\nx-ms-meta-b:two,three\n"), "{repeated}");
    }

    #[test]
    fn the_policy_and_the_public_function_sign_alike() {
        let url = Url::parse(
            "http://127.0.0.1:10000/source/sales?restype=container&comp=list&maxresults=2",
        )
        .unwrap();
        let mut request = Request::new(url.clone(), Method::Put);
        request.insert_header("x-ms-version", "2026-02-06");
        request.insert_header("x-ms-date", "Wed, 25 Nov 2026 12:00:00 GMT");
        request.set_body(b"twelve bytes".to_vec());
        let key = b"not a real key";
        let expected = format!(
            "SharedKey source:{}",
            hmac_base64(
                key,
                "PUT\n\n\n12\n\n\n\n\n\n\n\n\n\
                 x-ms-date:Wed, 25 Nov 2026 12:00:00 GMT\nx-ms-version:2026-02-06\n\
                 /source/source/sales\ncomp:list\nmaxresults:2\nrestype:container"
            )
        );
        // The policy: no content-length header yet, the body's length stands in.
        assert_eq!(request_authorization("source", key, &request), expected);
        // The public function, with the headers as they go on the wire, in any case.
        let headers = [
            ("X-MS-Version", "2026-02-06"),
            ("x-ms-date", "Wed, 25 Nov 2026 12:00:00 GMT"),
            ("Content-Length", "12"),
            ("Host", "127.0.0.1:10000"),
        ];
        assert_eq!(authorization("source", key, "PUT", &url, headers), expected);
        assert_ne!(
            authorization("source", b"another key", "PUT", &url, headers),
            expected
        );
    }
}
