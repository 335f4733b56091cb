//! A restore into another account with a hierarchical namespace, over a file it already holds:
//! no snapshot can keep that file's version there (Azure refuses snapshots on HNS accounts) and
//! no backup covers another account, so it is left as it is and named, never overwritten.

use crate::support::{
    self,
    proxy::{ProxiedAzurite, ProxyConfig},
    worker, Azurite, Lake,
};
use lakebackup::{settings::Settings, storage::StorageAccount};

#[tokio::test(flavor = "multi_thread")]
async fn a_file_another_hns_account_holds_is_left_as_it_is_and_named_not_overwritten() {
    let azurite = Azurite::start();
    // The lake and the restore's target: two HNS accounts on the stand-in.
    let proxied = ProxiedAzurite::start_hns(
        &azurite,
        ProxyConfig::azurite(),
        &["source", "devstoreaccount1"],
    )
    .expect("proxies start");
    let settings = proxied.settings();
    let pairs: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let lake = Lake::on(azurite, &["lake"], &pairs).await;
    for (name, bytes) in [("日本/ours.csv", "ours"), ("x｡🦀.csv", "crab")] {
        support::upload(&lake.lake("lake"), name, bytes.as_bytes()).await;
    }
    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);

    let target = proxied.connection_string("devstoreaccount1", support::azurite::DEV_KEY);
    let restored = StorageAccount::connect(
        "T",
        &Settings::from_pairs([("T".to_owned(), target.clone())]),
    )
    .unwrap()
    .container("restored")
    .unwrap();
    restored.create().await.unwrap();
    support::upload(&restored, "日本/ours.csv", b"theirs: not in any backup").await;

    let mut with_target = lake.settings();
    with_target.insert("RESTORE_TARGET_STORAGE".into(), target);
    let snapshots_before = proxied.blob.hns().unwrap().counts().snapshots;
    let (code, _, summary) = worker::run_lines(
        &with_target,
        &[
            "restore",
            "--container",
            "lake",
            "--from",
            "backup",
            "--to-account",
            "--to-container",
            "restored",
        ],
    );
    assert_eq!(code, 1, "{summary}");
    assert_eq!(
        support::download(&restored, "日本/ours.csv").await,
        b"theirs: not in any backup",
        "overwritten with no way back"
    );
    assert_eq!(support::download(&restored, "x｡🦀.csv").await, b"crab");
    let failures = summary["failures"]
        .as_array()
        .unwrap_or_else(|| panic!("{summary}"));
    assert_eq!(failures.len(), 1, "{summary}");
    assert_eq!(failures[0]["blob"], "日本/ours.csv", "{summary}");
    let reason = failures[0]["reason"].as_str().unwrap();
    assert!(reason.contains("hierarchical namespace"), "{reason}");
    assert_eq!(
        proxied.blob.hns().unwrap().counts().snapshots,
        snapshots_before,
        "no snapshot is asked of an HNS account"
    );
}
