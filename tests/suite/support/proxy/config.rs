//! What a proxy does besides forwarding ([`ProxyConfig`]: pages, faults, the Azure rules it
//! plays, the keys it re-signs with), and which Azurite service it stands in front of.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    super::azurite::{BACKUP_KEY, DEV_KEY, JOBS_KEY, SOURCE_KEY},
    Faults, OpClass,
};

/// Which Azurite service a proxy stands in front of; every request to a queue endpoint is of
/// class [`OpClass::Queue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Blob,
    Queue,
}

/// What a proxy does besides forwarding.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProxyConfig {
    /// Listings ask for at most this many entries (at least 1). A SharedKey listing is clamped
    /// only when its account's key is in `keys`; otherwise it is left whole and counted in
    /// [`ProxyStats::listings_not_clamped`], rather than sent with a broken signature.
    pub page_size: Option<u32>,
    /// Account name → base64 account key, to re-sign SharedKey listings whose query changed.
    pub keys: BTreeMap<String, String>,
    pub faults: Faults,
    /// Refuse, as Azure does and Azurite 3.37 does not (both verified on Azurite, the Azure
    /// side from its documentation; see `../shared/azurite-notes.md`):
    /// - Copy Blob From URL (`x-ms-copy-source` with `x-ms-requires-sync: true`) whose source is
    ///   not a block blob: 409 `CannotVerifyCopySource`, "The copy source must be a block blob."
    ///   Azurite copies append and page blobs that way and keeps their type.
    /// - Copy Blob (asynchronous) onto an existing destination of another blob type: 409
    ///   `InvalidBlobType`. Azurite replaces the destination and gives it the source's type.
    ///
    /// The types are read by the proxy itself with a `HEAD` of the copy source's URL and of the
    /// destination, sent to the upstream (neither counted nor faulted; the destination's signed
    /// with the account's key from `keys`, or its own SAS). When a type cannot be read, or an
    /// asynchronous copy carries `If-None-Match: *` (Azure and Azurite both answer an existing
    /// destination with 409 `BlobAlreadyExists` then), the request is forwarded as it came. A
    /// refusal is answered by the proxy (Azurite never sees the request) in Azure's error shape
    /// and counted in [`ProxyStats::azure_refusals`]; whatever is forwarded is untouched.
    pub azure_rules: bool,
    /// Answer as Azure answers an identity with Storage Blob Data Contributor (read and write
    /// blobs, but no `…/blobs/tags/read` or `…/blobs/tags/write`; only Storage Blob Data Owner
    /// has them among the built-in roles), which Azurite cannot (it lets any credential list and
    /// set tags, see `../shared/azurite-notes.md`). Refused with 403
    /// `AuthorizationPermissionMismatch`, in Azure's error shape:
    /// - a listing (`comp=list`) whose `include` names `tags`: Azure refuses the whole listing;
    /// - Get Blob Tags and Set Blob Tags (`comp=tags`);
    /// - a write that sets tags: any `PUT` carrying a non-empty `x-ms-tags` (Put Blob, Put Block
    ///   List, append and page blob creation, Copy Blob, Copy Blob From URL), or asking for the
    ///   source's tags with `x-ms-copy-source-tag-option: COPY`.
    ///
    /// Every other request, a listing without tags and a write without them included, is
    /// forwarded unchanged. Refusals are answered by the proxy (Azurite never sees the request)
    /// and counted in [`ProxyStats::azure_refusals`]. Blob endpoints only: a queue has no tags.
    pub refuse_tags: bool,
    /// Containers whose names end in this (e.g. `bak`) answer as Azure does a container with a
    /// time-based retention policy (WORM): a blob can be created, but not deleted, overwritten,
    /// or have its metadata or properties set (409 `BlobImmutableDueToPolicy`); Get Container
    /// Properties says `x-ms-has-immutability-policy: true`. Azurite has no immutability at all.
    pub worm_suffix: Option<String>,
    /// Containers whose names end in this (e.g. `bak`) answer a blob DELETE as Azure does an
    /// identity whose role has no delete action (the least-privilege writer role): 403
    /// `AuthorizationPermissionMismatch`.
    pub deny_deletes_suffix: Option<String>,
    /// Requests of these classes answer as Azure does an identity whose role lacks their
    /// actions (a Storage Blob Data Reader has no write, snapshot, lease or delete): 403
    /// `AuthorizationPermissionMismatch`, in Azure's error shape, before the resource is looked
    /// at (a blob that does not exist is refused the same). Counted in
    /// [`ProxyStats::azure_refusals`]; Azurite never sees the request.
    pub deny_classes: BTreeSet<OpClass>,
    /// The error code [`ProxyConfig::deny_classes`] refuses with instead of
    /// `AuthorizationPermissionMismatch`: e.g. `AuthorizationFailure`, as Azure answers a client
    /// that the account's network rules (firewall, virtual networks) do not let in.
    pub deny_code: Option<String>,
    /// Answer as Azure does an identity whose roles are assigned on these resources only, each
    /// `account/container` or `account/queue`: a request to any other container or queue, or to
    /// an account itself (List Containers, List Queues, service properties, account information,
    /// a user delegation key), is refused with 403 `AuthorizationPermissionMismatch` before the
    /// resource is looked at (Azurite lets any key do anything). Counted in
    /// [`ProxyStats::azure_refusals`].
    pub role_scope: Option<BTreeSet<String>>,
}

