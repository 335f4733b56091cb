//! The few calls of the Data Lake Storage Gen2 (dfs) REST API a restore into an account with a
//! hierarchical namespace needs, and no more: Path - Create of a directory, Path - Get
//! Properties `action=getAccessControl` (the file system's root directory, `{fs}/`, is read so:
//! no listing shows it), and Path - Update `action=setAccessControl`. There is no datalake crate in Azure's Rust SDK, so they are sent
//! on `azure_core`'s pipeline with this account's own client options: the same retries,
//! transport, SharedKey signing (`shared_key`), SAS (appended to the URL) or bearer token
//! (`https://storage.azure.com/.default`, as the blob calls ask) — so keys-off works here as
//! it does for blobs — and errors that pass through `StorageError` (no secret in any text).
//!
//! Where the dfs endpoint is: `{CONNECTION}__dfsServiceUri` when an identity-based connection
//! sets it; else the blob endpoint with its host's `.blob.` label swapped for `.dfs.`
//! (`https://lake.blob.core.windows.net` → `https://lake.dfs.core.windows.net`, as Azure's
//! Python and .NET SDKs derive it); an IP-style or `localhost` endpoint
//! (`http://127.0.0.1:PORT/account`, an emulator's or a stand-in's) is used as it is, the dfs
//! operations told apart by their query (`resource=`, `action=`).
//!
//! References (Azure REST API, "Data Lake Storage Gen2"): Path - Create
//! (`PUT {fs}/{path}?resource=directory`, `If-None-Match: *` to refuse an existing path with
//! 409 `PathAlreadyExists`); Path - Update (`PATCH {fs}/{path}?action=setAccessControl` with
//! `x-ms-owner`, `x-ms-group`, and either `x-ms-permissions` or `x-ms-acl` — the two are
//! exclusive; changing the owner, or the group to one the caller is not in, takes a superuser:
//! the account key, or Storage Blob Data Owner).

use std::{collections::HashMap, sync::Arc};

use azure_core::http::{
    headers::{HeaderName, Headers},
    policies::{auth::BearerTokenAuthorizationPolicy, Policy},
    Context, Method, Pipeline, PipelineSendOptions, Request, Url,
};
use azure_storage_blob::BlobContainerClientOptions;

use super::{ErrorCode, StorageAccount, StorageError, StorageResultExt};
use crate::core::{
    etag::{normalize_etag, quoted_etag},
    properties::Access,
};

/// The service version the dfs calls are sent with: the blob client's own.
fn service_version() -> String {
    BlobContainerClientOptions::default().version
}

impl StorageAccount {
    /// The dfs endpoint of this account (see the module's doc).
    pub fn dfs_endpoint(&self) -> Result<Url, StorageError> {
        if let Some(url) = &self.connection.dfs_endpoint {
            return Ok(url.clone());
        }
        Ok(dfs_of_blob_endpoint(self.blob_endpoint()?))
    }

    /// The pipeline the dfs calls go through (made once).
    fn dfs_pipeline(&self) -> &Pipeline {
        self.dfs_pipeline.get_or_init(|| {
            let mut per_try: Vec<Arc<dyn Policy>> = Vec::new();
            if let Some(credential) = &self.token_credential {
                per_try.push(Arc::new(BearerTokenAuthorizationPolicy::new(
                    credential.clone(),
                    vec!["https://storage.azure.com/.default"],
                )));
            }
            Pipeline::new(
                option_env!("CARGO_PKG_NAME"),
                option_env!("CARGO_PKG_VERSION"),
                self.client_options.clone(),
                Vec::new(),
                per_try,
                None,
            )
        })
    }

