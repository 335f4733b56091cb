//! Restore to a past instant, from snapshots and from the backup account, with `lakebackup
//! restore` against Azurite: a container corrupted and partly deleted after its backup comes back
//! byte-identical.

use crate::support;

use std::collections::BTreeMap;

use lakebackup::{app::App, engine::jobs::restore::RestoreStep, storage::Container};
use serde_json::Value;

use support::{worker, Lake};

/// The state the tests restore to.
struct Before {
    instant: String,
    contents: BTreeMap<String, Vec<u8>>,
}

/// The common lake with a container `lake`.
async fn new_lake() -> Lake {
    Lake::start(&["lake"]).await
}

/// A producer job over the whole lake, in-process: a snapshot and a backup of every new
/// version.
async fn back_up(lake: &Lake) {
    support::produce(&lake.app, "lake").await;
}

async fn contents(lake: &Lake, container: &str) -> BTreeMap<String, Vec<u8>> {
    support::contents(&lake.lake(container)).await
}

/// A lake with history: v1 of everything backed up, then (after the returned instant) a
/// corruption, a deletion and a new blob, all of which the Function App also backed up.
async fn with_an_incident() -> (Lake, Before) {
    let lake = new_lake().await;
    let client = lake.lake("lake");
    for (name, bytes) in [
        ("a.csv", b"a,b\n1,2\n".to_vec()),
        ("dir/b.bin", (0..=255u8).collect::<Vec<_>>()),
        ("dir/c \"quoted\" #1.txt", b"c v1".to_vec()),
        ("keep.txt", b"never touched".to_vec()),
    ] {
        support::upload(&client, name, &bytes).await;
    }
    back_up(&lake).await;
    let contents = contents(&lake, "lake").await;
    // Versions are told apart by Last-Modified, which has one-second resolution.
    let instant = support::instant_after_writes().await;
    support::next_second().await;

    support::upload(&client, "a.csv", b"CORRUPTED").await;
    support::upload(&client, "dir/c \"quoted\" #1.txt", b"c v2, also bad").await;
    support::upload(&client, "new.txt", b"created after the instant").await;
    back_up(&lake).await;
    support::delete_with_snapshots(&client, "dir/b.bin").await;
    (lake, Before { instant, contents })
}

/// `lakebackup restore --container lake ARGS`: the exit code and the summary, with the lines of
/// its actions gathered under `actions`.
fn restore(lake: &Lake, args: &[&str]) -> (i32, Value) {
    let mut full = vec!["restore", "--container", "lake"];
    full.extend(args);
    let (code, lines, mut summary) = worker::run_lines(&lake.settings(), &full);
    assert!(
        summary.get("status").is_some(),
        "the last line is the summary: {summary}"
    );
    summary["actions"] = Value::Array(lines);
    (code, summary)
}

