//! The URL a server-side copy reads its source through: exactly one blob or snapshot, readable
//! until an expiry and no longer, whatever the connection's credentials are.

use time::OffsetDateTime;
use url::Url;

use super::{
    sas::{read_blob_delegation_sas, read_blob_sas},
    StorageAccount, StorageAuth, StorageError,
};

impl StorageAccount {
    /// A URL that lets its holder read exactly `container/blob` (or its snapshot `snapshot`)
    /// until `expiry`, for a server-side copy from this account: a read-only SAS for that one
    /// blob, signed with the account key or, keys off, with a user delegation key the account
    /// issued to this app's identity; or the connection's own SAS.
    pub async fn readable_blob_url(
        &self,
        container: &str,
        blob: &str,
        snapshot: Option<&str>,
        expiry: OffsetDateTime,
    ) -> Result<Url, StorageError> {
        let mut addressed = self.container(container)?.blob(blob);
        if let Some(snapshot) = snapshot {
            addressed = addressed.at_snapshot(snapshot)?;
        }
        let mut url = addressed.url().clone();
        let sas = match &self.connection().auth {
            StorageAuth::SharedKey { account, key } => {
                read_blob_sas(account, key, container, blob, snapshot, expiry)
            }
            // The URL already carries the connection's SAS.
            StorageAuth::Sas { .. } => return Ok(url),
            StorageAuth::Identity { .. } => {
                let account = self.account_name().ok_or_else(|| {
                    StorageError::other(
                        format!("authorizing a copy from {container}/{blob}"),
                        "the blob endpoint names no account",
                    )
                })?;
                let key = self.delegation_key(expiry).await?;
                read_blob_delegation_sas(&account, &key, container, blob, snapshot, expiry)
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
