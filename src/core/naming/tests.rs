//! Unit tests of the names: which Azure accepts, and backup names that parse back.

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

/// Valid lake names of one to three segments, each drawn from the regex `segment`.
fn lake_names(segment: &'static str) -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::strategy::Strategy;
    proptest::collection::vec(segment, 1..4)
        .prop_map(|segments| segments.join("/"))
        .prop_filter("a valid blob name", |name| validate_blob_name(name).is_ok())
}

/// Version times, to the second, from 1970 to 2100.
fn instants() -> impl proptest::strategy::Strategy<Value = OffsetDateTime> {
    use proptest::strategy::Strategy;
    (0i64..4_102_444_800).prop_map(|seconds| OffsetDateTime::from_unix_timestamp(seconds).unwrap())
}

proptest::proptest! {
    /// For any valid name, version time and ETag: parse(backup_name(x)) == x (to the second,
    /// the name's precision).
    #[test]
    fn every_backup_name_parses_back_to_its_version(
        name in lake_names("([a-z._ éT]|Z|_|[0-9]|_20250101T000000Z_|\\.csv){0,12}"),
        when in instants(),
        etag in "0x[0-9A-F]{1,16}",
    ) {
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
        name in lake_names(
            "([a-z._ éT]|Z|_|[0-9]|_20250101T000000Z_|_00000000T000000Z_|\\.csv){0,12}"
        ),
        when in instants(),
        etag in "0x[0-9A-F]{1,16}",
        field in "0x[0-9A-F]{1,16}~[dr][1-9]",
    ) {
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

#[test]
fn the_root_directory_has_the_empty_name_and_parses_back_to_it() {
    let root = backup_blob_name("", WHEN, ETAG).unwrap();
    assert_eq!(root, "_20261124T141734Z_0x8DC12AB34CD56EF");
    let parsed = parse_backup_blob_name(&root).unwrap();
    assert_eq!(parsed.source_name, "");
    assert_eq!(parsed.etag, ETAG);
    // A file whose name looks like it is not the root.
    let lookalike = backup_blob_name(&root, WHEN, "0x2").unwrap();
    assert_eq!(
        parse_backup_blob_name(&lookalike).unwrap().source_name,
        root
    );
}
