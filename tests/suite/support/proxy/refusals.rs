//! What Azure refuses that Azurite accepts, answered as Azure answers it: blob index tags to an
//! identity without the tags rights, whole classes of operations to a role without them,
//! deletions to a writer that may not delete, changes to blobs of an immutable (WORM)
//! container, and the copies Azure's rules refuse (Copy Blob From URL of an append or page blob,
//! a copy onto a blob of another type).

use super::{
    serve::forward,
    wire::{Head, Request},
    OpClass, Service, Shared,
};

/// Azure's refusal of a request its identity's role does not allow: (status line, error code,
/// message).
const NOT_PERMITTED: (&str, &str, &str) = (
    "403 This request is not authorized to perform this operation using this permission.",
    "AuthorizationPermissionMismatch",
    "This request is not authorized to perform this operation using this permission.",
);

/// Records the refusal of `what` (as [`super::ProxyStats::azure_refusals`] lists it) and gives
/// Azure's answer: (status line, error code, message).
fn refused(
    shared: &Shared,
    request: &Request,
    what: String,
    (status, code, message): (&str, &str, &str),
) -> Vec<u8> {
    shared
        .state()
        .stats
        .azure_refusals
        .push((code.to_owned(), what));
    azure_error(status, code, message, request, &[])
}

/// Azure's answer to a request that reads or sets blob index tags from an identity without the
/// tags rights (see [`ProxyConfig::refuse_tags`]), or `None` to forward the request as it came.
pub(super) fn tags_refusal(shared: &Shared, class: OpClass, request: &Request) -> Option<Vec<u8>> {
    if shared.service != Service::Blob || !shared.state().config.refuse_tags {
        return None;
    }
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target.as_str(), ""));
    let parameter = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.into_owned())
            .collect::<Vec<_>>()
    };
    let lists_tags = class == OpClass::List
        && parameter("include").iter().any(|include| {
            include
                .split(',')
                .any(|item| item.trim().eq_ignore_ascii_case("tags"))
        });
    let blob_tags = parameter("comp")
        .iter()
        .any(|comp| comp.eq_ignore_ascii_case("tags"));
    let put = request.method.eq_ignore_ascii_case("PUT");
    let sets_tags = put
        && (request
            .head
            .header("x-ms-tags")
            .is_some_and(|tags| !tags.trim().is_empty())
            || request
                .head
                .header("x-ms-copy-source-tag-option")
                .is_some_and(|option| option.trim().eq_ignore_ascii_case("COPY")));
    if !(lists_tags || blob_tags || sets_tags) {
        return None;
    }
    let what = path.to_owned();
    Some(refused(shared, request, what, NOT_PERMITTED))
}

/// Azure's answer to a request of a class the identity's role lacks (see
/// [`ProxyConfig::deny_classes`]) or outside the resources its roles are assigned on (see
/// [`ProxyConfig::role_scope`]), or `None` to go on.
pub(super) fn role_refusal(shared: &Shared, class: OpClass, request: &Request) -> Option<Vec<u8>> {
    let path = request.target.split('?').next().unwrap_or("");
    let (denied, deny_code, scope) = {
        let state = shared.state();
        let config = &state.config;
        (
            config.deny_classes.contains(&class),
            config.deny_code.clone(),
            config.role_scope.clone(),
        )
    };
    let out_of_scope = scope.is_some_and(|scope| !scope.contains(&scoped_resource(path)));
    let what = format!("{} {path}", request.method);
    match (denied, deny_code) {
        (true, Some(code)) => {
            let message = "This request is not authorized to perform this operation.";
            let status = format!("403 {message}");
            Some(refused(
                shared,
                request,
                what,
                (status.as_str(), code.as_str(), message),
            ))
        }
        (true, None) => Some(refused(shared, request, what, NOT_PERMITTED)),
        (false, _) if out_of_scope => Some(refused(shared, request, what, NOT_PERMITTED)),
        (false, _) => None,
    }
}

/// `account/container` or `account/queue` of a path-style request path; `account/` for the
/// account itself.
fn scoped_resource(path: &str) -> String {
    let mut segments = path.trim_start_matches('/').splitn(3, '/');
    let account = segments.next().unwrap_or("");
    let resource = percent_encoding::percent_decode_str(segments.next().unwrap_or(""))
        .decode_utf8_lossy()
        .into_owned();
    format!("{account}/{resource}")
}

/// The container (and blob, if any) a blob request names, when the container's name ends in
/// `suffix`.
pub(super) fn container_with_suffix(
    shared: &Shared,
    request: &Request,
    suffix: Option<String>,
) -> Option<(String, Option<String>)> {
    if shared.service != Service::Blob {
        return None;
    }
    let suffix = suffix?;
    let path = request.target.split('?').next().unwrap_or("");
    // Path-style, as Azurite's: /{account}/{container}[/{blob}].
    let mut segments = path.trim_start_matches('/').splitn(3, '/');
    let _account = segments.next()?;
    let container = percent_encoding::percent_decode_str(segments.next()?)
        .decode_utf8_lossy()
        .into_owned();
    let blob = segments.next().filter(|b| !b.is_empty()).map(str::to_owned);
    container
        .ends_with(suffix.as_str())
        .then_some((container, blob))
}

