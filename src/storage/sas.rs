//! Account shared access signatures signed in-process from an account key: how a key-based
//! connection authorizes a URL that another party reads (a copy source, a SAS connection).
//! Reference: "Create an account SAS" in the Azure Storage REST documentation.

use azure_core::credentials::{Secret, SecretBytes};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

/// The signed version: the first whose string to sign carries the encryption scope line.
const SAS_VERSION: &str = "2022-11-02";

/// What an account SAS grants.
#[derive(Debug, Clone, Copy)]
pub struct AccountSasGrant<'a> {
    /// `b` blob, `q` queue, ...
    pub services: &'a str,
    /// `s` service, `c` container, `o` object.
    pub resource_types: &'a str,
    /// In the canonical order `racwdxltmeopfi` subsets: `rl` to read and list, ...
    pub permissions: &'a str,
    pub expiry: OffsetDateTime,
}

/// The SAS query string (without `?`).
pub fn account_sas(account: &str, key: &SecretBytes, grant: AccountSasGrant<'_>) -> Secret {
    let expiry = grant
        .expiry
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(grant.expiry)
        .format(&Rfc3339)
        .expect("a UTC instant formats as RFC 3339");
    let string_to_sign = [
        account,
        grant.permissions,
        grant.services,
        grant.resource_types,
        "", // start: valid from now
        &expiry,
        "", // any IP
        "", // any protocol: Azurite serves http
        SAS_VERSION,
        "", // encryption scope
        "",
    ]
    .join("\n");
    let mut mac = Hmac::<Sha256>::new_from_slice(key.bytes())
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    let signature = BASE64.encode(mac.finalize().into_bytes());
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", SAS_VERSION)
        .append_pair("ss", grant.services)
        .append_pair("srt", grant.resource_types)
        .append_pair("sp", grant.permissions)
        .append_pair("se", &expiry)
        .append_pair("sig", &signature)
        .finish();
    Secret::new(query)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn query_carries_the_grant_and_a_signature() {
        let sas = account_sas(
            "source",
            &SecretBytes::new(b"key".to_vec()),
            AccountSasGrant {
                services: "b",
                resource_types: "sco",
                permissions: "rl",
                expiry: datetime!(2026-11-25 15:00:00.5 UTC),
            },
        );
        let query = sas.secret();
        assert!(
            query.starts_with("sv=2022-11-02&ss=b&srt=sco&sp=rl&se=2026-11-25T15%3A00%3A00Z&sig=")
        );
        assert!(query.len() > "sig=".len() + 40);
    }
}
