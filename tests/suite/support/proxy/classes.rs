//! What a request does: its class ([`OpClass`]), for counting and for choosing where faults
//! go, told from its method, path, query and headers ([`classify`]).

use super::Service;

/// What a request does, for counting and for choosing where faults go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpClass {
    /// `comp=list`: List Blobs, List Containers (and List Queues on a queue endpoint is `Queue`).
    List,
    /// GET of a blob (also its block or page list).
    Read,
    /// HEAD of a blob: Get Blob Properties.
    Head,
    /// PUT of blob content: Put Blob, Put Block, Put Block List, Append Block, Put Page.
    Write,
    /// A PUT with `x-ms-copy-source` (Copy Blob, Copy Blob From URL, Put Block From URL) and
    /// Abort Copy.
    Copy,
    /// `comp=metadata|properties|tags|tier` (and the other per-blob settings) on a blob.
    Properties,
    /// `comp=snapshot`.
    Snapshot,
    /// DELETE of a blob or snapshot.
    Delete,
    /// `comp=lease`, on a blob or a container.
    Lease,
    /// Anything on a container itself: create, delete, properties, metadata, ACL.
    Container,
    /// Any request to a queue endpoint.
    Queue,
    /// Account-level calls (service properties, user delegation key, batch).
    Other,
}

impl OpClass {
    pub const ALL: [OpClass; 12] = [
        OpClass::List,
        OpClass::Read,
        OpClass::Head,
        OpClass::Write,
        OpClass::Copy,
        OpClass::Properties,
        OpClass::Snapshot,
        OpClass::Delete,
        OpClass::Lease,
        OpClass::Container,
        OpClass::Queue,
        OpClass::Other,
    ];
}

/// Says which class a request is of. `target` is the request target as sent (path and query);
/// `headers` are (name, value) pairs, names in any case.
pub fn classify(
    service: Service,
    method: &str,
    target: &str,
    headers: &[(String, String)],
) -> OpClass {
    if service == Service::Queue {
        return OpClass::Queue;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let comp = url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name.eq_ignore_ascii_case("comp"))
        .map(|(_, value)| value.to_ascii_lowercase())
        .unwrap_or_default();
    match comp.as_str() {
        "list" => return OpClass::List,
        "lease" => return OpClass::Lease,
        _ => {}
    }
    // Path-style: /account/container/blob/name/with/slashes.
    let mut segments = path.trim_start_matches('/').splitn(3, '/');
    let (_account, container, blob) = (
        segments.next().unwrap_or(""),
        segments.next().unwrap_or(""),
        segments.next().unwrap_or(""),
    );
    if blob.is_empty() {
        return if container.is_empty() {
            OpClass::Other
        } else {
            OpClass::Container
        };
    }
    match comp.as_str() {
        "snapshot" => return OpClass::Snapshot,
        "metadata"
        | "properties"
        | "tags"
        | "tier"
        | "expiry"
        | "immutabilitypolicies"
        | "legalhold" => return OpClass::Properties,
        "copy" => return OpClass::Copy,
        _ => {}
    }
    let method = method.to_ascii_uppercase();
    let copy_source = headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("x-ms-copy-source"));
    match method.as_str() {
        "PUT" if copy_source => OpClass::Copy,
        "PUT" => OpClass::Write,
        "DELETE" => OpClass::Delete,
        "HEAD" => OpClass::Head,
        "GET" => OpClass::Read,
        _ => OpClass::Other,
    }
}
