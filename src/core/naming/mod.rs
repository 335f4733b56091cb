//! Names: which container and blob names Azure accepts, and where the backup of one blob version
//! lives.
//!
//! The backup of version `(name, last_modified, etag)` of a blob in container `c` is the blob
//! `{stem}_{YYYYMMDDTHHMMSSZ}_{etag}{ext}` in container `{c}{suffix}`. Every version gets its own
//! name, so a backup version is never overwritten, and the name parses back to the source name,
//! instant and ETag so that restore can map a backup to what it came from.

use thiserror::Error;
use time::{format_description::BorrowedFormatItem, macros::format_description, OffsetDateTime};

use super::etag::normalize_etag;

/// Azure's limit on a blob name, in characters.
pub const MAX_BLOB_NAME_CHARS: usize = 1024;
/// Azure's limits on a container name, in characters.
pub const CONTAINER_NAME_CHARS: std::ops::RangeInclusive<usize> = 3..=63;

const TIMESTAMP_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");
/// `_YYYYMMDDTHHMMSSZ_`: the marker between stem and ETag.
const MARKER_LEN: usize = 18;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NamingError {
    #[error("invalid container name {name:?}: {reason}")]
    InvalidContainer { name: String, reason: &'static str },
    #[error("invalid blob name {name:?}: {reason}")]
    InvalidBlob { name: String, reason: &'static str },
    #[error(
        "backup container name {name:?} for container {container:?} is longer than 63 characters"
    )]
    BackupContainerTooLong { container: String, name: String },
    #[error(
        "backup name for blob {name:?} would be {length} characters, over Azure's limit of 1024"
    )]
    BackupNameTooLong { name: String, length: usize },
    #[error("ETag {etag:?} cannot be part of a backup name: {reason}")]
    UnusableEtag { etag: String, reason: &'static str },
    #[error("{name:?} is not a backup name: {reason}")]
    NotABackupName { name: String, reason: &'static str },
}

/// Checks Azure's container naming rules: 3-63 characters of lowercase letters, digits and
/// hyphens, starting and ending with a letter or digit, no two hyphens in a row.
pub fn validate_container_name(name: &str) -> Result<(), NamingError> {
    let invalid = |reason| {
        Err(NamingError::InvalidContainer {
            name: name.to_owned(),
            reason,
        })
    };
    if !CONTAINER_NAME_CHARS.contains(&name.len()) {
        return invalid("must be 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return invalid("only lowercase letters, digits and hyphens are allowed");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return invalid("must start and end with a letter or digit");
    }
    if name.contains("--") {
        return invalid("must not contain two hyphens in a row");
    }
    Ok(())
}

/// Checks Azure's blob naming rules: 1 to 1,024 characters, no control characters.
pub fn validate_blob_name(name: &str) -> Result<(), NamingError> {
    let invalid = |reason| {
        Err(NamingError::InvalidBlob {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("must not be empty");
    }
    if name.chars().count() > MAX_BLOB_NAME_CHARS {
        return invalid("must not be longer than 1024 characters");
    }
    if name.chars().any(char::is_control) {
        return invalid("must not contain control characters");
    }
    Ok(())
}

/// The container that holds the backups of `container`.
pub fn backup_container_name(container: &str, suffix: &str) -> Result<String, NamingError> {
    validate_container_name(container)?;
    let name = format!("{container}{suffix}");
    if name.len() > *CONTAINER_NAME_CHARS.end() {
        return Err(NamingError::BackupContainerTooLong {
            container: container.to_owned(),
            name,
        });
    }
    validate_container_name(&name)?;
    Ok(name)
}

/// The blob name of the backup of one version of `name`; `""` is a hierarchical namespace's
/// root directory (`_{time}_{etag}`: no blob has an empty name, so no other version's backup
/// is named so, and it parses back to the empty name).
pub fn backup_blob_name(
    name: &str,
    last_modified: OffsetDateTime,
    etag: &str,
) -> Result<String, NamingError> {
    if !name.is_empty() {
        validate_blob_name(name)?;
    }
    let etag = normalize_etag(etag);
    check_etag_fits_name(etag)?;
    let (stem, ext) = split_extension(name);
    let timestamp = format_timestamp(last_modified);
    let backup = format!("{stem}_{timestamp}_{etag}{ext}");
    let length = backup.chars().count();
    if length > MAX_BLOB_NAME_CHARS {
        return Err(NamingError::BackupNameTooLong {
            name: name.to_owned(),
            length,
        });
    }
    Ok(backup)
}

/// The directory part of a name prefix, up to and including its last `/` (`raw/2026/sal` →
/// `raw/2026/`); `None` when it has none. Backups keep the source's directories, so this narrows
/// a backup listing to the prefix's directory.
pub fn directory_of(prefix: &str) -> Option<&str> {
    prefix.rfind('/').map(|i| &prefix[..=i])
}

/// The prefix every backup name of `name` starts with (`{stem}_`), to list one blob's backups.
pub fn backup_name_prefix(name: &str) -> String {
    format!("{}_", split_extension(name).0)
}

/// What a backup name says about the version it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedBackupName {
    pub source_name: String,
    /// Last-modified of the source version, to the second.
    pub last_modified: OffsetDateTime,
    pub etag: String,
}

/// Parses a name made by [`backup_blob_name`] back into its parts.
pub fn parse_backup_blob_name(backup: &str) -> Result<ParsedBackupName, NamingError> {
    let not_backup = |reason| NamingError::NotABackupName {
        name: backup.to_owned(),
        reason,
    };
    let marked = split_marked(backup)
        .ok_or_else(|| not_backup("no _YYYYMMDDTHHMMSSZ_ marker in the last path segment"))?;
    if marked.field.is_empty() {
        return Err(not_backup("no ETag after the timestamp"));
    }
    let last_modified = time::PrimitiveDateTime::parse(marked.timestamp, TIMESTAMP_FORMAT)
        .map_err(|_| not_backup("the timestamp is not a valid date"))?
        .assume_utc();
    Ok(ParsedBackupName {
        source_name: marked.source_name,
        last_modified,
        etag: marked.field.to_owned(),
    })
}

/// The timestamp of a bookkeeping record's name: no version is ever written at it (month 00 is
/// no date), so a record's name can never be the backup name of any lake blob.
const RECORD_TIMESTAMP: &str = "00000000T000000Z";

/// The blob name, beside the backups of `name`, of a bookkeeping record about it:
/// `{stem}_00000000T000000Z_{field}{ext}`. `field` follows the rules of an ETag in a backup
/// name (no `.`, `/`, `\`, `"`, control character or marker).
pub fn record_blob_name(name: &str, field: &str) -> Result<String, NamingError> {
    validate_blob_name(name)?;
    check_etag_fits_name(field)?;
    let (stem, ext) = split_extension(name);
    let record = format!("{stem}_{RECORD_TIMESTAMP}_{field}{ext}");
    let length = record.chars().count();
    if length > MAX_BLOB_NAME_CHARS {
        return Err(NamingError::BackupNameTooLong {
            name: name.to_owned(),
            length,
        });
    }
    Ok(record)
}

/// Reads a name made by [`record_blob_name`]: the source name and the field; `None` for any
/// other name (backups included).
pub fn parse_record_blob_name(record: &str) -> Option<(String, &str)> {
    let marked = split_marked(record)?;
    (marked.timestamp == RECORD_TIMESTAMP && !marked.field.is_empty())
        .then_some((marked.source_name, marked.field))
}

/// A name with a `_YYYYMMDDTHHMMSSZ_` marker in its last segment, split at the marker nearest
/// the end before the extension.
struct Marked<'a> {
    source_name: String,
    timestamp: &'a str,
    /// Between the marker and the extension: a backup's ETag, a record's field.
    field: &'a str,
}

fn split_marked(name: &str) -> Option<Marked<'_>> {
    let segment_start = name.rfind('/').map_or(0, |i| i + 1);
    // The extension is the source's, from its last dot: the marker and the field hold none, so
    // it is from the whole name's last dot too, and the marker is searched before it — an
    // extension may look like a backup name itself (`exp.csv_20250101T000000Z_abc`).
    let (head, ext) = split_extension(name);
    let segment = &head[segment_start..];
    // The marker nearest the end is ours: a field never contains one, a stem may.
    let marker_at = (0..segment.len().saturating_sub(MARKER_LEN - 1))
        .rev()
        .find(|&i| is_marker(&segment.as_bytes()[i..i + MARKER_LEN]))?;
    let stem_end = segment_start + marker_at;
    Some(Marked {
        source_name: format!("{}{ext}", &name[..stem_end]),
        timestamp: &name[stem_end + 1..stem_end + MARKER_LEN - 1],
        field: &head[stem_end + MARKER_LEN..],
    })
}

fn is_marker(bytes: &[u8]) -> bool {
    bytes.len() == MARKER_LEN
        && bytes[0] == b'_'
        && bytes[1..9].iter().all(u8::is_ascii_digit)
        && bytes[9] == b'T'
        && bytes[10..16].iter().all(u8::is_ascii_digit)
        && bytes[16] == b'Z'
        && bytes[17] == b'_'
}

fn format_timestamp(instant: OffsetDateTime) -> String {
    instant
        .to_offset(time::UtcOffset::UTC)
        .format(TIMESTAMP_FORMAT)
        .expect("a UTC instant always formats with a fixed numeric pattern")
}

/// The ETag sits between the marker and the extension, so it must not contain what delimits
/// those: a dot (the extension), a slash (a path segment) or a marker of its own.
fn check_etag_fits_name(etag: &str) -> Result<(), NamingError> {
    let unusable = |reason| {
        Err(NamingError::UnusableEtag {
            etag: etag.to_owned(),
            reason,
        })
    };
    if etag.is_empty() {
        return unusable("it is empty");
    }
    if etag.contains(['.', '/', '\\']) || etag.chars().any(|c| c.is_control() || c == '"') {
        return unusable("it contains '.', '/', '\\', '\"' or a control character");
    }
    if etag.len() >= MARKER_LEN
        && (0..=etag.len() - MARKER_LEN).any(|i| is_marker(&etag.as_bytes()[i..i + MARKER_LEN]))
    {
        return unusable("it contains a _YYYYMMDDTHHMMSSZ_ marker");
    }
    Ok(())
}

/// Splits the last `.suffix` of the final path segment off `name`; leading dots of the segment
/// do not start a suffix (`.bashrc` has none), as in Python's `os.path.splitext`.
fn split_extension(name: &str) -> (&str, &str) {
    let segment_start = name.rfind('/').map_or(0, |i| i + 1);
    let segment = &name[segment_start..];
    let leading_dots = segment.len() - segment.trim_start_matches('.').len();
    match segment[leading_dots..].rfind('.') {
        Some(dot) => name.split_at(segment_start + leading_dots + dot),
        None => (name, ""),
    }
}

#[cfg(test)]
mod tests;
