//! `lakebackup doctor` checks the rights each connection needs, not only that it answers: a SAS
//! by its own permissions (one that may only read and list fails, naming the connection, the
//! right and what would fail, and the backup it predicts does fail; a full one passes; an expired
//! one fails), a key or identity by trying each right with a request that changes nothing (a
//! reader's role, as the proxy answers for Azure, fails on snapshots; delete is asked of the
//! backup account only when retention prunes there), and one account spelled two ways is one
//! account. The doctor leaves every account as it found it.

use std::collections::{BTreeSet, HashMap};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use lakebackup::storage::{
    listing::list_container_names, sas::AccountSasGrant, testing::account_sas, StorageAccount,
};
use time::{Duration, OffsetDateTime};

use crate::{
    doctor::{detail_of, doctor, verdict},
    support::{
        self,
        azurite::{Azurite, BACKUP_KEY, JOBS_KEY, SOURCE_KEY},
        proxy::{OpClass, ProxiedAzurite, ProxyConfig},
        worker,
    },
};

/// An account-SAS connection string for `account` of `azurite`, and its signature.
pub(crate) fn sas_connection(
    azurite: &Azurite,
    account: &str,
    key: &str,
    services: &str,
    permissions: &str,
    expiry: OffsetDateTime,
) -> (String, String) {
    let connection = support::sas_connection(azurite, account, key, services, permissions, expiry);
    let sas = connection
        .split_once("SharedAccessSignature=")
        .map(|(_, sas)| sas)
        .unwrap();
    let signature = url::form_urlencoded::parse(sas.as_bytes())
        .find(|(name, _)| name == "sig")
        .map(|(_, sig)| sig.into_owned())
        .unwrap();
    (connection, signature)
}

/// `connections` with the settings the Functions host resolves in the function folders.
pub(crate) fn deployment(connections: HashMap<String, String>) -> HashMap<String, String> {
    let mut settings = connections;
    for (key, value) in [
        ("BACKUP_QUEUE_NAME", "backup-requests"),
        ("RECONCILE_SCHEDULE", "0 0 2 * * *"),
        ("EVENTS_QUEUE_NAME", "lake-events"),
    ] {
        settings.insert(key.into(), value.into());
    }
    settings
}

/// The names the doctor's probes use (blobs under the first, queues starting with the second):
/// none may be left anywhere.
pub(crate) const PROBE_PREFIX: &str = "lakebackup-doctor-probe/";
pub(crate) const PROBE_QUEUE_PREFIX: &str = "lakebackup-doctor-probe-";

pub(crate) fn in_a_year() -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::days(365)
}

/// The names of the checks that failed.
pub(crate) fn failed(report: &serde_json::Value) -> BTreeSet<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

/// That Azurite's three accounts hold exactly `before`: the doctor changed nothing.
pub(crate) async fn assert_changed_nothing(azurite: &Azurite, before: &BTreeSet<String>) {
    assert_eq!(
        &everything(azurite).await,
        before,
        "the doctor changed nothing"
    );
}

/// That the rights check's `detail` names each of the queue rights the worker needs (and
/// `also`).
pub(crate) fn assert_queue_rights(detail: &str, also: &[&str]) {
    let queue_rights = [
        "create queues",
        "send messages",
        "receive messages",
        "delete messages",
        "update messages",
    ];
    for right in queue_rights.iter().chain(also) {
        assert!(detail.contains(right), "{right}: {detail}");
    }
}

/// Every container, blob (with snapshots) and queue of Azurite's three accounts.
pub(crate) async fn everything(azurite: &Azurite) -> BTreeSet<String> {
    let settings = lakebackup::settings::Settings::from_pairs(worker::settings(azurite));
    let mut seen = BTreeSet::new();
    for setting in ["SOURCE_STORAGE", "BACKUP_STORAGE", "AzureWebJobsStorage"] {
        let account = StorageAccount::connect(setting, &settings).unwrap();
        for container in list_container_names(&account).await.unwrap() {
            seen.insert(format!("{setting}/{container}/"));
            let client = account.container(&container).unwrap();
            for (blob, snapshot) in support::list_all(&client).await {
                seen.insert(format!("{setting}/{container}/{blob}@{snapshot:?}"));
            }
        }
    }
    for (account, key) in [
        ("source", SOURCE_KEY),
        ("backup", BACKUP_KEY),
        ("jobs", JOBS_KEY),
    ] {
        let key = BASE64.decode(key).unwrap();
        let grant = AccountSasGrant {
            services: "q",
            resource_types: "s",
            permissions: "l",
            expiry: in_a_year(),
        };
        let sas = account_sas(account, &key, grant);
        let url = format!("{}?comp=list&{sas}", azurite.queue_endpoint(account));
        let listing = reqwest::get(&url).await.unwrap().text().await.unwrap();
        for name in listing.split("<Name>").skip(1) {
            let name = name.split("</Name>").next().unwrap();
            seen.insert(format!("queue {account}/{name}"));
        }
    }
    seen
}

