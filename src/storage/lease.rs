//! A blob lease held for as long as a piece of work runs: renewed in the background, released on
//! every path — explicitly on success and failure, and from `Drop` when the holder is cancelled
//! or panics.

use std::{sync::Arc, time::Duration};

use azure_storage_blob::{
    models::{BlobClientAcquireLeaseOptions, BlobClientAcquireLeaseResultHeaders},
    BlobClient,
};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::{StorageError, StorageResultExt};
use crate::core::etag::quoted_etag;

/// Lease length; renewed every third of it.
const LEASE_SECONDS: i32 = 60;

pub struct HeldLease {
    blob: Arc<BlobClient>,
    lease_id: String,
    renewer: Option<JoinHandle<()>>,
    what: String,
}

impl HeldLease {
    /// Leases `blob` if its ETag is still `etag`. A blob leased by someone else fails with
    /// `LeaseAlreadyPresent` (a transient condition: retry later).
    pub async fn acquire(
        blob: Arc<BlobClient>,
        etag: &str,
        what: &str,
    ) -> Result<Self, StorageError> {
        let response = blob
            .acquire_lease(
                LEASE_SECONDS,
                Some(BlobClientAcquireLeaseOptions {
                    if_match: Some(quoted_etag(etag).into()),
                    ..Default::default()
                }),
            )
            .await
            .during(|| format!("leasing {what}"))?;
        let lease_id = response
            .lease_id()
            .during(|| format!("leasing {what}"))?
            .ok_or_else(|| {
                StorageError::other(
                    format!("leasing {what}"),
                    "the service returned no lease id",
                )
            })?;
        debug!(lease_id, "lease acquired");
        let renewer = tokio::spawn(renew_forever(
            blob.clone(),
            lease_id.clone(),
            what.to_owned(),
        ));
        Ok(Self {
            blob,
            lease_id,
            renewer: Some(renewer),
            what: what.to_owned(),
        })
    }

    pub fn lease_id(&self) -> &str {
        &self.lease_id
    }

    /// Stops renewing and releases the lease.
    pub async fn release(mut self) -> Result<(), StorageError> {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        let result = self
            .blob
            .release_lease(self.lease_id.clone(), None)
            .await
            .during(|| format!("releasing the lease on {}", self.what));
        // Released (or failed trying): Drop must not try again.
        self.lease_id.clear();
        result.map(|_| debug!("lease released"))
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        if self.lease_id.is_empty() {
            return;
        }
        // Not released explicitly: the holder was cancelled or panicked. Release from a task so
        // the blob is not locked until the lease runs out.
        let (blob, lease_id, what) = (
            self.blob.clone(),
            std::mem::take(&mut self.lease_id),
            self.what.clone(),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = blob.release_lease(lease_id, None).await {
                    warn!(error = %StorageError::new("releasing an abandoned lease", e), what, "lease left to expire");
                }
            });
        }
    }
}

async fn renew_forever(blob: Arc<BlobClient>, lease_id: String, what: String) {
    let period = Duration::from_secs(LEASE_SECONDS as u64 / 3);
    loop {
        tokio::time::sleep(period).await;
        if let Err(e) = blob.renew_lease(lease_id.clone(), None).await {
            warn!(error = %StorageError::new("renewing a lease", e), what, "lease renewal failed");
        }
    }
}
