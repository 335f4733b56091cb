//! What a blob version is besides its bytes: its type, its access tier, its content headers,
//! its index tags and, in a hierarchical namespace, its owner, group, permissions and ACL. A
//! backup keeps them and a restore brings them back, so a restored blob is the blob that was
//! lost, not just its bytes. Pure.

use std::collections::BTreeMap;

/// Azure's three kinds of blob. A blob keeps its kind for life: an append blob restored as a
/// block blob can no longer be appended to by the application that owns it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum BlobType {
    #[default]
    Block,
    Append,
    Page,
}

impl BlobType {
    /// The name the service uses (`BlockBlob`, `AppendBlob`, `PageBlob`).
    pub fn as_str(self) -> &'static str {
        match self {
            BlobType::Block => "BlockBlob",
            BlobType::Append => "AppendBlob",
            BlobType::Page => "PageBlob",
        }
    }

    /// Reads the service's name; an unknown one is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            t if t.eq_ignore_ascii_case("BlockBlob") => Some(BlobType::Block),
            t if t.eq_ignore_ascii_case("AppendBlob") => Some(BlobType::Append),
            t if t.eq_ignore_ascii_case("PageBlob") => Some(BlobType::Page),
            _ => None,
        }
    }
}

/// The HTTP headers a blob is served with. Copied with the blob, compared by restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentHeaders {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub content_disposition: Option<String>,
    pub cache_control: Option<String>,
}

impl ContentHeaders {
    /// Empty values are the same as absent ones: the service lists an unset header as an empty
    /// element.
    pub fn normalized(self) -> Self {
        let keep = |value: Option<String>| value.filter(|v| !v.is_empty());
        Self {
            content_type: keep(self.content_type),
            content_encoding: keep(self.content_encoding),
            content_language: keep(self.content_language),
            content_disposition: keep(self.content_disposition),
            cache_control: keep(self.cache_control),
        }
    }
}

/// Blob index tags: at most ten key/value pairs. Setting them does not change a blob's ETag, so
/// a backup holds the tags its version had when it was backed up.
pub type Tags = BTreeMap<String, String>;

/// The facts of one version besides its bytes, ETag, length and MD5.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobProperties {
    pub blob_type: BlobType,
    /// The access tier when one was set on the blob (`None`: the account's default applies).
    pub access_tier: Option<String>,
    pub headers: ContentHeaders,
    /// The index tags, when they were read (`None`: not known).
    pub tags: Option<Tags>,
    /// Encrypted with a customer-provided key: nobody can read it without that key, so it
    /// cannot be backed up by this worker.
    pub customer_key: bool,
    /// In a hierarchical namespace, its access control, when it was read (`None`: not known,
    /// or a flat account, which has none).
    pub access: Option<Access>,
    /// A directory of a hierarchical namespace (listed as `ResourceType` `directory`, or a
    /// backup stamped as one), not a file: it has no bytes, and on a directory the ACL carries
    /// its default entries too.
    pub directory: bool,
}

/// The access control of a file or directory of a hierarchical namespace (ADLS Gen2), as the
/// service says it (Get Access Control, or a listing with `include=permissions`): owner and
/// owning group (object ids, or `$superuser`), permissions (`rwxr-x---`, `+` when an ACL extends
/// them, `t`/`T` for the sticky bit) and the ACL (access entries, then a directory's
/// `default:` entries). Changing it may leave the ETag as it was: it is compared itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Access {
    pub owner: String,
    pub group: String,
    pub permissions: String,
    pub acl: String,
}

impl Access {
    /// Whether the permissions carry the sticky bit (`t`/`T` last, before any `+`): the one
    /// part of them the ACL cannot say.
    pub fn sticky(&self) -> bool {
        self.permissions.trim_end_matches('+').ends_with(['t', 'T'])
    }
}

impl BlobProperties {
    /// Whether the tier is Archive: such a blob cannot be read until it is rehydrated.
    pub fn is_archived(&self) -> bool {
        self.access_tier
            .as_deref()
            .is_some_and(|tier| tier.eq_ignore_ascii_case("archive"))
    }

    /// What differs from `other` (a restore's target against the version), in words; empty
    /// when nothing that a restore writes back differs. Tags and the tier count only where both
    /// sides know them.
    pub fn differences(&self, other: &BlobProperties) -> Vec<&'static str> {
        let mut differs = Vec::new();
        if self.blob_type != other.blob_type {
            differs.push("blob type");
        }
        if self.headers.clone().normalized() != other.headers.clone().normalized() {
            differs.push("content headers");
        }
        if let (Some(mine), Some(theirs)) = (&self.tags, &other.tags) {
            if mine != theirs {
                differs.push("tags");
            }
        }
        let tier = |t: &Option<String>| t.as_deref().map(str::to_ascii_lowercase);
        if self.access_tier.is_some()
            && other.access_tier.is_some()
            && tier(&self.access_tier) != tier(&other.access_tier)
        {
            differs.push("access tier");
        }
        differs
    }
}

/// Tags as the `x-ms-tags` header carries them: `key=value` pairs joined by `&`, each part
/// percent-encoded as a URL query.
pub fn tags_header(tags: &Tags) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in tags {
        query.append_pair(key, value);
    }
    // The service reads `%20` for a space, not the form encoding's `+`.
    query.finish().replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_types_round_trip() {
        for kind in [BlobType::Block, BlobType::Append, BlobType::Page] {
            assert_eq!(BlobType::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(BlobType::parse("appendblob"), Some(BlobType::Append));
        assert_eq!(BlobType::parse("FileBlob"), None);
    }

    #[test]
    fn differences_name_what_a_restore_would_change() {
        let base = BlobProperties {
            headers: ContentHeaders {
                content_type: Some("text/csv".into()),
                ..Default::default()
            },
            tags: Some(Tags::from([("team".into(), "a".into())])),
            ..Default::default()
        };
        assert!(base.differences(&base.clone()).is_empty());
        let empty_header = BlobProperties {
            headers: ContentHeaders {
                content_type: Some("text/csv".into()),
                cache_control: Some(String::new()),
                ..Default::default()
            },
            ..base.clone()
        };
        assert!(base.differences(&empty_header).is_empty(), "empty is unset");
        let append = BlobProperties {
            blob_type: BlobType::Append,
            ..base.clone()
        };
        assert_eq!(base.differences(&append), ["blob type"]);
        let retagged = BlobProperties {
            tags: Some(Tags::new()),
            ..base.clone()
        };
        assert_eq!(base.differences(&retagged), ["tags"]);
        let unknown_tags = BlobProperties {
            tags: None,
            ..base.clone()
        };
        assert!(base.differences(&unknown_tags).is_empty());
        let cool = BlobProperties {
            access_tier: Some("Cool".into()),
            ..base.clone()
        };
        let hot = BlobProperties {
            access_tier: Some("hot".into()),
            ..base.clone()
        };
        assert_eq!(cool.differences(&hot), ["access tier"]);
        assert!(cool.differences(&base).is_empty(), "an unknown tier");
    }

    #[test]
    fn tags_travel_as_a_query() {
        let tags = Tags::from([
            ("project".into(), "lake house".into()),
            ("a&b".into(), "x=y".into()),
        ]);
        assert_eq!(tags_header(&tags), "a%26b=x%3Dy&project=lake%20house");
    }
}
