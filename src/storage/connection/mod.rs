//! Storage connections, read the way Azure Functions reads them.
//!
//! A connection named `X` is either the setting `X` holding a connection string (development
//! storage, account key, or shared access signature), or identity-based settings
//! `X__blobServiceUri` / `X__queueServiceUri` / `X__accountName` with an optional `X__clientId`
//! (and, for a lake with a hierarchical namespace, an optional `X__dfsServiceUri`).
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
    /// The dfs endpoint of an identity-based connection when `{name}__dfsServiceUri` says it;
    /// otherwise it is derived from the blob endpoint (`storage::dfs`).
    pub dfs_endpoint: Option<Url>,
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

/// The fields of a connection string, as written (Table and File endpoints left out).
#[derive(Default)]
struct Fields {
    account: Option<String>,
    key: Option<String>,
    sas: Option<String>,
    blob_endpoint: Option<Url>,
    queue_endpoint: Option<Url>,
    protocol: Option<String>,
    suffix: Option<String>,
    development: bool,
}

fn parse_connection_string(setting: &str, text: &str) -> Result<StorageConnection, SettingsError> {
    let error = |reason: &str| SettingsError::new(setting, reason);
    let Fields {
        account,
        key,
        sas,
        mut blob_endpoint,
        mut queue_endpoint,
        protocol,
        suffix,
        development,
    } = read_fields(setting, text)?;

    if development {
        let at = |port: u16| Url::parse(&format!("http://127.0.0.1:{port}/{DEV_ACCOUNT}")).ok();
        return Ok(StorageConnection {
            name: setting.to_owned(),
            blob_endpoint: blob_endpoint.or_else(|| at(10000)),
            queue_endpoint: queue_endpoint.or_else(|| at(10001)),
            dfs_endpoint: None,
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

    let auth = key_or_sas(setting, account, key, sas)?;
    if blob_endpoint.is_none() && queue_endpoint.is_none() {
        return Err(error(
            "names no endpoint: give AccountName or BlobEndpoint/QueueEndpoint",
        ));
    }
    Ok(StorageConnection {
        name: setting.to_owned(),
        blob_endpoint,
        queue_endpoint,
        dfs_endpoint: None,
        auth,
    })
}

/// The `Name=Value` pairs of a connection string; an unknown name is an error.
fn read_fields(setting: &str, text: &str) -> Result<Fields, SettingsError> {
    let error = |reason: &str| SettingsError::new(setting, reason);
    let mut fields = Fields::default();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        // Split at the first '=' only: keys and signatures end in '=' padding.
        let Some((field, value)) = part.split_once('=') else {
            return Err(error(
                "is not a connection string: expected Name=Value pairs separated by ';'",
            ));
        };
        let value = value.trim();
        match field.trim().to_ascii_lowercase().as_str() {
            "usedevelopmentstorage" => fields.development = value.eq_ignore_ascii_case("true"),
            "accountname" => fields.account = Some(value.to_owned()),
            "accountkey" => fields.key = Some(value.to_owned()),
            "sharedaccesssignature" => fields.sas = Some(value.trim_start_matches('?').to_owned()),
            "blobendpoint" => {
                fields.blob_endpoint = Some(parse_endpoint(setting, "BlobEndpoint", value)?)
            }
            "queueendpoint" => {
                fields.queue_endpoint = Some(parse_endpoint(setting, "QueueEndpoint", value)?)
            }
            "defaultendpointsprotocol" => fields.protocol = Some(value.to_ascii_lowercase()),
            "endpointsuffix" => fields.suffix = Some(value.to_owned()),
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
    Ok(fields)
}

/// The credential of a connection string: its account key or its SAS, exactly one of them.
fn key_or_sas(
    setting: &str,
    account: Option<String>,
    key: Option<String>,
    sas: Option<String>,
) -> Result<StorageAuth, SettingsError> {
    let error = |reason: &str| SettingsError::new(setting, reason);
    Ok(match (key, sas) {
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
    let dfs_endpoint = endpoint("dfsServiceUri")?;
    for url in blob_endpoint
        .iter()
        .chain(&queue_endpoint)
        .chain(&dfs_endpoint)
    {
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
        dfs_endpoint,
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
mod tests;
