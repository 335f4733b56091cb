//! The storage seam: the only place that turns connection settings into SDK clients, so auth,
//! retries and error reporting are decided once, and the only place SDK types and the service's
//! error codes are seen.
//!
//! Everything else asks a [`StorageAccount`] for a [`Container`] (and its [`Blob`]s) or a
//! [`Queue`], reads listings as [`crate::core::version::Version`]s, and gets failures as a
//! [`StorageError`] with a typed [`ErrorCode`], whose text never contains a key or signature.

mod blob;
pub mod connection;
mod container;
pub mod copy;
mod copy_source;
mod delegation;
pub mod dfs;
mod error;
pub(crate) mod identity;
pub mod lease;
pub mod listing;
mod metadata_case;
mod namespace;
mod probe;
mod queue;
mod read;
pub mod redact;
pub mod sas;
pub mod sas_grant;
pub mod shared_key;
mod survey;
#[cfg(feature = "test-support")]
pub mod testing;

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::{
    credentials::TokenCredential,
    http::{
        new_http_client,
        policies::{Policy, PolicyResult},
        ClientOptions, Context, ExponentialRetryOptions, HttpClient, HttpClientOptions, Request,
        RetryOptions, Transport, Url,
    },
    time::Duration,
};
use azure_storage_blob::{
    BlobContainerClient, BlobContainerClientOptions, BlobServiceClient, BlobServiceClientOptions,
};
use azure_storage_queue::{QueueClient, QueueClientOptions};

pub use blob::{Blob, BlobState, Downloaded, Taken};
pub use connection::{StorageAuth, StorageConnection};
pub use container::Container;
pub use error::{ErrorCode, StorageError, StorageResultExt};
pub use namespace::Namespace;
pub use probe::{Probed, QueueProbe, Refusal, PROBE_PREFIX, PROBE_QUEUE_PREFIX};
pub use queue::{PeekedMessage, Queue, TakenMessage, MAX_PEEK};
pub use read::{ChunkedRead, READ_CHUNK_BYTES};
pub use survey::{BlobServiceSetup, ContainerProtection};

use crate::settings::{Settings, SettingsError};
pub(crate) use identity::identity_credential;
pub use identity::BearerTokens;
use shared_key::SharedKeyPolicy;

/// The process's one HTTP client. Without it the SDK builds a client, with its own connection
/// pool and a fresh read of the system's root certificates, for every blob or container client:
/// that cost more CPU than the requests themselves, and no connection was ever reused.
fn shared_http_client() -> Arc<dyn HttpClient> {
    static CLIENT: std::sync::OnceLock<Arc<dyn HttpClient>> = std::sync::OnceLock::new();
    // As the SDK's own default: no automatic decompression (a partitioned download of a blob
    // stored with Content-Encoding would fail), bytes exactly as stored.
    CLIENT
        .get_or_init(|| {
            // Further options may come; the SDK writes it the same way.
            #[allow(clippy::needless_update)]
            new_http_client(Some(HttpClientOptions {
                automatic_decompression: false,
                ..Default::default()
            }))
        })
        .clone()
}

/// One storage account, ready to hand out clients.
pub struct StorageAccount {
    connection: StorageConnection,
    client_options: ClientOptions,
    token_credential: Option<Arc<dyn TokenCredential>>,
    /// Keys-off copy sources: the user delegation key, reused until shortly before it expires.
    delegation_keys: delegation::DelegationKeyCache,
    /// The account refused to show blob index tags to this identity: listings go without.
    tags_refused: std::sync::atomic::AtomicBool,
    /// Its namespace, once asked ([`StorageAccount::namespace`]).
    namespace: tokio::sync::OnceCell<Namespace>,
    /// The pipeline of its dfs calls, once made (`dfs`).
    dfs_pipeline: std::sync::OnceLock<azure_core::http::Pipeline>,
}

impl std::fmt::Debug for StorageAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageAccount")
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

