//! The few calls of the Data Lake Storage Gen2 (dfs) REST API a restore into an account with a
//! hierarchical namespace needs, and no more: Path - Create of a directory, and Path - Update
//! `action=setAccessControl`. There is no datalake crate in Azure's Rust SDK, so they are sent
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

use std::sync::Arc;

use azure_core::http::{
    policies::{auth::BearerTokenAuthorizationPolicy, Policy},
    Context, Method, Pipeline, PipelineSendOptions, Request, Url,
};
use azure_storage_blob::BlobContainerClientOptions;

use super::{StorageAccount, StorageError, StorageResultExt};
use crate::core::properties::Access;

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

    /// Sends one dfs request with `headers`, success being one of `success`.
    async fn dfs_send(
        &self,
        method: Method,
        url: Url,
        headers: &[(&'static str, &str)],
        success: &'static [u16],
        operation: impl FnOnce() -> String,
    ) -> Result<(), StorageError> {
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
        self.dfs_pipeline()
            .send(&Context::new(), &mut request, Some(options))
            .await
            .during(operation)?;
        Ok(())
    }

    /// Creates directory `path` of `container` (its missing parents with it, as Path - Create
    /// does), only where no path stands: `false` when one does (a redelivery, or the lake's
    /// own). It is created with the service's defaults (the parent's default ACL, or the umask);
    /// its own access control is set afterwards ([`StorageAccount::set_access_control`]).
    pub async fn create_directory(
        &self,
        container: &str,
        path: &str,
    ) -> Result<bool, StorageError> {
        let url = self.dfs_url(container, path, &[("resource", "directory")])?;
        let sent = self
            .dfs_send(Method::Put, url, &[("if-none-match", "*")], &[201], || {
                format!("creating directory {container}/{path}")
            })
            .await;
        match sent {
            Ok(()) => Ok(true),
            Err(e) if e.status == Some(409) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sets exactly `access` on `container/path`, where `current` (what the path has now, when
    /// known) differs: its ACL (access and, on a directory, default entries) with its owner and
    /// group in one request, then its permissions (`x-ms-permissions`) wherever the sticky bit
    /// the path has now (`sticky_now`) is not the one wanted — set or cleared: the ACL cannot
    /// say it, a new ACL keeps the path's, and the two headers never go in one request. Where
    /// the owner or group is refused (403: it takes a superuser), the ACL is set alone and the
    /// refusal returned. Setting what is already set changes nothing, so a redelivery may do it
    /// again.
    pub async fn set_access_control(
        &self,
        container: &str,
        path: &str,
        access: &Access,
        now: AccessNow<'_>,
    ) -> Result<(), AccessRefused> {
        let url = || self.dfs_url(container, path, &[("action", "setAccessControl")]);
        let what = || format!("setting the access control of {container}/{path}");
        let current = now.current;
        let same = |field: fn(&Access) -> &str| current.is_some_and(|c| field(c) == field(access));
        let mode_same = same(|a| &a.acl) && same(|a| &a.permissions);
        let owner_same = same(|a| &a.owner) && same(|a| &a.group);
        let acl = ("x-ms-acl", access.acl.as_str());
        let owner = [
            ("x-ms-owner", access.owner.as_str()),
            ("x-ms-group", access.group.as_str()),
        ];
        let mut refused = None;
        if !owner_same {
            let all = [acl, owner[0], owner[1]];
            match self
                .dfs_send(Method::Patch, url()?, &all, &[200], what)
                .await
            {
                Ok(()) => {}
                // Refused for the owner or group: the ACL alone, below.
                Err(e) if e.status == Some(403) => refused = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        if refused.is_some() || (owner_same && !mode_same) {
            self.dfs_send(Method::Patch, url()?, &[acl], &[200], what)
                .await?;
        }
        if !mode_same && access.sticky() != now.sticky {
            let permissions = [(
                "x-ms-permissions",
                symbolic_permissions(&access.permissions),
            )];
            self.dfs_send(Method::Patch, url()?, &permissions, &[200], what)
                .await?;
        }
        match refused {
            Some(e) => Err(AccessRefused::Owner(e)),
            None => Ok(()),
        }
    }
}

/// What a path's access control is now, as far as a restore knows it.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessNow<'a> {
    /// Its whole access control, when known (listed, and not rewritten since).
    pub current: Option<&'a Access>,
    /// Whether it has the sticky bit (a path just created has none).
    pub sticky: bool,
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

/// `x-ms-permissions` of `permissions` as a listing gives them: the symbolic form without the
/// `+` an extended ACL adds (the service takes `rwxr-x--T` or 4-digit octal, not the `+`).
fn symbolic_permissions(permissions: &str) -> &str {
    permissions.trim_end_matches('+')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dfs_endpoint_is_the_blob_endpoint_with_dfs_for_blob() {
        let dfs = |blob: &str| dfs_of_blob_endpoint(&Url::parse(blob).unwrap()).to_string();
        assert_eq!(
            dfs("https://lake.blob.core.windows.net/"),
            "https://lake.dfs.core.windows.net/"
        );
        assert_eq!(
            dfs("https://lake.blob.core.chinacloudapi.cn"),
            "https://lake.dfs.core.chinacloudapi.cn/"
        );
        assert_eq!(
            dfs("http://127.0.0.1:10000/devstoreaccount1"),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert_eq!(dfs("http://localhost:9/acct"), "http://localhost:9/acct");
    }

    #[test]
    fn permissions_are_sent_without_the_extended_acl_mark() {
        assert_eq!(symbolic_permissions("rwxr-x---+"), "rwxr-x---");
        assert_eq!(symbolic_permissions("rwxr-x--t+"), "rwxr-x--t");
        assert_eq!(symbolic_permissions("rwxrwxrwT"), "rwxrwxrwT");
    }
}
