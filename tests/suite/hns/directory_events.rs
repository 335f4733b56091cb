//! Directory events of a lake with a hierarchical namespace end and begin the directories' OWN
//! versions, not only those of what is under them: a deleted (or renamed-away) directory is
//! not brought back by a restore of a later instant; a renamed-to directory is backed up itself.

use lakebackup::{app::WorkQueue, engine::events::EventOutcome};
use serde_json::Value;

use super::{
    backup::lake_on_stand_in,
    directories::{make_directory, DEFAULT_ACL},
};
use crate::{
    events::event_grid,
    support::{self, worker},
};

async fn deliver(app: &lakebackup::app::App, event: &Value) -> EventOutcome {
    support::deliver_to::<EventOutcome>(app, WorkQueue::Events, &event.to_string(), 1)
        .await
        .unwrap()
        .done()
}

/// `lakebackup restore --container lake --from backup --as-of NOW ARGS`.
async fn restore_now(settings: &std::collections::HashMap<String, String>, args: &[&str]) -> Value {
    let now = support::instant_after_writes().await;
    let mut all = vec![
        "restore",
        "--container",
        "lake",
        "--from",
        "backup",
        "--as-of",
        &now,
    ];
    all.extend(args);
    let (code, _, summary) = worker::run_lines(settings, &all);
    assert_eq!(code, 0, "{summary}");
    summary
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_directory_is_not_brought_back_by_a_restore_after_its_event() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    make_directory(&proxied, "d", &[("x-ms-acl", DEFAULT_ACL)]).await;
    support::upload(&lake.lake("lake"), "d/f.csv", b"bytes").await;
    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    support::next_second().await;
    let deleted = super::dfs(&proxied, "DELETE", "lake/d", "recursive=true", &[]).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let event = event_grid("DirectoryDeleted", "source", "lake", "d", "");
    let outcome = deliver(&lake.app, &event).await;
    assert!(
        matches!(&outcome, EventOutcome::DirectoryQueued { .. }),
        "{outcome:?}"
    );
    assert!(support::deliver_all_shards(&lake.app).await >= 1);

    let summary = restore_now(&lake.settings(), &[]).await;
    assert_eq!(summary.get("directories_created"), None, "{summary}");
    let stand_in = proxied.blob.hns().unwrap();
    assert!(
        stand_in.access_control("source", "lake", "d").is_none(),
        "the deleted directory stays deleted: {summary}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renamed_directory_is_backed_up_under_its_new_name_and_ended_under_its_old() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    make_directory(&proxied, "old", &[("x-ms-acl", DEFAULT_ACL)]).await;
    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    support::next_second().await;
    // Azure's rename as the stand-in can show it: the new directory, the old one gone.
    make_directory(&proxied, "新", &[("x-ms-acl", DEFAULT_ACL)]).await;
    let deleted = super::dfs(&proxied, "DELETE", "lake/old", "recursive=true", &[]).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let mut event = event_grid("DirectoryRenamed", "source", "lake", "新", "");
    let dfs_url =
        |name: &str| crate::events::url("source", "lake", name).replace(".blob.", ".dfs.");
    event["data"]["api"] = "RenamePathFile".into();
    event["data"]["sourceUrl"] = dfs_url("old").into();
    event["data"]["destinationUrl"] = dfs_url("新").into();
    deliver(&lake.app, &event).await;
    support::deliver_all_shards(&lake.app).await;

    // Restored as of now into a new container: the new name, not the old.
    let summary = restore_now(&lake.settings(), &["--to-container", "back"]).await;
    let stand_in = proxied.blob.hns().unwrap();
    assert!(
        stand_in.access_control("source", "back", "新").is_some(),
        "the new directory is backed up itself: {summary}"
    );
    assert!(
        stand_in.access_control("source", "back", "old").is_none(),
        "the old directory's life ended: {summary}"
    );
}
