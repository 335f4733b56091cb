//! Retention on Azurite: `lakebackup prune` over a year of daily versions (backdated through the
//! project's own naming and stamp), each rule and invariant, dry run, refusals, and restores of
//! the instants the policy promises after pruning.

use crate::support;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use lakebackup::{
    app::App,
    core::{naming, stamp::Stamp},
    engine::restore::{self, RestoreFrom, RestoreRequest},
    storage::testing::NewBlob,
};
use serde_json::Value;
use support::{
    proxy::{FaultKind, Faults, OpClass, ProxiedAzurite, ProxyConfig},
    worker, Azurite, Lake,
};
use time::{Date, Duration, Month, OffsetDateTime, Time, Weekday};

/// The policy under test.
const POLICY: [(&str, &str); 6] = [
    ("RETENTION_KEEP_DAYS", "7"),
    ("RETENTION_KEEP_DAILY", "10"),
    ("RETENTION_KEEP_WEEKLY", "4"),
    ("RETENTION_KEEP_MONTHLY", "6"),
    ("RETENTION_KEEP_YEARLY", "2"),
    ("RETENTION_DELETED_DAYS", "30"),
];

const DAYS: i64 = 365;

fn noon(date: Date) -> OffsetDateTime {
    date.with_time(Time::from_hms(12, 0, 0).unwrap())
        .assume_utc()
}

fn midnight(date: Date) -> OffsetDateTime {
    date.with_time(Time::MIDNIGHT).assume_utc()
}

/// The bytes of the version written on `date`.
fn content(date: Date) -> Vec<u8> {
    format!("data as of {date}").into_bytes()
}

/// A complete, stamped backup of `name`'s version `etag` written at `at`, as the consumer
/// leaves one.
async fn backdated_backup(app: &App, name: &str, etag: &str, at: OffsetDateTime, bytes: &[u8]) {
    let vault = app.backup.container("lakebak").unwrap();
    let stamped = NewBlob {
        metadata: Stamp::new("lake", name, etag, at).backup_metadata(&HashMap::new()),
        ..NewBlob::default()
    };
    let backup = naming::backup_blob_name(name, at, etag).unwrap();
    support::upload_with(&vault, &backup, bytes, &stamped).await;
}

/// A lake container and its backup container, ready for backdated backups.
async fn lake_with_vault() -> Lake {
    let lake = Lake::start(&["lake"]).await;
    lake.vault("lake").create().await.unwrap();
    lake
}

/// The record that `name`'s life ending at `etag` was seen deleted at `seen`.
async fn marker(app: &App, name: &str, etag: &str, seen: OffsetDateTime) {
    let vault = app.backup.container("lakebak").unwrap();
    support::record_deletion(&vault, name, etag, seen).await;
}

fn prune(azurite: &Azurite, args: &[&str]) -> (i32, Vec<Value>, Value) {
    let settings = support::with(worker::settings(azurite), &POLICY);
    let mut full = vec!["prune", "--container", "lake"];
    full.extend(args);
    worker::run_lines(&settings, &full)
}

