//! The dfs stand-in: the proxy (`super`) made to answer, for the accounts it is told are lakes
//! with a hierarchical namespace (ADLS Gen2), as Azure documents such an account, while Azurite
//! (which has no dfs endpoint and no HNS mode) keeps the bytes. Blob calls pass through byte for
//! byte, with the proxy's faults and pages; on those accounts the stand-in
//!
//! - answers Get Account Information with `x-ms-is-hns-enabled: true`;
//! - refuses Snapshot Blob and blob index tags (Get/Set Blob Tags, a write carrying `x-ms-tags`
//!   or `x-ms-copy-source-tag-option: COPY`) with 409
//!   `FeatureNotYetSupportedForHierarchicalNamespaceAccounts` — Azure's feature table says both
//!   are unsupported on HNS; the exact code Azure answers with is not documented, this is the
//!   one its other HNS-unsupported features answer with, so code should judge by status 409;
//!   a listing with `include=tags` is forwarded (Azure documents no refusal) and counted;
//! - creates the missing parent directories of a file written through the blob endpoint (Put
//!   Blob, Put Block List, Copy Blob, Copy Blob From URL) as zero-length blobs with metadata
//!   `hdi_isfolder=true`, as Azure lists them;
//! - Create Path (`PUT ?resource=directory|file`, with `x-ms-permissions`, `x-ms-umask`,
//!   `x-ms-owner`, `x-ms-group`, `x-ms-acl`), Get and Set Access Control
//!   (`HEAD ?action=getAccessControl`, `PATCH ?action=setAccessControl` with `x-ms-owner`,
//!   `x-ms-group`, and `x-ms-permissions` or `x-ms-acl`), kept per path by the stand-in, a
//!   directory's default ACL inherited by a child when it is created (with the create mode
//!   0666/0777 masking the base entries; without a default ACL the umask, 0027 unless
//!   `x-ms-umask` says otherwise), the owning group copied from the parent; the file system's
//!   root directory (`{fs}/?action=...`) answers Get and Set Access Control with the
//!   container's ETag and Last-Modified (the file system's), and 404 once its container is gone;
//! - List Blobs with `include=permissions` (service version 2020-06-12 and later): `Owner`,
//!   `Group`, `Permissions`, `Acl` and `ResourceType` (`file`/`directory`) in each entry's
//!   `Properties`;
//! - Delete Path (`DELETE ?recursive=true|false`): a directory with everything under it, or 409
//!   `DirectoryNotEmpty` when not recursive; a file.
//!
//! Where it simplifies Azure:
//! - the dfs operations are answered on the blob port (as on an IP-style endpoint, where the dfs
//!   URL is the blob URL); a SharedKey signature is checked, a bearer token's claims are (as
//!   Azurite's OAuth mode checks them: audience, issuer, expiry; not its signature), a SAS is
//!   not; each dfs request is counted by how it was authorized ([`HnsCounts`]); over HTTPS in
//!   front of Azurite in OAuth mode with [`super::ProxiedAzurite::start_hns_tls`] (keys off);
//! - a path's ACL lives in the stand-in (in memory), from the write that created it; a blob
//!   written straight to Azurite has the defaults of a file created under its parent when first
//!   asked for; every principal of a key, SAS or token is `$superuser`; `x-ms-umask` is not
//!   applied to an explicit `x-ms-permissions`;
//! - an ACL change leaves the path's ETag and Last-Modified as they were (Azure may or may not
//!   change them: code must compare the ACL, not rely on the ETag);
//! - a write under a *file* (`a.csv/b`) is not refused, a recursive delete is one request (no
//!   `x-ms-continuation`) and takes no conditions, there is no rename, and listings keep
//!   Azurite's flat order (Azure lists an HNS account segment by segment);
//! - the ACL of a path Azurite deleted behind the stand-in's back is forgotten only when the
//!   stand-in deletes it.
//!
//! For tests, [`HnsLake::rewrite_when_read`] rewrites a file the first time anyone reads or
//! copies it (a writer racing the backup), [`HnsLake::refuse_owner_changes`] makes it refuse
//! owner and group changes (403), as Azure refuses them to a caller that is no superuser,
//! [`HnsLake::root_moves_with_children`] moves the root's ETag with each write under it,
//! [`HnsLake::refuse_directory_metadata`] refuses Set Blob Metadata on a directory, and
//! [`HnsLake::counts`] says what reached the lake.

