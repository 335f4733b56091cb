//! What a blob is now ([`BlobState`]): its version, and the state of the blob object around
//! it — the copy it is the destination of, its tier, its tag count — as Get Blob Properties
//! answers.

use std::collections::HashMap;

use url::Url;

use crate::core::version::Version;

/// What a blob is now: its version, and the state of the blob object around it.
#[derive(Debug, Clone)]
pub struct BlobState {
    /// Its current version (metadata read; tags not: see [`Blob::tags`]).
    pub version: Version,
    /// The URL it was copied from, when it is (or was) the destination of a copy.
    pub copy_source: Option<String>,
    /// The id of the copy it is (or was) the destination of (`x-ms-copy-id`).
    pub copy_id: Option<String>,
    pub copy_status_description: Option<String>,
    /// `Hot`, `Cool`, `Cold`, `Archive`, ... when the service says (set or inferred).
    pub access_tier: Option<String>,
    /// How many index tags the blob has.
    pub tag_count: u64,
}

impl BlobState {
    /// Whether the blob is the result of a copy from `source` (the same blob or snapshot,
    /// whatever signature authorized it): a copy whose answer was lost, found done.
    pub fn copied_from(&self, source: &Url) -> bool {
        let Some(copied) = self.copy_source.as_deref().and_then(|s| Url::parse(s).ok()) else {
            return false;
        };
        let snapshot = |url: &Url| {
            url.query_pairs()
                .find(|(k, _)| k == "snapshot")
                .map(|(_, v)| v.into_owned())
        };
        copied.host_str() == source.host_str()
            && copied.port_or_known_default() == source.port_or_known_default()
            && copied.path() == source.path()
            && snapshot(&copied) == snapshot(source)
    }

    /// Whether the blob may be the result of the copy whose id is `copy_id` (a copy's
    /// properties stay through a later Set Blob Metadata by anyone; its id names the copy):
    /// `false` only when it names another copy. An id not known on either side says nothing —
    /// Azure documents the properties of a Copy Blob's destination, not whether a synchronous
    /// Copy Blob From URL leaves them.
    pub fn is_copy(&self, copy_id: Option<&str>) -> bool {
        match (copy_id, self.copy_id.as_deref()) {
            (Some(ours), Some(theirs)) => ours == theirs,
            _ => true,
        }
    }

    /// An archived blob cannot be read (or copied) until it is rehydrated.
    pub fn is_archived(&self) -> bool {
        self.access_tier
            .as_deref()
            .is_some_and(|tier| tier.eq_ignore_ascii_case("archive"))
    }

    pub fn etag(&self) -> &str {
        &self.version.etag
    }

    /// The blob's user metadata (with any stamp).
    pub fn metadata(&self) -> &HashMap<String, String> {
        static NONE: std::sync::OnceLock<HashMap<String, String>> = std::sync::OnceLock::new();
        self.version
            .metadata
            .as_ref()
            .unwrap_or_else(|| NONE.get_or_init(HashMap::new))
    }
}
