//! What a request to a lake account is, as the stand-in tells them apart: by method, query
//! (`comp`, `restype`, `action`, `resource`, `recursive`, `include`) and headers.

use super::{
    super::{refusals::query_value, wire::Request},
    PathKey,
};

/// What a request to a lake account is, as the stand-in tells them apart.
pub(super) enum Operation {
    AccountInformation,
    Refused(&'static str),
    CreatePath {
        directory: bool,
    },
    GetAccessControl,
    SetAccessControl,
    DeletePath {
        recursive: bool,
    },
    List {
        permissions: bool,
        tags: bool,
    },
    /// A write that creates (or replaces) a file.
    CreateBlob,
    DeleteBlob,
    /// A read of a blob, or a copy: a rewrite may be due first.
    Read,
    Other,
}

pub(super) fn operation(request: &Request) -> Operation {
    let method = request.method.to_ascii_uppercase();
    let query = |name: &str| query_value(request, name).map(|v| v.to_ascii_lowercase());
    let comp = query("comp").unwrap_or_default();
    if query("restype").as_deref() == Some("account") && comp == "properties" {
        return Operation::AccountInformation;
    }
    if comp == "snapshot" {
        return Operation::Refused("snapshot");
    }
    if comp == "tags" {
        return Operation::Refused("tags");
    }
    let header = |name: &str| request.head.header(name).map(str::trim).unwrap_or("");
    let sets_tags = !header("x-ms-tags").is_empty()
        || header("x-ms-copy-source-tag-option").eq_ignore_ascii_case("COPY");
    if method == "PUT" && sets_tags {
        return Operation::Refused("tags");
    }
    match (method.as_str(), query("action"), query("resource")) {
        ("PUT", _, Some(resource)) => {
            return Operation::CreatePath {
                directory: resource == "directory",
            }
        }
        ("HEAD" | "GET", Some(action), _) if action == "getaccesscontrol" => {
            return Operation::GetAccessControl
        }
        ("PATCH", Some(action), _) if action == "setaccesscontrol" => {
            return Operation::SetAccessControl
        }
        _ => {}
    }
    if comp == "list" {
        let include = query("include").unwrap_or_default();
        let has = |item: &str| include.split(',').any(|i| i.trim() == item);
        return Operation::List {
            permissions: has("permissions"),
            tags: has("tags"),
        };
    }
    let blob = PathKey::of(request).is_some_and(|key| !key.path.is_empty());
    match method.as_str() {
        "DELETE" if query("recursive").is_some() => Operation::DeletePath {
            recursive: query("recursive").as_deref() == Some("true"),
        },
        "DELETE" if blob => Operation::DeleteBlob,
        "PUT" if blob && (comp.is_empty() || comp == "blocklist") => Operation::CreateBlob,
        "GET" if blob && comp.is_empty() => Operation::Read,
        _ => Operation::Other,
    }
}