mod acl;
mod dfs;
mod listing;
mod operation;
mod upstream;

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    sync::{Mutex, MutexGuard},
};

pub use acl::{AccessControl, DEFAULT_UMASK, SUPERUSER};

use operation::{operation, Operation};

use super::{
    refusals::{azure_error, query_value, with_header},
    serve::forward,
    wire::{Answer, Request},
    Shared,
};

/// Where a path is: account, container, path within the container (decoded; empty for the
/// container's root directory).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathKey {
    pub account: String,
    pub container: String,
    pub path: String,
}

impl PathKey {
    pub fn new(account: &str, container: &str, path: &str) -> PathKey {
        PathKey {
            account: account.to_owned(),
            container: container.to_owned(),
            path: path.trim_matches('/').to_owned(),
        }
    }

    /// The path-style request target of this path, each segment percent-encoded.
    fn target(&self) -> String {
        let mut url = url::Url::parse("http://proxy/").expect("a static URL");
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.clear().push(&self.account).push(&self.container);
            if !self.path.is_empty() {
                segments.extend(self.path.split('/'));
            }
        }
        url.path().to_owned()
    }

    fn parent(&self) -> Option<PathKey> {
        if self.path.is_empty() {
            return None;
        }
        let parent = self.path.rsplit_once('/').map_or("", |(parent, _)| parent);
        Some(PathKey::new(&self.account, &self.container, parent))
    }

    /// The request's path, when it names a container or a path in one.
    fn of(request: &Request) -> Option<PathKey> {
        PathKey::of_target(&request.target)
    }

    /// A path-style request target's path (`/account/container/path?query`).
    fn of_target(target: &str) -> Option<PathKey> {
        let path = target.split('?').next()?;
        let mut segments = path.trim_start_matches('/').splitn(3, '/');
        let account = segments.next().filter(|s| !s.is_empty())?;
        let container = segments.next().filter(|s| !s.is_empty())?;
        let blob = segments.next().unwrap_or("");
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .ok()
                .map(|d| d.into_owned())
        };
        Some(PathKey::new(
            &decode(account)?,
            &decode(container)?,
            &decode(blob)?,
        ))
    }
}

/// What reached the lake's accounts, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HnsCounts {
    /// Snapshot Blob requests (all refused).
    pub snapshots: u64,
    /// Requests that read or write blob index tags: Get/Set Blob Tags and writes with tags
    /// (refused), listings with `include=tags` (forwarded).
    pub tag_requests: u64,
    /// Refusals, by error code, with the request's method and path.
    pub refusals: Vec<(String, String)>,
    /// Directories created: by Create Path, and as missing parents of a file.
    pub directories_created: u64,
    pub access_reads: u64,
    pub access_writes: u64,
    pub listings_with_permissions: u64,
    pub paths_deleted: u64,
    /// Files rewritten by [`HnsLake::rewrite_when_read`].
    pub rewrites: u64,
    /// Owner or group changes refused ([`HnsLake::refuse_owner_changes`]).
    pub owner_refusals: u64,
    /// dfs requests (Create Path, Get/Set Access Control, Delete Path) by how they were
    /// authorized: a SharedKey signature (checked), a bearer token (its claims checked), a SAS.
    pub dfs_shared_key: u64,
    pub dfs_bearer: u64,
    pub dfs_sas: u64,
}

/// A file to rewrite with `bytes` when it is first read or copied.
struct Rewrite {
    key: PathKey,
    bytes: Vec<u8>,
    /// Before a setAccessControl of it ([`HnsLake::rewrite_before_access_set`]) rather than
    /// a read.
    before_access: bool,
}