#[tokio::test]
async fn a_sas_that_lacks_a_right_fails_naming_it_and_a_full_one_passes() {
    let fixture = support::Lake::start(&["lake"]).await;
    let azurite = &fixture.azurite;
    support::upload(&fixture.lake("lake"), "a.csv", b"a").await;
    let sas = |account, key, services, permissions| {
        sas_connection(azurite, account, key, services, permissions, in_a_year())
    };
    let (full_lake, _) = sas("source", SOURCE_KEY, "b", "racwdlt");
    let (full_backup, _) = sas("backup", BACKUP_KEY, "b", "racwdlt");
    let (full_jobs, _) = sas("jobs", JOBS_KEY, "bq", "racwdlup");
    let full = deployment(HashMap::from([
        ("SOURCE_STORAGE".to_owned(), full_lake.clone()),
        ("BACKUP_STORAGE".to_owned(), full_backup),
        ("AzureWebJobsStorage".to_owned(), full_jobs.clone()),
    ]));
    let before = everything(azurite).await;
    let (code, report, out) = doctor(&full);
    assert_eq!(failed(&report), BTreeSet::new(), "{report:#}");
    assert_eq!(code, 0, "{out}");
    for setting in ["SOURCE_STORAGE", "BACKUP_STORAGE", "AzureWebJobsStorage"] {
        let (status, detail) = verdict(&report, &format!("{setting}: rights"));
        assert_eq!(status, "ok", "{setting}: {detail}");
        assert!(detail.contains("its SAS grants them"), "{detail}");
        detail_of(&report, &format!("{setting}: its SAS"), "ok");
    }
    let (_, detail) = verdict(&report, "SOURCE_STORAGE: rights");
    assert!(
        detail.contains("take snapshots") && detail.contains("read blob index tags"),
        "{detail}"
    );
    assert_changed_nothing(azurite, &before).await;

    // May read and list only, as before this check passed: the doctor fails and names what is
    // missing, and the backup it predicts fails indeed.
    let (read_list, signature) = sas("backup", BACKUP_KEY, "b", "rl");
    let (read_list_lake, lake_signature) = sas("source", SOURCE_KEY, "b", "rlt");
    let mut narrow = full.clone();
    narrow.insert("BACKUP_STORAGE".into(), read_list);
    narrow.insert("SOURCE_STORAGE".into(), read_list_lake);
    let (code, report, out) = doctor(&narrow);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        verdict(&report, "BACKUP_STORAGE: reachable and authorised").0,
        "ok",
        "it lists its containers: reachability alone passed"
    );
    let (status, detail) = verdict(
        &report,
        "BACKUP_STORAGE: may write blobs and their metadata",
    );
    assert_eq!(status, "fail", "{detail}");
    assert!(
        detail.contains("w (write)") && detail.contains("no backup can be written"),
        "{detail}"
    );
    let detail = detail_of(&report, "BACKUP_STORAGE: may create containers", "fail");
    assert!(detail.contains("c (create) or w (write)"), "{detail}");
    assert_eq!(
        verdict(&report, "BACKUP_STORAGE: may write blob index tags").0,
        "fail"
    );
    let detail = detail_of(&report, "SOURCE_STORAGE: may take snapshots", "fail");
    assert!(detail.contains("no snapshot can be taken"), "{detail}");
    let (status, detail) = verdict(&report, "SOURCE_STORAGE: rights");
    assert_eq!(status, "ok");
    assert!(
        detail.contains("list blobs, read blobs, read blob index tags"),
        "{detail}"
    );
    for secret in [&signature, &lake_signature] {
        assert!(!out.contains(secret.as_str()), "no signature in the report");
    }
    let (code, out, err) = worker::run_once(&narrow, &["produce", "--container", "lake"]);
    let vault = fixture.vault("lake");
    assert!(
        !vault.exists().await.unwrap(),
        "the backup the doctor predicted to fail did not happen (exit {code}): {out}{err}"
    );
    let (code, out, err) = worker::run_once(&full, &["produce", "--container", "lake"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !support::list_all(&vault).await.is_empty(),
        "with every right, it is backed up"
    );

    // The queues may not be taken from; the queue rights are read from ss and sp too.
    let (no_process, _) = sas("jobs", JOBS_KEY, "bq", "racwdlu");
    let mut jobs = full.clone();
    jobs.insert("AzureWebJobsStorage".into(), no_process);
    let (code, report, _) = doctor(&jobs);
    assert_eq!(code, 1);
    let detail = detail_of(&report, "AzureWebJobsStorage: may receive messages", "fail");
    assert!(detail.contains("p (process)"), "{detail}");
    assert_eq!(
        verdict(&report, "AzureWebJobsStorage: may delete messages").0,
        "fail"
    );
    let (blob_only, _) = sas("jobs", JOBS_KEY, "b", "racwdlup");
    jobs.insert("AzureWebJobsStorage".into(), blob_only);
    let (_, report, _) = doctor(&jobs);
    let detail = detail_of(&report, "AzureWebJobsStorage: may send messages", "fail");
    assert!(detail.contains("ss lacks q"), "{detail}");

    // An expired SAS: one clear failure, with when.
    let expired = sas_connection(
        azurite,
        "backup",
        BACKUP_KEY,
        "b",
        "racwdlt",
        OffsetDateTime::now_utc() - Duration::hours(1),
    );
    let mut stale = full.clone();
    stale.insert("BACKUP_STORAGE".into(), expired.0);
    let (code, report, out) = doctor(&stale);
    assert_eq!(code, 1);
    let detail = detail_of(&report, "BACKUP_STORAGE: its SAS", "fail");
    assert!(detail.starts_with("expired at "), "{detail}");
    assert!(!out.contains(&expired.1));
}

