//! `lakebackup poison list|show|replay`, through the real binary, on Azurite's queues: a list
//! reads without taking (and shows the reason recorded when the function poisoned a message);
//! a replay moves messages back to their work queue byte for byte (non-ASCII, XML's special
//! characters, raw JSON and base64 alike), refuses one the function could not read and leaves
//! it in the poison queue, changes nothing in a dry run, stops at `--count`; and a replay
//! killed mid-way loses no message.

use crate::support;

use std::{collections::BTreeMap, time::Duration};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use lakebackup::{app::WorkQueue, storage::Queue};
use serde_json::Value;
use support::proxy::{FaultKind, Faults, OpClass, ProxiedAzurite, ProxyConfig};

const POISON: &str = "backup-requests-poison";
const WORK: &str = "backup-requests";

/// `lakebackup ARGS`: (exit code, its JSON lines; the summary last).
fn run(fixture: &support::Lake, args: &[&str]) -> (i32, Vec<Value>) {
    let (code, stdout, stderr) = fixture.run(args);
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}\n{stderr}")))
        .collect::<Vec<Value>>();
    assert!(!lines.is_empty(), "{args:?}: no output\n{stderr}");
    (code, lines)
}

/// A backup request the consumer can read, for a blob named `name`.
fn request(name: &str) -> String {
    serde_json::json!({"container": "lake", "blob_name": name, "etag": "0x8DC1"}).to_string()
}

/// Messages as they would stand on the queue: base64 (as the worker queues them) and raw JSON
/// (as another producer may), with names across Unicode and XML's special characters.
fn readable_messages() -> Vec<String> {
    vec![
        BASE64.encode(request("数据/2026/😀 ｡ report.csv")),
        BASE64.encode(request("a <b> & \"c\" 'd'.csv")),
        request("raw/ünïcödé 📦 <&>.json"),
    ]
}

async fn put(queue: &Queue, texts: &[String]) {
    queue.create_if_missing().await.unwrap();
    for text in texts {
        queue
            .send(text.clone(), None, "a test message")
            .await
            .unwrap();
    }
}

/// Every text on `queue`, counted (taken: hidden five minutes).
async fn texts_on(queue: &Queue) -> BTreeMap<String, usize> {
    let mut counted = BTreeMap::new();
    for text in support::drain_queue(queue).await {
        *counted.entry(text).or_default() += 1;
    }
    counted
}

