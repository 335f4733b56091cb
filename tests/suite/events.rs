//! Blob events on Azurite. Azurite emits no events, so the tests write real-shaped ones (Event
//! Grid and CloudEvents schemas, base64 and plain) onto the queue, as an Event Grid subscription
//! with a storage-queue endpoint would, and check what lands in storage.

use crate::support;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use lakebackup::{
    app::{App, WorkQueue},
    core::{
        life::{Change, Record},
        naming, stamp,
    },
    engine::{
        events::EventOutcome,
        restore::{self, RestoreFrom},
    },
    settings::Settings,
    storage::testing::NewBlob,
};
use serde_json::{json, Value};
use support::{worker::Standalone, Lake};

const EVENTS_QUEUE: &str = "lake-events";

/// The common lake, with container `lake`, its events delivered on `lake-events`.
pub(crate) async fn lake() -> Lake {
    Lake::start_with(&["lake"], &[("EVENTS_QUEUE_NAME", EVENTS_QUEUE)]).await
}

fn topic(account: &str) -> String {
    format!("/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/{account}")
}

/// The subject Azure writes: the blob's name literally, not encoded.
fn subject(container: &str, blob: &str) -> String {
    format!("/blobServices/default/containers/{container}/blobs/{blob}")
}

/// A blob's URL with its path percent-encoded.
pub(crate) fn url(account: &str, container: &str, blob: &str) -> String {
    let path: String =
        percent_encoding::utf8_percent_encode(blob, percent_encoding::NON_ALPHANUMERIC)
            .to_string()
            .replace("%2F", "/");
    format!("https://{account}.blob.core.windows.net/{container}/{path}")
}

/// An event in the Event Grid schema.
pub(crate) fn event_grid(
    event_type: &str,
    account: &str,
    container: &str,
    blob: &str,
    etag: &str,
) -> Value {
    json!({
        "topic": topic(account),
        "subject": subject(container, blob),
        "eventType": format!("Microsoft.Storage.{event_type}"),
        "eventTime": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap(),
        "id": format!("{event_type}-{blob}-{etag}"),
        "data": {
            "api": "PutBlob", "eTag": etag, "contentType": "text/csv", "contentLength": 3,
            "blobType": "BlockBlob", "url": url(account, container, blob),
            "sequencer": "00000000000000000000000000000001"
        },
        "dataVersion": "", "metadataVersion": "1"
    })
}

/// The same event in the CloudEvents 1.0 schema.
fn cloud_event(event_type: &str, account: &str, container: &str, blob: &str, etag: &str) -> Value {
    json!({
        "specversion": "1.0",
        "type": format!("Microsoft.Storage.{event_type}"),
        "source": topic(account),
        "subject": subject(container, blob),
        "id": format!("ce-{event_type}-{blob}-{etag}"),
        "time": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap(),
        "data": {"api": "FlushWithClose", "eTag": etag, "contentLength": 3, "blobType": "BlockBlob"}
    })
}

/// The lake's life records, in name order, without their times.
pub(crate) async fn records(fixture: &Lake) -> Vec<Record> {
    let mut records: Vec<Record> = support::life_records(&fixture.vault("lake"))
        .await
        .into_iter()
        .map(|(record, _)| record)
        .collect();
    records.sort_by(|a, b| a.name.cmp(&b.name));
    records
}

pub(crate) async fn deliver(app: &App, text: String) -> EventOutcome {
    delivered(app, &text).await.done()
}

async fn delivered(app: &App, text: &str) -> support::Delivered<EventOutcome> {
    support::deliver_to(app, WorkQueue::Events, text, 1)
        .await
        .unwrap()
}

/// Per blob, the ETags of its snapshots; and the source ETags its stamped backups hold.
pub(crate) async fn protection(app: &App, blob: &str) -> (Vec<String>, Vec<String>) {
    let lake = app.source.container("lake").unwrap();
    let snapshots = support::list_versions(&lake)
        .await
        .into_iter()
        .filter(|(name, snapshot, _)| name == blob && snapshot.is_some())
        .map(|(_, _, etag)| etag)
        .collect();
    let vault = app.backup.container("lakebak").unwrap();
    let mut backups = Vec::new();
    if vault.exists().await.unwrap() {
        for (name, _) in support::list_all(&vault).await {
            let Ok(parsed) = naming::parse_backup_blob_name(&name) else {
                continue;
            };
            if parsed.source_name == blob {
                let (_, _, metadata) = support::properties(&vault, &name).await;
                assert_eq!(stamp::stamped_etag(&metadata), Some(parsed.etag.as_str()));
                backups.push(parsed.etag);
            }
        }
    }
    (snapshots, backups)
}