fn actions(summary: &Value) -> BTreeMap<String, String> {
    summary["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["blob"].as_str().unwrap().to_owned(),
                a["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn from_backup_to_an_instant_brings_back_corrupted_and_deleted_blobs() {
    let (lake, before) = with_an_incident().await;

    let (code, dry) = restore(
        &lake,
        &["--from", "backup", "--as-of", &before.instant, "--dry-run"],
    );
    assert_eq!(code, 0, "{dry}");
    let planned = actions(&dry);
    assert_eq!(planned["a.csv"], "restore");
    assert_eq!(planned["dir/b.bin"], "restore");
    assert_eq!(planned["dir/c \"quoted\" #1.txt"], "restore");
    assert_eq!(planned["new.txt"], "missing_version");
    assert_eq!(dry["unchanged"], 1, "keep.txt: {dry}");
    assert_eq!(
        contents(&lake, "lake").await["a.csv"],
        b"CORRUPTED",
        "dry run changes nothing"
    );

    let (code, summary) = restore(&lake, &["--from", "backup", "--as-of", &before.instant]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["restored"], 3, "{summary}");
    assert_eq!(summary["errors"], 0);
    let after = contents(&lake, "lake").await;
    for (name, bytes) in &before.contents {
        assert!(
            after[name] == *bytes,
            "{name} is not byte-identical to the instant"
        );
    }
    assert_eq!(
        after["new.txt"], b"created after the instant",
        "restore never deletes"
    );

    // Once restored, a second restore finds nothing to do.
    let (_, again) = restore(&lake, &["--from", "backup", "--as-of", &before.instant]);
    assert_eq!(again["restored"], 0, "{again}");
    assert_eq!(again["unchanged"], 4, "{again}");
}

#[tokio::test]
async fn from_snapshots_promotes_the_version_of_the_instant_within_a_prefix() {
    let (lake, before) = with_an_incident().await;
    let (code, summary) = restore(
        &lake,
        &[
            "--from",
            "snapshots",
            "--as-of",
            &before.instant,
            "--prefix",
            "dir/",
        ],
    );
    assert_eq!(code, 0, "{summary}");
    // Only dir/ is in scope; b.bin's snapshots went with it, so only c comes back.
    assert_eq!(
        actions(&summary),
        BTreeMap::from([("dir/c \"quoted\" #1.txt".to_owned(), "restore".to_owned())])
    );
    let after = contents(&lake, "lake").await;
    assert_eq!(
        after["dir/c \"quoted\" #1.txt"],
        before.contents["dir/c \"quoted\" #1.txt"]
    );
    assert_eq!(after["a.csv"], b"CORRUPTED", "outside the prefix");

    let (code, summary) = restore(&lake, &["--from", "snapshots", "--as-of", &before.instant]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(actions(&summary)["a.csv"], "restore");
    assert_eq!(actions(&summary)["new.txt"], "missing_version");
    assert_eq!(
        contents(&lake, "lake").await["a.csv"],
        before.contents["a.csv"]
    );
}

#[tokio::test]
async fn to_another_container_leaves_the_source_alone() {
    let (lake, before) = with_an_incident().await;
    let (code, summary) = restore(
        &lake,
        &[
            "--from",
            "backup",
            "--as-of",
            &before.instant,
            "--to-container",
            "lake-restored",
        ],
    );
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["target_container"], "lake-restored");
    assert_eq!(contents(&lake, "lake-restored").await, before.contents);
    assert_eq!(contents(&lake, "lake").await["a.csv"], b"CORRUPTED");
}

#[tokio::test]
async fn a_failure_is_reported_and_exits_non_zero() {
    let lake = new_lake().await;
    // A name Azure refuses is a usage error: exit 2, nothing on stdout, the reason on stderr.
    let (code, stdout, stderr) = lake.run(&[
        "restore",
        "--container",
        "lake",
        "--to-container",
        "Bad_Name",
    ]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("invalid container name"), "{stderr}");

    // Never backed up: there is nothing to restore from, and it says so.
    let (code, summary) = restore(&lake, &["--from", "backup"]);
    assert_eq!(code, 1, "{summary}");
    assert!(
        summary["error"].as_str().unwrap().contains("lakebak"),
        "{summary}"
    );
}

/// (content type, content encoding, content language, content disposition, cache control,
/// user metadata) of a blob.
type Properties = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    BTreeMap<String, String>,
);

async fn blob_properties(container: &Container, name: &str) -> Properties {
    let version = container.blob(name).probe().await.unwrap().unwrap().version;
    let headers = version.properties.headers;
    (
        headers.content_type,
        headers.content_encoding,
        headers.content_language,
        headers.content_disposition,
        headers.cache_control,
        version.metadata.unwrap_or_default().into_iter().collect(),
    )
}

#[tokio::test]
async fn metadata_and_content_properties_come_back_and_the_stamp_never_does() {
    use lakebackup::{core::properties::ContentHeaders, storage::testing::NewBlob};
    let lake = new_lake().await;
    let client = lake.lake("lake");
    let described = NewBlob {
        headers: ContentHeaders {
            content_type: Some("text/csv; charset=utf-8".into()),
            content_encoding: Some("identity".into()),
            content_language: Some("en-GB".into()),
            content_disposition: Some("attachment; filename=\"sales.csv\"".into()),
            cache_control: Some("no-cache".into()),
        },
        ..NewBlob::with_metadata([
            ("owner", "team-a"),
            ("pii", "false"),
            ("hdi_isfolder", "false"),
        ])
    };
    support::upload_with(&client, "sales.csv", b"a,b\n1,2\n", &described).await;
    support::upload(&client, "plain.bin", b"no metadata at all").await;
    back_up(&lake).await;
    support::next_second().await;
    let instant = support::now_rfc3339();
    support::next_second().await;
    let originals = [
        blob_properties(&client, "sales.csv").await,
        blob_properties(&client, "plain.bin").await,
    ];
    assert_eq!(originals[0].5["owner"], "team-a");

    // Into a fresh container, and in place after the lake lost both.
    let (code, summary) = restore(&lake, &["--to-container", "fresh"]);
    assert_eq!(code, 0, "{summary}");
    for (name, bytes) in [("sales.csv", b"OOPS".as_slice()), ("plain.bin", b"OOPS")] {
        support::upload(&client, name, bytes).await;
    }
    // As of the instant before: the lake's OOPS versions, written since, are its newest.
    let (code, in_place) = restore(&lake, &["--as-of", &instant]);
    assert_eq!(code, 0, "{in_place}");
    assert_eq!(in_place["restored"], 2, "{in_place}");
    let fresh = lake.lake("fresh");
    for target in [&fresh, &client] {
        for (name, original) in ["sales.csv", "plain.bin"].iter().zip(&originals) {
            let restored = blob_properties(target, name).await;
            assert_eq!(&restored, original, "{name}");
            assert!(
                restored.5.keys().all(|k| !k.starts_with("lakebackup_")),
                "bookkeeping leaked into the lake: {:?}",
                restored.5
            );
        }
    }
}

#[tokio::test]
async fn as_of_an_instant_leaves_out_what_had_been_seen_deleted_and_brings_back_later_deletions() {
    let lake = new_lake().await;
    let client = lake.lake("lake");
    let pass = || async { support::produce(&lake.app, "lake").await.totals };
    let instant = || async {
        // Last-Modified has one-second resolution: keep versions clearly on either side.
        let t = support::instant_after_writes().await;
        support::next_second().await;
        t
    };
    for (name, bytes) in [
        ("dir/a.csv", b"a v1".as_slice()),
        ("dir/b.csv", b"b v1"),
        ("keep.csv", b"kept"),
        // Named like a backup: it must round-trip through its backup's name.
        ("exp.csv_20250101T000000Z_abc", b"looks like a backup"),
        // A partition that will be deleted whole: the lake's listing then has no such directory.
        ("part=1/x.csv", b"x"),
        ("part=1/deeper/y.csv", b"y"),
    ] {
        support::upload(&client, name, bytes).await;
    }
    pass().await;
    let delete = |name: &'static str| {
        let client = &client;
        async move {
            support::delete_with_snapshots(client, name).await;
        }
    };
    // b and the whole partition are deleted, and a reconcile sees it, before T1.
    for name in ["dir/b.csv", "part=1/x.csv", "part=1/deeper/y.csv"] {
        delete(name).await;
    }
    assert_eq!(pass().await.deletions_recorded, 3);
    assert_eq!(
        pass().await.deletions_recorded,
        0,
        "one marker per deletion"
    );
    let t1 = instant().await;
    // After T1: a is deleted, and b is created again (a new life).
    delete("dir/a.csv").await;
    support::upload(&client, "dir/b.csv", b"b v2, a new life").await;
    assert_eq!(pass().await.deletions_recorded, 1);
    let t2 = instant().await;

    let (code, at_t1) = restore(&lake, &["--as-of", &t1, "--to-container", "att1"]);
    assert_eq!(code, 0, "{at_t1}");
    assert_eq!(at_t1["deleted"], 3, "{at_t1}");
    assert_eq!(
        contents(&lake, "att1").await,
        BTreeMap::from([
            ("dir/a.csv".to_owned(), b"a v1".to_vec()),
            (
                "exp.csv_20250101T000000Z_abc".to_owned(),
                b"looks like a backup".to_vec(),
            ),
            ("keep.csv".to_owned(), b"kept".to_vec()),
        ]),
        "the lake as it was at T1: b had been deleted, a not yet"
    );

    let (code, at_t2) = restore(&lake, &["--as-of", &t2, "--to-container", "att2"]);
    assert_eq!(code, 0, "{at_t2}");
    assert_eq!(
        contents(&lake, "att2").await,
        BTreeMap::from([
            ("dir/b.csv".to_owned(), b"b v2, a new life".to_vec()),
            (
                "exp.csv_20250101T000000Z_abc".to_owned(),
                b"looks like a backup".to_vec(),
            ),
            ("keep.csv".to_owned(), b"kept".to_vec()),
        ])
    );
}

