//! The storage seam: the only place that turns connection settings into SDK clients, so auth,
//! retries and error reporting are decided once.
//!
//! Everything else asks a [`StorageAccount`] for a container or queue client and reports SDK
//! errors as [`StorageError`], whose text never contains a key or signature.

pub mod blobs;
pub mod connection;
mod delegation;
mod error;
pub(crate) mod identity;
pub mod lease;
pub mod listing;
pub mod redact;
pub mod sas;
pub mod shared_key;

use std::sync::Arc;

use azure_core::{
    credentials::TokenCredential,
    http::{
        new_http_client, policies::Policy, ClientOptions, ExponentialRetryOptions, HttpClient,
        HttpClientOptions, RetryOptions, StatusCode, Transport, Url,
    },
    time::Duration,
};
use azure_storage_blob::{
    BlobContainerClient, BlobContainerClientOptions, BlobServiceClient, BlobServiceClientOptions,
};
use azure_storage_queue::{QueueClient, QueueClientOptions};

pub use connection::{StorageAuth, StorageConnection};
pub use error::{ErrorCode, StorageError, StorageResultExt};

use crate::settings::{Settings, SettingsError};
pub(crate) use identity::identity_credential;
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

/// Creates `container` unless it exists already (another instance may have just made it).
pub async fn create_container_if_missing(
    container: &BlobContainerClient,
    what: &str,
) -> Result<(), StorageError> {
    match container.create(None).await {
        Ok(_) => Ok(()),
        Err(e) if e.http_status() == Some(StatusCode::Conflict) => Ok(()),
        Err(e) => Err(StorageError::new(format!("creating {what}"), e)),
    }
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
        Self::from_connection(StorageConnection::from_settings(name, settings)?)
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
            per_call_policies: vec![Arc::new(blobs::RequestHeadersPolicy)],
            transport: Some(Transport::new(shared_http_client())),
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

    /// A client for `container` of this account's blob service.
    pub fn container(&self, container: &str) -> Result<BlobContainerClient, StorageError> {
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

    /// A client for this account's blob service (listing containers).
    pub fn blob_service(&self) -> Result<BlobServiceClient, StorageError> {
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

    /// Whether `other` reaches the same blob service (local development often uses one account
    /// for source and backup).
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

    pub fn same_blob_service(&self, other: &StorageAccount) -> bool {
        self.connection.blob_endpoint.is_some()
            && self.connection.blob_endpoint == other.connection.blob_endpoint
    }

    /// A client for `queue` of this account's queue service.
    pub fn queue(&self, queue: &str) -> Result<QueueClient, StorageError> {
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

fn settings_as_storage_error(error: SettingsError) -> StorageError {
    StorageError::other("reading the connection", error.to_string())
}