#[tokio::test]
async fn created_replaced_duplicate_and_late_events_protect_each_version_once() {
    let fixture = lake().await;
    let (app, lake) = (&fixture.app, fixture.lake("lake"));
    let blob = "raw/2026/sales \"q\" #1.csv";
    support::upload(&lake, blob, b"v1").await;
    let (v1, _, _) = support::properties(&lake, blob).await;

    // A create, in the Event Grid schema, base64 as the queue holds it.
    let created = event_grid("BlobCreated", "source", "lake", blob, &v1).to_string();
    let outcome = deliver(app, BASE64.encode(&created)).await;
    assert!(
        matches!(&outcome, EventOutcome::Protected { backup, snapshot_taken: true, .. } if backup == "backed_up"),
        "{outcome:?}"
    );
    assert_eq!(
        protection(app, blob).await,
        (vec![v1.clone()], vec![v1.clone()])
    );

    // The same event again (plain JSON this time): nothing new.
    let outcome = deliver(app, created.clone()).await;
    assert!(
        matches!(&outcome, EventOutcome::Protected { backup, snapshot_taken: false, .. } if backup == "already_backed_up"),
        "{outcome:?}"
    );

    // A replace, in the CloudEvents schema: a new version.
    support::upload(&lake, blob, b"v2").await;
    let (v2, _, _) = support::properties(&lake, blob).await;
    let replaced = cloud_event("BlobCreated", "source", "lake", blob, &v2).to_string();
    assert!(matches!(
        deliver(app, BASE64.encode(&replaced)).await,
        EventOutcome::Protected {
            snapshot_taken: true,
            ..
        }
    ));
    let (mut snapshots, mut backups) = protection(app, blob).await;
    snapshots.sort();
    backups.sort();
    let mut both = vec![v1.clone(), v2.clone()];
    both.sort();
    assert_eq!((snapshots, backups), (both.clone(), both.clone()));

    // The first event, arriving late: the blob has moved on, nothing is created.
    let outcome = deliver(app, created).await;
    assert!(matches!(outcome, EventOutcome::Stale { .. }), "{outcome:?}");
    let (mut snapshots, mut backups) = protection(app, blob).await;
    snapshots.sort();
    backups.sort();
    assert_eq!((snapshots, backups), (both.clone(), both));
}

#[tokio::test]
async fn a_delete_event_records_the_marker_that_restore_honours() {
    let fixture = lake().await;
    let (app, lake) = (&fixture.app, fixture.lake("lake"));
    support::upload(&lake, "t/keep.csv", b"keep").await;
    support::upload(&lake, "t/gone.csv", b"gone").await;
    for blob in ["t/keep.csv", "t/gone.csv"] {
        let (etag, _, _) = support::properties(&lake, blob).await;
        let event = event_grid("BlobCreated", "source", "lake", blob, &etag);
        deliver(app, event.to_string()).await;
    }
    let (gone_etag, _, _) = support::properties(&lake, "t/gone.csv").await;
    // Deleted in a later second than the version was written.
    support::next_second().await;
    support::delete_with_snapshots(&lake, "t/gone.csv").await;
    let deleted = cloud_event("BlobDeleted", "source", "lake", "t/gone.csv", &gone_etag);
    let outcome = deliver(app, BASE64.encode(deleted.to_string())).await;
    assert!(
        matches!(&outcome, EventOutcome::DeletionRecorded { etag, new: true, .. } if *etag == gone_etag),
        "{outcome:?}"
    );
    // Twice: one marker per deletion.
    let outcome = deliver(app, deleted.to_string()).await;
    assert!(
        matches!(outcome, EventOutcome::DeletionRecorded { new: false, .. }),
        "{outcome:?}"
    );
    let vault = fixture.vault("lake");
    let records: Vec<Record> = support::life_records(&vault)
        .await
        .into_iter()
        .map(|(record, _)| record)
        .collect();
    assert_eq!(
        records,
        [Record::new("t/gone.csv", &gone_etag, Change::Deleted, 1)]
    );

    support::next_second().await;
    let request = support::restore_request(
        "lake",
        RestoreFrom::Backup,
        Some("asof"),
        Some(time::OffsetDateTime::now_utc()),
    );
    let summary = restore::restore(app, &request, &mut |_| {}).await;
    assert!(summary.succeeded(), "{summary:?}");
    assert_eq!(summary.deleted, 1);
    let restored = fixture.lake("asof");
    let names: Vec<String> = support::list_all(&restored)
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["t/keep.csv"]);
}

