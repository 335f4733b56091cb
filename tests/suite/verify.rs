//! `lakebackup verify` on Azurite: the real binary, after a real backup, catching a deleted
//! backup, a same-length corrupted one and a blob changed since its backup, and reporting the RPO.

use crate::support;

use std::collections::BTreeMap;

use azure_core::http::RequestContent;
use azure_storage_blob::models::BlobClientUploadOptions;
use lakebackup::functions::producer::ProduceRequest;
use serde_json::Value;
use support::worker;

fn verify(azurite: &support::Azurite, args: &[&str]) -> (i32, Value) {
    let mut full = vec!["verify", "--container", "lake"];
    full.extend(args);
    let (code, stdout, stderr) = worker::run_once(&worker::settings(azurite), &full);
    let summary = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("summary is JSON ({e}): {stdout}\n{stderr}"));
    (code, summary)
}

fn gaps(summary: &Value) -> BTreeMap<String, Vec<String>> {
    let mut gaps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for gap in summary["gaps"].as_array().unwrap() {
        gaps.entry(gap["blob"].as_str().unwrap().to_owned())
            .or_default()
            .push(gap["problem"].as_str().unwrap().to_owned());
    }
    gaps
}

#[tokio::test]
async fn deep_verify_catches_missing_corrupted_and_stale_backups_and_reports_the_rpo() {
    let (azurite, app) = support::app_on_azurite(&["lake"]).await;
    let lake = app.source.container_client("lake").unwrap();
    for name in ["a.csv", "dir/b.csv", "dir/c.csv", "d.csv"] {
        support::upload(&lake, name, format!("content of {name}").as_bytes()).await;
    }
    let request = ProduceRequest {
        container: "lake".into(),
        prefix: String::new(),
    };
    lakebackup::functions::producer::run_here(&app, &request)
        .await
        .unwrap();

    let (code, clean) = verify(&azurite, &["--deep"]);
    assert_eq!(code, 0, "{clean}");
    assert_eq!(
        (
            clean["checked"].as_u64(),
            clean["gaps"].as_array().map(Vec::len)
        ),
        (Some(4), Some(0))
    );
    assert!(clean["rpo_seconds"].is_null(), "{clean}");

    let vault = app.backup.container_client("lakebak").unwrap();
    let backup_of = |name: &str| {
        let stem = name.trim_end_matches(".csv").to_owned();
        let vault = &vault;
        async move {
            support::list_all(vault)
                .await
                .into_iter()
                .map(|(n, _)| n)
                .find(|n| n.starts_with(&format!("{stem}_")))
                .unwrap()
        }
    };
    // a: its backup is deleted. b: its backup corrupted, same length, stamp kept. c: changed
    // in the lake since its backup.
    let a = backup_of("a.csv").await;
    vault.blob_client(&a).delete(None).await.unwrap();
    let b = backup_of("dir/b.csv").await;
    let (_, _, stamp) = support::properties(&vault, &b).await;
    let corrupted = "content of dir/b.csX".as_bytes().to_vec();
    vault
        .blob_client(&b)
        .upload(
            RequestContent::from(corrupted),
            Some(BlobClientUploadOptions {
                metadata: Some(stamp),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    support::upload(&lake, "dir/c.csv", b"changed since its backup").await;

    let (code, shallow) = verify(&azurite, &[]);
    assert_eq!(code, 1, "{shallow}");
    assert!(
        !gaps(&shallow).contains_key("dir/b.csv"),
        "bytes are read only when deep"
    );

    let (code, deep) = verify(&azurite, &["--deep"]);
    assert_eq!(code, 1, "{deep}");
    assert_eq!(deep["status"], "gaps");
    let found = gaps(&deep);
    assert_eq!(found["a.csv"], ["no_backup"]);
    assert_eq!(found["dir/b.csv"], ["backup_mismatch"]);
    let mut c = found["dir/c.csv"].clone();
    c.sort();
    assert_eq!(c, ["no_backup", "no_snapshot"]);
    assert!(!found.contains_key("d.csv"), "{deep}");
    assert_eq!(deep["mismatched"], 1);
    assert!(deep["rpo_seconds"].as_i64().is_some(), "{deep}");
}
