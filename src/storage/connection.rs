//! Storage connections, read the way Azure Functions reads them.
//!
//! A connection named `X` is either the setting `X` holding a connection string (development
//! storage, account key, or shared access signature), or identity-based settings
//! `X__blobServiceUri` / `X__queueServiceUri` / `X__accountName` with an optional `X__clientId`.
//! Parsing is pure; errors name the setting and never echo a value.

use std::fmt;

use azure_core::credentials::{Secret, SecretBytes};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use url::Url;

use crate::settings::{Settings, SettingsError};

/// Azurite's well-known development account (public, documented by Microsoft).
const DEV_ACCOUNT: &str = "devstoreaccount1";
const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How requests to an account are authorized.
pub enum StorageAuth {
    /// `AccountName` + `AccountKey`: requests are signed with SharedKey.
    SharedKey { account: String, key: SecretBytes },
    /// A shared access signature, appended to every URL.
    Sas { query: Secret },
    /// Microsoft Entra ID: managed identity in Azure, developer tools locally.
    Identity { client_id: Option<String> },
}

impl fmt::Debug for StorageAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SharedKey { account, .. } => write!(f, "SharedKey({account})"),
            Self::Sas { .. } => f.write_str("Sas"),
            Self::Identity { client_id } => write!(f, "Identity({client_id:?})"),
        }
    }
}

/// One storage connection: where the services are and how to authorize.
#[derive(Debug)]
pub struct StorageConnection {
    /// The setting (or setting prefix) it was read from, for messages.
    pub name: String,
    pub blob_endpoint: Option<Url>,
    pub queue_endpoint: Option<Url>,
    pub auth: StorageAuth,
}

impl StorageConnection {
    /// Reads connection `name` from `settings`.
    pub fn from_settings(name: &str, settings: &Settings) -> Result<Self, SettingsError> {
        if let Some(connection_string) = settings.get(name) {
            return parse_connection_string(name, connection_string);
        }
        let prefix = format!("{name}__");
        if settings.has_prefix(&prefix) {
            return identity_connection(name, settings);
        }
        Err(SettingsError::new(
            name,
            format!(
                "is not set: give a connection string in {name}, or {name}__blobServiceUri / \
                 {name}__queueServiceUri / {name}__accountName for an identity-based connection"
            ),
        ))
    }

    /// When both the connection string `name` and identity settings `name__…` are set: which
    /// one is used (the connection string, as the Functions host does: an exact setting wins
    /// over a prefix), and how to keep only the identity. `None` when only one form is set.
    pub fn shadowed(name: &str, settings: &Settings) -> Option<String> {
        settings.get(name)?;
        let ignored = settings.names_with_prefix(&format!("{name}__"));
        (!ignored.is_empty()).then(|| {
            format!(
                "{name} holds a connection string, so it is used and {} ignored (the Functions \
                 host reads it the same way: an exact setting wins over a prefix); for an \
                 identity-based connection, delete it: az functionapp config appsettings delete \
                 -g <rg> -n <app> --setting-names {name}",
                ignored.join(", ")
            )
        })
    }

    /// The blob endpoint, or an error naming the setting that lacks it.
    pub fn require_blob_endpoint(&self) -> Result<&Url, SettingsError> {
        self.blob_endpoint.as_ref().ok_or_else(|| {
            SettingsError::new(
                &self.name,
                "has no blob endpoint (BlobEndpoint / blobServiceUri)",
            )
        })
    }

    /// The queue endpoint, or an error naming the setting that lacks it.
    pub fn require_queue_endpoint(&self) -> Result<&Url, SettingsError> {
        self.queue_endpoint.as_ref().ok_or_else(|| {
            SettingsError::new(
                &self.name,
                "has no queue endpoint (QueueEndpoint / queueServiceUri)",
            )
        })
    }
}

