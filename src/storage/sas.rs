//! Shared access signatures signed in-process from an account key: how a key-based connection
//! authorizes a URL that another party reads. A copy source gets a service SAS for exactly one
//! blob (or one snapshot), read-only and short-lived, because the service records the copy
//! source, SAS included, on the destination (`x-ms-copy-source`) for anyone who can read it.
//! References: "Create an account SAS" and "Create a service SAS" in the Azure Storage REST
//! documentation.

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
    let expiry = sas_time(grant.expiry);
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
    let signature = sign(key, &string_to_sign);
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

/// Second precision, UTC, as SAS fields are written.
fn sas_time(instant: OffsetDateTime) -> String {
    instant
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(instant)
        .format(&Rfc3339)
        .expect("a UTC instant formats as RFC 3339")
}

fn sign(key: &SecretBytes, string_to_sign: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.bytes())
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// A read-only service SAS query string (without `?`) for blob `container/blob` of `account`,
/// or for its snapshot `snapshot` (`sr=bs`); valid from now until `expiry`.
pub fn read_blob_sas(
    account: &str,
    key: &SecretBytes,
    container: &str,
    blob: &str,
    snapshot: Option<&str>,
    expiry: OffsetDateTime,
) -> Secret {
    let expiry = sas_time(expiry);
    let resource = if snapshot.is_some() { "bs" } else { "b" };
    let canonical = format!("/blob/{account}/{container}/{blob}");
    let string_to_sign = [
        "r",
        "", // start: valid from now
        &expiry,
        &canonical,
        "", // no stored access policy
        "", // any IP
        "", // any protocol: Azurite serves http
        SAS_VERSION,
        resource,
        snapshot.unwrap_or_default(),
        "", // encryption scope
        "", // rscc, rscd, rsce, rscl, rsct: no response header overrides
        "",
        "",
        "",
        "",
    ]
    .join("\n");
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", SAS_VERSION)
        .append_pair("sr", resource)
        .append_pair("sp", "r")
        .append_pair("se", &expiry)
        .append_pair("sig", &sign(key, &string_to_sign))
        .finish();
    Secret::new(query)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn blob_sas_grants_read_on_one_blob_only() {
        let key = SecretBytes::new(b"key".to_vec());
        let when = datetime!(2026-11-25 15:00:00.5 UTC);
        let sas = read_blob_sas("source", &key, "lake", "a b.csv", None, when);
        assert!(sas
            .secret()
            .starts_with("sv=2022-11-02&sr=b&sp=r&se=2026-11-25T15%3A00%3A00Z&sig="));
        let other = read_blob_sas("source", &key, "lake", "c.csv", None, when);
        assert_ne!(sas.secret(), other.secret(), "the signature binds the blob");
        let snapshot = read_blob_sas(
            "source",
            &key,
            "lake",
            "a b.csv",
            Some("2026-11-25T14:00:00.1234567Z"),
            when,
        );
        assert!(snapshot.secret().contains("sr=bs&sp=r"));
    }

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
