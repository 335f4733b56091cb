//! Unit tests of the restore decisions and the restore options' level prefixes.

use super::*;
use time::macros::datetime;

#[test]
fn a_level_is_listed_as_narrowly_as_the_filter_allows() {
    assert_eq!(stem_prefix("raw/a.cs"), "raw/a");
    assert_eq!(stem_prefix("raw/v1.2/x"), "raw/v1.2/x");
    assert_eq!(stem_prefix("raw/"), "raw/");
    assert_eq!(level_prefix("", ""), "");
    assert_eq!(level_prefix("raw/", "raw/"), "raw/");
    assert_eq!(level_prefix("raw/", "raw/2026-11-2"), "raw/2026-11-2");
    assert_eq!(level_prefix("raw/", "raw/report.cs"), "raw/report");
    assert_eq!(level_prefix("", "raw/v1.2/x"), "raw");
    assert_eq!(level_prefix("raw/", "raw/v1.2/x"), "raw/v1.2");
    // Below the filter's directory the whole level is in scope.
    assert_eq!(level_prefix("raw/2026/", "raw/20"), "raw/2026/");
    // Astral and CJK names are cut on characters, never inside one.
    assert_eq!(level_prefix("日本/", "日本/🦀.cs"), "日本/🦀");
}

#[test]
fn a_restore_names_its_target_and_an_earlier_release_shard_names_none() {
    let earlier: RestoreOptions =
        serde_json::from_str(r#"{"from":"backup","to_account":true,"filter":"dir/"}"#).unwrap();
    assert_eq!(earlier.target_account, None);
    assert_eq!(earlier.target("lake"), None);
    let named = RestoreOptions {
        target_account: Some("https://x.blob.core.windows.net".into()),
        to_container: Some("copy".into()),
        ..earlier
    };
    let text = serde_json::to_string(&named).unwrap();
    assert_eq!(
        serde_json::from_str::<RestoreOptions>(&text).unwrap(),
        named
    );
    assert_eq!(
        named.target("lake"),
        Some(RestoreTarget {
            account: "https://x.blob.core.windows.net".into(),
            container: "copy".into(),
            prefix: "dir/".into(),
        })
    );
}

#[test]
fn one_blob_is_that_name_only_and_a_prefix_is_every_name_it_starts() {
    let options = |filter: &str, exact| RestoreOptions {
        from: RestoreFrom::Backup,
        as_of: None,
        to_container: None,
        to_account: false,
        dry_run: false,
        verify_content: false,
        filter: filter.into(),
        exact,
        target_account: None,
        lake_account: None,
        backup_account: None,
        job_started: None,
    };
    let blob = options("raw/a.csv", true);
    assert!(blob.in_scope("raw/a.csv"));
    assert!(!blob.in_scope("raw/a.csv.old"));
    assert!(!blob.in_scope("raw/a.csv/x"));
    assert!(!blob.reaches("raw/a.csv/"));
    assert_eq!(blob.level_prefix("raw/", true), "raw/a_");
    assert_eq!(blob.level_prefix("raw/", false), "raw/a.csv");
    let prefix = options("raw/a.csv", false);
    for name in ["raw/a.csv", "raw/a.csv.old", "raw/a.csv/x"] {
        assert!(prefix.in_scope(name), "{name}");
    }
    assert!(prefix.reaches("raw/a.csv/"));
    assert_eq!(prefix.level_prefix("raw/", true), "raw/a");
    // Shards queued before `exact` existed read as prefixes.
    let old: RestoreOptions =
        serde_json::from_str(r#"{"from":"backup","filter":"raw/a.csv"}"#).unwrap();
    assert_eq!(old, prefix);
    assert!(!serde_json::to_string(&prefix).unwrap().contains("exact"));
}

use crate::core::properties::BlobProperties;

fn blob(etag: &str, at: OffsetDateTime, md5: u8) -> Version {
    Version {
        etag: etag.into(),
        last_modified: at,
        content_length: 10,
        content_md5: Some(vec![md5]),
        metadata: Some(HashMap::new()),
        ..crate::core::version::sample("raw/a.csv", etag)
    }
}

fn version(etag: &str, at: OffsetDateTime, md5: u8, source: VersionSource) -> Restorable {
    Restorable {
        version: blob(etag, at, md5),
        source,
    }
}

/// A target blob with these facts.
fn target(etag: &str, md5: Option<u8>) -> Version {
    Version {
        content_md5: md5.map(|m| vec![m]),
        ..blob(etag, datetime!(2026-11-25 10:00 UTC), 0)
    }
}

fn history() -> Vec<Restorable> {
    vec![
        version(
            "0x1",
            datetime!(2026-11-20 10:00 UTC),
            1,
            VersionSource::Snapshot("s1".into()),
        ),
        version(
            "0x2",
            datetime!(2026-11-21 10:00 UTC),
            2,
            VersionSource::Snapshot("s2".into()),
        ),
        version(
            "0x3",
            datetime!(2026-11-22 10:00 UTC),
            3,
            VersionSource::Base,
        ),
    ]
}

#[test]
fn the_version_current_at_an_instant_is_chosen() {
    let versions = history();
    let at = |t| version_at(&versions, Some(t)).map(|r| r.version.etag.as_str());
    assert_eq!(at(datetime!(2026-11-19 00:00 UTC)), None);
    // Listed as 10:00:00, it may have been written up to 10:00:00.999999999.
    assert_eq!(at(datetime!(2026-11-20 10:00 UTC)), None);
    assert_eq!(at(datetime!(2026-11-20 10:00:00.5 UTC)), None);
    assert_eq!(at(datetime!(2026-11-20 10:00:01 UTC)), Some("0x1"));
    assert_eq!(at(datetime!(2026-11-21 23:00 UTC)), Some("0x2"));
    assert_eq!(at(datetime!(2026-12-01 00:00 UTC)), Some("0x3"));
    assert_eq!(version_at(&versions, None).unwrap().version.etag, "0x3");
    // An exact time (with a fraction) is compared as it is.
    let exact = [version(
        "0x4",
        datetime!(2026-11-20 10:00:00.25 UTC),
        4,
        VersionSource::Snapshot("s4".into()),
    )];
    assert_eq!(
        version_at(&exact, Some(datetime!(2026-11-20 10:00:00.2 UTC))),
        None
    );
    assert!(version_at(&exact, Some(datetime!(2026-11-20 10:00:00.25 UTC))).is_some());
}

#[test]
fn the_lakes_own_version_is_the_version_of_an_instant_it_was_written_by() {
    let backup_of = |etag: &str, at, md5| {
        version(
            etag,
            at,
            md5,
            VersionSource::Backup {
                name: format!("a_{etag}.csv"),
                etag: format!("b{etag}"),
            },
        )
    };
    let backed_up = backup_of("0x1", datetime!(2026-11-20 10:00 UTC), 1);
    // Written after the last backup pass, before the instant: it stays, unbacked or not.
    let lake_now = blob("0x2", datetime!(2026-11-21 10:00 UTC), 2);
    let at = |t| {
        version_with_lake(Some(backed_up.clone()), Some(lake_now.clone()), t)
            .map(|r| (r.version.etag, r.source == VersionSource::Base))
    };
    assert_eq!(
        at(Some(datetime!(2026-11-22 00:00 UTC))),
        Some(("0x2".into(), true))
    );
    // Without an instant, the newest version is the lake's own.
    assert_eq!(at(None), Some(("0x2".into(), true)));
    // Written after the instant: the backup's version is the instant's.
    assert_eq!(
        at(Some(datetime!(2026-11-20 12:00 UTC))),
        Some(("0x1".into(), false))
    );
    // Within the second the lake reports, it may have been written after the instant.
    assert_eq!(
        at(Some(datetime!(2026-11-21 10:00:00.5 UTC))),
        Some(("0x1".into(), false))
    );
    // Backed up, the lake's version is read from its backup.
    let its_backup = backup_of("0x2", datetime!(2026-11-21 10:00 UTC), 2);
    let chosen = version_with_lake(Some(its_backup.clone()), Some(lake_now.clone()), None);
    assert_eq!(chosen, Some(its_backup));
    // Two versions in one second, the backup chosen by its name (0x9 > 0x2) not the lake's
    // current one: the lake's own wins the tie.
    let same_second = backup_of("0x9", datetime!(2026-11-21 10:00 UTC), 9);
    let chosen = version_with_lake(Some(same_second), Some(lake_now.clone()), None).unwrap();
    assert_eq!(
        (chosen.version.etag.as_str(), chosen.source),
        ("0x2", VersionSource::Base)
    );
    assert_eq!(
        version_with_lake(None, Some(lake_now), Some(datetime!(2026-11-20 00:00 UTC))),
        None,
        "created after the instant: no version"
    );
}

#[test]
fn a_write_of_this_job_is_told_from_the_lakes_own_version() {
    let original = version(
        "0x1",
        datetime!(2026-11-20 10:00 UTC),
        1,
        VersionSource::Backup {
            name: "a_0x1.csv".into(),
            etag: "b1".into(),
        },
    );
    let started = Some(datetime!(2026-11-25 09:00 UTC));
    // The job wrote it: another ETag, the version's content, written since it started.
    let written = target("0x7", Some(1));
    assert!(written_by_job(Some(&original), Some(&written), started));
    // The lake's own version of that backup (written and backed up since the job started).
    let own = Version {
        last_modified: datetime!(2026-11-25 10:00 UTC),
        ..blob("0x1", datetime!(2026-11-25 10:00 UTC), 1)
    };
    assert!(!written_by_job(Some(&original), Some(&own), started));
    // Written before the job started, or holding other content: not the job's.
    let before = Version {
        last_modified: datetime!(2026-11-25 08:59:59 UTC),
        ..target("0x7", Some(1))
    };
    assert!(!written_by_job(Some(&original), Some(&before), started));
    assert!(!written_by_job(
        Some(&original),
        Some(&target("0x7", Some(9))),
        started
    ));
    assert!(!written_by_job(Some(&original), Some(&written), None));
}

#[test]
fn restore_only_what_differs() {
    let versions = history();
    let old = version_at(&versions, Some(datetime!(2026-11-20 12:00 UTC)));
    let current = target("\"0x3\"", Some(3));
    assert!(matches!(plan(old, Some(&current)), Plan::Restore(r) if r.version.etag == "0x1"));
    assert_eq!(
        plan(version_at(&versions, None), Some(&current)),
        Plan::Unchanged
    );
    let same_bytes_new_etag = target("0x9", Some(1));
    assert_eq!(plan(old, Some(&same_bytes_new_etag)), Plan::Unchanged);
    let unknown_md5 = target("0x9", None);
    assert!(matches!(plan(old, Some(&unknown_md5)), Plan::Restore(_)));
    assert!(
        matches!(plan(old, None), Plan::Restore(_)),
        "deleted blobs come back"
    );
    assert_eq!(plan(None, None), Plan::MissingVersion);
}

#[test]
fn metadata_headers_type_and_tags_count_as_differences() {
    use crate::core::properties::{BlobType, Tags};
    let versions = history();
    let old = version_at(&versions, Some(datetime!(2026-11-20 12:00 UTC))).unwrap();
    let same = target("0x9", Some(1));
    assert_eq!(plan(Some(old), Some(&same)), Plan::Unchanged);
    // Set Blob Metadata made a new ETag over the same bytes: the metadata goes back.
    let relabelled = Version {
        metadata: Some(HashMap::from([("owner".into(), "mallory".into())])),
        ..same.clone()
    };
    assert!(matches!(
        plan(Some(old), Some(&relabelled)),
        Plan::Restore(_)
    ));
    // A name's case alone is no difference (see `same_metadata`).
    let mut key_case = old.clone();
    key_case.version.metadata = Some(HashMap::from([("Owner".into(), "x".into())]));
    let lower = Version {
        metadata: Some(HashMap::from([("owner".into(), "x".into())])),
        ..same.clone()
    };
    assert_eq!(plan(Some(&key_case), Some(&lower)), Plan::Unchanged);
    let unknown_metadata = Version {
        metadata: None,
        ..same.clone()
    };
    assert!(matches!(
        plan(Some(old), Some(&unknown_metadata)),
        Plan::Restore(_)
    ));
    let mut block_now = old.clone();
    block_now.version.properties = BlobProperties {
        blob_type: BlobType::Append,
        ..Default::default()
    };
    assert!(matches!(
        plan(Some(&block_now), Some(&same)),
        Plan::Restore(_)
    ));
    // Tags set since the backup keep the ETag: the blob is the version, and is not rewritten
    // with the tags the backup happened to see.
    let mut tagged = old.clone();
    tagged.version.properties = BlobProperties {
        tags: Some(Tags::from([("k".into(), "v".into())])),
        ..Default::default()
    };
    let retagged_same_etag = Version {
        etag: old.version.etag.clone(),
        properties: BlobProperties {
            tags: Some(Tags::new()),
            ..Default::default()
        },
        ..same.clone()
    };
    assert_eq!(
        plan(Some(&tagged), Some(&retagged_same_etag)),
        Plan::Unchanged
    );
    let retagged_other_etag = Version {
        etag: "0x77".into(),
        ..retagged_same_etag
    };
    assert!(matches!(
        plan(Some(&tagged), Some(&retagged_other_etag)),
        Plan::Restore(_)
    ));
    let no_md5 = Version {
        content_md5: None,
        ..same
    };
    assert!(matches!(plan(Some(old), Some(&no_md5)), Plan::Restore(_)));
}