struct Lake {
    paths: BTreeMap<PathKey, AccessControl>,
    counts: HnsCounts,
    rewrites: Vec<Rewrite>,
    /// [`HnsLake::refuse_owner_changes`].
    owner_changes_refused: bool,
    /// [`HnsLake::refuse_owner_values`].
    owner_values_refused: bool,
    /// [`HnsLake::refuse_account_information`].
    account_information_refused: bool,
    /// [`HnsLake::refuse_access_sets`].
    access_sets_refused: bool,
    /// [`HnsLake::ignore_access_sets`].
    access_sets_ignored: bool,
    /// [`HnsLake::root_without_etag`].
    root_without_etag: bool,
    /// [`HnsLake::root_moves_with_children`]: per (account, container), how many writes
    /// moved its root directory, and the Last-Modified of the latest; `None` while off.
    root_moves: Option<BTreeMap<(String, String), (u64, String)>>,
    /// [`HnsLake::refuse_directory_metadata`].
    directory_metadata_refused: bool,
    /// [`HnsLake::set_metadata_after_copy`]: the path, and its metadata's headers.
    metadata_after_copy: Vec<(PathKey, Vec<(String, String)>)>,
}

/// The hierarchical namespace of the accounts a stand-in proxy plays as ADLS Gen2 lakes.
pub struct HnsLake {
    accounts: BTreeSet<String>,
    lake: Mutex<Lake>,
}

impl std::fmt::Debug for HnsLake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnsLake")
            .field("accounts", &self.accounts)
            .finish_non_exhaustive()
    }
}

