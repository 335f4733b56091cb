//! The dfs operations the stand-in answers itself: Create Path, Get and Set Access Control,
//! Delete Path; and the parent directories a new file needs.

use std::io;

use super::{
    super::{
        refusals::{azure_error, query_value},
        wire::{Answer, Request},
        Shared,
    },
    acl::{AccessControl, DEFAULT_UMASK, SUPERUSER},
    own, upstream, HnsLake, PathKey,
};

/// A SharedKey signature checked with the account's key, a bearer token's claims checked as
/// Azurite's OAuth mode checks them (`aud` storage, `iss` an Entra issuer, unexpired; its
/// signature is not); `None` when it holds (or the request carries a SAS, which is not
/// checked), else Azure's refusal. Each is counted by kind.
pub(super) fn authentication_refusal(
    shared: &Shared,
    lake: &HnsLake,
    request: &Request,
    key: &PathKey,
) -> Option<Vec<u8>> {
    let authorization = request.head.header("authorization");
    let sas = query_value(request, "sig").is_some();
    let Some(authorization) = authorization else {
        lake.count(|c| c.dfs_sas += u64::from(sas));
        return (!sas).then(|| {
            azure_error(
                "401 Server failed to authenticate the request.",
                "NoAuthenticationInformation",
                "Server failed to authenticate the request. Please refer to the information in the www-authenticate header.",
                request,
                &[],
            )
        });
    };
    if let Some(token) = authorization.strip_prefix("Bearer ") {
        lake.count(|c| c.dfs_bearer += 1);
        return bearer_refusal(token).map(|why| {
            azure_error(
                "401 Server failed to authenticate the request.",
                "InvalidAuthenticationInfo",
                &why,
                request,
                &[],
            )
        });
    }
    if !authorization.starts_with("SharedKey ") {
        return None;
    }
    lake.count(|c| c.dfs_shared_key += 1);
    let secret = shared.state().keys.get(&key.account).cloned()?;
    let url = url::Url::parse(&format!("http://proxy{}", request.target)).ok()?;
    let expected = lakebackup::storage::shared_key::authorization(
        &key.account,
        &secret,
        &request.method,
        &url,
        request
            .head
            .headers
            .iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case("authorization"))
            .map(|(n, v)| (n.as_str(), v.as_str())),
    );
    (expected != authorization).then(|| {
        azure_error(
            "403 Server failed to authenticate the request.",
            "AuthenticationFailed",
            "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
            request,
            &[],
        )
    })
}

/// Why a bearer token is refused: its claims (JWT payload) as Azurite's OAuth mode checks them.
fn bearer_refusal(token: &str) -> Option<String> {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL, Engine as _};
    let Some(payload) = token.split('.').nth(1) else {
        return Some("the bearer token is no JWT".into());
    };
    let Some(claims) = BASE64URL
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
    else {
        return Some("the bearer token is no JWT".into());
    };
    let aud = claims["aud"].as_str().unwrap_or_default();
    let iss = claims["iss"].as_str().unwrap_or_default();
    let exp = claims["exp"].as_i64().unwrap_or_default();
    if aud.trim_end_matches('/') != "https://storage.azure.com" {
        return Some(format!("audience {aud:?} is not storage"));
    }
    if !iss.starts_with("https://sts.windows.net/") {
        return Some(format!("issuer {iss:?} is no Entra issuer"));
    }
    (exp <= time::OffsetDateTime::now_utc().unix_timestamp()).then(|| "expired".into())
}

fn ok(request: &Request, status: &str, headers: &[(&str, &str)]) -> Answer {
    let mut text =
        format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nServer: lakebackup-dfs-stand-in\r\n");
    if let Some(version) = request.head.header("x-ms-version") {
        text.push_str(&format!("x-ms-version: {version}\r\n"));
    }
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if request.close {
        text.push_str("Connection: close\r\n");
    }
    text.push_str("\r\n");
    own(text.into_bytes(), request)
}

pub(super) fn error(request: &Request, status: &str, code: &str, message: &str) -> Answer {
    own(azure_error(status, code, message, request, &[]), request)
}

