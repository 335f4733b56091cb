//! A blob lease held for as long as a piece of work runs: renewed in the background, released on
//! every path — explicitly on success and failure, and from `Drop` when the holder is cancelled
//! or panics. A renewal that hangs or fails is retried while the lease still runs; once it may
//! have lapsed the holder is told ([`HeldLease::lost`]), because the blob is then unprotected.

use std::{sync::Arc, time::Duration};

use azure_storage_blob::{
    models::{BlobClientAcquireLeaseOptions, BlobClientAcquireLeaseResultHeaders},
    BlobClient,
};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{debug, warn};

use super::{StorageError, StorageResultExt};
use crate::core::etag::quoted_etag;

/// Lease length of a source blob under copy; renewed every quarter of it.
const LEASE_SECONDS: i32 = 60;
/// The shortest lease the service grants: a lock whose holder was killed lapses soonest.
pub const SHORTEST_LEASE_SECONDS: i32 = 15;

pub struct HeldLease {
    blob: Arc<BlobClient>,
    lease_id: String,
    renewer: Option<JoinHandle<()>>,
    lost: watch::Receiver<Option<String>>,
    what: String,
}

impl HeldLease {
    /// Leases `blob` if its ETag is still `etag`. A blob leased by someone else fails with
    /// `LeaseAlreadyPresent` (a transient condition: retry later).
    pub async fn acquire(blob: &super::Blob, etag: &str) -> Result<Self, StorageError> {
        Self::acquire_for(blob, Some(etag), LEASE_SECONDS).await
    }

    /// Leases `blob` (whatever its version when `etag` is `None`) for `seconds` at a time,
    /// renewed every quarter of that.
    pub async fn acquire_for(
        blob: &super::Blob,
        etag: Option<&str>,
        seconds: i32,
    ) -> Result<Self, StorageError> {
        let what = blob.what();
        let what = what.as_str();
        let blob: Arc<BlobClient> = blob.sdk().clone();
        let response = blob
            .acquire_lease(
                seconds,
                Some(BlobClientAcquireLeaseOptions {
                    if_match: etag.map(|etag| quoted_etag(etag).into()),
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
        let (lost_tx, lost) = watch::channel(None);
        let renewer = tokio::spawn(renew_until_lost(
            blob.clone(),
            lease_id.clone(),
            what.to_owned(),
            Duration::from_secs(seconds.max(SHORTEST_LEASE_SECONDS) as u64),
            lost_tx,
        ));
        Ok(Self {
            blob,
            lease_id,
            renewer: Some(renewer),
            lost,
            what: what.to_owned(),
        })
    }

    /// Resolves, with the reason, once the lease can no longer be trusted to be held; never
    /// while renewals succeed.
    pub fn lost(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut lost = self.lost.clone();
        async move {
            let reason = match lost.wait_for(Option::is_some).await {
                Ok(reason) => reason.clone(),
                Err(_) => None,
            };
            match reason {
                Some(reason) => reason,
                // The renewer is gone only when the lease was released.
                None => std::future::pending().await,
            }
        }
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

async fn renew_until_lost(
    blob: Arc<BlobClient>,
    lease_id: String,
    what: String,
    length: Duration,
    lost: watch::Sender<Option<String>>,
) {
    // Renewed every quarter of its length; one renewal may take a sixth of it; without a
    // successful renewal for two thirds of it, it may lapse before the next one lands.
    let period = length / 4;
    let renewal_timeout = length / 6;
    let lost_after = length * 2 / 3;
    let mut last_renewed = tokio::time::Instant::now();
    let mut wait = period;
    loop {
        tokio::time::sleep(wait).await;
        let attempt =
            tokio::time::timeout(renewal_timeout, blob.renew_lease(lease_id.clone(), None)).await;
        let failure = match attempt {
            Ok(Ok(_)) => {
                last_renewed = tokio::time::Instant::now();
                wait = period;
                continue;
            }
            Ok(Err(e)) => StorageError::new("renewing a lease", e),
            Err(_) => StorageError::other(
                "renewing a lease",
                format!("no answer within {} s", renewal_timeout.as_secs()),
            ),
        };
        // The service says the lease is gone (broken, expired, taken): no retry brings it back.
        let gone = matches!(failure.status, Some(409 | 412));
        if gone || last_renewed.elapsed() >= lost_after {
            warn!(error = %failure, what, "the lease is lost");
            let _ = lost.send(Some(format!("the lease on {what} was lost: {failure}")));
            return;
        }
        warn!(error = %failure, what, "lease renewal failed; trying again");
        wait = (period / 2).min(Duration::from_secs(2));
    }
}