impl StorageAccount {
    /// Reads connection `name` and prepares its credentials; fails on a missing or malformed
    /// setting.
    pub fn connect(name: &str, settings: &Settings) -> Result<Self, SettingsError> {
        let connection = StorageConnection::from_settings(name, settings)?;
        if let Some(warning) = StorageConnection::shadowed(name, settings) {
            tracing::warn!("{warning}");
        }
        Self::from_connection(connection)
    }

    pub fn from_connection(connection: StorageConnection) -> Result<Self, SettingsError> {
        let mut client_options = ClientOptions {
            // A few quick retries: a worker invocation should fail fast and let the host retry
            // rather than block for minutes on an unreachable account.
            retry: RetryOptions::exponential(ExponentialRetryOptions {
                initial_delay: Duration::milliseconds(200),
                max_retries: 3,
                max_total_elapsed: Duration::seconds(20),
                max_delay: Duration::seconds(5),
            }),
            // Per call, before signing: headers the SDK has no option for.
            per_call_policies: vec![Arc::new(RequestHeadersPolicy)],
            // Metadata names with capitals are written as they are (`metadata_case`).
            transport: Some(Transport::new(Arc::new(
                metadata_case::CaseKeepingClient::new(shared_http_client()),
            ))),
            ..ClientOptions::default()
        };
        let mut token_credential = None;
        match &connection.auth {
            StorageAuth::SharedKey { account, key } => {
                let policy: Arc<dyn Policy> =
                    Arc::new(SharedKeyPolicy::new(account.clone(), key.clone()));
                client_options.per_try_policies.push(policy);
            }
            StorageAuth::Sas { .. } => {}
            StorageAuth::Identity { client_id } => {
                token_credential = Some(identity_credential(
                    &connection.name,
                    &format!("{}__clientId", connection.name),
                    client_id,
                )?);
            }
        }
        client_options
            .per_try_policies
            .push(Arc::new(identity::RefusalHintPolicy {
                connection: connection.name.clone(),
                identity: token_credential.is_some(),
            }));
        Ok(Self {
            connection,
            client_options,
            token_credential,
            delegation_keys: delegation::DelegationKeyCache::default(),
            tags_refused: std::sync::atomic::AtomicBool::new(false),
            namespace: tokio::sync::OnceCell::new(),
            dfs_pipeline: std::sync::OnceLock::new(),
        })
    }

    pub fn connection(&self) -> &StorageConnection {
        &self.connection
    }