/// The container (and blob) of a request to one of [`ProxyConfig::worm_suffix`]'s containers.
pub(super) fn worm_container(
    shared: &Shared,
    request: &Request,
) -> Option<(String, Option<String>)> {
    let suffix = shared.state().config.worm_suffix.clone();
    container_with_suffix(shared, request, suffix)
}

pub(super) fn query_value(request: &Request, name: &str) -> Option<String> {
    let query = request.target.split_once('?').map_or("", |(_, q)| q);
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.into_owned())
}

/// Get Container Properties (`restype=container` without a `comp`).
pub(super) fn is_container_properties(request: &Request) -> bool {
    (request.method.eq_ignore_ascii_case("GET") || request.method.eq_ignore_ascii_case("HEAD"))
        && query_value(request, "restype").is_some_and(|r| r.eq_ignore_ascii_case("container"))
        && query_value(request, "comp").is_none()
}

/// Azure's answer to a blob DELETE from an identity without the delete action (see
/// [`ProxyConfig::deny_deletes_suffix`]).
pub(super) fn delete_refusal(shared: &Shared, request: &Request) -> Option<Vec<u8>> {
    if !request.method.eq_ignore_ascii_case("DELETE") {
        return None;
    }
    let suffix = shared.state().config.deny_deletes_suffix.clone();
    let (_, blob) = container_with_suffix(shared, request, suffix)?;
    blob?;
    let path = request.target.split('?').next().unwrap_or("");
    let what = format!("DELETE {path}");
    Some(refused(shared, request, what, NOT_PERMITTED))
}

/// `head` with `name: value`, replacing any such header it had.
pub(super) fn with_header(head: &[u8], name: &str, value: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let body_start = text.find("\r\n\r\n").unwrap_or(text.len());
    let mut lines: Vec<&str> = text[..body_start]
        .split("\r\n")
        .filter(|line| {
            !line
                .split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        })
        .collect();
    let added = format!("{name}: {value}");
    lines.push(&added);
    format!("{}\r\n\r\n", lines.join("\r\n")).into_bytes()
}

/// Azure's answer to a request that would change an existing blob of a WORM container (see
/// [`ProxyConfig::worm_suffix`]), or `None` to forward it: deleting it, writing over it, or
/// setting its metadata or properties. Creating a blob is allowed, as are reads, leases,
/// snapshots, tags and tiers.
pub(super) async fn worm_refusal(shared: &Shared, request: &Request) -> Option<Vec<u8>> {
    if let Some(refusal) = delete_refusal(shared, request) {
        return Some(refusal);
    }
    let (_, blob) = worm_container(shared, request)?;
    blob.as_ref()?;
    let comp = query_value(request, "comp").map(|c| c.to_ascii_lowercase());
    let changes = if request.method.eq_ignore_ascii_case("DELETE") {
        true
    } else if request.method.eq_ignore_ascii_case("PUT") {
        matches!(
            comp.as_deref(),
            None | Some("blocklist" | "metadata" | "properties" | "page" | "appendblock")
        )
    } else {
        false
    };
    // A create-only write (`If-None-Match: *`) onto an existing blob is refused too: whether
    // Azure answers it with its policy or with the condition (409 `BlobAlreadyExists`) is not
    // documented, so the product must take either as "it is there".
    if !changes {
        return None;
    }
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target.as_str(), ""));
    // Only a blob that exists is protected: creating one is what the policy allows.
    destination_blob_type(shared, request, path, query).await?;
    let what = format!("{} {path}", request.method);
    let message = "This operation is not permitted as the blob is immutable due to a policy.";
    let refusal = ("409 Conflict", "BlobImmutableDueToPolicy", message);
    Some(refused(shared, request, what, refusal))
}

/// What Azure would refuse that Azurite accepts (see [`ProxyConfig::azure_rules`]): the answer
/// to give instead of forwarding, or `None` to forward the request as it came.
pub(super) async fn azure_refusal(
    shared: &Shared,
    class: OpClass,
    request: &Request,
) -> Option<Vec<u8>> {
    if class != OpClass::Copy
        || !request.method.eq_ignore_ascii_case("PUT")
        || !shared.state().config.azure_rules
    {
        return None;
    }
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target.as_str(), ""));
    // Only Copy Blob and Copy Blob From URL: Put Block From URL, Put Page From URL and the like
    // carry a `comp`.
    if url::form_urlencoded::parse(query.as_bytes())
        .any(|(name, _)| name.eq_ignore_ascii_case("comp"))
    {
        return None;
    }
    let source = request.head.header("x-ms-copy-source")?;
    let synchronous = request
        .head
        .header("x-ms-requires-sync")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let source_type = source_blob_type(shared, request, source).await?;
    let refusal = if synchronous {
        (source_type != "BlockBlob").then_some((
            "CannotVerifyCopySource",
            "The copy source must be a block blob.",
        ))
    } else {
        if request
            .head
            .header("if-none-match")
            .is_some_and(|v| v.trim() == "*")
        {
            return None;
        }
        let destination_type = destination_blob_type(shared, request, path, query).await?;
        (destination_type != source_type).then_some((
            "InvalidBlobType",
            "The blob type is invalid for this operation.",
        ))
    };
    let (code, message) = refusal?;
    Some(refused(
        shared,
        request,
        path.to_owned(),
        ("409 Conflict", code, message),
    ))
}