#[tokio::test]
async fn rights_are_tried_without_changing_anything_and_a_refusal_fails() {
    let fixture = support::Lake::start(&["lake"]).await;
    let (azurite, app) = (&fixture.azurite, &fixture.app);
    support::upload(&fixture.lake("lake"), "a.csv", b"a").await;
    // The vault exists, so creating containers can be tried on it; and one of the work queues.
    fixture.vault("lake").create().await.unwrap();
    app.job_ledger().await.unwrap();
    app.jobs
        .queue("backup-requests-shards")
        .unwrap()
        .create_if_missing()
        .await
        .unwrap();
    // The lake's identity is a reader, as Azure answers one (Azurite lets any key do anything);
    // the backup account's may not delete.
    let reader = ProxiedAzurite::start(
        azurite,
        ProxyConfig::azurite().deny_classes([
            OpClass::Write,
            OpClass::Copy,
            OpClass::Properties,
            OpClass::Snapshot,
            OpClass::Lease,
            OpClass::Delete,
        ]),
    )
    .unwrap();
    let writer =
        ProxiedAzurite::start(azurite, ProxyConfig::azurite().deny_deletes("bak")).unwrap();
    let mut settings = deployment(fixture.settings());
    settings.insert("SOURCE_STORAGE".into(), reader.source());
    settings.insert("BACKUP_STORAGE".into(), writer.backup());
    settings.insert("RETENTION_KEEP_DAYS".into(), "30".into());
    let before = everything(azurite).await;

    let (code, report, out) = doctor(&settings);
    assert_eq!(code, 1, "{out}");
    let detail = detail_of(&report, "SOURCE_STORAGE: may take snapshots", "fail");
    assert!(
        detail.contains("403 AuthorizationPermissionMismatch")
            && detail.contains("no snapshot can be taken"),
        "{detail}"
    );
    let detail = detail_of(&report, "SOURCE_STORAGE: rights", "ok");
    assert!(
        detail.starts_with("may list blobs, read blobs (each tried by a request"),
        "{detail}"
    );
    // Only a restore writes into the lake, an admin's action: a warning, saying how to restore.
    let (status, detail) = verdict(
        &report,
        "SOURCE_STORAGE: may write blobs and their metadata",
    );
    assert_eq!(status, "warn", "{detail}");
    assert!(
        detail.contains("restores into the lake") && detail.contains("another account"),
        "{detail}"
    );
    // Retention prunes backups, as BACKUP_STORAGE: its identity must delete.
    let detail = detail_of(&report, "BACKUP_STORAGE: may delete blobs", "fail");
    assert!(detail.contains("PRUNE_STORAGE is unset"), "{detail}");
    let detail = detail_of(&report, "BACKUP_STORAGE: rights", "ok");
    assert!(detail.contains("create containers"), "{detail}");
    let detail = detail_of(&report, "AzureWebJobsStorage: rights", "ok");
    assert_queue_rights(&detail, &["create containers"]);
    // Each refusal was of a probe, under its reserved name.
    let refusals = reader.stats().azure_refusals;
    assert!(!refusals.is_empty());
    for (code, path) in &refusals {
        assert_eq!(code, "AuthorizationPermissionMismatch");
        assert!(path.contains(PROBE_PREFIX.trim_end_matches('/')), "{path}");
    }
    assert!(writer
        .stats()
        .azure_refusals
        .iter()
        .any(|(_, path)| path.starts_with("DELETE /backup/lakebak/lakebackup-doctor-probe")));

    // A pruner that may delete: the backup account's writer need not.
    settings.insert("PRUNE_STORAGE".into(), azurite.backup());
    let (_, report, _) = doctor(&settings);
    let failures = failed(&report);
    assert!(
        !failures
            .iter()
            .any(|name| name.starts_with("BACKUP_STORAGE")),
        "{failures:?}"
    );
    let detail = detail_of(&report, "PRUNE_STORAGE: rights", "ok");
    assert!(detail.contains("delete blobs"), "{detail}");
    // No retention: nothing is deleted, by anyone.
    settings.remove("RETENTION_KEEP_DAYS");
    settings.remove("PRUNE_STORAGE");
    settings.insert("SOURCE_STORAGE".into(), azurite.source());
    settings.insert("BACKUP_STORAGE".into(), writer.backup());
    let (code, report, out) = doctor(&settings);
    assert_eq!(failed(&report), BTreeSet::new(), "{out}");
    assert_eq!(code, 0);

    let after = everything(azurite).await;
    assert_eq!(after, before, "the doctor changed nothing");
    assert!(!after
        .iter()
        .any(|name| name.contains(PROBE_PREFIX) || name.contains(PROBE_QUEUE_PREFIX)));
}

