//! A prune part redone after its delivery died: every deletion that delivery made is reported,
//! whatever time the redo has.

use crate::support;

use std::collections::{BTreeSet, HashMap};

use lakebackup::{
    core::{naming, stamp::Stamp},
    engine::retention::{self, DirectoryScope, Replay},
    storage::testing::NewBlob,
};
use support::Lake;
use time::{Duration, OffsetDateTime, Time};

/// A delivery deleted a whole level's doomed versions and died before it reported them. The
/// redo starts with its budget already spent (a loaded worker): the continuation it would queue
/// judges the level again and never sees those versions, so the redo must report every one.
#[tokio::test]
async fn a_redone_part_reports_every_deletion_of_the_delivery_before_even_out_of_budget() {
    let fixture = Lake::start_with(&["lake"], &[("RETENTION_KEEP_DAYS", "7")]).await;
    let app = &fixture.app;
    let vault = fixture.vault("lake");
    vault.create().await.unwrap();
    let name = "日本/x｡y🦀.csv";
    let today = OffsetDateTime::now_utc().date();
    for k in 1..=12 {
        let at = (today - Duration::days(k))
            .with_time(Time::from_hms(12, 0, 0).unwrap())
            .assume_utc();
        let etag = format!("0x{k}");
        let stamped = NewBlob {
            metadata: Stamp::new("lake", name, &etag, at).backup_metadata(&HashMap::new()),
            ..NewBlob::default()
        };
        let backup = naming::backup_blob_name(name, at, &etag).unwrap();
        support::upload_with(&vault, &backup, format!("v{k}").as_bytes(), &stamped).await;
    }
    support::upload(&app.source.container("lake").unwrap(), name, b"now").await;
    let policy = app.config.retention.clone();
    let scope = |deadline| DirectoryScope {
        container: "lake",
        directory: "日本/",
        prefix: "",
        dry_run: false,
        policy: &policy,
        now: OffsetDateTime::now_utc(),
        deadline,
        after: None,
        until: None,
    };
    let roomy = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let plan = retention::judge_level(app, &scope(roomy)).await.unwrap();
    // The delivery before: it deletes everything it planned, and dies before reporting.
    let mut first = Vec::new();
    retention::carry_out(app, &scope(roomy), plan.clone(), Replay::No, &mut |a| {
        first.push(a)
    })
    .await
    .unwrap();
    let deleted_first: BTreeSet<String> = first.iter().map(|a| a.version.clone()).collect();
    assert!(deleted_first.len() >= 4, "{first:?}");

    // The redo, its budget spent before it starts.
    let spent = std::time::Instant::now();
    let confirmed = retention::confirm_plan(app, &scope(spent), plan)
        .await
        .unwrap();
    let mut redone = Vec::new();
    let level = retention::carry_out(app, &scope(spent), confirmed, Replay::Yes, &mut |a| {
        redone.push(a)
    })
    .await
    .unwrap();
    let reported: BTreeSet<String> = redone.iter().map(|a| a.version.clone()).collect();
    assert_eq!(reported, deleted_first, "{redone:?}");
    assert!(
        redone
            .iter()
            .all(|a| a.action == retention::PruneOutcome::Deleted),
        "{redone:?}"
    );
    assert_eq!(level.counts.versions_deleted, deleted_first.len() as u64);
    assert_eq!(
        level.stopped_after, None,
        "nothing is left for a continuation"
    );
}