impl HnsLake {
    pub fn new<'a>(accounts: impl IntoIterator<Item = &'a str>) -> HnsLake {
        HnsLake {
            accounts: accounts.into_iter().map(str::to_owned).collect(),
            lake: Mutex::new(Lake {
                paths: BTreeMap::new(),
                counts: HnsCounts::default(),
                rewrites: Vec::new(),
                owner_changes_refused: false,
                owner_values_refused: false,
                account_information_refused: false,
                access_sets_refused: false,
                access_sets_ignored: false,
                root_without_etag: false,
                root_moves: None,
                directory_metadata_refused: false,
                metadata_after_copy: Vec::new(),
            }),
        }
    }

    fn lake(&self) -> MutexGuard<'_, Lake> {
        self.lake.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn counts(&self) -> HnsCounts {
        self.lake().counts.clone()
    }

    pub fn reset_counts(&self) {
        self.lake().counts = HnsCounts::default();
    }

    /// The access control the stand-in keeps for a path (`""`: the container's root).
    pub fn access_control(
        &self,
        account: &str,
        container: &str,
        path: &str,
    ) -> Option<AccessControl> {
        let key = PathKey::new(account, container, path);
        if key.path.is_empty() {
            return Some(
                self.lake()
                    .paths
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(AccessControl::root),
            );
        }
        self.lake().paths.get(&key).cloned()
    }

    /// From now on, answers a setAccessControl that would change a path's owner or owning group
    /// with 403 `AuthorizationPermissionMismatch`, as Azure answers a caller that is neither a
    /// superuser nor Storage Blob Data Owner. The stand-in's simplification: every caller is
    /// `$superuser` otherwise, so the refusal is a switch, not a principal.
    pub fn refuse_owner_changes(&self) {
        self.lake().owner_changes_refused = true;
    }

    /// From now on, answers a setAccessControl that would change a path's owner or group
    /// with 400 `InvalidHeaderValue` (Path - Update's answer to a header value it cannot
    /// take: an owner or group that is no object ID or name the tenant knows), counted.
    pub fn refuse_owner_values(&self) {
        self.lake().owner_values_refused = true;
    }

    /// From now on, answers every setAccessControl with 403 `AuthorizationPermissionMismatch`
    /// (a worker that dies before its access control call lands looks the same): what a path
    /// has is then what it was created with.
    pub fn refuse_access_sets(&self) {
        self.lake().access_sets_refused = true;
    }

    /// From now on, answers every setAccessControl with 200 and keeps nothing of it (a service
    /// that accepted a change it did not make): only reading it back tells.
    pub fn ignore_access_sets(&self) {
        self.lake().access_sets_ignored = true;
    }

    /// From now on, moves the root directory's ETag and Last-Modified with each blob written
    /// or deleted in its container (as a POSIX directory's mtime moves when a child is created
    /// or deleted; whether Azure moves a directory's ETag so is not documented).
    pub fn root_moves_with_children(&self) {
        self.lake().root_moves = Some(BTreeMap::new());
    }

    /// The root's ETag and Last-Modified as [`HnsLake::root_moves_with_children`] moved them
    /// from the file system's `etag`; `None` when they were not moved.
    fn moved_root(&self, key: &PathKey, etag: &str) -> Option<(String, String)> {
        let lake = self.lake();
        let (moves, modified) = lake
            .root_moves
            .as_ref()?
            .get(&(key.account.clone(), key.container.clone()))?;
        let etag = format!("\"{}{moves:X}\"", etag.trim_matches('"'));
        Some((etag, modified.clone()))
    }

    /// A write or deletion of `key` that moves its container's root directory, if so told.
    fn child_written(&self, key: &PathKey) {
        let mut lake = self.lake();
        let Some(moves) = lake.root_moves.as_mut() else {
            return;
        };
        let now = lakebackup::storage::testing::http_date(time::OffsetDateTime::now_utc());
        let entry = moves
            .entry((key.account.clone(), key.container.clone()))
            .or_insert((0, String::new()));
        *entry = (entry.0 + 1, now);
    }

    /// Sets `container/path`'s user metadata to `metadata` (Set Blob Metadata, as another
    /// writer would) right after the first copy to it ends, before the copy is answered: a
    /// write the copy's properties (`x-ms-copy-*`) stay through.
    pub fn set_metadata_after_copy(
        &self,
        account: &str,
        container: &str,
        path: &str,
        metadata: &[(&str, &str)],
    ) {
        let headers = metadata
            .iter()
            .map(|(name, value)| (format!("x-ms-meta-{name}"), (*value).to_owned()))
            .collect();
        let key = PathKey::new(account, container, path);
        self.lake().metadata_after_copy.push((key, headers));
    }

    /// From now on, refuses Set Blob Metadata on a directory with 409
    /// `OperationNotSupportedOnDirectory` (Azure's own Data Lake SDKs send it for a directory's
    /// metadata, so Azure takes it; code must not depend on that).
    pub fn refuse_directory_metadata(&self) {
        self.lake().directory_metadata_refused = true;
    }

    /// From now on, answers Get Access Control on the root directory without an ETag or
    /// Last-Modified (Azure's answer there is not documented to carry them).
    pub fn root_without_etag(&self) {
        self.lake().root_without_etag = true;
    }

    /// From now on, answers Get Account Information (at the account and in a container) with
    /// 403 `AuthorizationPermissionMismatch`, as Azure answers a caller not allowed to read it.
    pub fn refuse_account_information(&self) {
        self.lake().account_information_refused = true;
    }

    /// Rewrites `container/path` of `account` with `bytes` (a Put Blob straight to Azurite,
    /// not counted by the proxy) just before the first request that reads it (a GET of it) or
    /// copies it (a copy whose source it is) is forwarded.
    pub fn rewrite_when_read(&self, account: &str, container: &str, path: &str, bytes: Vec<u8>) {
        self.lake().rewrites.push(Rewrite {
            key: PathKey::new(account, container, path),
            bytes,
            before_access: false,
        });
    }

    /// Rewrites `container/path` of `account` with `bytes` (as [`HnsLake::rewrite_when_read`])
    /// just before the first setAccessControl of it is answered: an ingestion's write landing
    /// between a restore's write (or listing) and its access control.
    pub fn rewrite_before_access_set(
        &self,
        account: &str,
        container: &str,
        path: &str,
        bytes: Vec<u8>,
    ) {
        self.lake().rewrites.push(Rewrite {
            key: PathKey::new(account, container, path),
            bytes,
            before_access: true,
        });
    }

    fn count(&self, change: impl FnOnce(&mut HnsCounts)) {
        change(&mut self.lake().counts);
    }

    /// The access control of `key`, registering the defaults of a new path (under its parent's
    /// default ACL) when it has none.
    fn access_or_new(&self, key: &PathKey, directory: bool) -> AccessControl {
        let mut lake = self.lake();
        if let Some(found) = lake.paths.get(key) {
            return found.clone();
        }
        let parent = key
            .parent()
            .and_then(|p| lake.paths.get(&p).cloned())
            .unwrap_or_else(AccessControl::root);
        let created = AccessControl::child_of(&parent, SUPERUSER, directory, DEFAULT_UMASK);
        if !key.path.is_empty() {
            lake.paths.insert(key.clone(), created.clone());
        }
        created
    }

    fn set_access(&self, key: &PathKey, access: AccessControl) {
        self.lake().paths.insert(key.clone(), access);
    }

    fn knows_directory(&self, key: &PathKey) -> bool {
        key.path.is_empty() || self.lake().paths.get(key).is_some_and(|a| a.directory)
    }

    /// The paths under directory `key`, deepest first.
    fn under(&self, key: &PathKey) -> Vec<PathKey> {
        let prefix = format!("{}/", key.path);
        let mut found: Vec<PathKey> = self
            .lake()
            .paths
            .keys()
            .filter(|k| {
                k.account == key.account
                    && k.container == key.container
                    && (key.path.is_empty() || k.path.starts_with(&prefix))
                    && !k.path.is_empty()
            })
            .cloned()
            .collect();
        found.sort_by_key(|k| std::cmp::Reverse(k.path.matches('/').count()));
        found
    }

    fn forget(&self, key: &PathKey) {
        self.lake().paths.remove(key);
    }

    fn take_rewrite(&self, key: &PathKey, before_access: bool) -> Option<Vec<u8>> {
        let mut lake = self.lake();
        let at = lake
            .rewrites
            .iter()
            .position(|r| &r.key == key && r.before_access == before_access)?;
        lake.counts.rewrites += 1;
        Some(lake.rewrites.remove(at).bytes)
    }
}

