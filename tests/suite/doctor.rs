//! `lakebackup doctor --json` on Azurite, the real binary: the lake's blob soft delete off (warn)
//! and on (ok), a `{c}bak` without an immutability policy (warn; with one, through the proxy,
//! `worm.rs` sees ok), a poison queue holding a message (warn, naming it), the ADF pipeline
//! read through the ARM stand-in, an unreachable `BACKUP_STORAGE` and a backup account that is
//! the lake's own (fail, exit 1, no key in the output), a missing setting (fail), and nothing
//! ever created by it.

use crate::support;

use std::collections::HashMap;

use serde_json::Value;
use support::{azurite, worker};

pub(crate) fn doctor(settings: &HashMap<String, String>) -> (i32, Value, String) {
    let (code, out, err) = worker::run_once(settings, &["doctor", "--json"]);
    let report = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("doctor --json prints one object ({e}): {out}\n{err}"));
    (code, report, out)
}

/// The check named `name`: (status, detail).
/// The detail of check `name`, which must have `status`.
pub(crate) fn detail_of(report: &Value, name: &str, status: &str) -> String {
    let (found, detail) = verdict(report, name);
    assert_eq!(found, status, "{name}: {detail}");
    detail
}

pub(crate) fn verdict(report: &Value, name: &str) -> (String, String) {
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?}: {report:#}"));
    (
        check["status"].as_str().unwrap().to_owned(),
        check["detail"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn doctor_finds_what_is_set_up_wrong_and_changes_nothing() {
    let fixture = support::Lake::start(&["lake"]).await;
    let app = &fixture.app;
    support::upload(&fixture.lake("lake"), "a.csv", b"a").await;
    support::produce(app, "lake").await;
    // The settings the Functions host resolves in the function folders, as a deployment has them.
    let settings = fixture.settings_with(&[
        ("BACKUP_QUEUE_NAME", "backup-requests"),
        ("RECONCILE_SCHEDULE", "0 0 2 * * *"),
        ("EVENTS_QUEUE_NAME", "lake-events"),
    ]);

    let (code, report, out) = doctor(&settings);
    assert_eq!(code, 0, "warnings only: {out}");
    assert_eq!(report["status"], "warn", "{report:#}");
    for name in ["SOURCE_STORAGE", "BACKUP_STORAGE", "AzureWebJobsStorage"] {
        let (status, detail) = verdict(&report, &format!("{name}: reachable and authorised"));
        assert_eq!(status, "ok", "{name}: {detail}");
    }
    assert_eq!(
        verdict(&report, "BACKUP_STORAGE: another account than the lake's").0,
        "ok"
    );
    let (status, detail) = verdict(&report, "SOURCE_STORAGE: blob soft delete");
    assert_eq!(status, "warn");
    assert!(
        detail.starts_with("off: a blob deleted or overwritten"),
        "{detail}"
    );
    let (status, detail) = verdict(&report, "BACKUP_STORAGE: immutability of lakebak");
    assert_eq!(status, "warn");
    assert!(detail.contains("no immutability policy"), "{detail}");
    assert_eq!(
        verdict(
            &report,
            "AzureWebJobsStorage: queue backup-requests-shards-poison"
        )
        .0,
        "ok"
    );

    // Soft delete turned on, and a message nobody could handle on a poison queue.
    app.source.enable_blob_soft_delete(14).await.unwrap();
    let poison = app.jobs.queue("backup-requests-poison").unwrap();
    poison.create_if_missing().await.unwrap();
    poison
        .send("not a request".into(), None, "a poisoned message")
        .await
        .unwrap();
    let (_, report, _) = doctor(&settings);
    assert_eq!(
        verdict(&report, "SOURCE_STORAGE: blob soft delete"),
        ("ok".to_owned(), "on, 14 days".to_owned())
    );
    let (status, detail) = verdict(&report, "AzureWebJobsStorage: queue backup-requests-poison");
    assert_eq!(status, "warn", "{detail}");
    assert!(detail.contains("message"), "{detail}");

    // An unreachable backup account: fail, exit 1, and its key appears nowhere.
    let mut unreachable = settings.clone();
    unreachable.insert(
        "BACKUP_STORAGE".into(),
        support::unreachable_connection("backup", azurite::BACKUP_KEY),
    );
    let (code, report, out) = doctor(&unreachable);
    assert_eq!(code, 1, "{out}");
    assert_eq!(report["status"], "fail");
    assert_eq!(
        verdict(&report, "BACKUP_STORAGE: reachable and authorised").0,
        "fail"
    );
    assert!(!out.contains(azurite::BACKUP_KEY), "no key in the output");

    // The backups in the lake's own account.
    let mut same = settings.clone();
    same.insert("BACKUP_STORAGE".into(), settings["SOURCE_STORAGE"].clone());
    let (code, report, _) = doctor(&same);
    assert_eq!(code, 1);
    detail_of(
        &report,
        "BACKUP_STORAGE: another account than the lake's",
        "fail",
    );

    // A missing setting is named.
    let mut missing = settings.clone();
    missing.remove("BACKUP_STORAGE");
    let (code, report, _) = doctor(&missing);
    assert_eq!(code, 1);
    assert_eq!(verdict(&report, "settings: BACKUP_STORAGE").0, "fail");

    // The doctor writes nothing: the queues of another BACKUP_QUEUE_NAME stay uncreated.
    let mut fresh = settings.clone();
    fresh.insert("BACKUP_QUEUE_NAME".into(), "never-made".into());
    let (code, report, out) = doctor(&fresh);
    assert_eq!(code, 0, "{out}");
    assert_eq!(verdict(&report, "host bindings (%Setting%)").0, "ok");
    detail_of(&report, "AzureWebJobsStorage: queue never-made", "warn");
    assert!(
        app.jobs
            .queue("never-made")
            .unwrap()
            .depth()
            .await
            .unwrap()
            .is_none(),
        "doctor created a queue"
    );
}

// Multi-threaded: the stand-in answers while the binary runs.
#[tokio::test(flavor = "multi_thread")]
async fn with_the_adf_engine_doctor_reads_the_pipeline_through_arm() {
    let lake = support::Lake::start(&["lake"]).await;
    let standin = support::adf::AdfStandIn::on(&lake, 0, support::adf::RunEnd::Succeeded).await;
    let mut settings = lake.settings();
    settings.extend(standin.settings());
    settings.insert("BACKUP_COPY_ENGINE".into(), "adf".into());
    let (_, report, _) = doctor(&settings);
    let title = "ADF_PIPELINE_NAME: the pipeline reachable through ARM";
    detail_of(&report, title, "ok");
    assert!(
        standin.record(|r| r.violations.is_empty()),
        "the calls were ARM's"
    );
    // A pipeline the factory does not have: fail, exit 1.
    settings.insert("ADF_PIPELINE_NAME".into(), "no-such-pipeline".into());
    let (code, report, _) = doctor(&settings);
    assert_eq!(code, 1);
    assert_eq!(verdict(&report, title).0, "fail");
}
