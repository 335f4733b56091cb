//! The List Blobs answer, read into the core's types: only what the product uses (the SDK's full
//! model costs about a kilobyte per entry), names percent-decoded where the service encoded
//! them, an empty Content-MD5 read as none.

use std::collections::HashMap;

use azure_storage_blob::models::BlobName;
use serde::Deserialize;

use super::super::StorageError;
use crate::core::properties::{Access, BlobProperties, BlobType, ContentHeaders, Tags};

/// One listing page, reading only what the functions use: the SDK's full model costs about a
/// kilobyte per entry, which at 5,000 entries a page dominated the reconciler's memory.
#[derive(Deserialize)]
pub(super) struct ListedPage {
    #[serde(rename = "Blobs", default)]
    pub(super) blobs: ListedItems,
    #[serde(rename = "NextMarker", default)]
    pub(super) next_marker: Option<String>,
}

#[derive(Default, Deserialize)]
pub(super) struct ListedItems {
    /// Blobs and (with a delimiter) directory prefixes, interleaved in the service's order.
    #[serde(rename = "$value", default)]
    pub(super) entries: Vec<RawEntry>,
}

#[derive(Deserialize)]
pub(super) enum RawEntry {
    Blob(Box<ListedItem>),
    BlobPrefix(ListedPrefix),
}

#[derive(Deserialize)]
pub(super) struct ListedPrefix {
    #[serde(rename = "Name", default)]
    pub(super) name: Option<BlobName>,
}

#[derive(Deserialize)]
pub(super) struct ListedItem {
    #[serde(rename = "Name", default)]
    pub(super) name: Option<BlobName>,
    #[serde(rename = "Snapshot", default)]
    pub(super) snapshot: Option<String>,
    #[serde(rename = "Properties", default)]
    pub(super) properties: ListedProperties,
    #[serde(rename = "Metadata", default)]
    pub(super) metadata: Option<HashMap<String, String>>,
    #[serde(rename = "Tags", default)]
    pub(super) tags: Option<ListedTags>,
    /// The listing asked for tags: a blob listed without them has none.
    #[serde(skip)]
    pub(super) tags_listed: bool,
}

#[derive(Default, Deserialize)]
pub(super) struct ListedTags {
    #[serde(rename = "TagSet", default)]
    pub(super) tag_set: Option<ListedTagSet>,
}

#[derive(Default, Deserialize)]
pub(super) struct ListedTagSet {
    #[serde(rename = "Tag", default)]
    pub(super) tags: Vec<ListedTag>,
}

#[derive(Default, Deserialize)]
pub(super) struct ListedTag {
    #[serde(rename = "Key", default)]
    pub(super) key: Option<String>,
    #[serde(rename = "Value", default)]
    pub(super) value: Option<String>,
}

#[derive(Default, Deserialize)]
pub(super) struct ListedProperties {
    #[serde(rename = "Etag", default)]
    pub(super) etag: Option<String>,
    #[serde(
        rename = "Last-Modified",
        default,
        with = "azure_core::time::rfc7231::option"
    )]
    pub(super) last_modified: Option<time::OffsetDateTime>,
    #[serde(rename = "Content-Length", default)]
    pub(super) content_length: Option<u64>,
    #[serde(rename = "Content-MD5", default, deserialize_with = "base64_bytes")]
    pub(super) content_md5: Option<Vec<u8>>,
    #[serde(rename = "CopyStatus", default)]
    pub(super) copy_status: Option<String>,
    #[serde(rename = "BlobType", default)]
    pub(super) blob_type: Option<String>,
    #[serde(rename = "AccessTier", default)]
    pub(super) access_tier: Option<String>,
    #[serde(rename = "AccessTierInferred", default)]
    pub(super) access_tier_inferred: Option<bool>,
    #[serde(rename = "Content-Type", default)]
    pub(super) content_type: Option<String>,
    #[serde(rename = "Content-Encoding", default)]
    pub(super) content_encoding: Option<String>,
    #[serde(rename = "Content-Language", default)]
    pub(super) content_language: Option<String>,
    #[serde(rename = "Content-Disposition", default)]
    pub(super) content_disposition: Option<String>,
    #[serde(rename = "Cache-Control", default)]
    pub(super) cache_control: Option<String>,
    #[serde(rename = "CustomerProvidedKeySha256", default)]
    pub(super) customer_provided_key_sha256: Option<String>,
    /// With `include=permissions`, on a hierarchical namespace.
    #[serde(rename = "Owner", default)]
    pub(super) owner: Option<String>,
    #[serde(rename = "Group", default)]
    pub(super) group: Option<String>,
    #[serde(rename = "Permissions", default)]
    pub(super) permissions: Option<String>,
    #[serde(rename = "Acl", default)]
    pub(super) acl: Option<String>,
    /// `file` or `directory`, with `include=permissions`.
    #[serde(rename = "ResourceType", default)]
    pub(super) resource_type: Option<String>,
}

