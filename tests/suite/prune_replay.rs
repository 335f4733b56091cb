//! A prune part redone after its delivery died: every deletion that delivery made is reported,
//! whatever time the redo has.

use crate::support;

use std::collections::{BTreeSet, HashMap};

use lakebackup::{
    core::{naming, retention::RetentionPolicy, stamp::Stamp},
    engine::retention::{self, DirectoryScope, PruneAction, PruneOutcome, PrunePlan, Replay},
    storage::testing::NewBlob,
};
use std::time::Instant;
use support::Lake;
use time::{Duration, OffsetDateTime, Time};

/// A delivery deleted a whole level's doomed versions and died before it reported them. The
/// redo starts with its budget already spent (a loaded worker): the continuation it would queue
/// judges the level again and never sees those versions, so the redo must report every one.
/// A lake whose `日本/` level holds twelve daily backups of one blob, with a policy (seven days)
/// that dooms some of them; and the blob's name.
async fn level_with_doomed_versions() -> (Lake, &'static str) {
    let fixture = Lake::start_with(&["lake"], &[("RETENTION_KEEP_DAYS", "7")]).await;
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
    let lake = fixture.app.source.container("lake").unwrap();
    support::upload(&lake, name, b"now").await;
    (fixture, name)
}

/// The scope of the `日本/` level, judged now, with `deadline` and a recorded stop `until`.
fn scope<'a>(
    policy: &'a RetentionPolicy,
    deadline: Instant,
    until: Option<&'a str>,
) -> DirectoryScope<'a> {
    DirectoryScope {
        container: "lake",
        directory: "日本/",
        prefix: "",
        dry_run: false,
        policy,
        now: OffsetDateTime::now_utc(),
        deadline,
        after: None,
        until,
    }
}

fn roomy() -> Instant {
    Instant::now() + std::time::Duration::from_secs(600)
}

/// The delivery before: it carries out `plan` in full (a roomy budget) and dies before it
/// reports; what it did.
async fn first_delivery(
    app: &lakebackup::app::App,
    policy: &RetentionPolicy,
    plan: PrunePlan,
) -> Vec<PruneAction> {
    let mut done = Vec::new();
    let mut keep = |a| done.push(a);
    retention::carry_out(
        app,
        &scope(policy, roomy(), None),
        plan,
        Replay::No,
        &mut keep,
    )
    .await
    .unwrap();
    done
}

/// A delivery that carries out `plan` again after one before it died (`Replay::Yes`): what it
/// reported, and the level as it left it.
async fn redo(
    app: &lakebackup::app::App,
    scope: &DirectoryScope<'_>,
    plan: PrunePlan,
) -> (Vec<PruneAction>, retention::PrunedLevel) {
    let confirmed = retention::confirm_plan(app, scope, plan).await.unwrap();
    let mut reported = Vec::new();
    let mut keep = |a| reported.push(a);
    let level = retention::carry_out(app, scope, confirmed, Replay::Yes, &mut keep)
        .await
        .unwrap();
    (reported, level)
}

fn versions(actions: &[PruneAction]) -> BTreeSet<String> {
    actions.iter().map(|a| a.version.clone()).collect()
}

/// A delivery deleted a whole level's doomed versions and died before it reported them. The
/// redo starts with its budget already spent (a loaded worker): the continuation it would queue
/// judges the level again and never sees those versions, so the redo must report every one.
#[tokio::test]
async fn a_redone_part_reports_every_deletion_of_the_delivery_before_even_out_of_budget() {
    let (fixture, _) = level_with_doomed_versions().await;
    let app = &fixture.app;
    let policy = app.config.retention.clone();
    let plan = retention::judge_level(app, &scope(&policy, roomy(), None))
        .await
        .unwrap();
    // The delivery before: it deletes everything it planned, and dies before reporting.
    let first = first_delivery(app, &policy, plan.clone()).await;
    assert!(first.len() >= 4, "{first:?}");

    // The redo, its budget spent before it starts.
    let (redone, level) = redo(app, &scope(&policy, Instant::now(), None), plan).await;
    assert_eq!(versions(&redone), versions(&first), "{redone:?}");
    assert!(
        redone.iter().all(|a| a.action == PruneOutcome::Deleted),
        "{redone:?}"
    );
    assert_eq!(level.counts.versions_deleted, first.len() as u64);
    assert_eq!(
        level.stopped_after, None,
        "nothing is left for a continuation"
    );
}

/// The delivery before could not delete the first doomed version (it stays) but deleted the
/// next two, and died. The redo, out of budget, reports those two, and records where it stopped;
/// it dies too, and a third delivery carries out the plan up to that stop. The stop must lie past
/// both deletions, or the third (and the continuation, which no longer lists them) drops them.
#[tokio::test]
async fn a_stop_recorded_by_a_redo_lies_past_every_deletion_of_the_delivery_before() {
    let (fixture, _) = level_with_doomed_versions().await;
    let app = &fixture.app;
    let policy = app.config.retention.clone();
    let plan = retention::judge_level(app, &scope(&policy, roomy(), None))
        .await
        .unwrap();
    // The first delivery's deletions: the plan's second and third.
    let mut partial = serde_json::to_value(&plan).unwrap();
    let doomed = partial["doomed"].as_array_mut().unwrap();
    assert!(doomed.len() >= 4, "{doomed:?}");
    doomed.remove(0);
    doomed.truncate(2);
    let partial: PrunePlan = serde_json::from_value(partial).unwrap();
    let first = first_delivery(app, &policy, partial).await;
    assert_eq!(first.len(), 2, "{first:?}");

    // The second, out of budget: it dies after recording its stop.
    let spent = scope(&policy, Instant::now(), None);
    let (second, level) = redo(app, &spent, plan.clone()).await;
    assert!(
        versions(&second).is_superset(&versions(&first)),
        "{second:?}"
    );

    // The third, up to that stop.
    let stop = level.stopped_after;
    let until = scope(&policy, Instant::now(), stop.as_deref());
    let (third, _) = redo(app, &until, plan).await;
    assert!(
        versions(&third).is_superset(&versions(&first)),
        "the stop {stop:?} drops the first delivery's deletions: {third:?}"
    );
}
