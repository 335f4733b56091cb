//! The URL a server-side copy reads its source through: exactly one blob or snapshot,
//! read-only, readable until an expiry and no longer, and HTTPS-only where the source is
//! reached over HTTPS. The service records that URL, signature included, on the destination
//! (`x-ms-copy-source`) for anyone who can read its properties, so nothing broader is ever
//! given: a connection that cannot sign such a SAS (a SAS connection has no key) copies through
//! the worker instead ([`StorageAccount::signs_copy_sources`]).

use time::OffsetDateTime;
use url::Url;

use super::{
    sas::{ReadBlobSas, SasProtocol},
    StorageAccount, StorageAuth, StorageError,
};

impl StorageAccount {
    /// Whether this connection can sign a one-blob read SAS for a server-side copy source (with
    /// the account key, or a user delegation key issued to its identity). A SAS connection
    /// cannot: its own SAS grants far more than one blob, so its copies go through the worker.
    pub fn signs_copy_sources(&self) -> bool {
        !matches!(self.connection().auth, StorageAuth::Sas { .. })
    }

    /// A URL that lets its holder read exactly `container/blob` (or its snapshot `snapshot`)
    /// until `expiry`, for a server-side copy from this account: a read-only SAS for that one
    /// blob, signed with the account key or, keys off, with a user delegation key the account
    /// issued to this app's identity; `spr=https` when the account is reached over HTTPS. A SAS
    /// connection is refused (see [`StorageAccount::signs_copy_sources`]): its own SAS is never
    /// handed on.
    pub async fn readable_blob_url(
        &self,
        container: &str,
        blob: &str,
        snapshot: Option<&str>,
        expiry: OffsetDateTime,
    ) -> Result<Url, StorageError> {
        let authorizing = || format!("authorizing a copy from {container}/{blob}");
        let mut addressed = self.container(container)?.blob(blob);
        if let Some(snapshot) = snapshot {
            addressed = addressed.at_snapshot(snapshot)?;
        }
        let mut url = addressed.url().clone();
        let protocol = SasProtocol::for_url(&url);
        let grant = |account| ReadBlobSas {
            account,
            container,
            blob,
            snapshot,
            expiry,
            protocol,
        };
        let sas = match &self.connection().auth {
            StorageAuth::SharedKey { account, key } => grant(account).signed_with_account_key(key),
            StorageAuth::Sas { .. } => {
                return Err(StorageError::other(
                    authorizing(),
                    format!(
                        "{} is a SAS connection, which cannot sign a SAS for one blob: the copy \
                         goes through the worker",
                        self.connection().name
                    ),
                ))
            }
            StorageAuth::Identity { .. } => {
                let account = self.account_name().ok_or_else(|| {
                    StorageError::other(authorizing(), "the blob endpoint names no account")
                })?;
                let key = self.delegation_key(expiry).await?;
                grant(&account).signed_with_delegation_key(&key)
            }
        };
        let query = match url.query() {
            Some(existing) if !existing.is_empty() => format!("{existing}&{}", sas.secret()),
            _ => sas.secret().to_owned(),
        };
        url.set_query(Some(&query));
        Ok(url)
    }
}
