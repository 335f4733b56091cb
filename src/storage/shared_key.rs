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
        headers::HeaderName,
        policies::{Policy, PolicyResult},
        Context, Request,
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

    fn sign(&self, string_to_sign: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.bytes())
            .expect("HMAC-SHA256 accepts keys of any length");
        mac.update(string_to_sign.as_bytes());
        BASE64.encode(mac.finalize().into_bytes())
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
        let body_length = request.body().len().unwrap_or(0);
        let string_to_sign = string_to_sign(&self.account, request, body_length);
        let authorization = format!("SharedKey {}:{}", self.account, self.sign(&string_to_sign));
        request.insert_header("authorization", authorization);
        next[0].send(ctx, request, &next[1..]).await
    }
}

fn string_to_sign(account: &str, request: &Request, body_length: u64) -> String {
    let headers = request.headers();
    let header = |name: &'static str| {
        headers
            .get_optional_str(&HeaderName::from_static(name))
            .unwrap_or("")
            .to_owned()
    };
    let mut lines = vec![request.method().as_ref().to_ascii_uppercase()];
    for name in SIGNED_STANDARD_HEADERS {
        let value = match name {
            // Since version 2015-02-21 a zero length signs as empty.
            "content-length" => {
                let declared = header(name);
                let length = if declared.is_empty() {
                    body_length.to_string()
                } else {
                    declared
                };
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

    let ms_headers: BTreeMap<String, String> = headers
        .iter()
        .map(|(name, value)| (name.as_str().to_ascii_lowercase(), value.as_str()))
        .filter(|(name, _)| name.starts_with("x-ms-"))
        .map(|(name, value)| (name, value.trim().to_owned()))
        .collect();
    for (name, value) in ms_headers {
        text.push_str(&format!("{name}:{value}\n"));
    }

    let url = request.url();
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
        assert_eq!(string_to_sign("source", &request, 0), expected);
        let with_body = string_to_sign("source", &request, 12);
        assert!(with_body.starts_with("PUT\n\n\n12\n"), "{with_body}");
    }
}