#[tokio::test]
async fn bad_events_are_poisoned_unchanged_and_backup_containers_ignored() {
    let fixture = lake().await;
    let (app, lake) = (&fixture.app, fixture.lake("lake"));
    support::upload(&lake, "x.csv", b"x").await;
    let (etag, _, _) = support::properties(&lake, "x.csv").await;
    let bad = [
        "not an event at all".to_owned(),
        event_grid("BlobTierChanged", "source", "lake", "x.csv", &etag).to_string(),
        event_grid("BlobCreated", "someoneelse", "lake", "x.csv", &etag).to_string(),
        json!({"eventType": "Microsoft.Storage.BlobCreated", "topic": topic("source"), "subject": "/containers/lake/x.csv"}).to_string(),
    ];
    for text in &bad {
        let outcome = delivered(app, text).await;
        assert!(
            matches!(outcome, support::Delivered::Poisoned(_)),
            "{text}: {outcome:?}"
        );
    }
    let poison = fixture.queue(&format!("{EVENTS_QUEUE}-poison"));
    // As the host hands a message over (decoded), so it goes back on the queue (encoded).
    let poisoned: Vec<String> = support::drain_queue(&poison)
        .await
        .into_iter()
        .map(|m| String::from_utf8(BASE64.decode(m).unwrap()).unwrap())
        .collect();
    assert_eq!(poisoned, bad, "poisoned unchanged, in order");

    // The backup account's own events, and {c}bak's, never loop back into backups.
    for (account, container) in [("backup", "lakebak"), ("backup", "lake")] {
        let event = event_grid(
            "BlobCreated",
            account,
            container,
            "x_20260101T000000Z_0x1.csv",
            "0x1",
        );
        let outcome = deliver(app, event.to_string()).await;
        assert!(
            matches!(outcome, EventOutcome::Ignored { .. }),
            "{outcome:?}"
        );
    }
    assert_eq!(protection(app, "x.csv").await, (vec![], vec![]));
}

#[tokio::test]
async fn under_lakebackup_run_a_write_is_protected_within_seconds() {
    let fixture = lake().await;
    let app = &fixture.app;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("host.json"),
        dir.path().join("host.json"),
    )
    .unwrap();
    let worker = Standalone::start(&fixture.settings(), dir.path(), &[]);
    let lake = fixture.lake("lake");
    let queue = app.queue(WorkQueue::Events).await.unwrap();
    let mut waits = BTreeMap::new();
    for blob in ["a.csv", "dir/b.csv"] {
        support::upload(&lake, blob, blob.as_bytes()).await;
        let (etag, _, _) = support::properties(&lake, blob).await;
        let written = Instant::now();
        let event = event_grid("BlobCreated", "source", "lake", blob, &etag);
        queue
            .send(BASE64.encode(event.to_string()), None, "an event")
            .await
            .unwrap();
        let protected = (vec![etag.clone()], vec![etag.clone()]);
        support::eventually(Duration::from_secs(30), blob, || async {
            protection(app, blob).await == protected
        })
        .await;
        waits.insert(blob, written.elapsed());
    }
    assert_eq!(worker.terminate(), 0);
    eprintln!("write → protected: {waits:?}");
}

#[tokio::test]
async fn directory_placeholders_are_skipped_and_a_renamed_directory_gets_a_job() {
    let fixture = lake().await;
    let (app, lake) = (&fixture.app, fixture.lake("lake"));
    // ADLS Gen2 marks a directory with an empty blob carrying hdi_isfolder=true.
    let folder = NewBlob::with_metadata([("hdi_isfolder", "true")]);
    support::upload_with(&lake, "part=1", b"", &folder).await;
    let (etag, _, _) = support::properties(&lake, "part=1").await;
    let outcome = deliver(
        app,
        event_grid("BlobCreated", "source", "lake", "part=1", &etag).to_string(),
    )
    .await;
    assert!(
        matches!(outcome, EventOutcome::Ignored { .. }),
        "{outcome:?}"
    );
    assert_eq!(protection(app, "part=1").await, (vec![], vec![]));

    // A rename without its data.sourceUrl: the new name still gets its job; the old one is left
    // to the next pass.
    let renamed = event_grid("DirectoryRenamed", "source", "lake", "tables/new", "");
    let outcome = deliver(app, renamed.to_string()).await;
    let EventOutcome::Renamed { from, to } = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(matches!(**from, EventOutcome::Ignored { .. }), "{from:?}");
    let EventOutcome::DirectoryQueued { prefix, .. } = &**to else {
        panic!("{to:?}")
    };
    assert_eq!(prefix, "tables/new/");
    let shards = support::drain_queue(app.queue(WorkQueue::Shards).await.unwrap()).await;
    let shard: Value = serde_json::from_slice(&BASE64.decode(&shards[0]).unwrap()).unwrap();
    assert_eq!(
        (shard["container"].as_str(), shard["prefix"].as_str()),
        (Some("lake"), Some("tables/new/"))
    );
}

