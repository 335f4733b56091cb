//! Deletion markers: the record, in the backup container, that a blob with backups was seen gone
//! from the lake — so that a restore "as of T" leaves out what had been deleted by then.
//!
//! A marker is `.lakebackup-deleted/{source name}@{etag}` in `{c}bak`, where `etag` is the last
//! backed-up version's: one marker per life of a name (a re-created blob has another ETag), and
//! written with `If-None-Match: *`, so the first pass to see the deletion sets its time. The
//! markers of one directory sit in one directory level (`.lakebackup-deleted/{directory}`), so a
//! pass lists them beside the backups and writes only the new ones. Which names are gone is
//! decided per listing page of one directory, from the names the page covers. Pure.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::naming::MAX_BLOB_NAME_CHARS;

/// Where markers live in a backup container. Backups never start with it unless the lake has a
/// top-level directory of that very name.
pub const MARKER_PREFIX: &str = ".lakebackup-deleted/";

/// The metadata key of a marker holding when the deletion was first seen (RFC 3339).
pub const SEEN_KEY: &str = "lakebackup_deleted_seen";

/// The marker's blob name for the life of `source_name` that ended at version `etag`; `None` when
/// it would exceed Azure's name limit (the deletion is then not recorded).
pub fn marker_name(source_name: &str, etag: &str) -> Option<String> {
    let name = format!("{MARKER_PREFIX}{source_name}@{etag}");
    (name.chars().count() <= MAX_BLOB_NAME_CHARS).then_some(name)
}

/// Reads a marker's name back: `(source name, etag)`. An ETag never holds `@` or `/`; a source
/// name may.
pub fn parse_marker_name(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(MARKER_PREFIX)?;
    let (source, etag) = rest.rsplit_once('@')?;
    (!source.is_empty() && !source.ends_with('/') && !etag.is_empty() && !etag.contains('/'))
        .then_some((source, etag))
}

/// Where the markers of the names directly in directory `prefix` sit (one directory level).
pub fn markers_directory(prefix: &str) -> String {
    format!("{MARKER_PREFIX}{prefix}")
}

/// The names with backups (name → newest backed-up ETag) that fall in the listing range
/// `(after, before)` — both exclusive, `None` unbounded — and were not listed in it: deleted.
/// A listing is sorted and holds every entry of a name together, so a name strictly inside the
/// range that was not listed does not exist.
pub fn gone_in_range<'a>(
    backed_up: &'a BTreeMap<String, String>,
    after: Option<&str>,
    before: Option<&str>,
    listed: &HashSet<String>,
) -> Vec<(&'a str, &'a str)> {
    backed_up
        .iter()
        .filter(|(name, _)| after.is_none_or(|a| name.as_str() > a))
        .filter(|(name, _)| before.is_none_or(|b| name.as_str() < b))
        .filter(|(name, _)| !listed.contains(name.as_str()))
        .map(|(name, etag)| (name.as_str(), etag.as_str()))
        .collect()
}

/// The sub-directories of `{c}bak` (markers aside) inside the range `(after, before)` that the
/// lake's listing did not show: directories deleted from the lake, whose names must be visited
/// all the same to record their deletions.
pub fn gone_directories<'a>(
    backed_up: &'a BTreeSet<String>,
    after: Option<&str>,
    before: Option<&str>,
    listed: &HashSet<String>,
) -> Vec<&'a str> {
    backed_up
        .iter()
        .filter(|dir| !dir.starts_with(MARKER_PREFIX))
        .filter(|dir| after.is_none_or(|a| dir.as_str() > a))
        .filter(|dir| before.is_none_or(|b| dir.as_str() < b))
        .filter(|dir| !listed.contains(dir.as_str()))
        .map(String::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_names_round_trip() {
        let name = marker_name("raw/2026/part \"q\"@v2.parquet", "0x8DC1").unwrap();
        assert_eq!(
            name,
            ".lakebackup-deleted/raw/2026/part \"q\"@v2.parquet@0x8DC1"
        );
        assert_eq!(
            parse_marker_name(&name),
            Some(("raw/2026/part \"q\"@v2.parquet", "0x8DC1"))
        );
        // A directory's markers are one level of the marker tree.
        assert!(name.starts_with(&markers_directory("raw/2026/")));
        assert!(!name[markers_directory("raw/2026/").len()..].contains('/'));
        assert_eq!(parse_marker_name("raw/x_20260101T000000Z_0x1.csv"), None);
        assert_eq!(parse_marker_name(".lakebackup-deleted/raw/x@0x1/y"), None);
        assert!(marker_name(&"a".repeat(1010), "0x1").is_none());
    }

    #[test]
    fn only_names_strictly_inside_the_range_and_not_listed_are_gone() {
        let backed_up: BTreeMap<String, String> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|n| (n.to_string(), format!("0x{n}")))
            .collect();
        let listed: HashSet<String> = ["b", "d"].iter().map(|n| n.to_string()).collect();
        // A page that listed b..d: a and e lie outside it, c inside and missing.
        assert_eq!(
            gone_in_range(&backed_up, Some("a"), Some("e"), &listed),
            [("c", "0xc")]
        );
        // The directory's only page: everything not listed is gone.
        assert_eq!(
            gone_in_range(&backed_up, None, None, &listed),
            [("a", "0xa"), ("c", "0xc"), ("e", "0xe")]
        );
        // The bounds themselves were listed names: never judged here.
        assert!(gone_in_range(&backed_up, Some("c"), Some("d"), &listed).is_empty());
    }

    #[test]
    fn backup_directories_the_lake_no_longer_has_are_found() {
        let dirs: BTreeSet<String> = ["a/", "b/", ".lakebackup-deleted/", "c/"]
            .iter()
            .map(|d| d.to_string())
            .collect();
        let listed: HashSet<String> = ["b/"].iter().map(|d| d.to_string()).collect();
        assert_eq!(gone_directories(&dirs, None, None, &listed), ["a/", "c/"]);
        assert_eq!(gone_directories(&dirs, Some("a/"), None, &listed), ["c/"]);
    }
}