fn parse_connection_string(setting: &str, text: &str) -> Result<StorageConnection, SettingsError> {
    let error = |reason: &str| SettingsError::new(setting, reason);
    let mut account = None;
    let mut key = None;
    let mut sas = None;
    let mut blob_endpoint = None;
    let mut queue_endpoint = None;
    let mut protocol = None;
    let mut suffix = None;
    let mut development = false;
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        // Split at the first '=' only: keys and signatures end in '=' padding.
        let Some((field, value)) = part.split_once('=') else {
            return Err(error(
                "is not a connection string: expected Name=Value pairs separated by ';'",
            ));
        };
        let value = value.trim();
        match field.trim().to_ascii_lowercase().as_str() {
            "usedevelopmentstorage" => development = value.eq_ignore_ascii_case("true"),
            "accountname" => account = Some(value.to_owned()),
            "accountkey" => key = Some(value.to_owned()),
            "sharedaccesssignature" => sas = Some(value.trim_start_matches('?').to_owned()),
            "blobendpoint" => blob_endpoint = Some(parse_endpoint(setting, "BlobEndpoint", value)?),
            "queueendpoint" => {
                queue_endpoint = Some(parse_endpoint(setting, "QueueEndpoint", value)?)
            }
            "defaultendpointsprotocol" => protocol = Some(value.to_ascii_lowercase()),
            "endpointsuffix" => suffix = Some(value.to_owned()),
            // Table/File endpoints and the proxy URI concern services this worker does not use.
            "tableendpoint" | "fileendpoint" | "developmentstorageproxyuri" => {}
            _ => {
                return Err(error(&format!(
                    "has an unknown connection string field {:?}",
                    field.trim()
                )))
            }
        }
    }

    if development {
        let at = |port: u16| Url::parse(&format!("http://127.0.0.1:{port}/{DEV_ACCOUNT}")).ok();
        return Ok(StorageConnection {
            name: setting.to_owned(),
            blob_endpoint: blob_endpoint.or_else(|| at(10000)),
            queue_endpoint: queue_endpoint.or_else(|| at(10001)),
            auth: StorageAuth::SharedKey {
                account: DEV_ACCOUNT.to_owned(),
                key: SecretBytes::new(BASE64.decode(DEV_KEY).unwrap_or_default()),
            },
        });
    }

    if let (Some(account), None) = (&account, &blob_endpoint) {
        blob_endpoint = Some(derived_endpoint(
            setting, account, "blob", &protocol, &suffix,
        )?);
    }
    if let (Some(account), None) = (&account, &queue_endpoint) {
        queue_endpoint = Some(derived_endpoint(
            setting, account, "queue", &protocol, &suffix,
        )?);
    }

    let auth = match (key, sas) {
        (Some(_), Some(_)) => {
            return Err(error(
                "has both AccountKey and SharedAccessSignature; keep one",
            ))
        }
        (Some(key), None) => {
            let account = account.ok_or_else(|| error("has an AccountKey but no AccountName"))?;
            let key = BASE64
                .decode(key)
                .map_err(|_| error("has an AccountKey that is not valid base64"))?;
            StorageAuth::SharedKey {
                account,
                key: SecretBytes::new(key),
            }
        }
        (None, Some(query)) => {
            if query.is_empty() {
                return Err(error("has an empty SharedAccessSignature"));
            }
            StorageAuth::Sas {
                query: Secret::new(query),
            }
        }
        (None, None) => {
            return Err(error(
                "has neither AccountKey nor SharedAccessSignature (nor UseDevelopmentStorage=true)",
            ))
        }
    };
    if blob_endpoint.is_none() && queue_endpoint.is_none() {
        return Err(error(
            "names no endpoint: give AccountName or BlobEndpoint/QueueEndpoint",
        ));
    }
    Ok(StorageConnection {
        name: setting.to_owned(),
        blob_endpoint,
        queue_endpoint,
        auth,
    })
}