    /// `container/path` at the dfs endpoint, with `query` and the connection's SAS.
    fn dfs_url(
        &self,
        container: &str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Url, StorageError> {
        let mut url = self.with_sas(self.dfs_endpoint()?);
        if let Ok(mut segments) = url.path_segments_mut() {
            segments
                .pop_if_empty()
                .push(container)
                .extend(path.split('/'));
        }
        url.query_pairs_mut().extend_pairs(query);
        Ok(url)
    }

    /// Sends one dfs request with `headers`, success being one of `success`: the ETag it
    /// answers with, where it does.
    async fn dfs_send(
        &self,
        method: Method,
        url: Url,
        headers: &[(&'static str, &str)],
        success: &'static [u16],
        operation: impl FnOnce() -> String,
    ) -> Result<Option<String>, StorageError> {
        let answer = self
            .dfs_answer(method, url, headers, success, operation)
            .await?;
        Ok(answer.get_optional_string(&HeaderName::from_static("etag")))
    }

    /// Sends one dfs request with `headers`, success being one of `success`: the answer's
    /// headers.
    async fn dfs_answer(
        &self,
        method: Method,
        url: Url,
        headers: &[(&'static str, &str)],
        success: &'static [u16],
        operation: impl FnOnce() -> String,
    ) -> Result<Headers, StorageError> {
        let mut request = Request::new(url, method);
        request.insert_header("x-ms-version", service_version());
        request.insert_header("content-length", "0");
        for (name, value) in headers {
            request.insert_header(*name, value.to_string());
        }
        let options = PipelineSendOptions {
            check_success: azure_core::error::CheckSuccessOptions {
                success_codes: success,
            },
            ..Default::default()
        };
        let response = self
            .dfs_pipeline()
            .send(&Context::new(), &mut request, Some(options))
            .await
            .during(operation)?;
        Ok(response.headers().clone())
    }

    /// The access control of `container/path` (`""`: the file system's root directory), its
    /// ETag and Last-Modified, as Path - Get Properties `action=getAccessControl` answers
    /// (`HEAD {fs}/{path}?action=getAccessControl`; the root is `HEAD {fs}/?action=...`); `None`
    /// when no such path stands (404).
    pub async fn get_access_control(
        &self,
        container: &str,
        path: &str,
    ) -> Result<Option<PathAccess>, StorageError> {
        let url = self.dfs_url(container, path, &[("action", "getAccessControl")])?;
        let sent = self
            .dfs_answer(Method::Head, url, &[], &[200], || {
                format!("reading the access control of {container}/{path}")
            })
            .await;
        let headers = match sent {
            Ok(headers) => headers,
            Err(e) if e.status == Some(404) => return Ok(None),
            Err(e) => return Err(e),
        };
        let header = |name: &'static str| {
            headers
                .get_optional_string(&HeaderName::from_static(name))
                .unwrap_or_default()
        };
        let last_modified = azure_core::time::parse_rfc7231(&header("last-modified")).ok();
        Ok(Some(PathAccess {
            access: Access {
                owner: header("x-ms-owner"),
                group: header("x-ms-group"),
                permissions: header("x-ms-permissions"),
                acl: header("x-ms-acl"),
            },
            etag: crate::core::etag::normalize_etag(&header("etag")).to_owned(),
            last_modified,
        }))
    }

    /// Creates directory `path` of `container` (its missing parents with it, as Path - Create
    /// does), only where no path stands: `None` when one does (a redelivery, or the lake's own).
    /// With `access`, in one request with its owner, group and ACL (`x-ms-umask: 0000`, so
    /// nothing narrows the ACL given), so that no moment leaves it with the access its parent's
    /// default ACL would give; where that request is refused (403: the owner takes a superuser;
    /// 400: headers the service does not take), created plainly, its access to be set after.
    pub async fn create_directory(
        &self,
        container: &str,
        path: &str,
        access: Option<&Access>,
        metadata: &HashMap<String, String>,
    ) -> Result<Option<CreatedDirectory>, StorageError> {
        let url = || self.dfs_url(container, path, &[("resource", "directory")]);
        let properties = x_ms_properties(metadata);
        let properties = ("x-ms-properties", properties.as_str());
        let what = || format!("creating directory {container}/{path}");
        let created = |etag: Option<String>, with_access| {
            Ok(Some(CreatedDirectory {
                etag: etag.unwrap_or_default(),
                with_access,
            }))
        };
        if let Some(access) = access {
            let mut headers = vec![
                ("if-none-match", "*"),
                ("x-ms-owner", access.owner.as_str()),
                ("x-ms-group", access.group.as_str()),
                ("x-ms-acl", access.acl.as_str()),
                ("x-ms-umask", "0000"),
            ];
            if !metadata.is_empty() {
                headers.push(properties);
            }
            match self
                .dfs_send(Method::Put, url()?, &headers, &[201], what)
                .await
            {
                Ok(etag) => return created(etag, true),
                Err(e) if e.status == Some(409) => return Ok(None),
                Err(e) if matches!(e.status, Some(400 | 403)) => {
                    tracing::info!(path, error = %e, "created without its access, set after")
                }
                Err(e) => return Err(e),
            }
        }
        let mut headers = vec![("if-none-match", "*")];
        if !metadata.is_empty() {
            headers.push(properties);
        }
        let sent = self
            .dfs_send(Method::Put, url()?, &headers, &[201], what)
            .await;
        match sent {
            Ok(etag) => created(etag, false),
            Err(e) if e.status == Some(409) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets exactly `access` on `container/path`, where `current` (what the path has now, when
    /// known) differs: its ACL (access and, on a directory, default entries) with its owner and
    /// group in one request, then its permissions (`x-ms-permissions`) wherever the sticky bit
    /// the path has now (`sticky_now`) is not the one wanted — set or cleared: the ACL cannot
    /// say it, a new ACL keeps the path's, and the two headers never go in one request. Where
    /// the owner or group is refused (403: it takes a superuser; or a 400 for a header value the
    /// service cannot take: [`owner_refusal`]), the ACL is set alone and the refusal returned. Each request is sent `If-Match` the ETag in `now` (where known): a
    /// path written since is left alone ([`AccessRefused::Changed`]). Setting what is already
    /// set changes nothing, so a redelivery may do it again. What was set is read back (Get
    /// Access Control): a path that does not hold it then (a service that answered 200 and
    /// kept something else) is [`AccessRefused::NotHeld`]; one whose ETag moved on since the
    /// last answer was written by someone else ([`AccessRefused::Changed`]).
    pub async fn set_access_control(
        &self,
        container: &str,
        path: &str,
        access: &Access,
        now: AccessNow<'_>,
    ) -> Result<(), AccessRefused> {
        let current = now.current;
        let same = |field: fn(&Access) -> &str| current.is_some_and(|c| field(c) == field(access));
        let mode_same = same(|a| &a.acl) && same(|a| &a.permissions);
        let owner_same = same(|a| &a.owner) && same(|a| &a.group);
        let acl = ("x-ms-acl", access.acl.as_str());
        let owner = [
            ("x-ms-owner", access.owner.as_str()),
            ("x-ms-group", access.group.as_str()),
        ];
        let mut set = Conditional {
            account: self,
            container,
            path,
            etag: now.if_match.map(str::to_owned),
            sent: false,
        };
        let mut refused = None;
        if !owner_same {
            match set.patch(&[acl, owner[0], owner[1]]).await {
                Ok(()) => {}
                // Refused for the owner or group: the ACL alone, below.
                Err(AccessRefused::Storage(e)) if owner_refusal(&e) => refused = Some(e),
                Err(e) => return Err(e),
            }
        }
        if refused.is_some() || (owner_same && !mode_same) {
            set.patch(&[acl]).await?;
        }
        if !mode_same && access.sticky() != now.sticky {
            let permissions = symbolic_permissions(&access.permissions);
            set.patch(&[("x-ms-permissions", permissions)]).await?;
        }
        if set.sent {
            set.read_back(access, refused.is_none()).await?;
        }
        match refused {
            Some(e) => Err(AccessRefused::Owner(e)),
            None => Ok(()),
        }
    }
}

/// Whether a Set Access Control with an owner and group was refused for them: 403 (changing
/// them takes a superuser), or 400 with a code Path - Update gives a header value it cannot
/// take (`InvalidHeaderValue`, `InvalidInput`: an owner or group that is no object ID or name
/// the tenant knows) — not any 400. Sent again without them, such a request sets the ACL or
/// fails for its own reason.
fn owner_refusal(e: &StorageError) -> bool {
    let code = |name: &str| e.code == Some(ErrorCode::Other(name.to_owned()));
    match e.status {
        Some(403) => true,
        Some(400) => code("InvalidHeaderValue") || code("InvalidInput"),
        _ => false,
    }
}

/// Set Access Control requests on one path, each sent `If-Match` the ETag the path had when
/// the restore wrote or listed it (then the one each answer gives), so that a path rewritten
/// since (an ingestion's write) is never given the instant's access control: 412 is
/// [`AccessRefused::Changed`].
struct Conditional<'a> {
    account: &'a StorageAccount,
    container: &'a str,
    path: &'a str,
    etag: Option<String>,
    /// A request was sent (and answered 200).
    sent: bool,
}

impl Conditional<'_> {
    /// Reads back what the path holds now: `access` (its owner and group only where
    /// `with_owner`), at the ETag the last answer gave where it is known.
    async fn read_back(&self, access: &Access, with_owner: bool) -> Result<(), AccessRefused> {
        let held = self
            .account
            .get_access_control(self.container, self.path)
            .await?
            .ok_or(AccessRefused::Changed)?;
        let known = self.etag.as_deref().filter(|e| !e.is_empty());
        if known.is_some_and(|etag| normalize_etag(etag) != held.etag) {
            return Err(AccessRefused::Changed);
        }
        let owner_held = held.access.owner == access.owner && held.access.group == access.group;
        // Permissions not given (a caller that sets an ACL only) are not asked for.
        let permissions_held =
            access.permissions.is_empty() || held.access.permissions == access.permissions;
        let mode_held = held.access.acl == access.acl && permissions_held;
        match mode_held && (owner_held || !with_owner) {
            true => Ok(()),
            false => Err(AccessRefused::NotHeld(held.access)),
        }
    }

    async fn patch(&mut self, headers: &[(&'static str, &str)]) -> Result<(), AccessRefused> {
        let (container, path) = (self.container, self.path);
        let url = self
            .account
            .dfs_url(container, path, &[("action", "setAccessControl")])?;
        let if_match = self
            .etag
            .as_deref()
            .filter(|e| !e.is_empty())
            .map(quoted_etag);
        let mut all = headers.to_vec();
        if let Some(etag) = &if_match {
            all.push(("if-match", etag.as_str()));
        }
        let sent = self
            .account
            .dfs_send(Method::Patch, url, &all, &[200], || {
                format!("setting the access control of {container}/{path}")
            })
            .await;
        match sent {
            Ok(etag) => {
                self.sent = true;
                if self.etag.is_some() {
                    self.etag = etag.or(self.etag.take());
                }
                Ok(())
            }
            Err(e) if e.status == Some(412) && if_match.is_some() => Err(AccessRefused::Changed),
            Err(e) => Err(e.into()),
        }
    }
}

/// A path's access control as Get Access Control answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathAccess {
    pub access: Access,
    /// Its ETag, unquoted (empty where the answer had none).
    pub etag: String,
    /// Its Last-Modified, where the answer had one.
    pub last_modified: Option<time::OffsetDateTime>,
}

/// A directory Path - Create made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedDirectory {
    /// Its ETag (empty where the answer had none).
    pub etag: String,
    /// Created with the owner, group and ACL asked (its sticky bit, if any, is still to set).
    pub with_access: bool,
}

/// What a path's access control is now, as far as a restore knows it.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessNow<'a> {
    /// Its whole access control, when known (listed, and not rewritten since).
    pub current: Option<&'a Access>,
    /// Whether it has the sticky bit (a path just created has none).
    pub sticky: bool,
    /// The ETag it had when the restore wrote or listed it, where known: its access control
    /// is set only while it has it.
    pub if_match: Option<&'a str>,
}

/// Why an access control was not all set.
#[derive(Debug, thiserror::Error)]
pub enum AccessRefused {
    /// The ACL (and sticky bit) are set; the owner and group were refused (403: changing them
    /// takes a superuser or Storage Blob Data Owner).
    #[error(
        "its owner and group were refused (it takes a superuser or Storage Blob Data Owner): {0}"
    )]
    Owner(StorageError),
    /// The path was written since the restore wrote or listed it (412 to `If-Match`): its
    /// access control was left as the writer's.
    #[error("it was written since the restore saw it: its access control was left alone")]
    Changed,
    /// Set (the service answered 200), yet read back the path holds this access control.
    #[error(
        "the service accepted its access control, yet it holds owner {} group {} permissions {} \
         ACL {}",
        .0.owner, .0.group, .0.permissions, .0.acl
    )]
    NotHeld(Access),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The dfs endpoint of a blob endpoint: `.blob.` swapped for `.dfs.` in a host name; an IP or
/// `localhost` endpoint as it is.
fn dfs_of_blob_endpoint(blob: &Url) -> Url {
    let mut url = blob.clone();
    let host = blob.host_str().unwrap_or_default();
    let path_style = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok();
    if !path_style {
        if let Some((account, rest)) = host.split_once(".blob.") {
            let _ = url.set_host(Some(&format!("{account}.dfs.{rest}")));
        }
    }
    url
}

/// `x-ms-properties` of user metadata: `name=base64(value)`, comma-separated (Path - Create).
fn x_ms_properties(metadata: &HashMap<String, String>) -> String {
    use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
    let mut pairs: Vec<String> = metadata
        .iter()
        .map(|(name, value)| format!("{name}={}", BASE64.encode(value)))
        .collect();
    pairs.sort();
    pairs.join(",")
}

/// `x-ms-permissions` of `permissions` as a listing gives them: the symbolic form without the
/// `+` an extended ACL adds (the service takes `rwxr-x--T` or 4-digit octal, not the `+`).
fn symbolic_permissions(permissions: &str) -> &str {
    permissions.trim_end_matches('+')
}

#[cfg(test)]
mod tests;