/// Azure's refusal of a caller without the right (403 `AuthorizationPermissionMismatch`).
pub(super) fn permission_mismatch(request: &Request) -> Answer {
    let message = "This request is not authorized to perform this operation using this permission.";
    error(
        request,
        &format!("403 {message}"),
        "AuthorizationPermissionMismatch",
        message,
    )
}

/// The refusal of a request that would change `access`'s owner or group while such changes
/// are refused ([`HnsLake::refuse_owner_changes`]), counted.
fn owner_change_refused<'a>(
    lake: &HnsLake,
    request: &Request,
    access: &AccessControl,
    header: impl Fn(&str) -> Option<&'a str>,
) -> Option<Answer> {
    let changes_owner = header("x-ms-owner").is_some_and(|o| o != access.owner)
        || header("x-ms-group").is_some_and(|g| g != access.group);
    let (forbidden, invalid) = {
        let lake = lake.lake();
        (lake.owner_changes_refused, lake.owner_values_refused)
    };
    if !changes_owner || !(forbidden || invalid) {
        return None;
    }
    lake.count(|c| c.owner_refusals += 1);
    if invalid {
        let message = "The value for one of the HTTP headers is not in the correct format.";
        return Some(error(
            request,
            &format!("400 {message}"),
            "InvalidHeaderValue",
            message,
        ));
    }
    Some(permission_mismatch(request))
}

/// `x-ms-owner` and `x-ms-group`, where the request has them, onto `access`.
fn set_owner<'a>(access: &mut AccessControl, header: impl Fn(&str) -> Option<&'a str>) {
    if let Some(owner) = header("x-ms-owner") {
        access.owner = owner.to_owned();
    }
    if let Some(group) = header("x-ms-group") {
        access.group = group.to_owned();
    }
}

fn path_not_found(request: &Request) -> Answer {
    error(
        request,
        "404 The specified path does not exist.",
        "PathNotFound",
        "The specified path does not exist.",
    )
}

fn invalid(request: &Request, why: &str) -> Answer {
    error(
        request,
        "400 An HTTP header that's mandatory for this request is not specified or invalid.",
        "InvalidHeaderValue",
        why,
    )
}

/// Creates the missing parent directories of `key` (placeholders, each with the access
/// control a new directory gets under its parent), top down.
pub(super) async fn ensure_parents(
    shared: &Shared,
    lake: &HnsLake,
    request: &Request,
    key: &PathKey,
) -> io::Result<()> {
    let _ = request;
    let mut parents = Vec::new();
    let mut at = key.parent();
    while let Some(parent) = at {
        if lake.knows_directory(&parent) {
            break;
        }
        at = parent.parent();
        parents.push(parent);
    }
    for parent in parents.into_iter().rev() {
        let placed = upstream::put_blob(
            shared,
            &parent,
            Vec::new(),
            &[("x-ms-meta-hdi_isfolder", "true"), ("If-None-Match", "*")],
        )
        .await?;
        if (200..300).contains(&placed.status) {
            lake.count(|c| c.directories_created += 1);
        }
        lake.access_or_new(&parent, true);
    }
    Ok(())
}

