//! User delegation keys for keys-off accounts. An identity-based connection authorizes a copy
//! source with a user-delegation SAS ([`super::sas::ReadBlobSas::signed_with_delegation_key`]), signed with a
//! key the account issues to the app's own identity (Get User Delegation Key; the role Storage
//! Blob Delegator). One key signs every SAS until shortly before it expires, so a copy costs no
//! extra request.

use azure_core::credentials::SecretBytes;
use azure_storage_blob::models::KeyInfo;
use time::{Duration, OffsetDateTime};
use tokio::sync::Mutex;

use super::{sas::DelegationKey, StorageAccount, StorageError, StorageResultExt};

/// A key is asked for this long: many copies per request, well inside Azure's 7-day limit.
const KEY_LIFETIME: Duration = Duration::hours(6);
/// The longest key Azure issues, less a margin.
const KEY_MAX_LIFETIME: Duration = Duration::days(7);
/// Valid from slightly in the past: the service's clock may be behind ours.
const CLOCK_SKEW: Duration = Duration::minutes(5);
/// A cached key is replaced when it would expire within this of the SAS it must sign.
const RENEW_MARGIN: Duration = Duration::minutes(5);

#[derive(Default)]
pub(super) struct DelegationKeyCache(Mutex<Option<DelegationKey>>);

impl StorageAccount {
    /// A delegation key valid at least until `needed_until`: the cached one, or a new one
    /// from the account.
    pub(super) async fn delegation_key(
        &self,
        needed_until: OffsetDateTime,
    ) -> Result<DelegationKey, StorageError> {
        let mut cached = self.delegation_keys.0.lock().await;
        if let Some(key) = cached.as_ref() {
            if key.expiry - RENEW_MARGIN >= needed_until {
                return Ok(key.clone());
            }
        }
        let now = OffsetDateTime::now_utc();
        let whole_second = |t: OffsetDateTime| t.replace_nanosecond(0).unwrap_or(t);
        let start = whole_second(now - CLOCK_SKEW);
        let expiry = whole_second(
            (needed_until + RENEW_MARGIN)
                .max(now + KEY_LIFETIME)
                .min(now + KEY_MAX_LIFETIME - RENEW_MARGIN),
        );
        let operation = || {
            format!(
                "getting a user delegation key from {} to authorize a copy",
                self.connection.name
            )
        };
        let request = KeyInfo {
            start: Some(start),
            expiry: Some(expiry),
            ..Default::default()
        };
        let issued = self
            .blob_service()?
            .get_user_delegation_key(request.try_into().during(operation)?, None)
            .await
            .during(operation)?
            .into_model()
            .during(operation)?;
        let missing = |field: &str| {
            StorageError::other(operation(), format!("the service's key has no {field}"))
        };
        let key = DelegationKey {
            object_id: issued.signed_oid.ok_or_else(|| missing("SignedOid"))?,
            tenant_id: issued.signed_tid.ok_or_else(|| missing("SignedTid"))?,
            start: issued.signed_start.unwrap_or(start),
            expiry: issued.signed_expiry.unwrap_or(expiry),
            service: issued.signed_service.unwrap_or_else(|| "b".to_owned()),
            version: issued
                .signed_version
                .ok_or_else(|| missing("SignedVersion"))?,
            value: SecretBytes::new(issued.value.ok_or_else(|| missing("Value"))?),
        };
        *cached = Some(key.clone());
        Ok(key)
    }
}