impl ProxyConfig {
    /// The keys of the accounts [`Azurite`] creates, nothing else.
    pub fn azurite() -> ProxyConfig {
        let keys = [
            ("source", SOURCE_KEY),
            ("backup", BACKUP_KEY),
            ("jobs", JOBS_KEY),
            ("devstoreaccount1", DEV_KEY),
        ]
        .into_iter()
        .map(|(account, key)| (account.to_owned(), key.to_owned()))
        .collect();
        ProxyConfig {
            keys,
            ..ProxyConfig::default()
        }
    }

    pub fn page_size(mut self, page_size: u32) -> ProxyConfig {
        self.page_size = Some(page_size);
        self
    }

    pub fn faults(mut self, faults: Faults) -> ProxyConfig {
        self.faults = faults;
        self
    }

    /// See [`ProxyConfig::deny_deletes_suffix`].
    pub fn deny_deletes(mut self, suffix: &str) -> ProxyConfig {
        self.deny_deletes_suffix = Some(suffix.to_owned());
        self
    }

    /// See [`ProxyConfig::deny_classes`].
    pub fn deny_classes(mut self, classes: impl IntoIterator<Item = OpClass>) -> ProxyConfig {
        self.deny_classes = classes.into_iter().collect();
        self
    }

    /// See [`ProxyConfig::deny_code`].
    pub fn deny_code(mut self, code: &str) -> ProxyConfig {
        self.deny_code = Some(code.to_owned());
        self
    }

    /// See [`ProxyConfig::role_scope`].
    pub fn role_scope<'a>(mut self, resources: impl IntoIterator<Item = &'a str>) -> ProxyConfig {
        self.role_scope = Some(resources.into_iter().map(str::to_owned).collect());
        self
    }

    /// See [`ProxyConfig::worm_suffix`].
    pub fn worm(mut self, suffix: &str) -> ProxyConfig {
        self.worm_suffix = Some(suffix.to_owned());
        self
    }

    /// See [`ProxyConfig::azure_rules`].
    pub fn azure_rules(mut self, on: bool) -> ProxyConfig {
        self.azure_rules = on;
        self
    }

    /// See [`ProxyConfig::refuse_tags`].
    pub fn refuse_tags(mut self, on: bool) -> ProxyConfig {
        self.refuse_tags = on;
        self
    }
}