fn identity_connection(
    name: &str,
    settings: &Settings,
) -> Result<StorageConnection, SettingsError> {
    let setting = |field: &str| format!("{name}__{field}");
    let endpoint = |field: &str| -> Result<Option<Url>, SettingsError> {
        settings
            .get(&setting(field))
            .map(|value| parse_endpoint(&setting(field), "the URI", value))
            .transpose()
    };
    let account = settings.get(&setting("accountName"));
    let from_account = |service: &str| {
        account
            .map(|account| {
                let none = None;
                derived_endpoint(&setting("accountName"), account, service, &none, &none)
            })
            .transpose()
    };
    let blob_endpoint = match endpoint("blobServiceUri")? {
        Some(url) => Some(url),
        None => from_account("blob")?,
    };
    let queue_endpoint = match endpoint("queueServiceUri")? {
        Some(url) => Some(url),
        None => from_account("queue")?,
    };
    for url in blob_endpoint.iter().chain(&queue_endpoint) {
        if url.scheme() != "https" {
            return Err(SettingsError::new(
                name,
                "identity-based connections need https service URIs (tokens are never sent over http)",
            ));
        }
    }
    if blob_endpoint.is_none() && queue_endpoint.is_none() {
        return Err(SettingsError::new(
            name,
            format!(
                "is identity-based but has none of {0}__blobServiceUri, {0}__queueServiceUri, \
                 {0}__accountName",
                name
            ),
        ));
    }
    Ok(StorageConnection {
        name: name.to_owned(),
        blob_endpoint,
        queue_endpoint,
        auth: StorageAuth::Identity {
            client_id: settings.get(&setting("clientId")).map(str::to_owned),
        },
    })
}