/// The `x-ms-blob-type` of the copy source, read with a `HEAD` of its URL (its own SAS, or the
/// account key when it has none) sent to the upstream.
pub(super) async fn source_blob_type(
    shared: &Shared,
    request: &Request,
    source: &str,
) -> Option<String> {
    let url = url::Url::parse(source).ok()?;
    let mut target = url.path().to_owned();
    if let Some(query) = url.query() {
        target.push('?');
        target.push_str(query);
    }
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str()?),
        None => url.host_str()?.to_owned(),
    };
    let signed = url.query_pairs().any(|(name, _)| name == "sig");
    blob_type_by_head(shared, request, &host, &target, !signed).await
}

/// The `x-ms-blob-type` of the copy's destination, `None` when it does not exist (or cannot be
/// read).
pub(super) async fn destination_blob_type(
    shared: &Shared,
    request: &Request,
    path: &str,
    query: &str,
) -> Option<String> {
    let host = request
        .head
        .header("host")
        .unwrap_or("127.0.0.1")
        .to_owned();
    let signed = url::form_urlencoded::parse(query.as_bytes()).any(|(name, _)| name == "sig");
    let target = if signed {
        format!("{path}?{query}")
    } else {
        path.to_owned()
    };
    blob_type_by_head(shared, request, &host, &target, !signed).await
}

/// One `HEAD` of `target` at the upstream, SharedKey-signed when `sign` (by the account its
/// path names, whose key must be configured); the blob type it answers with.
pub(super) async fn blob_type_by_head(
    shared: &Shared,
    request: &Request,
    host: &str,
    target: &str,
    sign: bool,
) -> Option<String> {
    let date = lakebackup::storage::testing::http_date(time::OffsetDateTime::now_utc());
    let version = request
        .head
        .header("x-ms-version")
        .unwrap_or("2026-04-06")
        .to_owned();
    let mut headers = vec![
        ("Host".to_owned(), host.to_owned()),
        ("x-ms-date".to_owned(), date),
        ("x-ms-version".to_owned(), version),
    ];
    if sign {
        let account = target.trim_start_matches('/').split('/').next()?.to_owned();
        let key = shared.state().keys.get(&account)?.clone();
        let url = url::Url::parse(&format!("http://proxy{target}")).ok()?;
        let authorization = lakebackup::storage::shared_key::authorization(
            &account,
            &key,
            "HEAD",
            &url,
            headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        );
        headers.push(("Authorization".to_owned(), authorization));
    }
    let mut text = format!("HEAD {target} HTTP/1.1\r\n");
    for (name, value) in &headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    let raw_head = text.into_bytes();
    let head = Request {
        head: Head::parse(&raw_head),
        raw_head: raw_head.clone(),
        method: "HEAD".to_owned(),
        target: target.to_owned(),
        body: Vec::new(),
        continued: false,
        close: false,
    };
    let answer = forward(shared, &head, &raw_head).await.ok()?;
    let answered = Head::parse(&answer.head);
    let ok = answered.first.split(' ').nth(1) == Some("200");
    ok.then(|| answered.header("x-ms-blob-type").map(str::to_owned))
        .flatten()
}

/// An error answer in Azure's shape (its XML with a BOM, `x-ms-error-code`, the request's
/// `x-ms-version`), with `extra` headers. A HEAD answer carries no body, as Azure's.
pub(super) fn azure_error(
    status: &str,
    code: &str,
    message: &str,
    request: &Request,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = format!(
        "00000000-0000-4000-8000-{:012x}",
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let now = time::OffsetDateTime::now_utc();
    let time = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let body = if request.method.eq_ignore_ascii_case("HEAD") {
        String::new()
    } else {
        format!(
            "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{message}\nRequestId:{id}\nTime:{time}</Message></Error>"
        )
    };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/xml\r\nServer: lakebackup-test-proxy\r\nx-ms-request-id: {id}\r\nx-ms-error-code: {code}\r\nDate: {}\r\n",
        body.len(),
        lakebackup::storage::testing::http_date(now)
    );
    if let Some(version) = request.head.header("x-ms-version") {
        head.push_str(&format!("x-ms-version: {version}\r\n"));
    }
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if request.close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}