/// Create Path (`resource=directory|file`).
pub(super) async fn create_path(
    shared: &Shared,
    lake: &HnsLake,
    request: &Request,
    key: &PathKey,
    directory: bool,
) -> io::Result<Answer> {
    if key.path.is_empty() {
        return Ok(invalid(request, "a path is needed"));
    }
    let header = |name: &str| request.head.header(name).map(str::trim);
    let umask = match header("x-ms-umask").map(|u| u32::from_str_radix(u, 8)) {
        None => DEFAULT_UMASK,
        Some(Ok(umask)) if umask <= 0o777 => umask,
        Some(_) => return Ok(invalid(request, "x-ms-umask")),
    };
    if header("if-none-match") == Some("*") {
        let existing = upstream::properties(shared, key).await?;
        if existing.status == 200 {
            return Ok(error(
                request,
                "409 The specified path already exists.",
                "PathAlreadyExists",
                "The specified path already exists.",
            ));
        }
    }
    // Its missing parents first: asking for the parent's access control registers the parent
    // as known, and a known directory is not placed in Azurite again. (A request refused below
    // for a bad header leaves them made; Azure would not.)
    ensure_parents(shared, lake, request, key).await?;
    let parent = key.parent().map(|p| lake.access_or_new(&p, true));
    let parent = parent.unwrap_or_else(AccessControl::root);
    let mut access = AccessControl::child_of(&parent, SUPERUSER, directory, umask);
    if let Some(refused) = owner_change_refused(lake, request, &access, header) {
        return Ok(refused);
    }
    set_owner(&mut access, header);
    if let Some(refused) = set_mode(request, &mut access, header) {
        return Ok(refused);
    }
    // x-ms-properties: `name=base64(value)`, comma-separated: the path's user metadata.
    let mut metadata: Vec<(String, String)> = Vec::new();
    for pair in header("x-ms-properties").unwrap_or("").split(',') {
        use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
        let Some((name, value)) = pair.trim().split_once('=') else {
            continue;
        };
        let Some(value) = BASE64
            .decode(value)
            .ok()
            .and_then(|v| String::from_utf8(v).ok())
        else {
            return Ok(invalid(request, "x-ms-properties"));
        };
        metadata.push((format!("x-ms-meta-{name}"), value));
    }
    if directory {
        metadata.push(("x-ms-meta-hdi_isfolder".into(), "true".into()));
    }
    let metadata: Vec<(&str, &str)> = metadata
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let placed = upstream::put_blob(shared, key, Vec::new(), &metadata).await?;
    if !(200..300).contains(&placed.status) {
        return Ok(error(
            request,
            "500 The stand-in could not write the path.",
            "InternalError",
            &format!("Azurite answered {}", placed.status),
        ));
    }
    let keep = lake.lake().paths.get(key).cloned();
    lake.set_access(
        key,
        keep.filter(|a| a.directory == directory).unwrap_or(access),
    );
    if directory {
        lake.count(|c| c.directories_created += 1);
    }
    let etag = placed.header("etag").unwrap_or("").to_owned();
    let modified = placed.header("last-modified").unwrap_or("").to_owned();
    Ok(ok(
        request,
        "201 Created",
        &[("ETag", &etag), ("Last-Modified", &modified)],
    ))
}

/// The path's access control and its properties' ETag and Last-Modified; `None` when the path
/// does not exist. The root directory (`""`) stands as long as its container, with the file
/// system's ETag and Last-Modified.
async fn access_of(
    shared: &Shared,
    lake: &HnsLake,
    key: &PathKey,
) -> io::Result<Option<(AccessControl, String, String)>> {
    let properties = upstream::properties(shared, key).await?;
    if properties.status != 200 {
        lake.forget(key);
        return Ok(None);
    }
    if key.path.is_empty() {
        let root = lake
            .access_control(&key.account, &key.container, "")
            .unwrap_or_else(AccessControl::root);
        if lake.lake().root_without_etag {
            return Ok(Some((root, String::new(), String::new())));
        }
        let etag = properties.header("etag").unwrap_or("").to_owned();
        let modified = properties.header("last-modified").unwrap_or("").to_owned();
        let (etag, modified) = lake.moved_root(key, &etag).unwrap_or((etag, modified));
        return Ok(Some((root, etag, modified)));
    }
    let directory = properties.header("x-ms-meta-hdi_isfolder") == Some("true");
    let access = lake.access_or_new(key, directory);
    let etag = properties.header("etag").unwrap_or("").to_owned();
    let modified = properties.header("last-modified").unwrap_or("").to_owned();
    Ok(Some((access, etag, modified)))
}

/// Get Access Control (`action=getAccessControl`).
pub(super) async fn get_access_control(
    shared: &Shared,
    lake: &HnsLake,
    request: &Request,
    key: &PathKey,
) -> io::Result<Answer> {
    let Some((access, etag, modified)) = access_of(shared, lake, key).await? else {
        return Ok(path_not_found(request));
    };
    lake.count(|c| c.access_reads += 1);
    let (permissions, acl) = (access.permissions(), access.acl());
    let resource = if access.directory {
        "directory"
    } else {
        "file"
    };
    Ok(ok(
        request,
        "200 OK",
        &[
            ("ETag", &etag),
            ("Last-Modified", &modified),
            ("x-ms-owner", &access.owner),
            ("x-ms-group", &access.group),
            ("x-ms-permissions", &permissions),
            ("x-ms-acl", &acl),
            ("x-ms-resource-type", resource),
        ],
    ))
}