#[tokio::test]
async fn one_account_spelled_two_ways_is_one_account() {
    let azurite = Azurite::start();
    let settings = worker::settings(&azurite);
    let check = |settings: &HashMap<String, String>, name: &str| {
        let (_, report, _) = doctor(settings);
        verdict(&report, name)
    };
    // The lake's own account, as a connection string with a trailing slash.
    let mut same = settings.clone();
    same.insert(
        "BACKUP_STORAGE".into(),
        format!(
            "AccountName=source;AccountKey={SOURCE_KEY};BlobEndpoint={}/",
            azurite.blob_endpoint("source")
        ),
    );
    let (status, detail) = check(&same, "BACKUP_STORAGE: another account than the lake's");
    assert_eq!(status, "fail", "{detail}");

    // A restore target that is the lake, as an identity's URL in other case and scheme.
    let lake_url = azurite
        .blob_endpoint("source")
        .replace("http://", "https://")
        .replace("/source", "/SOURCE/");
    let mut target = settings.clone();
    target.insert("RESTORE_TARGET_STORAGE__blobServiceUri".into(), lake_url);
    let title = "RESTORE_TARGET_STORAGE: another account than the lake's and the backups'";
    let (status, detail) = check(&target, title);
    assert_eq!(status, "warn", "{detail}");
    assert!(detail.contains("SOURCE_STORAGE's own account"), "{detail}");
    // ... or the backup account: fail.
    target.remove("RESTORE_TARGET_STORAGE__blobServiceUri");
    target.insert(
        "RESTORE_TARGET_STORAGE".into(),
        format!(
            "AccountName=backup;AccountKey={BACKUP_KEY};BlobEndpoint={}",
            azurite
                .blob_endpoint("backup")
                .replace("/backup", "/Backup/")
        ),
    );
    let (status, detail) = check(&target, title);
    assert_eq!(status, "fail", "{detail}");
    assert!(detail.contains("BACKUP_STORAGE's own account"), "{detail}");
    // Another account: ok.
    target.insert("RESTORE_TARGET_STORAGE".into(), azurite.jobs());
    assert_eq!(check(&target, title).0, "ok");

    // A pruner whose endpoint has a trailing slash is the backup account all the same.
    let mut pruner = settings.clone();
    pruner.insert(
        "PRUNE_STORAGE".into(),
        format!(
            "AccountName=backup;AccountKey={BACKUP_KEY};BlobEndpoint={}/",
            azurite.blob_endpoint("backup")
        ),
    );
    let (_, report, _) = doctor(&pruner);
    assert!(
        !failed(&report).contains("PRUNE_STORAGE: the backup account"),
        "{report:#}"
    );
}
