//! Shared access signatures signed in-process from an account key: how a key-based connection
//! authorizes a URL that another party reads. A copy source gets a service SAS for exactly one
//! blob (or one snapshot), read-only, short-lived and, for a source reached over HTTPS,
//! HTTPS-only (`spr=https`), because the service records the copy source, SAS included, on the
//! destination (`x-ms-copy-source`) for anyone who can read it.
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

/// Which protocols a SAS may be used over (`spr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SasProtocol {
    /// `spr=https`: for a source reached over HTTPS, so the signature never travels in clear.
    HttpsOnly,
    /// No `spr` (Azure's default, `https,http`): only for an endpoint served over plain http
    /// (the emulator), which an HTTPS-only SAS could not read.
    Any,
}

impl SasProtocol {
    /// HTTPS only when `url` is reached over HTTPS.
    pub fn for_url(url: &url::Url) -> Self {
        if url.scheme().eq_ignore_ascii_case("https") {
            SasProtocol::HttpsOnly
        } else {
            SasProtocol::Any
        }
    }

    /// The `spr` field as signed and sent; empty when absent.
    fn field(self) -> &'static str {
        match self {
            SasProtocol::HttpsOnly => "https",
            SasProtocol::Any => "",
        }
    }
}

/// A read-only SAS for blob `container/blob` of `account`, or for its snapshot `snapshot`
/// (`sr=bs`); valid from now until `expiry`, over `protocol`: what it grants, whoever signs it.
#[derive(Debug, Clone, Copy)]
pub struct ReadBlobSas<'a> {
    pub account: &'a str,
    pub container: &'a str,
    pub blob: &'a str,
    pub snapshot: Option<&'a str>,
    pub expiry: OffsetDateTime,
    pub protocol: SasProtocol,
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