fn counted(texts: &[String]) -> BTreeMap<String, usize> {
    let mut counted = BTreeMap::new();
    for text in texts {
        *counted.entry(text.clone()).or_default() += 1;
    }
    counted
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_list_reads_without_taking_and_shows_the_recorded_reason() {
    let fixture = support::Lake::start(&["lake"]).await;
    // The consumer poisons a message it cannot read, recording why.
    let delivered = support::deliver_to::<Value>(&fixture.app, WorkQueue::Backups, "not json ✗", 1)
        .await
        .unwrap();
    assert!(matches!(delivered, support::Delivered::Poisoned(_)));
    // One poisoned by someone else (the host, an earlier release): no reason recorded.
    let poison = fixture.queue(POISON);
    let other = BASE64.encode(request("b.csv"));
    put(&poison, std::slice::from_ref(&other)).await;

    for _ in 0..2 {
        let (code, lines) = run(&fixture, &["poison", "list"]);
        assert_eq!(code, 0, "{lines:?}");
        let (messages, summary) = lines.split_at(lines.len() - 1);
        assert_eq!(messages.len(), 2, "{lines:?}");
        let bad = messages.iter().find(|m| m["text"] == "not json ✗").unwrap();
        assert_eq!(bad["raw"], BASE64.encode("not json ✗"));
        assert_eq!(bad["queue"], POISON);
        assert_eq!(bad["work_queue"], WORK);
        assert!(
            bad["reason"]
                .as_str()
                .unwrap()
                .contains("not a backup request"),
            "{bad}"
        );
        assert!(bad["unreadable"].is_string(), "{bad}");
        assert_eq!(bad["dequeue_count"], 0, "peeking takes nothing: {bad}");
        assert!(bad["inserted"].is_string(), "{bad}");
        let good = messages
            .iter()
            .find(|m| m["raw"] == other.as_str())
            .unwrap();
        assert!(
            good["reason"].is_null() && good["unreadable"].is_null(),
            "{good}"
        );
        let depths = summary[0]["queues"].as_array().unwrap();
        assert!(
            depths.contains(&serde_json::json!({"queue": POISON, "depth": 2})),
            "{summary:?}"
        );
    }

    // `show` finds one by its id; an id no queue shows is exit 1.
    let (_, lines) = run(&fixture, &["poison", "list", "--queue", "backups"]);
    let id = lines[0]["id"].as_str().unwrap().to_owned();
    let (code, lines) = run(&fixture, &["poison", "show", &id]);
    assert_eq!((code, lines.len()), (0, 2), "{lines:?}");
    assert_eq!(lines[0]["id"], id.as_str());
    let (code, lines) = run(&fixture, &["poison", "show", "no-such-id"]);
    assert_eq!(
        (code, &lines[0]["status"]),
        (1, &"failed".into()),
        "{lines:?}"
    );
    // Nothing was taken.
    assert_eq!(texts_on(&poison).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_replay_moves_messages_back_byte_for_byte_and_refuses_unreadable_ones() {
    let fixture = support::Lake::start(&["lake"]).await;
    let (poison, work) = (fixture.queue(POISON), fixture.queue(WORK));
    let readable = readable_messages();
    let unreadable = BASE64.encode("{\"container\": \"lake\"} 数据");
    let mut all = readable.clone();
    all.push(unreadable.clone());
    put(&poison, &all).await;

    // A dry run says what it would do, and changes nothing.
    let (code, lines) = run(
        &fixture,
        &["poison", "replay", "--queue", "backups", "--dry-run"],
    );
    assert_eq!(code, 0, "{lines:?}");
    let summary = lines.last().unwrap();
    assert_eq!(
        (&summary["replayed"], &summary["refused"]),
        (&3.into(), &1.into())
    );
    let would: Vec<&Value> = lines
        .iter()
        .filter(|l| l["action"] == "would_refuse")
        .collect();
    assert_eq!(would.len(), 1, "{lines:?}");
    assert!(would[0]["reason"]
        .as_str()
        .unwrap()
        .contains("not a backup request"));
    assert!(!support::queue_exists(&work).await || texts_on(&work).await.is_empty());
    let (_, listed) = run(&fixture, &["poison", "list", "--queue", "backups"]);
    assert_eq!(listed.len(), 5, "all four still visible: {listed:?}");
    assert!(
        listed[..4].iter().all(|m| m["dequeue_count"] == 0),
        "{listed:?}"
    );

    // The replay: every readable message on the work queue exactly as it stood; the
    // unreadable one refused (exit 1) and still in the poison queue, visible at once.
    let (code, lines) = run(&fixture, &["poison", "replay", "--queue", "backups"]);
    assert_eq!(code, 1, "a refusal is exit 1: {lines:?}");
    let summary = lines.last().unwrap();
    assert_eq!(summary["status"], "refused");
    assert_eq!(
        (&summary["replayed"], &summary["refused"]),
        (&3.into(), &1.into())
    );
    assert_eq!(texts_on(&work).await, counted(&readable), "byte for byte");
    let (_, listed) = run(&fixture, &["poison", "list", "--queue", "backups"]);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["raw"], unreadable.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_replay_stops_at_count() {
    let fixture = support::Lake::start(&["lake"]).await;
    let (poison, work) = (fixture.queue(POISON), fixture.queue(WORK));
    let texts: Vec<String> = (0..5)
        .map(|i| BASE64.encode(request(&format!("{i}.csv"))))
        .collect();
    put(&poison, &texts).await;
    let (code, lines) = run(
        &fixture,
        &["poison", "replay", "--queue", "backups", "--count", "2"],
    );
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(lines.last().unwrap()["replayed"], 2);
    let moved = texts_on(&work).await;
    assert_eq!(moved.values().sum::<usize>(), 2, "{moved:?}");
    // The other three are still in the poison queue, visible now (none left hidden).
    let left = texts_on(&poison).await;
    assert_eq!(left.values().sum::<usize>(), 3, "{left:?}");
    let mut together = moved;
    for (text, n) in left {
        *together.entry(text).or_default() += n;
    }
    assert_eq!(together, counted(&texts));
}

/// The figure's test: a replay of `N` messages killed (SIGKILL) mid-way leaves every message
/// on the work queue or in the poison queue — some perhaps on both — and loses none.
#[tokio::test(flavor = "multi_thread")]
async fn a_replay_killed_mid_way_loses_no_message() {
    const N: usize = 200;
    let fixture = support::Lake::start(&["lake"]).await;
    let (poison, work) = (fixture.queue(POISON), fixture.queue(WORK));
    let texts: Vec<String> = (0..N)
        .map(|i| BASE64.encode(request(&format!("dir/数据-{i:04}.csv"))))
        .collect();
    futures::future::join_all(texts.chunks(20).map(|chunk| put(&poison, chunk))).await;
    work.create_if_missing().await.unwrap();

    // Its queue requests are slowed (30 ms each, through the proxy), so that the replay is
    // surely still running when a quarter has moved, however slowly this test looks.
    let proxied = ProxiedAzurite::start(
        &fixture.azurite,
        ProxyConfig::azurite().faults(
            Faults::new(3, 1.0)
                .classes([OpClass::Queue])
                .kinds([FaultKind::Delay])
                .delay(Duration::from_millis(30), Duration::from_millis(40)),
        ),
    )
    .expect("proxies start");
    let slowed = fixture.settings_with(&[(
        "AzureWebJobsStorage",
        &proxied.settings()["AzureWebJobsStorage"],
    )]);
    let mut replay = std::process::Command::new(support::worker::binary())
        .args(["poison", "replay", "--queue", "backups"])
        .env_clear()
        .envs(slowed)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    support::wait_for(Duration::from_secs(60), "a quarter replayed", || async {
        (work.depth().await.unwrap().unwrap_or(0) >= (N / 4) as u64).then_some(())
    })
    .await;
    assert!(
        replay.try_wait().unwrap().is_none(),
        "it ended before it was killed"
    );
    replay.kill().unwrap(); // SIGKILL
    replay.wait().unwrap();

    // Messages it had taken reappear in the poison queue when their window ends: taken off
    // both queues (hidden from here on) until every message is found, or the window has
    // surely ended and one never is.
    let found = std::sync::Mutex::new((BTreeMap::new(), BTreeMap::new()));
    let within = lakebackup::host::poison::REPLAY_WINDOW + Duration::from_secs(30);
    let _ = tokio::time::timeout(
        within,
        // Outlasted by the timeout around it: a message never found is named below.
        support::wait_for(within * 2, "every message on a queue", || async {
            let (work_now, poison_now) = (texts_on(&work).await, texts_on(&poison).await);
            let mut found = found.lock().unwrap();
            for (text, n) in work_now {
                *found.0.entry(text).or_insert(0) += n;
            }
            for (text, n) in poison_now {
                *found.1.entry(text).or_insert(0) += n;
            }
            texts
                .iter()
                .all(|t| found.0.contains_key(t) || found.1.contains_key(t))
                .then_some(())
        }),
    )
    .await;
    let (on_work, in_poison): (BTreeMap<String, usize>, BTreeMap<String, usize>) =
        found.into_inner().unwrap();
    let moved: usize = on_work.values().sum();
    assert!(
        (N / 4..N).contains(&moved),
        "killed mid-way: {moved} of {N} moved"
    );
    for text in &texts {
        assert!(
            on_work.contains_key(text) || in_poison.contains_key(text),
            "lost: {text}"
        );
    }
    let unknown: Vec<&String> = on_work
        .keys()
        .chain(in_poison.keys())
        .filter(|t| !texts.contains(t))
        .collect();
    assert!(unknown.is_empty(), "changed on the way: {unknown:?}");
}

/// A dry run reads at most 32 messages (Azure's peek cannot page): past them it says what it
/// could not see instead of a forecast. A replay removes the reason recorded for a message it
/// moves back (a message poisoned again records its new reason).
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_says_what_it_could_not_see_and_a_replay_forgets_the_reason() {
    let fixture = support::Lake::start(&["lake"]).await;
    let poison = fixture.queue(POISON);
    let texts: Vec<String> = (0..40)
        .map(|i| BASE64.encode(request(&format!("{i}.csv"))))
        .collect();
    put(&poison, &texts).await;
    let ledger = fixture.app.job_ledger().await.unwrap();
    let reason = lakebackup::app::poison_reason_name(POISON, &texts[3]);
    let with_reason = lakebackup::storage::testing::NewBlob {
        metadata: [("reason".to_owned(), "why%20not".to_owned())].into(),
        ..Default::default()
    };
    support::upload_with(ledger, &reason, b"", &with_reason).await;

    let dry = ["poison", "replay", "--queue", "backups", "--dry-run"];
    let (code, lines) = run(&fixture, &[&dry[..], &["--count", "100"]].concat());
    assert_eq!(code, 0, "{lines:?}");
    let summary = lines.last().unwrap();
    assert_eq!(summary["replayed"], 32, "{summary}");
    assert_eq!(summary["complete"], false, "{summary}");
    let unseen = summary["unseen"].as_str().unwrap();
    assert!(unseen.contains("at least 32"), "{unseen}");
    // Within what it sees, its count is the replay's.
    let (_, lines) = run(&fixture, &[&dry[..], &["--count", "5"]].concat());
    let summary = lines.last().unwrap();
    assert_eq!(summary["replayed"], 5, "{summary}");
    assert!(summary.get("complete").is_none(), "{summary}");

    let (code, lines) = run(&fixture, &["poison", "replay", "--queue", "backups"]);
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(lines.last().unwrap()["replayed"], 40);
    assert!(
        ledger.blob(&reason).probe().await.unwrap().is_none(),
        "the replayed message's reason is gone"
    );
}
