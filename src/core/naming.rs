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

/// The blob name of the backup of one version of `name`.
pub fn backup_blob_name(
    name: &str,
    last_modified: OffsetDateTime,
    etag: &str,
) -> Result<String, NamingError> {
    validate_blob_name(name)?;
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
mod tests {
    use super::*;
    use time::macros::datetime;

    const ETAG: &str = "0x8DC12AB34CD56EF";
    const WHEN: OffsetDateTime = datetime!(2026-11-24 14:17:34.987 UTC);

    #[test]
    fn backup_name_matches_the_documented_example() {
        assert_eq!(
            backup_blob_name("raw/2026/sales.v2.csv", WHEN, "\"0x8DC12AB34CD56EF\"").unwrap(),
            "raw/2026/sales.v2_20261124T141734Z_0x8DC12AB34CD56EF.csv"
        );
    }

    #[test]
    fn extension_rules_follow_the_last_segment() {
        let cases = [
            ("plain", "plain_20261124T141734Z_0x8DC12AB34CD56EF"),
            (".bashrc", ".bashrc_20261124T141734Z_0x8DC12AB34CD56EF"),
            ("..hidden", "..hidden_20261124T141734Z_0x8DC12AB34CD56EF"),
            (
                ".env.local",
                ".env_20261124T141734Z_0x8DC12AB34CD56EF.local",
            ),
            (
                "dir.d/noext",
                "dir.d/noext_20261124T141734Z_0x8DC12AB34CD56EF",
            ),
            (
                "dir.d/.cfg",
                "dir.d/.cfg_20261124T141734Z_0x8DC12AB34CD56EF",
            ),
            ("a.tar.gz", "a.tar_20261124T141734Z_0x8DC12AB34CD56EF.gz"),
            ("trailing.", "trailing_20261124T141734Z_0x8DC12AB34CD56EF."),
        ];
        for (name, expected) in cases {
            assert_eq!(
                backup_blob_name(name, WHEN, ETAG).unwrap(),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn timestamp_is_utc_whatever_the_offset() {
        let local = WHEN.to_offset(time::macros::offset!(+05:30));
        assert_eq!(
            backup_blob_name("x.csv", local, ETAG).unwrap(),
            "x_20261124T141734Z_0x8DC12AB34CD56EF.csv"
        );
    }

    #[test]
    fn every_backup_name_parses_back_to_its_source() {
        let names = [
            "raw/2026/sales.v2.csv",
            "plain",
            ".bashrc",
            "dir.d/.cfg",
            "a b/c \"quoted\" #1?.json",
            "100%/ünïcødé/数据.parquet",
            "deep/a/b/c/d/e/f/g/h/i/j/k.txt",
            "already_20250101T000000Z_0x1.csv",
            "trailing.",
        ];
        for name in names {
            let backup = backup_blob_name(name, WHEN, ETAG).unwrap();
            let parsed = parse_backup_blob_name(&backup).unwrap();
            assert_eq!(parsed.source_name, name);
            assert_eq!(parsed.etag, ETAG);
            assert_eq!(parsed.last_modified, datetime!(2026-11-24 14:17:34 UTC));
        }
    }

    #[test]
    fn non_backup_names_are_refused_when_parsed() {
        for name in [
            "plain.csv",
            "x_2026112T141734Z_0x1.csv",
            "x_20261124T141734Z_.csv",
        ] {
            assert!(
                matches!(
                    parse_backup_blob_name(name),
                    Err(NamingError::NotABackupName { .. })
                ),
                "{name}"
            );
        }
        assert!(parse_backup_blob_name("x_20261324T141734Z_0x1.csv").is_err());
    }

    #[test]
    fn too_long_names_are_errors_not_truncations() {
        let at_limit = "a".repeat(MAX_BLOB_NAME_CHARS);
        assert!(validate_blob_name(&at_limit).is_ok());
        assert!(matches!(
            backup_blob_name(&at_limit, WHEN, ETAG),
            Err(NamingError::BackupNameTooLong { length, .. }) if length == MAX_BLOB_NAME_CHARS + 35
        ));
        let fits = "b".repeat(MAX_BLOB_NAME_CHARS - 35);
        assert_eq!(
            backup_blob_name(&fits, WHEN, ETAG).unwrap().chars().count(),
            MAX_BLOB_NAME_CHARS
        );
        assert!(validate_blob_name(&"c".repeat(MAX_BLOB_NAME_CHARS + 1)).is_err());
    }

    #[test]
    fn backup_container_name_limits() {
        assert_eq!(backup_container_name("sales", "bak").unwrap(), "salesbak");
        let max = "a".repeat(60);
        assert_eq!(backup_container_name(&max, "bak").unwrap().len(), 63);
        assert!(matches!(
            backup_container_name(&format!("{max}b"), "bak"),
            Err(NamingError::BackupContainerTooLong { .. })
        ));
        assert!(backup_container_name("sales", "_BAK").is_err());
    }

    #[test]
    fn container_rules() {
        for good in ["abc", "a-b-c", "123", &"z".repeat(63)] {
            assert!(validate_container_name(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "ABC",
            "a_b",
            "-ab",
            "ab-",
            "a--b",
            "",
            &"z".repeat(64),
            "a b",
        ] {
            assert!(validate_container_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unusable_etags_are_refused() {
        for etag in ["", "\"\"", "0x1.2", "a/b", "x_20261124T141734Z_y"] {
            assert!(
                matches!(
                    backup_blob_name("x.csv", WHEN, etag),
                    Err(NamingError::UnusableEtag { .. })
                ),
                "{etag}"
            );
        }
    }

    #[test]
    fn blob_name_rules() {
        assert!(validate_blob_name("").is_err());
        assert!(validate_blob_name("a\u{0}b").is_err());
        assert!(validate_blob_name("ok name/with spaces.csv").is_ok());
    }

    #[test]
    fn a_prefix_narrows_to_its_directory() {
        assert_eq!(directory_of("raw/2026/sal"), Some("raw/2026/"));
        assert_eq!(directory_of("raw/2026/"), Some("raw/2026/"));
        assert_eq!(directory_of("sal"), None);
    }

    #[test]
    fn names_the_lake_already_produces_round_trip() {
        for name in [
            "exp.csv_20250101T000000Z_abc",
            "exp_20250101T000000Z_abc",
            "out/part-00000-1a2b3c4d-5e6f-7a8b-9c0d-112233445566-c000.snappy.parquet",
            "out/_SUCCESS",
            "out/.part-00000-1a2b.snappy.parquet.crc",
            "table/_delta_log/00000000000000000010.json",
            "table/_delta_log/_last_checkpoint",
            ".hidden",
            "..",
            "dir.v2/noext",
            "a.b.c_20261124T141734Z_0x1.d",
        ] {
            let backup = backup_blob_name(name, WHEN, ETAG).unwrap();
            let parsed = parse_backup_blob_name(&backup).unwrap();
            assert_eq!(parsed.source_name, name, "{backup}");
            assert_eq!(parsed.etag, ETAG, "{backup}");
            assert_eq!(parsed.last_modified, datetime!(2026-11-24 14:17:34 UTC));
        }
    }

    #[test]
    fn record_names_are_never_backup_names() {
        let record = record_blob_name("raw/a.v1.csv", "0x1~d1").unwrap();
        assert_eq!(record, "raw/a.v1_00000000T000000Z_0x1~d1.csv");
        assert_eq!(
            parse_record_blob_name(&record),
            Some(("raw/a.v1.csv".to_owned(), "0x1~d1"))
        );
        assert!(parse_backup_blob_name(&record).is_err());
        let backup = backup_blob_name("raw/a.v1.csv", WHEN, ETAG).unwrap();
        assert_eq!(parse_record_blob_name(&backup), None);
        assert!(record_blob_name("x", "a.b").is_err());
    }

    proptest::proptest! {
        /// For any valid name, version time and ETag: parse(backup_name(x)) == x (to the second,
        /// the name's precision).
        #[test]
        fn every_backup_name_parses_back_to_its_version(
            segments in proptest::collection::vec(
                "([a-z._ éT]|Z|_|[0-9]|_20250101T000000Z_|\\.csv){0,12}",
                1..4,
            ),
            seconds in 0i64..4_102_444_800,
            etag in "0x[0-9A-F]{1,16}",
        ) {
            let name = segments.join("/");
            proptest::prop_assume!(validate_blob_name(&name).is_ok());
            let when = OffsetDateTime::from_unix_timestamp(seconds).unwrap();
            let Ok(backup) = backup_blob_name(&name, when, &etag) else {
                return Ok(()); // too long for Azure: refused, never truncated (tested above)
            };
            let parsed = parse_backup_blob_name(&backup).unwrap();
            proptest::prop_assert_eq!(&parsed.source_name, &name, "backup {}", backup);
            proptest::prop_assert_eq!(&parsed.etag, &etag);
            proptest::prop_assert_eq!(parsed.last_modified, when);
        }

        /// No lake name's backup name is ever a record name, and no record name parses as a
        /// backup: the bookkeeping can never take a name a backup needs.
        #[test]
        fn records_and_backups_never_share_a_name(
            segments in proptest::collection::vec(
                "([a-z._ éT]|Z|_|[0-9]|_20250101T000000Z_|_00000000T000000Z_|\\.csv){0,12}",
                1..4,
            ),
            seconds in 0i64..4_102_444_800,
            etag in "0x[0-9A-F]{1,16}",
            field in "0x[0-9A-F]{1,16}~[dr][1-9]",
        ) {
            let name = segments.join("/");
            proptest::prop_assume!(validate_blob_name(&name).is_ok());
            let when = OffsetDateTime::from_unix_timestamp(seconds).unwrap();
            if let Ok(backup) = backup_blob_name(&name, when, &etag) {
                proptest::prop_assert_eq!(parse_record_blob_name(&backup), None);
            }
            if let Ok(record) = record_blob_name(&name, &field) {
                proptest::prop_assert!(parse_backup_blob_name(&record).is_err());
                let (source, parsed_field) = parse_record_blob_name(&record).unwrap();
                proptest::prop_assert_eq!(source, name);
                proptest::prop_assert_eq!(parsed_field, field.as_str());
            }
        }
    }
}
