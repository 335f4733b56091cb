//! Immutable (WORM) backup containers. Through the proxy every `*bak` container answers as Azure
//! does one with a time-based retention policy (Azurite has no immutability): creating a blob
//! works; deleting one, writing over it, or setting its metadata or properties answers 409
//! `BlobImmutableDueToPolicy`; Get Container Properties says `x-ms-has-immutability-policy:
//! true`. A first backup, a reconcile after changes, an event, `verify --deep` (a blob without
//! an MD5 included), `prune` (its deletions refused, exit 0, nothing lost) and a restore all work
//! there, and nothing but prune's deletions and verify's record of a checked MD5 ever asks to
//! change an existing backup. And a writer that cannot delete (the least-privilege role, as the
//! proxy answers for it): passes go on and say what they could not prune; `prune` under
//! `PRUNE_STORAGE` deletes.

use crate::{exactness::common::unprotected, support};

use std::collections::BTreeMap;

use lakebackup::{app::App, app::WorkQueue, settings::Settings};
use serde_json::{json, Value};
use support::{
    proxy::{ProxiedAzurite, ProxyConfig},
    worker, Azurite,
};

/// The exit code, and stdout (then stderr, for the failure messages).
fn run(settings: &std::collections::HashMap<String, String>, args: &[&str]) -> (i32, String) {
    let (code, out, err) = worker::run_once(settings, args);
    (code, format!("{out}\n\u{0}{err}"))
}