    /// Whether this account refused to show blob index tags to this identity (once refused,
    /// listings here go without them for the life of the process).
    pub fn tags_refused(&self) -> bool {
        self.tags_refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn refuse_tags(&self) {
        self.tags_refused
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Container `container` of this account's blob service.
    pub fn container(&self, container: &str) -> Result<Container, StorageError> {
        Ok(Container::new(self.container_client(container)?, container))
    }

    /// The SDK's client for `container`: behind [`Container`], never outside `storage`.
    fn container_client(&self, container: &str) -> Result<BlobContainerClient, StorageError> {
        let url = self.resource_url(self.blob_endpoint()?, container);
        BlobContainerClient::new(
            url,
            self.token_credential.clone(),
            Some(BlobContainerClientOptions {
                client_options: self.client_options.clone(),
                ..Default::default()
            }),
        )
        .during(|| format!("preparing a client for container {container}"))
    }

    /// A client for this account's blob service (listing containers, the service's
    /// properties): never outside `storage`.
    fn blob_service(&self) -> Result<BlobServiceClient, StorageError> {
        let url = self.with_sas(self.blob_endpoint()?.clone());
        BlobServiceClient::new(
            url,
            self.token_credential.clone(),
            Some(BlobServiceClientOptions {
                client_options: self.client_options.clone(),
                ..Default::default()
            }),
        )
        .during(|| "preparing a blob service client".to_owned())
    }

    /// The account's name, from its blob endpoint: the host's first label
    /// (`{account}.blob.core.windows.net`), or the first path segment of a path-style endpoint
    /// (an IP address or `localhost`, as the emulator's).
    pub fn account_name(&self) -> Option<String> {
        let endpoint = self.connection.blob_endpoint.as_ref()?;
        let host = endpoint.host_str()?;
        let path_style = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok();
        let name = if path_style {
            endpoint.path_segments()?.next()?
        } else {
            host.split('.').next()?
        };
        (!name.is_empty()).then(|| name.to_owned())
    }

    /// Which account this connection reaches, whatever way it is spelled; `None` without a blob
    /// endpoint.
    pub fn identity(&self) -> Option<AccountIdentity> {
        AccountIdentity::of_endpoint(self.connection.blob_endpoint.as_ref()?)
    }

    /// Whether `other` reaches the same account (local development often uses one account for
    /// source and backup): compared by [`AccountIdentity`], so a connection string and a URL, or
    /// a trailing slash, name one account once.
    pub fn same_blob_service(&self, other: &StorageAccount) -> bool {
        self.identity().is_some() && self.identity() == other.identity()
    }

    /// Queue `queue` of this account's queue service.
    pub fn queue(&self, queue: &str) -> Result<Queue, StorageError> {
        Ok(Queue::new(self.queue_client(queue)?, queue))
    }

    /// The SDK's client for `queue`: behind [`Queue`], never outside `storage`.
    fn queue_client(&self, queue: &str) -> Result<QueueClient, StorageError> {
        let endpoint = self
            .connection
            .require_queue_endpoint()
            .map_err(settings_as_storage_error)?;
        let url = self.resource_url(endpoint, queue);
        QueueClient::new(
            url,
            self.token_credential.clone(),
            Some(QueueClientOptions {
                client_options: self.client_options.clone(),
                ..Default::default()
            }),
        )
        .during(|| format!("preparing a client for queue {queue}"))
    }

    fn blob_endpoint(&self) -> Result<&Url, StorageError> {
        self.connection
            .require_blob_endpoint()
            .map_err(settings_as_storage_error)
    }

    /// `endpoint/name`, carrying the connection's SAS when it has one.
    fn resource_url(&self, endpoint: &Url, name: &str) -> Url {
        let mut url = endpoint.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push(name);
        }
        self.with_sas(url)
    }

    /// `url` carrying the connection's SAS when it has one.
    fn with_sas(&self, mut url: Url) -> Url {
        if let StorageAuth::Sas { query } = &self.connection.auth {
            url.set_query(Some(query.secret()));
        }
        url
    }
}

/// An account as the service knows it, from a blob endpoint however it is written: the host
/// (lowercase, without a trailing dot, with its port only where it is not the scheme's default)
/// and the account's name (lowercase: account names are). The scheme is left out, so
/// `https://acct.blob.core.windows.net` and `http://ACCT.blob.core.windows.net/` are one
/// account; path-style endpoints (`http://127.0.0.1:10000/acct`, the emulator's) name the
/// account by their first path segment. Never carries a credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountIdentity {
    pub host: String,
    pub account: String,
}

impl AccountIdentity {
    pub fn of_endpoint(endpoint: &Url) -> Option<Self> {
        let host = endpoint
            .host_str()?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let path_style = host == "localhost"
            || host.parse::<std::net::IpAddr>().is_ok()
            || host.starts_with('[');
        let account = if path_style {
            endpoint
                .path_segments()?
                .find(|s| !s.is_empty())?
                .to_owned()
        } else {
            host.split('.').next()?.to_owned()
        };
        if account.is_empty() {
            return None;
        }
        let host = match endpoint.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        Some(Self {
            host,
            account: account.to_ascii_lowercase(),
        })
    }

    /// The account's blob endpoint as a URL to show or carry in a message (https unless the
    /// host is a loopback emulator's): no credential, no query.
    pub fn display_url(&self) -> String {
        let local = self.host.starts_with("127.") || self.host.starts_with("localhost");
        if self.host.starts_with(&format!("{}.", self.account)) {
            format!("https://{}", self.host)
        } else if local {
            format!("http://{}/{}", self.host, self.account)
        } else {
            format!("https://{}/{}", self.host, self.account)
        }
    }
}