impl ReadBlobSas<'_> {
    /// The service SAS query string (without `?`), signed with the account key.
    pub fn signed_with_account_key(&self, key: &SecretBytes) -> Secret {
        // The only field between resource and IP: no stored policy.
        self.sign(self.expiry, key, &[""], &[])
    }

    /// The user delegation SAS query string (without `?`): the keys-off counterpart of
    /// [`ReadBlobSas::signed_with_account_key`], signed with a delegation key instead of the
    /// account key ("Create a user delegation SAS", string to sign of version 2020-12-06 and
    /// later). It never outlives the key.
    pub fn signed_with_delegation_key(&self, key: &DelegationKey) -> Secret {
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
        let expiry = self.expiry.min(key.expiry);
        self.sign(expiry, &key.value, &signed, &key_fields)
    }

    /// The query string: `signer_fields` are the lines the signer puts between the canonical
    /// resource and the IP range in the string to sign, `signer_query` the pairs it adds.
    /// `expiry` is the one signed and sent.
    fn sign(
        &self,
        expiry: OffsetDateTime,
        key: &SecretBytes,
        signer_fields: &[&str],
        signer_query: &[(&str, &str)],
    ) -> Secret {
        let resource = if self.snapshot.is_some() { "bs" } else { "b" };
        let expiry = sas_time(expiry);
        let canonical = format!("/blob/{}/{}/{}", self.account, self.container, self.blob);
        let mut lines = vec!["r", "", &expiry, &canonical]; // start: valid from now
        lines.extend_from_slice(signer_fields);
        lines.extend_from_slice(&[
            "", // any IP
            self.protocol.field(),
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
            .append_pair("se", &expiry);
        if self.protocol != SasProtocol::Any {
            query.append_pair("spr", self.protocol.field());
        }
        query
            .extend_pairs(signer_query)
            .append_pair("sig", &sign(key, &lines.join("\n")));
        Secret::new(query.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// A read-only SAS for `blob` in container `lake` of account `source`.
    fn lake_blob<'a>(
        blob: &'a str,
        snapshot: Option<&'a str>,
        expiry: OffsetDateTime,
        protocol: SasProtocol,
    ) -> ReadBlobSas<'a> {
        ReadBlobSas {
            account: "source",
            container: "lake",
            blob,
            snapshot,
            expiry,
            protocol,
        }
    }

    #[test]
    fn blob_sas_grants_read_on_one_blob_only() {
        let key = SecretBytes::new(b"key".to_vec());
        let when = datetime!(2026-11-25 15:00:00.5 UTC);
        let sas = lake_blob("a b.csv", None, when, SasProtocol::Any).signed_with_account_key(&key);
        assert!(sas
            .secret()
            .starts_with("sv=2022-11-02&sr=b&sp=r&se=2026-11-25T15%3A00%3A00Z&sig="));
        let other = lake_blob("c.csv", None, when, SasProtocol::Any).signed_with_account_key(&key);
        assert_ne!(sas.secret(), other.secret(), "the signature binds the blob");
        let snapshot = lake_blob(
            "a b.csv",
            Some("2026-11-25T14:00:00.1234567Z"),
            when,
            SasProtocol::Any,
        )
        .signed_with_account_key(&key);
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
        let expiry = datetime!(2026-11-25 17:00:00 UTC);
        let sas = lake_blob("a b.csv", None, expiry, SasProtocol::Any);
        let sas = sas.signed_with_delegation_key(&key);
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
        let snapshot = lake_blob(
            "a b.csv",
            Some("2026-11-25T14:30:00.1234567Z"),
            datetime!(2026-11-25 15:00:00 UTC),
            SasProtocol::Any,
        )
        .signed_with_delegation_key(&key);
        assert!(snapshot.secret().contains("sr=bs"));
        assert_ne!(snapshot.secret(), sas.secret());
        assert!(!format!("{key:?}").contains("delegated"));
    }

    fn query_pairs(sas: &Secret) -> std::collections::HashMap<String, String> {
        url::form_urlencoded::parse(sas.secret().as_bytes())
            .into_owned()
            .collect()
    }

    fn hmac(key: &[u8], string_to_sign: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(string_to_sign.as_bytes());
        BASE64.encode(mac.finalize().into_bytes())
    }

    /// The fields every SAS of version 2022-11-02 signs last, service or user delegation alike:
    /// signedVersion, signedResource, signedSnapshotTime, signedEncryptionScope, then the five
    /// response headers it overrides (rscc, rscd, rsce, rscl, rsct), none here.
    fn signed_tail<'a>(resource: &'a str, snapshot: &'a str) -> [&'a str; 9] {
        ["2022-11-02", resource, snapshot, "", "", "", "", "", ""]
    }

    /// "Create a service SAS", version 2020-12-06 and later: the string to sign is
    /// signedPermissions, signedStart, signedExpiry, canonicalizedResource, signedIdentifier,
    /// signedIP, signedProtocol, signedVersion, signedResource, signedSnapshotTime,
    /// signedEncryptionScope, rscc, rscd, rsce, rscl, rsct — one per line.
    #[test]
    fn an_https_service_sas_signs_and_sends_spr_https_in_the_documented_place() {
        let key = SecretBytes::new(b"account key".to_vec());
        let expiry = datetime!(2026-11-25 15:00:00 UTC);
        let sas = lake_blob(
            "raw/a b.csv",
            Some("2026-11-25T14:00:00.1234567Z"),
            expiry,
            SasProtocol::HttpsOnly,
        )
        .signed_with_account_key(&key);
        let pairs = query_pairs(&sas);
        assert_eq!(pairs["spr"], "https");
        assert_eq!(pairs["sp"], "r");
        assert_eq!(pairs["sr"], "bs");
        let string_to_sign = [
            "r",                             // signedPermissions
            "",                              // signedStart
            "2026-11-25T15:00:00Z",          // signedExpiry
            "/blob/source/lake/raw/a b.csv", // canonicalizedResource
            "",                              // signedIdentifier
            "",                              // signedIP
            "https",                         // signedProtocol
        ]
        .into_iter()
        .chain(signed_tail("bs", "2026-11-25T14:00:00.1234567Z"))
        .collect::<Vec<_>>()
        .join("\n");
        assert_eq!(pairs["sig"], hmac(b"account key", &string_to_sign));
        // Over plain http (the emulator) the field is absent, signed and sent alike.
        let plain =
            lake_blob("raw/a b.csv", None, expiry, SasProtocol::Any).signed_with_account_key(&key);
        let pairs = query_pairs(&plain);
        assert!(!pairs.contains_key("spr"));
        let string_to_sign = "r\n\n2026-11-25T15:00:00Z\n/blob/source/lake/raw/a b.csv\n\n\n\n\
            2022-11-02\nb\n\n\n\n\n\n\n";
        assert_eq!(pairs["sig"], hmac(b"account key", string_to_sign));
    }

    /// "Create a user delegation SAS", version 2020-12-06 and later: signedProtocol comes after
    /// signedIP, after the key's fields and the three user and correlation ids.
    #[test]
    fn an_https_delegation_sas_signs_and_sends_spr_https_in_the_documented_place() {
        let key = delegation_key();
        let expiry = datetime!(2026-11-25 15:30:00 UTC);
        let sas = lake_blob("a b.csv", None, expiry, SasProtocol::HttpsOnly);
        let sas = sas.signed_with_delegation_key(&key);
        let pairs = query_pairs(&sas);
        assert_eq!(pairs["spr"], "https");
        let string_to_sign = [
            "r",                         // signedPermissions
            "",                          // signedStart
            "2026-11-25T15:30:00Z",      // signedExpiry
            "/blob/source/lake/a b.csv", // canonicalizedResource
            "oid-1",                     // signedKeyObjectId
            "tid-1",                     // signedKeyTenantId
            "2026-11-25T14:00:00Z",      // signedKeyStart
            "2026-11-25T16:00:00Z",      // signedKeyExpiry
            "b",                         // signedKeyService
            "2026-06-06",                // signedKeyVersion
            "",                          // signedAuthorizedUserObjectId
            "",                          // signedUnauthorizedUserObjectId
            "",                          // signedCorrelationId
            "",                          // signedIP
            "https",                     // signedProtocol
        ]
        .into_iter()
        .chain(signed_tail("b", ""))
        .collect::<Vec<_>>()
        .join("\n");
        assert_eq!(pairs["sig"], hmac(b"delegated", &string_to_sign));
    }

    #[test]
    fn the_protocol_follows_the_source_url() {
        let https = url::Url::parse("https://lake.blob.core.windows.net/c/b").unwrap();
        let http = url::Url::parse("http://127.0.0.1:10000/source/c/b").unwrap();
        assert_eq!(SasProtocol::for_url(&https), SasProtocol::HttpsOnly);
        assert_eq!(SasProtocol::for_url(&http), SasProtocol::Any);
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
