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
    let one_blob = OneBlob {
        canonical: format!("/blob/{account}/{container}/{blob}"),
        snapshot,
        expiry: sas_time(expiry),
    };
    // Signed by the account key, the only field between resource and IP: no stored policy.
    one_blob.sign(key, &[""], &[])
}

/// A user delegation key: what the account issued to an identity (Get User Delegation Key),
/// with the fields every SAS signed with it repeats. Valid until `expiry`.
#[derive(Clone)]
pub struct DelegationKey {
    pub object_id: String,
    pub tenant_id: String,
    /// `skt` and `ske` exactly as the service issued them (second precision, UTC).
    pub start: OffsetDateTime,
    pub expiry: OffsetDateTime,
    /// `sks`: the service the key is for (`b`).
    pub service: String,
    /// `skv`: the service version that issued the key.
    pub version: String,
    pub value: SecretBytes,
}

impl std::fmt::Debug for DelegationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegationKey")
            .field("object_id", &self.object_id)
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

/// A read-only user delegation SAS query string (without `?`) for blob `container/blob` of
/// `account`, or for its snapshot `snapshot`: the keys-off counterpart of [`read_blob_sas`],
/// signed with a delegation key instead of the account key ("Create a user delegation SAS",
/// string to sign of version 2020-12-06 and later). It never outlives the key.
pub fn read_blob_delegation_sas(
    account: &str,
    key: &DelegationKey,
    container: &str,
    blob: &str,
    snapshot: Option<&str>,
    expiry: OffsetDateTime,
) -> Secret {
    let one_blob = OneBlob {
        canonical: format!("/blob/{account}/{container}/{blob}"),
        snapshot,
        expiry: sas_time(expiry.min(key.expiry)),
    };
    let (key_start, key_expiry) = (sas_time(key.start), sas_time(key.expiry));
    let key_fields = [
        ("skoid", key.object_id.as_str()),
        ("sktid", &key.tenant_id),
        ("skt", &key_start),
        ("ske", &key_expiry),
        ("sks", &key.service),
        ("skv", &key.version),
    ];
    let signed: Vec<&str> = key_fields
        .iter()
        .map(|(_, value)| *value)
        // No authorized or unauthorized user object id, no correlation id.
        .chain(["", "", ""])
        .collect();
    one_blob.sign(&key.value, &signed, &key_fields)
}

/// What a read-only SAS for one blob (or snapshot) signs, whoever signs it.
struct OneBlob<'a> {
    canonical: String,
    snapshot: Option<&'a str>,
    /// `se`, already in SAS form.
    expiry: String,
}

impl OneBlob<'_> {
    /// The query string: `signer_fields` are the lines the signer puts between the canonical
    /// resource and the IP range in the string to sign, `signer_query` the pairs it adds.
    fn sign(
        &self,
        key: &SecretBytes,
        signer_fields: &[&str],
        signer_query: &[(&str, &str)],
    ) -> Secret {
        let resource = if self.snapshot.is_some() { "bs" } else { "b" };
        let mut lines = vec!["r", "", &self.expiry, &self.canonical]; // start: valid from now
        lines.extend_from_slice(signer_fields);
        lines.extend_from_slice(&[
            "", // any IP
            "", // any protocol: Azurite serves http
            SAS_VERSION,
            resource,
            self.snapshot.unwrap_or_default(),
            "", // encryption scope
            "", // rscc, rscd, rsce, rscl, rsct: no response header overrides
            "",
            "",
            "",
            "",
        ]);
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("sv", SAS_VERSION)
            .append_pair("sr", resource)
            .append_pair("sp", "r")
            .append_pair("se", &self.expiry)
            .extend_pairs(signer_query)
            .append_pair("sig", &sign(key, &lines.join("\n")));
        Secret::new(query.finish())
    }
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

    fn delegation_key() -> DelegationKey {
        DelegationKey {
            object_id: "oid-1".into(),
            tenant_id: "tid-1".into(),
            start: datetime!(2026-11-25 14:00:00 UTC),
            expiry: datetime!(2026-11-25 16:00:00 UTC),
            service: "b".into(),
            version: "2026-06-06".into(),
            value: SecretBytes::new(b"delegated".to_vec()),
        }
    }

    #[test]
    fn delegation_sas_names_its_key_and_never_outlives_it() {
        let key = delegation_key();
        let sas = read_blob_delegation_sas(
            "source",
            &key,
            "lake",
            "a b.csv",
            None,
            datetime!(2026-11-25 17:00:00 UTC),
        );
        let pairs: std::collections::HashMap<_, _> =
            url::form_urlencoded::parse(sas.secret().as_bytes())
                .into_owned()
                .collect();
        assert_eq!(pairs["sr"], "b");
        assert_eq!(pairs["sp"], "r");
        assert_eq!(pairs["skoid"], "oid-1");
        assert_eq!(pairs["sktid"], "tid-1");
        assert_eq!(pairs["skt"], "2026-11-25T14:00:00Z");
        assert_eq!(pairs["ske"], "2026-11-25T16:00:00Z");
        assert_eq!(pairs["skv"], "2026-06-06");
        assert_eq!(
            pairs["se"], "2026-11-25T16:00:00Z",
            "capped at the key's expiry"
        );
        // The signature covers the documented fields in order: recompute it independently.
        let string_to_sign = "r\n\n2026-11-25T16:00:00Z\n/blob/source/lake/a b.csv\noid-1\ntid-1\n\
            2026-11-25T14:00:00Z\n2026-11-25T16:00:00Z\nb\n2026-06-06\n\n\n\n\n\n2022-11-02\nb\n\n\n\n\n\n\n";
        let mut mac = Hmac::<Sha256>::new_from_slice(b"delegated").unwrap();
        mac.update(string_to_sign.as_bytes());
        assert_eq!(pairs["sig"], BASE64.encode(mac.finalize().into_bytes()));
        let snapshot = read_blob_delegation_sas(
            "source",
            &key,
            "lake",
            "a b.csv",
            Some("2026-11-25T14:30:00.1234567Z"),
            datetime!(2026-11-25 15:00:00 UTC),
        );
        assert!(snapshot.secret().contains("sr=bs"));
        assert_ne!(snapshot.secret(), sas.secret());
        assert!(!format!("{key:?}").contains("delegated"));
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