/// Set Access Control (`action=setAccessControl`): owner, group, and permissions or ACL.
pub(super) async fn set_access_control(
    shared: &Shared,
    lake: &HnsLake,
    request: &Request,
    key: &PathKey,
) -> io::Result<Answer> {
    if lake.lake().access_sets_refused {
        return Ok(permission_mismatch(request));
    }
    if let Some(bytes) = lake.take_rewrite(key, true) {
        upstream::put_blob(shared, key, bytes, &[]).await?;
    }
    let Some((mut access, etag, modified)) = access_of(shared, lake, key).await? else {
        return Ok(path_not_found(request));
    };
    let header = |name: &str| request.head.header(name).map(str::trim);
    let unquoted = |e: &str| e.trim_matches('"').to_owned();
    if header("if-match").is_some_and(|m| m != "*" && unquoted(m) != unquoted(&etag)) {
        return Ok(error(
            request,
            "412 The condition specified using HTTP conditional header(s) is not met.",
            "ConditionNotMet",
            "The condition specified using HTTP conditional header(s) is not met.",
        ));
    }
    if let Some(refused) = owner_change_refused(lake, request, &access, header) {
        return Ok(refused);
    }
    if let Some(refused) = set_mode(request, &mut access, header) {
        return Ok(refused);
    }
    set_owner(&mut access, header);
    if !lake.lake().access_sets_ignored {
        lake.set_access(key, access);
    }
    lake.count(|c| c.access_writes += 1);
    Ok(ok(
        request,
        "200 OK",
        &[
            ("ETag", &etag),
            ("Last-Modified", &modified),
            ("x-ms-namespace-enabled", "true"),
        ],
    ))
}

/// Delete Path: a directory with everything under it (`recursive=true`; else only when
/// empty), or a file.
pub(super) async fn delete_path(
    shared: &Shared,
    lake: &HnsLake,
    request: &Request,
    key: &PathKey,
    recursive: bool,
) -> io::Result<Answer> {
    if key.path.is_empty() {
        return Ok(invalid(
            request,
            "the root directory is deleted with its container",
        ));
    }
    let Some((access, _, _)) = access_of(shared, lake, key).await? else {
        return Ok(path_not_found(request));
    };
    let under = if access.directory {
        lake.under(key)
    } else {
        Vec::new()
    };
    if !under.is_empty() && !recursive {
        return Ok(error(
            request,
            "409 The recursive query parameter value must be true to delete a non-empty directory.",
            "DirectoryNotEmpty",
            "The recursive query parameter value must be true to delete a non-empty directory.",
        ));
    }
    for path in under.iter().chain(std::iter::once(key)) {
        let deleted = upstream::delete(shared, path).await?;
        if deleted.status != 404 && !(200..300).contains(&deleted.status) {
            return Ok(error(
                request,
                "500 The stand-in could not delete a path.",
                "InternalError",
                &format!("Azurite answered {} for {}", deleted.status, path.path),
            ));
        }
        lake.forget(path);
        lake.count(|c| c.paths_deleted += 1);
    }
    Ok(ok(request, "200 OK", &[]))
}

/// Applies `x-ms-permissions` or `x-ms-acl` (never both: Azure refuses that) to `access`; the
/// answer to give instead when they are refused.
fn set_mode<'a>(
    request: &Request,
    access: &mut AccessControl,
    header: impl Fn(&str) -> Option<&'a str>,
) -> Option<Answer> {
    let changed = match (header("x-ms-permissions"), header("x-ms-acl")) {
        (Some(_), Some(_)) => {
            return Some(invalid(
                request,
                "x-ms-permissions and x-ms-acl are exclusive",
            ))
        }
        (Some(permissions), None) => access.set_permissions(permissions),
        (None, Some(acl)) => access.set_acl(acl),
        (None, None) => Ok(()),
    };
    changed.err().map(|why| invalid(request, &why.0))
}