fn parse_endpoint(setting: &str, field: &str, value: &str) -> Result<Url, SettingsError> {
    let url = Url::parse(value).map_err(|_| {
        SettingsError::new(setting, format!("has a {field} that is not a valid URL"))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() || url.query().is_some()
    {
        return Err(SettingsError::new(
            setting,
            format!("has a {field} that is not an http(s) base URL without query"),
        ));
    }
    Ok(url)
}

fn derived_endpoint(
    setting: &str,
    account: &str,
    service: &str,
    protocol: &Option<String>,
    suffix: &Option<String>,
) -> Result<Url, SettingsError> {
    if account.is_empty()
        || !account
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(SettingsError::new(
            setting,
            "has an account name that is not lowercase letters and digits",
        ));
    }
    let protocol = protocol.as_deref().unwrap_or("https");
    if !matches!(protocol, "http" | "https") {
        return Err(SettingsError::new(
            setting,
            "has a DefaultEndpointsProtocol other than http or https",
        ));
    }
    let suffix = suffix.as_deref().unwrap_or("core.windows.net");
    parse_endpoint(
        setting,
        "EndpointSuffix",
        &format!("{protocol}://{account}.{service}.{suffix}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "c2VjcmV0LWtleS1ieXRlcw==";

    fn parse(value: &str) -> Result<StorageConnection, SettingsError> {
        StorageConnection::from_settings("CONN", &Settings::from_pairs([("CONN", value)]))
    }

    #[test]
    fn development_storage_points_at_azurite_defaults() {
        let c = parse("UseDevelopmentStorage=true").unwrap();
        assert_eq!(
            c.blob_endpoint.unwrap().as_str(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert_eq!(
            c.queue_endpoint.unwrap().as_str(),
            "http://127.0.0.1:10001/devstoreaccount1"
        );
        assert!(
            matches!(c.auth, StorageAuth::SharedKey { ref account, .. } if account == DEV_ACCOUNT)
        );
    }

    #[test]
    fn account_key_with_protocol_and_suffix_derives_endpoints() {
        let c = parse(&format!(
            "DefaultEndpointsProtocol=https;AccountName=lake;AccountKey={KEY};EndpointSuffix=core.chinacloudapi.cn"
        ))
        .unwrap();
        assert_eq!(
            c.blob_endpoint.unwrap().as_str(),
            "https://lake.blob.core.chinacloudapi.cn/"
        );
        assert_eq!(
            c.queue_endpoint.unwrap().as_str(),
            "https://lake.queue.core.chinacloudapi.cn/"
        );
        match c.auth {
            StorageAuth::SharedKey { account, key } => {
                assert_eq!(account, "lake");
                assert_eq!(key.bytes(), b"secret-key-bytes");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn explicit_endpoints_win() {
        let c = parse(&format!(
            "AccountName=source;AccountKey={KEY};BlobEndpoint=http://127.0.0.1:5000/source;"
        ))
        .unwrap();
        assert_eq!(
            c.blob_endpoint.unwrap().as_str(),
            "http://127.0.0.1:5000/source"
        );
        assert_eq!(
            c.queue_endpoint.unwrap().as_str(),
            "https://source.queue.core.windows.net/"
        );
    }

    #[test]
    fn sas_connection_keeps_the_signature_secret() {
        let c = parse("BlobEndpoint=https://lake.blob.core.windows.net;SharedAccessSignature=?sv=2024&sig=abc%3D").unwrap();
        match &c.auth {
            StorageAuth::Sas { query } => assert_eq!(query.secret(), "sv=2024&sig=abc%3D"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(!format!("{c:?}").contains("abc"));
    }

    #[test]
    fn identity_based_settings() {
        let settings = Settings::from_pairs([
            ("CONN__blobServiceUri", "https://lake.blob.core.windows.net"),
            ("CONN__accountName", "lake"),
            ("CONN__clientId", "1234"),
        ]);
        let c = StorageConnection::from_settings("CONN", &settings).unwrap();
        assert_eq!(
            c.blob_endpoint.unwrap().as_str(),
            "https://lake.blob.core.windows.net/"
        );
        assert_eq!(
            c.queue_endpoint.unwrap().as_str(),
            "https://lake.queue.core.windows.net/"
        );
        assert!(
            matches!(c.auth, StorageAuth::Identity { client_id: Some(ref id) } if id == "1234")
        );
        let http = Settings::from_pairs([("CONN__blobServiceUri", "http://lake")]);
        assert!(StorageConnection::from_settings("CONN", &http).is_err());
    }

    #[test]
    fn a_connection_string_beside_identity_settings_is_named_as_the_one_used() {
        let key = "a2V5IGZvciB0ZXN0cw==";
        let both = Settings::from_pairs([
            (
                "AzureWebJobsStorage",
                format!("AccountName=f;AccountKey={key}"),
            ),
            ("AzureWebJobsStorage__accountName", "f".to_owned()),
            (
                "AzureWebJobsStorage__credential",
                "managedidentity".to_owned(),
            ),
        ]);
        let used = StorageConnection::from_settings("AzureWebJobsStorage", &both).unwrap();
        assert!(matches!(used.auth, StorageAuth::SharedKey { .. }));
        let warning = StorageConnection::shadowed("AzureWebJobsStorage", &both).unwrap();
        assert!(
            warning.contains(
                "AzureWebJobsStorage__accountName, AzureWebJobsStorage__credential ignored"
            ),
            "{warning}"
        );
        assert!(
            warning.contains("--setting-names AzureWebJobsStorage"),
            "{warning}"
        );
        assert!(!warning.contains(key), "{warning}");
        let identity_only = Settings::from_pairs([("AzureWebJobsStorage__accountName", "f")]);
        assert_eq!(
            StorageConnection::shadowed("AzureWebJobsStorage", &identity_only),
            None
        );
        let string_only =
            Settings::from_pairs([("AzureWebJobsStorage", "UseDevelopmentStorage=true")]);
        assert_eq!(
            StorageConnection::shadowed("AzureWebJobsStorage", &string_only),
            None
        );
    }

    #[test]
    fn bad_settings_name_the_setting_and_hide_the_value() {
        let cases = [
            (
                "AccountName=lake;AccountKey=not*base64!",
                "not valid base64",
            ),
            ("AccountName=lake", "neither AccountKey"),
            ("just some text", "Name=Value"),
            (&format!("AccountKey={KEY}"), "no AccountName"),
            (
                &format!("AccountName=Lake_1;AccountKey={KEY}"),
                "account name",
            ),
            (
                &format!("AccountName=lake;AccountKey={KEY};BlobEndpoint=not a url"),
                "BlobEndpoint",
            ),
            (
                &format!("AccountName=lake;AccountKey={KEY};Colour=blue"),
                "Colour",
            ),
        ];
        for (value, expected) in cases {
            let err = parse(value).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with("setting CONN: "), "{text}");
            assert!(text.contains(expected), "{text}");
            assert!(
                !text.contains(KEY) && !text.contains("not*base64"),
                "{text}"
            );
        }
        let missing = StorageConnection::from_settings("CONN", &Settings::default()).unwrap_err();
        assert!(missing.to_string().contains("is not set"));
    }
}