/// ADLS Gen2 sends one `DirectoryDeleted` for a whole tree deleted recursively, never one per
/// file: the job it queues records the end of every version the backup holds under it, and no
/// other. `DirectoryCreated` holds no bytes: ignored, never poisoned.
#[tokio::test]
async fn a_deleted_directory_ends_the_lives_of_everything_backed_up_under_it() {
    let fixture = lake().await;
    let (app, lake) = (&fixture.app, fixture.lake("lake"));
    let under = ["t/日本/a.csv", "t/日本/x｡y/🦀.csv"];
    for blob in under.iter().chain(&["t/keep.csv"]) {
        support::upload(&lake, blob, blob.as_bytes()).await;
        let (etag, _, _) = support::properties(&lake, blob).await;
        let event = event_grid("BlobCreated", "source", "lake", blob, &etag);
        deliver(app, event.to_string()).await;
    }
    let created = event_grid("DirectoryCreated", "source", "lake", "t/日本", "");
    assert!(
        matches!(
            deliver(app, created.to_string()).await,
            EventOutcome::Ignored { .. }
        ),
        "a created directory is no version"
    );
    let mut etags = BTreeMap::new();
    for blob in under {
        etags.insert(blob, support::properties(&lake, blob).await.0);
    }
    // The tree deleted in a later second than its files were written (Azurite has no recursive
    // Delete Path: its blobs are deleted one by one, and one event says it all, as on Azure).
    support::next_second().await;
    for blob in under {
        support::delete_with_snapshots(&lake, blob).await;
    }
    let deleted = event_grid("DirectoryDeleted", "source", "lake", "t/日本", "");
    let outcome = deliver(app, deleted.to_string()).await;
    let EventOutcome::DirectoryQueued { prefix, .. } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(prefix, "t/日本/");
    assert!(support::deliver_all_shards(app).await >= 1);
    let records = records(&fixture).await;
    let mut expected: Vec<Record> = under
        .iter()
        .map(|blob| Record::new(blob, &etags[blob], Change::Deleted, 1))
        .collect();
    expected.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(records, expected, "t/keep.csv lives on");
}

#[tokio::test]
async fn events_outside_the_containers_and_prefix_filters_are_ignored() {
    let fixture = lake().await;
    let filtered = fixture.settings_with(&[
        ("EVENTS_CONTAINERS", "lake, other"),
        ("EVENTS_PREFIX", "raw/"),
    ]);
    let app = App::from_settings(&Settings::from_pairs(filtered)).unwrap();
    let lake = fixture.lake("lake");
    for blob in ["raw/in.csv", "curated/out.csv"] {
        support::upload(&lake, blob, blob.as_bytes()).await;
    }
    let etag = |blob: &'static str| {
        let lake = &lake;
        async move { support::properties(lake, blob).await.0 }
    };
    let inside = event_grid(
        "BlobCreated",
        "source",
        "lake",
        "raw/in.csv",
        &etag("raw/in.csv").await,
    );
    assert!(matches!(
        deliver(&app, inside.to_string()).await,
        EventOutcome::Protected { .. }
    ));
    let outside_prefix = event_grid(
        "BlobCreated",
        "source",
        "lake",
        "curated/out.csv",
        &etag("curated/out.csv").await,
    );
    let outcome = deliver(&app, outside_prefix.to_string()).await;
    assert!(
        matches!(outcome, EventOutcome::Ignored { .. }),
        "{outcome:?}"
    );
    let other_container = event_grid("BlobCreated", "source", "scratch", "raw/x.csv", "0x1");
    let outcome = deliver(&app, other_container.to_string()).await;
    assert!(
        matches!(outcome, EventOutcome::Ignored { .. }),
        "{outcome:?}"
    );
    assert_eq!(protection(&app, "curated/out.csv").await, (vec![], vec![]));
}