/// The summary: stdout whole (pretty-printed), or its last line (after action lines).
fn last_json(output: &str) -> Value {
    let out = output.split('\u{0}').next().unwrap_or_default().trim();
    serde_json::from_str(out)
        .or_else(|_| serde_json::from_str(out.lines().last().unwrap_or_default()))
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_function_works_on_immutable_backup_containers_and_none_changes_a_backup() {
    let azurite = Azurite::start();
    let proxied =
        ProxiedAzurite::start(&azurite, ProxyConfig::azurite().worm("bak")).expect("proxies start");
    let mut settings = proxied.settings();
    settings.insert("EVENTS_QUEUE_NAME".into(), "lake-events".into());
    let app = App::from_settings(&Settings::from_pairs(settings.clone())).unwrap();
    let lake = app.source.container("lake").unwrap();
    lake.create().await.unwrap();
    let names = ["a.csv", "dir/b.csv", "日本/c.txt", "x｡y/🦀.txt"];
    for name in names {
        support::upload(&lake, name, format!("v1 of {name}").as_bytes()).await;
    }
    support::put_block_list(&lake, "no-md5.bin", b"written as a block list", None).await;

    // A first backup.
    let (code, out) = run(&settings, &["produce", "--container", "lake"]);
    assert_eq!(code, 0, "{out}");
    let vault = app.backup.container("lakebak").unwrap();
    assert_eq!(unprotected(&lake, &vault).await, Vec::<String>::new());
    let (code, out) = run(&settings, &["doctor", "--json"]);
    let report = last_json(&out);
    let immutability = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "BACKUP_STORAGE: immutability of lakebak")
        .cloned()
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(immutability["status"], "ok", "{immutability} (exit {code})");
    let before_changes: BTreeMap<String, Vec<u8>> = {
        let mut contents = BTreeMap::new();
        for name in names.iter().chain(&["no-md5.bin"]) {
            contents.insert(name.to_string(), support::download(&lake, name).await);
        }
        contents
    };
    let instant = support::instant_after_writes().await;
    support::next_second().await;

    // Changes, then a reconcile: the new versions backed up, the deletion recorded.
    support::upload(&lake, "a.csv", b"v2 of a.csv").await;
    support::delete_with_snapshots(&lake, "dir/b.csv").await;
    support::upload(&lake, "new.csv", b"new").await;
    let (code, out) = run(&settings, &["reconcile", "--container", "lake"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(unprotected(&lake, &vault).await, Vec::<String>::new());
    let records = support::life_records(&vault).await;
    assert!(
        records.iter().any(|(record, _)| record.name == "dir/b.csv"),
        "the deletion is recorded, create-only: {records:?}"
    );

    // An event: the version it announces is protected at once.
    support::upload(&lake, "日本/c.txt", b"v2 of c").await;
    let (etag, _, _) = support::properties(&lake, "日本/c.txt").await;
    let account = app.source.account_name().unwrap();
    let event = json!({
        "topic": format!("/subscriptions/0/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/{account}"),
        "subject": "/blobServices/default/containers/lake/blobs/日本/c.txt",
        "eventType": "Microsoft.Storage.BlobCreated",
        "eventTime": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap(),
        "id": "worm-event-1",
        "data": {"api": "PutBlob", "eTag": etag, "contentLength": 7, "blobType": "BlockBlob"},
        "dataVersion": "", "metadataVersion": "1"
    });
    support::deliver_to::<Value>(&app, WorkQueue::Events, &event.to_string(), 1)
        .await
        .unwrap();
    assert_eq!(unprotected(&lake, &vault).await, Vec::<String>::new());

    // verify --deep: the block-list blob's MD5 is computed from its bytes; recording it in the
    // backup's stamp is refused, and the check stands.
    let (code, out) = run(&settings, &["verify", "--container", "lake", "--deep"]);
    let verified = last_json(&out);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        verified["gaps"].as_array().map(Vec::len),
        Some(0),
        "{verified}"
    );
    assert_eq!(verified["checked"], verified["blobs"], "{verified}");

    // prune: a.csv's first version (replaced today) is no longer kept by the policy, and its
    // deletion is refused: reported, exit 0, nothing lost.
    let backups_before = support::list_all(&vault).await;
    let mut policy = settings.clone();
    policy.insert("RETENTION_KEEP_DAILY".into(), "1".into());
    let (code, out) = run(&policy, &["prune", "--container", "lake"]);
    assert_eq!(code, 0, "{out}");
    let summary = last_json(&out);
    assert!(
        summary["total"]["refused"].as_u64().unwrap_or(0) >= 1,
        "{summary}"
    );
    assert_eq!(summary["total"]["versions_deleted"], 0, "{summary}");
    assert!(out.contains("immutable"), "the refusal says why: {out}");
    assert_eq!(support::list_all(&vault).await, backups_before);

    // A restore of the instant before the changes, byte-identical.
    let command = format!("restore --container lake --as-of {instant} --to-container restored");
    let (code, out) = run(&settings, &command.split(' ').collect::<Vec<_>>());
    assert_eq!(code, 0, "{out}");
    let restored = app.source.container("restored").unwrap();
    assert_eq!(support::contents(&restored).await, before_changes);

    // Nothing asked to change an existing backup but prune's deletions and verify's record.
    let refusals = proxied.stats().azure_refusals;
    assert!(!refusals.is_empty(), "the policy was exercised");
    for (code, what) in &refusals {
        assert_eq!(code, "BlobImmutableDueToPolicy", "{what}");
        assert!(
            what.starts_with("DELETE ") || what.starts_with("PUT "),
            "{what}"
        );
    }
    let puts = refusals
        .iter()
        .filter(|(_, w)| w.starts_with("PUT "))
        .count();
    assert!(
        puts <= 1,
        "only verify's one record of a computed MD5: {refusals:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_that_cannot_delete_goes_on_and_prune_storage_deletes() {
    let azurite = Azurite::start();
    let proxied = ProxiedAzurite::start(&azurite, ProxyConfig::azurite().deny_deletes("bak"))
        .expect("proxies start");
    let mut settings = proxied.settings();
    // Only the version current at today's midnight is kept, besides the current one.
    settings.insert("RETENTION_KEEP_DAILY".into(), "1".into());
    let app = App::from_settings(&Settings::from_pairs(settings.clone())).unwrap();
    let lake = app.source.container("lake").unwrap();
    lake.create().await.unwrap();
    support::upload(&lake, "表/a.csv", b"v1").await;
    let (code, out) = run(&settings, &["produce", "--container", "lake"]);
    assert_eq!(code, 0, "{out}");
    // A second apart: versions of one second are ordered by ETag, and Azurite's do not grow.
    support::next_second().await;
    support::upload(&lake, "表/a.csv", b"v2").await;
    let vault = app.backup.container("lakebak").unwrap();

    // The pass backs v2 up, would prune v1, is refused: it goes on, and its summary says so.
    let (code, out) = run(&settings, &["reconcile", "--container", "lake"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("may not delete"), "{out}");
    assert_eq!(unprotected(&lake, &vault).await, Vec::<String>::new());
    let backups = support::list_all(&vault).await;
    assert_eq!(backups.len(), 2, "{backups:?}");

    // `prune` as the writer: refused, reported, exit 0.
    let (code, out) = run(&settings, &["prune", "--container", "lake"]);
    assert_eq!(code, 0, "{out}");
    let summary = last_json(&out);
    assert_eq!(summary["total"]["refused"], 1, "{summary}");
    assert_eq!(summary["total"]["versions_deleted"], 0, "{summary}");
    assert_eq!(support::list_all(&vault).await, backups);

    // `prune` with PRUNE_STORAGE, an identity that may delete (here the account's key).
    let mut pruner = settings.clone();
    pruner.insert("PRUNE_STORAGE".into(), azurite.backup());
    let (code, out) = run(&pruner, &["prune", "--container", "lake"]);
    assert_eq!(code, 0, "{out}");
    let summary = last_json(&out);
    assert_eq!(summary["total"]["versions_deleted"], 1, "{summary}");
    assert_eq!(unprotected(&lake, &vault).await, Vec::<String>::new());
    assert_eq!(support::list_all(&vault).await.len(), 1);
}

/// A writer without delete rights cannot clear a backup's name of a blob that is not the
/// version (an aborted or half-written copy): the consumer deletes it as `PRUNE_STORAGE`, the
/// identity that may, and backs the version up.
#[tokio::test(flavor = "multi_thread")]
async fn a_copy_that_is_not_the_version_is_removed_as_the_pruner_when_the_writer_cannot_delete() {
    let azurite = Azurite::start();
    let proxied = ProxiedAzurite::start(&azurite, ProxyConfig::azurite().deny_deletes("bak"))
        .expect("proxies start");
    let mut settings = proxied.settings();
    settings.insert("PRUNE_STORAGE".into(), azurite.backup());
    let app = App::from_settings(&Settings::from_pairs(settings.clone())).unwrap();
    let lake = app.source.container("lake").unwrap();
    lake.create().await.unwrap();
    support::upload(&lake, "表/a.csv", b"the version").await;
    let vault = app.backup.container("lakebak").unwrap();
    vault.create().await.unwrap();
    let (etag, last_modified, _) = support::properties(&lake, "表/a.csv").await;
    let name =
        lakebackup::core::naming::backup_blob_name("表/a.csv", last_modified, &etag).unwrap();
    // Under the version's backup name, unstamped: a copy of something else.
    support::upload(&vault, &name, b"half").await;

    let (code, out) = run(&settings, &["reconcile", "--container", "lake"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        unprotected(&lake, &vault).await,
        Vec::<String>::new(),
        "{out}"
    );
    assert_eq!(support::download(&vault, &name).await, b"the version");
}