async fn backup_names(app: &App) -> BTreeSet<String> {
    let vault = app.backup.container("lakebak").unwrap();
    support::list_all(&vault)
        .await
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

async fn restore_as_of(
    app: &App,
    instant: OffsetDateTime,
    into: &str,
) -> BTreeMap<String, Vec<u8>> {
    let request = RestoreRequest {
        prefix: Some("tables/".into()),
        ..support::restore_request("lake", RestoreFrom::Backup, Some(into), Some(instant))
    };
    let summary = restore::restore(app, &request, &mut |_| {}).await;
    assert!(summary.succeeded(), "{summary:?}");
    let target = app.source.container(into).unwrap();
    let mut contents = BTreeMap::new();
    for (name, _) in support::list_all(&target).await {
        contents.insert(name.clone(), support::download(&target, &name).await);
    }
    contents
}

#[tokio::test]
async fn a_year_of_daily_versions_keeps_exactly_what_the_policy_promises() {
    let fixture = lake_with_vault().await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    let lake = fixture.lake("lake");
    let today = OffsetDateTime::now_utc().date();
    let name = "tables/sales.csv";

    // A year of daily versions, each backed up at noon; then today's, backed up for real.
    let mut versions: BTreeMap<Date, String> = BTreeMap::new();
    for k in 1..=DAYS {
        let day = today - Duration::days(k);
        let etag = format!("0xDAY{}", day.to_julian_day());
        backdated_backup(app, name, &etag, noon(day), &content(day)).await;
        versions.insert(
            day,
            naming::backup_blob_name(name, noon(day), &etag).unwrap(),
        );
    }
    support::upload(&lake, name, b"today's data").await;
    // Two blobs deleted from the lake (RETENTION_DELETED_DAYS=30): one written on the 3rd and
    // seen deleted on the 20th two months ago (no kept instant falls in its life), one seen
    // deleted 5 days ago.
    let two_months_ago = today - Duration::days(62);
    let long_ago =
        Date::from_calendar_date(two_months_ago.year(), two_months_ago.month(), 3).unwrap();
    for (gone, seen) in [
        ("tables/old.csv", noon(long_ago + Duration::days(17))),
        (
            "tables/recent.csv",
            OffsetDateTime::now_utc() - Duration::days(5),
        ),
    ] {
        backdated_backup(app, gone, "0xGONE", noon(long_ago), b"gone").await;
        marker(app, gone, "0xGONE", seen).await;
    }
    // An unstamped blob under a version's name: not a version, never deleted.
    let unstamped =
        naming::backup_blob_name(name, noon(today - Duration::days(300)), "0xHALF").unwrap();
    support::upload(&fixture.vault("lake"), &unstamped, b"half").await;
    support::produce(app, "lake").await;
    let before = backup_names(app).await;

    // The table: which day's version each rule keeps (the version current at an instant is
    // the one written at noon the day before it).
    let mut expected: BTreeMap<Date, &str> = BTreeMap::new();
    let window_start = OffsetDateTime::now_utc() - Duration::days(7);
    for day in versions.keys() {
        // Its life ends at the next day's noon.
        if noon(*day + Duration::days(1)) > window_start {
            expected.insert(*day, "window");
        }
    }
    let mut keep_current_at = |instant: OffsetDateTime, rule: &'static str| {
        let day = instant.date() - Duration::days(1);
        if versions.contains_key(&day) {
            expected.entry(day).or_insert(rule);
        }
    };
    for j in 0..10 {
        keep_current_at(midnight(today - Duration::days(j)), "daily");
    }
    let monday = today - Duration::days(i64::from(today.weekday().number_days_from_monday()));
    for j in 0..4 {
        keep_current_at(midnight(monday - Duration::weeks(j)), "weekly");
    }
    let (mut year, mut month) = (today.year(), today.month());
    for _ in 0..6 {
        keep_current_at(
            midnight(Date::from_calendar_date(year, month, 1).unwrap()),
            "monthly",
        );
        if month == Month::January {
            year -= 1;
        }
        month = month.previous();
    }
    for j in 0..2 {
        keep_current_at(
            midnight(Date::from_calendar_date(today.year() - j, Month::January, 1).unwrap()),
            "yearly",
        );
    }
    assert!(
        expected.values().any(|r| *r == "monthly") && expected.values().any(|r| *r == "weekly")
    );
    let kept_days: BTreeSet<&String> = expected.keys().map(|day| &versions[day]).collect();

    // Dry run: the plan, and nothing deleted.
    let (code, planned, summary) = prune(azurite, &["--dry-run"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(backup_names(app).await, before, "a dry run deletes nothing");
    let planned: BTreeSet<String> = planned
        .iter()
        .map(|a| {
            assert_eq!(a["action"], "delete", "{a}");
            a["version"].as_str().unwrap().to_owned()
        })
        .collect();
    let doomed_days: BTreeSet<String> = versions
        .values()
        .filter(|v| !kept_days.contains(v))
        .cloned()
        .collect();
    let old_gone = naming::backup_blob_name("tables/old.csv", noon(long_ago), "0xGONE").unwrap();
    let mut expected_doomed = doomed_days.clone();
    expected_doomed.insert(old_gone.clone());
    assert_eq!(planned, expected_doomed);

    // One doomed version is leased by someone: refused, reported, kept; the run goes on.
    let leased = doomed_days.iter().next().unwrap().clone();
    fixture
        .vault("lake")
        .blob(&leased)
        .acquire_lease(-1)
        .await
        .unwrap();
    let (code, actions, summary) = prune(azurite, &[]);
    assert_eq!(code, 0, "{summary}");
    let refused: Vec<&Value> = actions
        .iter()
        .filter(|a| a["action"] == "refused")
        .collect();
    assert_eq!(refused.len(), 1, "{actions:?}");
    assert_eq!(refused[0]["version"], leased.as_str());
    let total = &summary["total"];
    assert_eq!(
        total["versions_deleted"],
        expected_doomed.len() as u64 - 1,
        "{summary}"
    );
    // Kept: the policy's days, today's (the newest of a blob that exists), the recently
    // deleted blob's last version; the unstamped blob is not counted.
    assert_eq!(
        total["versions_kept"],
        kept_days.len() as u64 + 2,
        "{summary}"
    );
    assert_eq!(total["refused"], 1);
    assert!(total["bytes_freed"].as_u64().unwrap() > 0);

    let after = backup_names(app).await;
    let expected_after: BTreeSet<String> = before
        .iter()
        .filter(|n| !expected_doomed.contains(*n) || **n == leased)
        .cloned()
        .collect();
    assert_eq!(after, expected_after);
    assert!(
        after.contains(&unstamped),
        "an unstamped backup is never pruned"
    );

    // Every instant the policy promises restores what was current then.
    let inside_window = OffsetDateTime::now_utc() - Duration::days(3) - Duration::hours(5);
    let day_before = (inside_window - Duration::hours(12)).date();
    let restored = restore_as_of(app, inside_window, "window").await;
    assert_eq!(restored.get(name), Some(&content(day_before)));
    let first_of_month =
        midnight(Date::from_calendar_date(today.year(), today.month(), 1).unwrap())
            - Duration::days(40);
    let first_of_month = midnight(
        Date::from_calendar_date(first_of_month.year(), first_of_month.month(), 1).unwrap(),
    );
    let restored = restore_as_of(app, first_of_month, "monthly").await;
    assert_eq!(
        restored.get(name),
        Some(&content(first_of_month.date() - Duration::days(1))),
        "the month's end restores the version current then"
    );
    let sunday_week = midnight(monday - Duration::weeks(3));
    assert_eq!(sunday_week.weekday(), Weekday::Monday);
    let restored = restore_as_of(app, sunday_week, "weekly").await;
    assert_eq!(
        restored.get(name),
        Some(&content(sunday_week.date() - Duration::days(1)))
    );

    // Again: nothing more to prune.
    let (_, again, summary) = prune(azurite, &[]);
    assert!(again.iter().all(|a| a["action"] == "refused"), "{again:?}");
    assert_eq!(summary["total"]["versions_deleted"], 0);
}

#[tokio::test]
async fn snapshots_of_replaced_versions_go_after_their_days_and_the_current_ones_stay() {
    let fixture = support::Lake::start(&["lake"]).await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    let lake = app.source.container("lake").unwrap();
    // Each version is backed up (a snapshot is never the last copy of a version pruned here).
    let plain = worker::settings(azurite);
    for round in 1..=3 {
        support::upload(&lake, "s.csv", format!("v{round}").as_bytes()).await;
        let (code, stdout, stderr) = worker::run_once(&plain, &["produce", "--container", "lake"]);
        assert_eq!(code, 0, "{stdout}\n{stderr}");
    }
    // A second snapshot of the current version.
    lake.blob("s.csv").take_snapshot(None).await.unwrap();
    // Lives end at whole seconds (+0.999): let v2's end be past.
    support::next_second().await;
    let mut settings = worker::settings(azurite);
    settings.insert("RETENTION_SNAPSHOT_DAYS".into(), "0".into());
    let (code, stdout, stderr) = worker::run_once(&settings, &["prune", "--container", "lake"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["total"]["snapshots_deleted"], 2, "{summary}");
    assert_eq!(summary["total"]["snapshots_kept"], 2, "{summary}");
    let versions = support::list_versions(&lake).await;
    let (base_etag, _, _) = support::properties(&lake, "s.csv").await;
    let snapshots: Vec<&(String, Option<String>, String)> =
        versions.iter().filter(|(_, s, _)| s.is_some()).collect();
    assert_eq!(snapshots.len(), 2);
    assert!(snapshots.iter().all(|(_, _, etag)| *etag == base_etag));
    // Backups are untouched without a backup rule.
    assert_eq!(summary["total"]["versions_deleted"], 0);
    // The lake's own blob is still there.
    assert_eq!(support::download(&lake, "s.csv").await, b"v3");
}

#[tokio::test]
async fn a_reconciliation_prunes_each_directory_as_it_goes() {
    let fixture = lake_with_vault().await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    let lake = app.source.container("lake").unwrap();
    let today = OffsetDateTime::now_utc().date();
    // Twenty daily versions in a nested directory, then the current one.
    let name = "a/b/daily.csv";
    for k in 1..=20 {
        let day = today - Duration::days(k);
        backdated_backup(app, name, &format!("0x{k}"), noon(day), &content(day)).await;
    }
    support::upload(&lake, name, b"now").await;
    let mut settings = worker::settings(azurite);
    settings.insert("RETENTION_KEEP_DAYS".into(), "7".into());
    let (code, stdout, stderr) = worker::run_once(&settings, &["reconcile", "--container", "lake"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    // Kept: the versions alive in the last 7 days (a day's version lives until the next day's
    // noon) and today's, backed up by this pass.
    let window_start = OffsetDateTime::now_utc() - Duration::days(7);
    let alive = (1..=20)
        .filter(|k| noon(today - Duration::days(k - 1)) > window_start)
        .count() as u64;
    assert_eq!(summary["total"]["backups_copied"], 1, "{summary}");
    assert_eq!(summary["total"]["versions_pruned"], 20 - alive, "{summary}");
    let left = backup_names(app).await;
    assert_eq!(left.len() as u64, alive + 1, "{left:?}");
    // A producer's job does not prune, even under a policy that would.
    settings.insert("RETENTION_KEEP_DAYS".into(), "1".into());
    let strict = App::from_settings(&lakebackup::settings::Settings::from_pairs(settings)).unwrap();
    let produced = support::produce(&strict, "lake").await;
    assert_eq!(produced.totals.get("versions_pruned"), 0);
    assert_eq!(backup_names(app).await, left);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_distributed_prune_over_many_parts_with_workers_killed_deletes_exactly_what_a_dry_run_plans(
) {
    let fixture = lake_with_vault().await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    let lake = app.source.container("lake").unwrap();
    let today = OffsetDateTime::now_utc().date();
    // Forty daily versions of three blobs, at levels whose names cross Unicode; each blob's
    // current version in the lake.
    for name in ["root.csv", "日本/データ.csv", "x｡y/🦀/z.csv"] {
        for k in 1..=40 {
            let day = today - Duration::days(k);
            backdated_backup(app, name, &format!("0x{k}"), noon(day), &content(day)).await;
        }
        support::upload(&lake, name, b"now").await;
    }
    let before = backup_names(app).await;
    let mut policy = worker::settings(azurite);
    policy.insert("RETENTION_KEEP_DAYS".into(), "7".into());
    let prune_with = |settings: &HashMap<String, String>, args: &[&str]| {
        let mut full = vec!["prune", "--container", "lake"];
        full.extend(args);
        worker::run_once(settings, &full)
    };
    let (code, stdout, stderr) = prune_with(&policy, &["--dry-run"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let mut planned: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let dry_summary = planned.pop().unwrap();
    let planned: BTreeSet<String> = planned
        .iter()
        .map(|a| a["version"].as_str().unwrap().to_owned())
        .collect();
    assert!(planned.len() > 90, "{dry_summary}");

    // Deletions slowed to ~70 ms, one at a time, with a one-second budget: each level takes
    // several parts, each judging the level again and going on after the last deletion done.
    let proxied = ProxiedAzurite::start(
        azurite,
        ProxyConfig::azurite().faults(
            Faults::new(7, 1.0)
                .classes([OpClass::Delete])
                .kinds([FaultKind::Delay])
                .delay(
                    std::time::Duration::from_millis(60),
                    std::time::Duration::from_millis(80),
                ),
        ),
    )
    .expect("proxies start");
    let mut settings = proxied.settings();
    for (key, value) in [
        ("RETENTION_KEEP_DAYS", "7"),
        ("SHARD_TIME_BUDGET_SECONDS", "1"),
        ("SNAPSHOT_CONCURRENCY", "1"),
        // Workers are killed: their messages come back soon.
        ("RUN_VISIBILITY_SECONDS", "2"),
    ] {
        settings.insert(key.into(), value.into());
    }
    let (code, stdout, stderr) = prune_with(&settings, &["--distributed"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    // The container's job, then the summary.
    let started: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(
        (&started["work"], &started["status"]),
        (&Value::from("prune"), &Value::from("running"))
    );
    assert_eq!(backup_names(app).await, before, "--distributed only queues");
    let job = started["job"].as_str().unwrap();
    let expected: BTreeSet<String> = before.difference(&planned).cloned().collect();
    // Workers killed at ten random points: a part redone after a crash carries out the plan the
    // one before recorded, so what that one deleted is reported too, and only once.
    let pruned = {
        let app = App::from_settings(&lakebackup::settings::Settings::from_pairs(
            settings.clone(),
        ))
        .unwrap();
        let expected = expected.clone();
        move || {
            let vault = app.backup.container("lakebak").unwrap();
            let expected = expected.clone();
            async move {
                let left: BTreeSet<String> = support::list_all(&vault)
                    .await
                    .into_iter()
                    .map(|(name, _)| name)
                    .collect();
                (left == expected).then_some(()).ok_or(format!(
                    "{} backups left, {} expected",
                    left.len(),
                    expected.len()
                ))
            }
        }
    };
    let (status, lines) =
        worker::work_off_killing(&settings, job, 10, 0x2545_F491_4F6C_DD1D, pruned).await;
    assert_eq!(
        (&status["status"], &status["work"]),
        (&Value::from("done"), &Value::from("prune"))
    );
    // The root, 日本/, x｡y/ and x｡y/🦀/, and continuations.
    assert!(
        status["shards_queued"].as_u64().unwrap() > 4,
        "the levels went on in continuations: {status}"
    );
    let deleted: BTreeSet<String> = lines
        .iter()
        .map(|a| {
            assert_eq!(a["action"], "deleted", "{a}");
            a["version"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(deleted.len(), lines.len(), "each deletion reported once");
    assert_eq!(deleted, planned);
    // Counted once, though each level was judged by several parts.
    for count in ["versions_kept", "bytes_kept"] {
        assert_eq!(
            status[count], dry_summary["total"][count],
            "{count}: {status}"
        );
    }
    assert_eq!(status["versions_deleted"], planned.len() as u64);
    assert_eq!(
        (&status["refused"], &status["errors"]),
        (&Value::from(0), &Value::from(0))
    );
    assert_eq!(backup_names(app).await, expected);
}

#[tokio::test]
async fn a_queued_prune_keeps_versions_written_after_it_started_and_judges_by_its_own_policy() {
    let fixture = lake_with_vault().await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    let lake = app.source.container("lake").unwrap();
    let today = OffsetDateTime::now_utc().date();
    let name = "表/t.csv";
    let mut backdated = BTreeMap::new();
    for k in 1..=3 {
        let day = today - Duration::days(k);
        backdated_backup(app, name, &format!("0x{k}"), noon(day), &content(day)).await;
        backdated.insert(
            k,
            naming::backup_blob_name(name, noon(day), &format!("0x{k}")).unwrap(),
        );
    }
    let plain = worker::settings(azurite);
    let produce = || {
        let (code, out, err) = worker::run_once(&plain, &["produce", "--container", "lake"]);
        assert_eq!(code, 0, "{out}{err}");
    };
    support::upload(&lake, name, b"v0").await;
    produce();
    // Only the version current at today's midnight is kept, besides the current one.
    let mut policy = plain.clone();
    policy.insert("RETENTION_KEEP_DAILY".into(), "1".into());
    let (code, out, err) =
        worker::run_once(&policy, &["prune", "--container", "lake", "--distributed"]);
    assert_eq!(code, 0, "{out}{err}");
    let started: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let job = started["job"].as_str().unwrap();
    // Two versions written after the job started, while it waits on the queue: v1 is no
    // longer current, and its life covers no instant the policy keeps, judged at the job's
    // start. It is younger than that judgement: kept.
    support::next_second().await;
    for version in [&b"v1"[..], b"v2"] {
        support::upload(&lake, name, version).await;
        produce();
    }
    let before = backup_names(app).await;
    // The worker's RETENTION_* bounds the job's policy (the same here); the job's own instant
    // decides.
    let (code, lines, status) =
        worker::work_off_job(&policy, job, std::time::Duration::from_secs(60)).await;
    assert_eq!(code, 0, "{status}");
    let deleted: BTreeSet<String> = lines
        .iter()
        .map(|a| a["version"].as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = [&backdated[&2], &backdated[&3]]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(deleted, expected, "{lines:?}");
    let after = backup_names(app).await;
    assert_eq!(
        after,
        before
            .difference(&expected)
            .cloned()
            .collect::<BTreeSet<_>>()
    );
    // Yesterday's (current at midnight), v0, v1 and v2.
    assert_eq!(status["versions_kept"], 4, "{status}");
}

/// Sets every `key` in `value` (at any depth) to `to`.
fn set_everywhere(value: &mut Value, key: &str, to: &Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if k == key {
                    *v = to.clone();
                } else {
                    set_everywhere(v, key, to);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| set_everywhere(v, key, to)),
        _ => {}
    }
}

/// `prune --distributed` with `policy`, its root shard taken off the queue and put back as
/// `craft` rewrites it: (the job, the text put on the queue).
async fn crafted_prune_job(
    fixture: &Lake,
    policy: &HashMap<String, String>,
    craft: impl Fn(&mut Value),
) -> (String, String) {
    use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
    let (code, out, err) =
        worker::run_once(policy, &["prune", "--container", "lake", "--distributed"]);
    assert_eq!(code, 0, "{out}{err}");
    let started: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let shards = fixture.queue("backup-requests-shards");
    let taken = support::drain_queue(&shards).await;
    assert_eq!(taken.len(), 1, "{taken:?}");
    let mut shard: Value =
        serde_json::from_slice(&BASE64.decode(taken[0].trim()).unwrap()).unwrap();
    craft(&mut shard);
    let text = BASE64.encode(shard.to_string());
    shards
        .send(text.clone(), None, "a crafted shard")
        .await
        .unwrap();
    (started["job"].as_str().unwrap().to_owned(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prune_shard_asking_for_more_than_the_workers_policy_is_poisoned_and_deletes_nothing() {
    let fixture = lake_with_vault().await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    let today = OffsetDateTime::now_utc().date();
    for k in 1..=20 {
        let day = today - Duration::days(k);
        backdated_backup(app, "t.csv", &format!("0x{k}"), noon(day), &content(day)).await;
    }
    support::upload(&fixture.lake("lake"), "t.csv", b"now").await;
    let before = backup_names(app).await;
    let plain = worker::settings(azurite);
    let workers = support::with(plain.clone(), &[("RETENTION_KEEP_DAYS", "14")]);
    let poison = fixture.queue("backup-requests-shards-poison");
    let within = std::time::Duration::from_secs(60);

    // Whoever can write the shard queue asks for a 1-day window; the workers keep 14 days.
    let (job, crafted) = crafted_prune_job(&fixture, &workers, |shard| {
        set_everywhere(shard, "keep_days", &Value::from(1));
    })
    .await;
    let (code, _, status) = worker::work_off_job(&workers, &job, within).await;
    assert_eq!((code, &status["status"]), (1, &"failed".into()), "{status}");
    let why = status["failures"].to_string();
    assert!(
        why.contains("RETENTION_KEEP_DAYS") && why.contains("nothing was deleted"),
        "{why}"
    );
    assert_eq!(status["versions_deleted"], 0, "{status}");
    assert_eq!(
        support::drain_queue(&poison).await,
        [crafted],
        "poisoned unchanged"
    );
    assert_eq!(backup_names(app).await, before, "nothing deleted");

    // An instant in the future makes more look old: refused too.
    let in_a_year = OffsetDateTime::now_utc().unix_timestamp() + 365 * 86_400;
    let (job, crafted) = crafted_prune_job(&fixture, &workers, |shard| {
        set_everywhere(shard, "judged_at", &Value::from(in_a_year));
    })
    .await;
    let (code, _, status) = worker::work_off_job(&workers, &job, within).await;
    assert_eq!(code, 1, "{status}");
    assert!(
        status["failures"].to_string().contains("future"),
        "{status}"
    );
    assert_eq!(support::drain_queue(&poison).await, [crafted]);
    assert_eq!(backup_names(app).await, before);

    // Workers with no RETENTION_* setting prune nothing: any shard that would prune is refused.
    let (job, untouched) = crafted_prune_job(&fixture, &workers, |_| {}).await;
    let (code, _, status) = worker::work_off_job(&plain, &job, within).await;
    assert_eq!(code, 1, "{status}");
    assert!(
        status["failures"].to_string().contains("RETENTION_KEEP_"),
        "{status}"
    );
    assert_eq!(support::drain_queue(&poison).await, [untouched]);
    assert_eq!(backup_names(app).await, before);

    // A stricter shard (a longer window) than the workers' is carried out, by its own policy.
    let (job, _) = crafted_prune_job(&fixture, &workers, |shard| {
        set_everywhere(shard, "keep_days", &Value::from(17));
    })
    .await;
    let (code, lines, status) = worker::work_off_job(&workers, &job, within).await;
    assert_eq!(code, 0, "{status}");
    // Days 1..=17 are alive in a 17-day window (day 17's life ends at day 16's noon), and so is
    // day 18 before noon; 19 and 20 go.
    let deleted: BTreeSet<String> = lines
        .iter()
        .map(|a| a["version"].as_str().unwrap().to_owned())
        .collect();
    let day = |k: i64| {
        naming::backup_blob_name("t.csv", noon(today - Duration::days(k)), &format!("0x{k}"))
            .unwrap()
    };
    assert!(
        deleted.contains(&day(19)) && deleted.contains(&day(20)),
        "{deleted:?}"
    );
    assert!((1..=17).all(|k| !deleted.contains(&day(k))), "{deleted:?}");
    assert_eq!(backup_names(app).await.len(), before.len() - deleted.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prune_shard_with_no_keep_rules_but_a_deletion_grace_is_refused_where_the_workers_keep_versions(
) {
    let fixture = lake_with_vault().await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    let today = OffsetDateTime::now_utc().date();
    // A blob with three versions, its last seen deleted 10 days ago: the workers' 30-day
    // window keeps all three (each alive within it), their 7-day grace notwithstanding.
    for k in [40, 20, 12] {
        let day = today - Duration::days(k);
        backdated_backup(app, "gone.csv", &format!("0x{k}"), noon(day), &content(day)).await;
    }
    marker(app, "gone.csv", "0x12", noon(today - Duration::days(10))).await;
    let before = backup_names(app).await;
    let workers = support::with(
        worker::settings(azurite),
        &[
            ("RETENTION_KEEP_DAYS", "30"),
            ("RETENTION_DELETED_DAYS", "7"),
        ],
    );
    // The crafted shard drops every rule for versions and keeps the grace: with no rule,
    // a blob deleted past its grace keeps nothing.
    let (job, crafted) = crafted_prune_job(&fixture, &workers, |shard| {
        set_everywhere(shard, "keep_days", &Value::Null);
    })
    .await;
    let within = std::time::Duration::from_secs(60);
    let (code, _, status) = worker::work_off_job(&workers, &job, within).await;
    assert_eq!((code, &status["status"]), (1, &"failed".into()), "{status}");
    assert!(
        status["failures"]
            .to_string()
            .contains("RETENTION_KEEP_DAYS"),
        "{status}"
    );
    assert_eq!(status["versions_deleted"], 0, "{status}");
    let poison = fixture.queue("backup-requests-shards-poison");
    assert_eq!(support::drain_queue(&poison).await, [crafted]);
    assert_eq!(backup_names(app).await, before, "nothing deleted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recorded_plan_naming_a_version_the_policy_keeps_deletes_only_what_the_level_dooms() {
    use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
    use lakebackup::engine::jobs::{ledger, Shard};
    let fixture = lake_with_vault().await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    let today = OffsetDateTime::now_utc().date();
    for k in [3, 5, 20] {
        let day = today - Duration::days(k);
        backdated_backup(app, "t.csv", &format!("0x{k}"), noon(day), &content(day)).await;
    }
    support::upload(&fixture.lake("lake"), "t.csv", b"now").await;
    let name = |k: i64| {
        naming::backup_blob_name("t.csv", noon(today - Duration::days(k)), &format!("0x{k}"))
            .unwrap()
    };
    let before = backup_names(app).await;
    let workers = support::with(worker::settings(azurite), &[("RETENTION_KEEP_DAYS", "4")]);
    let (job, text) = crafted_prune_job(&fixture, &workers, |_| {}).await;
    // Whoever can write the ledger records a plan for the root shard, as if a delivery had
    // judged it and died: day 3's version (the newest backup, in the 4-day window) and day
    // 20's (replaced 5 days ago: doomed), with no ETag to condition on.
    let json = String::from_utf8(BASE64.decode(text.trim()).unwrap()).unwrap();
    let shard = Shard::parse(&json).unwrap();
    let doomed = |k: i64| {
        serde_json::json!({
            "blob": "t.csv", "kind": "backup", "version": name(k), "etag": null, "bytes": 1
        })
    };
    let forged = serde_json::json!({
        "kept": lakebackup::engine::retention::PruneCounts::default(),
        "doomed": [doomed(3), doomed(20)],
        "subdirectories": []
    });
    ledger::record_plan(app, &shard, &forged).await.unwrap();
    let within = std::time::Duration::from_secs(60);
    let (code, lines, status) = worker::work_off_job(&workers, &job, within).await;
    assert_eq!(code, 0, "{status}");
    let deleted: Vec<&str> = lines
        .iter()
        .map(|a| a["version"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, [name(20).as_str()], "{lines:?}");
    let mut expected = before.clone();
    expected.remove(&name(20));
    assert_eq!(backup_names(app).await, expected, "day 3's version kept");
    // Counted kept, as the level judged it: day 3's (the forged plan counted no kept ones).
    assert_eq!(status["versions_kept"], 1, "{status}");
    assert_eq!(status["versions_deleted"], 1, "{status}");
}