impl ListedProperties {
    /// The path's access control, when the listing said all of it.
    pub(super) fn access(&self) -> Option<Access> {
        Some(Access {
            owner: self.owner.clone()?,
            group: self.group.clone()?,
            permissions: self.permissions.clone()?,
            acl: self.acl.clone()?,
        })
    }
}

impl ListedItem {
    pub(super) fn name(&self, operation: &str) -> Result<String, StorageError> {
        decoded_name(self.name.as_ref(), operation)
    }

    /// Type, tier, content headers and (when the listing included them) tags.
    pub(super) fn blob_properties(&self) -> BlobProperties {
        let p = &self.properties;
        BlobProperties {
            blob_type: p
                .blob_type
                .as_deref()
                .and_then(BlobType::parse)
                .unwrap_or_default(),
            // A tier the account's default gave is not the blob's own.
            access_tier: p
                .access_tier
                .clone()
                .filter(|tier| !tier.is_empty() && p.access_tier_inferred != Some(true)),
            headers: ContentHeaders {
                content_type: p.content_type.clone(),
                content_encoding: p.content_encoding.clone(),
                content_language: p.content_language.clone(),
                content_disposition: p.content_disposition.clone(),
                cache_control: p.cache_control.clone(),
            }
            .normalized(),
            tags: match &self.tags {
                Some(tags) => Some(
                    tags.tag_set
                        .iter()
                        .flat_map(|set| &set.tags)
                        .filter_map(|tag| {
                            Some((tag.key.clone()?, tag.value.clone().unwrap_or_default()))
                        })
                        .collect::<Tags>(),
                ),
                None if self.tags_listed => Some(Tags::new()),
                None => None,
            },
            customer_key: p
                .customer_provided_key_sha256
                .as_deref()
                .is_some_and(|sha| !sha.is_empty()),
            access: p.access(),
            directory: p
                .resource_type
                .as_deref()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("directory")),
        }
    }
}

/// The name, percent-decoded when the service marked it `Encoded` (names with characters XML
/// cannot carry).
pub(super) fn decoded_name(
    name: Option<&BlobName>,
    operation: &str,
) -> Result<String, StorageError> {
    let missing = || StorageError::other(operation, "the service listed an entry without a name");
    let name = name.ok_or_else(missing)?;
    let content = name.content.clone().ok_or_else(missing)?;
    if !name.encoded.unwrap_or_default() {
        return Ok(content);
    }
    percent_encoding::percent_decode_str(&content)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| StorageError::other(operation, "an encoded blob name is not UTF-8"))
}

pub(super) fn base64_bytes<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<u8>>, D::Error> {
    use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
    let text = Option::<String>::deserialize(deserializer)?;
    // Azure lists a blob without an MD5 as an empty `<Content-MD5 />`: that is no digest at all.
    Ok(text
        .and_then(|t| BASE64.decode(t.trim()).ok())
        .filter(|digest| !digest.is_empty()))
}