impl std::fmt::Display for AccountIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display_url())
    }
}

fn settings_as_storage_error(error: SettingsError) -> StorageError {
    StorageError::other("reading the connection", error.to_string())
}

/// Headers a call adds to its request, carried in the call's context; [`RequestHeadersPolicy`]
/// puts them on. The SDK has no option for some headers (`x-ms-requires-sync`).
#[derive(Debug, Clone, Default)]
pub struct RequestHeaders(pub Vec<(&'static str, String)>);

/// Query parameters a call adds to each of its requests (every page of a listing), likewise:
/// the SDK's listing has no `delimiter`.
#[derive(Debug, Clone, Default)]
pub struct RequestQuery(pub Vec<(&'static str, String)>);

/// An item a listing's `include` takes that the SDK does not know (`permissions`): added to
/// the request's own `include`, for each of its pages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IncludeAlso(pub &'static str);

/// Adds a call's [`RequestHeaders`], [`RequestQuery`] and [`IncludeAlso`], and marks a call that writes metadata
/// names with capitals (`metadata_case`); runs per call, before signing.
#[derive(Debug)]
struct RequestHeadersPolicy;

#[async_trait]
impl Policy for RequestHeadersPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        if let Some(RequestHeaders(headers)) = ctx.value::<RequestHeaders>() {
            for (name, value) in headers {
                request.insert_header(*name, value.clone());
            }
        }
        metadata_case::add_names_header(ctx, request);
        if let Some(RequestQuery(pairs)) = ctx.value::<RequestQuery>() {
            let mut url = request.url().clone();
            {
                let mut query = url.query_pairs_mut();
                for (name, value) in pairs {
                    query.append_pair(name, value);
                }
            }
            *request.url_mut() = url;
        }
        if let Some(IncludeAlso(item)) = ctx.value::<IncludeAlso>() {
            let url = request.url().clone();
            let mut found = false;
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(name, value)| match name.as_ref() {
                    "include" => {
                        found = true;
                        (name.into_owned(), format!("{value},{item}"))
                    }
                    _ => (name.into_owned(), value.into_owned()),
                })
                .collect();
            let mut url = url;
            url.query_pairs_mut().clear().extend_pairs(pairs);
            if !found {
                url.query_pairs_mut().append_pair("include", item);
            }
            *request.url_mut() = url;
        }
        next[0].send(ctx, request, &next[1..]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(url: &str) -> Option<AccountIdentity> {
        AccountIdentity::of_endpoint(&Url::parse(url).unwrap())
    }

    #[test]
    fn one_account_spelled_many_ways_is_one_identity() {
        let azure = identity("https://lake.blob.core.windows.net").unwrap();
        for spelling in [
            "https://lake.blob.core.windows.net/",
            "http://LAKE.blob.core.windows.net",
            "https://lake.blob.core.windows.net.:443/",
        ] {
            assert_eq!(identity(spelling).as_ref(), Some(&azure), "{spelling}");
        }
        assert_ne!(
            identity("https://lakebak.blob.core.windows.net"),
            Some(azure.clone())
        );
        assert_eq!(azure.display_url(), "https://lake.blob.core.windows.net");
        let local = identity("http://127.0.0.1:10000/devstoreaccount1").unwrap();
        assert_eq!(
            identity("https://127.0.0.1:10000/devstoreaccount1/"),
            Some(local.clone())
        );
        assert_ne!(
            identity("http://127.0.0.1:10000/other"),
            Some(local.clone())
        );
        assert_ne!(
            identity("http://127.0.0.1:10001/devstoreaccount1"),
            Some(local.clone())
        );
        assert_eq!(
            local.display_url(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert_eq!(identity("http://127.0.0.1:10000/"), None);
    }
}
