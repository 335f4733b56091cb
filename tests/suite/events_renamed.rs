//! Renames of ADLS Gen2 (`BlobRenamed`, `DirectoryRenamed`) as events: the new name protected
//! (a directory given a job), the old one's life ended (a directory given a job whose pass ends
//! the lives under it), each half idempotent. Azurite has no rename: a test renames as Azure's
//! outcome looks from the blob endpoint (the bytes under the new name, the old name gone) and
//! sends the event Azure sends, with its `data.sourceUrl` and `data.destinationUrl` dfs URLs.

use lakebackup::{
    app::App,
    core::life::{Change, Record},
    engine::events::EventOutcome,
};
use serde_json::Value;

use crate::{
    events::{deliver, event_grid, lake, protection, records, url},
    support,
};

/// Azure's rename event for `from` → `to` in container `lake` of account `source`.
fn rename_event(event_type: &str, from: &str, to: &str, etag: &str) -> Value {
    let mut event = event_grid(event_type, "source", "lake", to, etag);
    let dfs = |name: &str| url("source", "lake", name).replace(".blob.", ".dfs.");
    event["data"]["api"] = "RenamePathFile".into();
    event["data"]["sourceUrl"] = dfs(from).into();
    event["data"]["destinationUrl"] = dfs(to).into();
    event
}

/// A file written and protected by its BlobCreated event; its ETag.
async fn written_and_protected(app: &App, fixture: &support::Lake, name: &str) -> String {
    let lake = fixture.lake("lake");
    support::upload(&lake, name, name.as_bytes()).await;
    let (etag, _, _) = support::properties(&lake, name).await;
    let created = event_grid("BlobCreated", "source", "lake", name, &etag);
    deliver(app, created.to_string()).await;
    etag
}

/// Azure's rename as the blob endpoint sees it: the bytes under the new name, the old name gone.
async fn renamed_in_the_lake(fixture: &support::Lake, from: &str, to: &str) -> String {
    let lake = fixture.lake("lake");
    support::upload(&lake, to, from.as_bytes()).await;
    support::delete_with_snapshots(&lake, from).await;
    support::properties(&lake, to).await.0
}

#[tokio::test]
async fn a_renamed_file_is_protected_under_its_new_name_and_its_old_life_ends_once() {
    let fixture = lake().await;
    let app = &fixture.app;
    let (from, to) = ("raw/日本/old 🦀｡.csv", "cooked/new #1 100%.csv");
    let old_etag = written_and_protected(app, &fixture, from).await;
    support::next_second().await;
    let new_etag = renamed_in_the_lake(&fixture, from, to).await;

    let event = rename_event("BlobRenamed", from, to, &new_etag).to_string();
    for delivery in [true, false] {
        let outcome = deliver(app, event.clone()).await;
        let EventOutcome::Renamed {
            from: gone,
            to: now,
        } = &outcome
        else {
            panic!("{outcome:?}")
        };
        let EventOutcome::DeletionRecorded {
            blob, etag, new, ..
        } = &**gone
        else {
            panic!("the old name's life ends: {gone:?}")
        };
        assert_eq!((blob.as_str(), etag, *new), (from, &old_etag, delivery));
        let EventOutcome::Protected { blob, etag, .. } = &**now else {
            panic!("the new name is protected: {now:?}")
        };
        assert_eq!((blob.as_str(), etag), (to, &new_etag));
    }
    assert_eq!(protection(app, to).await.1, vec![new_etag]);
    assert_eq!(
        records(&fixture).await,
        vec![Record::new(from, &old_etag, Change::Deleted, 1)],
        "one end of the old name's life, however often the event comes"
    );
}

#[tokio::test]
async fn a_renamed_directory_gets_a_job_over_each_name_and_the_old_lives_end() {
    let fixture = lake().await;
    let app = &fixture.app;
    let old = ["t/old ｡/a.csv", "t/old ｡/🦀/b.csv"];
    let mut old_etags = Vec::new();
    for name in old {
        old_etags.push(written_and_protected(app, &fixture, name).await);
    }
    support::next_second().await;
    let mut new_etags = Vec::new();
    for name in old {
        let to = name.replace("t/old ｡/", "t/新/");
        new_etags.push((to.clone(), renamed_in_the_lake(&fixture, name, &to).await));
    }

    let event = rename_event("DirectoryRenamed", "t/old ｡", "t/新", "");
    let outcome = deliver(app, event.to_string()).await;
    let EventOutcome::Renamed { from, to } = &outcome else {
        panic!("{outcome:?}")
    };
    let prefix = |outcome: &EventOutcome| match outcome {
        EventOutcome::DirectoryQueued { prefix, .. } => prefix.clone(),
        other => panic!("a job over the directory: {other:?}"),
    };
    assert_eq!(
        (prefix(from), prefix(to)),
        ("t/old ｡/".into(), "t/新/".into())
    );
    assert!(support::deliver_all_shards(app).await >= 2);

    for (name, etag) in &new_etags {
        assert_eq!(
            &protection(app, name).await.1,
            &vec![etag.clone()],
            "{name}"
        );
    }
    let mut expected: Vec<Record> = old
        .iter()
        .zip(&old_etags)
        .map(|(name, etag)| Record::new(name, etag, Change::Deleted, 1))
        .collect();
    expected.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(records(&fixture).await, expected);
}

/// An old name outside `EVENTS_PREFIX` is none of this worker's business, and one the event does
/// not give is left to the next pass: the new name is protected either way, nothing is poisoned.
#[tokio::test]
async fn a_rename_whose_old_name_is_out_of_scope_or_unknown_still_protects_the_new_one() {
    let fixture = support::Lake::start_with(
        &["lake"],
        &[
            ("EVENTS_QUEUE_NAME", "lake-events"),
            ("EVENTS_PREFIX", "in/"),
        ],
    )
    .await;
    let app = &fixture.app;
    let lake = fixture.lake("lake");
    support::upload(&lake, "out/a.csv", b"a").await;
    let etag = renamed_in_the_lake(&fixture, "out/a.csv", "in/a.csv").await;
    let event = rename_event("BlobRenamed", "out/a.csv", "in/a.csv", &etag);
    let mut unknown = event.clone();
    unknown["data"].as_object_mut().unwrap().remove("sourceUrl");
    for event in [event, unknown] {
        let outcome = deliver(app, event.to_string()).await;
        let EventOutcome::Renamed { from, to } = &outcome else {
            panic!("{outcome:?}")
        };
        assert!(matches!(**from, EventOutcome::Ignored { .. }), "{from:?}");
        assert!(matches!(**to, EventOutcome::Protected { .. }), "{to:?}");
    }
    assert_eq!(protection(app, "in/a.csv").await.1, vec![etag]);
    assert_eq!(records(&fixture).await, vec![]);
}