#[tokio::test]
async fn a_deletion_marker_names_the_newest_complete_backup_never_an_unfinished_copy() {
    let lake = new_lake().await;
    let client = lake.lake("lake");
    support::upload(&client, "c.csv", b"c v1").await;
    back_up(&lake).await;
    let (v1, _, _) = support::properties(&client, "c.csv").await;
    // v2 is written, and a copy of it starts but never finishes (no stamp), before the blob is
    // deleted: its newest *complete* backup is still v1.
    support::upload(&client, "c.csv", b"c v2").await;
    let (v2, v2_written, _) = support::properties(&client, "c.csv").await;
    let vault = lake.vault("lake");
    let unfinished = lakebackup::core::naming::backup_blob_name("c.csv", v2_written, &v2).unwrap();
    support::upload(&vault, &unfinished, b"c v").await;
    support::delete_with_snapshots(&client, "c.csv").await;
    let pass = support::produce(&lake.app, "lake").await;
    assert_eq!(pass.totals.get("deletions_recorded"), 1);
    let records: Vec<(String, String)> = support::life_records(&vault)
        .await
        .into_iter()
        .map(|(record, _)| (record.name, record.life))
        .collect();
    assert_eq!(
        records,
        [("c.csv".to_owned(), lakebackup::core::life::life_of(&v1))]
    );

    // So a restore of the lake as it is now does not bring the deleted blob back (a marker for
    // v2 would match no complete version, and v1 would come back).
    let now = support::instant_after_writes().await;
    let (code, now) = restore(&lake, &["--as-of", &now, "--to-container", "now"]);
    assert_eq!(code, 0, "{now}");
    assert_eq!(now["restored"], 0, "{now}");
    assert_eq!(now["deleted"], 1, "{now}");
}