/// An answer the stand-in gives itself.
fn own(bytes: Vec<u8>, request: &Request) -> Answer {
    Answer {
        interim: Vec::new(),
        head: bytes,
        body: Vec::new(),
        close: request.close,
        spent: false,
    }
}

fn status_of(answer: &Answer) -> u16 {
    let head = String::from_utf8_lossy(&answer.head);
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The stand-in's answer to `request` (forwarded as `head`), for a proxy that plays lakes with
/// a hierarchical namespace; any other request is forwarded as it came.
pub(super) async fn answer(shared: &Shared, request: &Request, head: &[u8]) -> io::Result<Answer> {
    let Some(lake) = shared.hns.as_deref() else {
        return forward(shared, request, head).await;
    };
    before_copy(shared, lake, request).await?;
    let account = request
        .target
        .trim_start_matches('/')
        .split(['/', '?'])
        .next();
    if !account.is_some_and(|a| lake.accounts.contains(a)) {
        return forward(shared, request, head).await;
    }
    let operation = operation(request);
    if let Operation::AccountInformation = operation {
        if lake.lake().account_information_refused {
            return Ok(dfs::permission_mismatch(request));
        }
        let mut answer = forward(shared, request, head).await?;
        if status_of(&answer) == 200 {
            answer.head = with_header(&answer.head, "x-ms-is-hns-enabled", "true");
        }
        return Ok(answer);
    }
    let Some(key) = PathKey::of(request) else {
        return forward(shared, request, head).await;
    };
    // The dfs operations the stand-in answers itself: their authorization checked first.
    let dfs = matches!(
        operation,
        Operation::CreatePath { .. }
            | Operation::GetAccessControl
            | Operation::SetAccessControl
            | Operation::DeletePath { .. }
    );
    if let Some(refusal) = dfs
        .then(|| dfs::authentication_refusal(shared, lake, request, &key))
        .flatten()
    {
        return Ok(own(refusal, request));
    }
    match operation {
        Operation::AccountInformation => forward(shared, request, head).await,
        Operation::Refused(what) => {
            lake.count(|c| match what {
                "snapshot" => c.snapshots += 1,
                _ => c.tag_requests += 1,
            });
            Ok(own(refuse_unsupported(lake, request), request))
        }
        Operation::CreatePath { directory } => {
            dfs::create_path(shared, lake, request, &key, directory).await
        }
        Operation::GetAccessControl => dfs::get_access_control(shared, lake, request, &key).await,
        Operation::SetAccessControl => dfs::set_access_control(shared, lake, request, &key).await,
        Operation::DeletePath { recursive } => {
            dfs::delete_path(shared, lake, request, &key, recursive).await
        }
        Operation::List { permissions, tags } => {
            if tags {
                lake.count(|c| c.tag_requests += 1);
            }
            if !permissions {
                return forward(shared, request, head).await;
            }
            listing::list_with_permissions(shared, lake, request, head, &key).await
        }
        Operation::CreateBlob => {
            let directory = request.head.headers.iter().any(|(n, v)| {
                n.eq_ignore_ascii_case("x-ms-meta-hdi_isfolder") && v.trim() == "true"
            });
            dfs::ensure_parents(shared, lake, request, &key).await?;
            let answer = forward(shared, request, head).await?;
            if (200..300).contains(&status_of(&answer)) {
                lake.access_or_new(&key, directory);
                lake.child_written(&key);
                if request.head.header("x-ms-copy-source").is_some() {
                    after_copy(shared, lake, &key).await?;
                }
            }
            Ok(answer)
        }
        Operation::DeleteBlob => {
            let answer = forward(shared, request, head).await?;
            if (200..300).contains(&status_of(&answer))
                && query_value(request, "snapshot").is_none()
            {
                lake.forget(&key);
                lake.child_written(&key);
            }
            Ok(answer)
        }
        Operation::Read => {
            if let Some(bytes) = lake.take_rewrite(&key, false) {
                upstream::put_blob(shared, &key, bytes, &[]).await?;
            }
            forward(shared, request, head).await
        }
        Operation::Other => {
            let sets_metadata = request.method.eq_ignore_ascii_case("PUT")
                && query_value(request, "comp").is_some_and(|c| c.eq_ignore_ascii_case("metadata"));
            let refused = lake.lake().directory_metadata_refused;
            if sets_metadata && refused && lake.knows_directory(&key) {
                let message = "The requested operation is not supported on a directory.";
                return Ok(dfs::error(
                    request,
                    &format!("409 {message}"),
                    "OperationNotSupportedOnDirectory",
                    message,
                ));
            }
            forward(shared, request, head).await
        }
    }
}

/// A copy to `key` just ended: its metadata set by another writer, where a test asked.
async fn after_copy(shared: &Shared, lake: &HnsLake, key: &PathKey) -> io::Result<()> {
    let headers = {
        let mut inner = lake.lake();
        let due = &mut inner.metadata_after_copy;
        match due.iter().position(|(path, _)| path == key) {
            Some(at) => due.remove(at).1,
            None => return Ok(()),
        }
    };
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let set = upstream::send(shared, key, "PUT", "comp=metadata", &headers, Vec::new()).await?;
    assert_eq!(set.status, 200, "the other writer's Set Blob Metadata");
    lake.count(|c| c.rewrites += 1);
    Ok(())
}

/// A copy (into any account) whose source is a lake's file due for a rewrite: rewritten first.
async fn before_copy(shared: &Shared, lake: &HnsLake, request: &Request) -> io::Result<()> {
    let Some(source) = request.head.header("x-ms-copy-source") else {
        return Ok(());
    };
    let Some(key) = url::Url::parse(source)
        .ok()
        .and_then(|url| PathKey::of_target(url.path()))
    else {
        return Ok(());
    };
    if let Some(bytes) = lake.take_rewrite(&key, false) {
        upstream::put_blob(shared, &key, bytes, &[]).await?;
    }
    Ok(())
}

/// Azure's refusal of a feature an HNS account does not support (snapshots, index tags).
fn refuse_unsupported(lake: &HnsLake, request: &Request) -> Vec<u8> {
    const CODE: &str = "FeatureNotYetSupportedForHierarchicalNamespaceAccounts";
    let path = request.target.split('?').next().unwrap_or("").to_owned();
    lake.count(|c| {
        c.refusals
            .push((CODE.to_owned(), format!("{} {path}", request.method)))
    });
    azure_error(
        "409 This feature is not yet supported for accounts with hierarchical namespace.",
        CODE,
        "This feature is not yet supported for accounts with hierarchical namespace.",
        request,
        &[],
    )
}