#[tokio::test]
async fn verify_content_reads_both_sides_where_no_md5_can_tell() {
    let lake = new_lake().await;
    let client = lake.lake("lake");
    support::upload(&client, "x.csv", b"the same bytes").await;
    support::upload(&client, "y.csv", b"y as backed up").await;
    back_up(&lake).await;
    support::next_second().await;
    let instant = support::now_rfc3339();
    support::next_second().await;
    // Written again as block lists: new ETags and no MD5; x with the same bytes, y not.
    support::put_block_list(&client, "x.csv", b"the same bytes", None).await;
    support::put_block_list(&client, "y.csv", b"y, corrupted!!", None).await;
    let (etag_before, _, _) = support::properties(&client, "x.csv").await;

    let (code, dry) = restore(&lake, &["--dry-run", "--as-of", &instant]);
    assert_eq!(code, 0, "{dry}");
    assert_eq!(
        actions(&dry)["x.csv"],
        "restore",
        "without an MD5 an ETag differs: {dry}"
    );

    let (code, checked) = restore(&lake, &["--verify-content", "--as-of", &instant]);
    assert_eq!(code, 0, "{checked}");
    assert_eq!(
        (checked["unchanged"].as_u64(), checked["restored"].as_u64()),
        (Some(1), Some(1)),
        "{checked}"
    );
    let (etag_after, _, _) = support::properties(&client, "x.csv").await;
    assert_eq!(
        etag_after, etag_before,
        "x holds the version's bytes: not written"
    );
    assert_eq!(support::download(&client, "y.csv").await, b"y as backed up");
}

/// Restore plans a batch of blobs, then writes them. A blob written by someone else in between
/// is left alone: each write is conditional on what the plan saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_written_between_plan_and_copy_is_left_alone() {
    use lakebackup::engine::restore::{self, RestoreFrom};

    let lake = new_lake().await;
    let client = lake.lake("lake");
    for name in ["a.csv", "b.csv"] {
        support::upload(&client, name, format!("{name} v1").as_bytes()).await;
    }
    back_up(&lake).await;
    support::next_second().await;
    let instant = time::OffsetDateTime::now_utc();
    support::next_second().await;
    for name in ["a.csv", "b.csv"] {
        support::upload(&client, name, b"corrupted").await;
    }
    // One write at a time, in name order: a.csv is written before b.csv.
    let settings = lake.settings_with(&[("SNAPSHOT_CONCURRENCY", "1")]);
    let app = App::from_settings(&lakebackup::settings::Settings::from_pairs(settings)).unwrap();
    let request = support::restore_request("lake", RestoreFrom::Backup, None, Some(instant));
    let mut actions = Vec::new();
    let summary = restore::restore(&app, &request, &mut |action| {
        if action.blob == "a.csv" {
            // Ingestion writes b.csv after the plan was made, before its copy.
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(support::upload(
                    &client,
                    "b.csv",
                    b"written meanwhile",
                ))
            });
        }
        actions.push((action.blob, action.action));
    })
    .await;
    assert_eq!(
        actions,
        [
            ("a.csv".into(), RestoreStep::Restore),
            ("b.csv".into(), RestoreStep::ChangedSincePlan)
        ]
    );
    assert_eq!((summary.restored, summary.changed_since_plan), (1, 1));
    assert_eq!(support::download(&client, "a.csv").await, b"a.csv v1");
    assert_eq!(
        support::download(&client, "b.csv").await,
        b"written meanwhile",
        "never overwritten"
    );
}
