//! `lakebackup doctor` judges each connection where lakebackup uses it, not at the account: a
//! role assigned on the lake's container, the `{c}bak` container, the ledger and the work queues
//! alone (as the proxy answers for Azure) passes, and its rights are judged per container (one
//! in `RECONCILE_CONTAINERS` it is not assigned on fails, naming it) and per queue by name; a
//! container SAS passes in its own container and is refused in another; listing the lake's
//! containers fails only when `RECONCILE_CONTAINERS` is unset; a refusal for another reason than
//! a missing right (a network rule's `AuthorizationFailure`) is said so, never as a missing
//! right. The doctor changes nothing.

use std::collections::{BTreeSet, HashMap};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use hmac::{Hmac, Mac};

use crate::{
    doctor::{detail_of, doctor, verdict},
    doctor_rights::{
        assert_changed_nothing, assert_queue_rights, deployment, everything, failed, in_a_year,
        sas_connection,
    },
    support::{
        self,
        azurite::{Azurite, BACKUP_KEY, JOBS_KEY, SOURCE_KEY},
        proxy::{OpClass, ProxiedAzurite, ProxyConfig},
        worker, Lake,
    },
};

/// The queues of `deployment`'s `BACKUP_QUEUE_NAME` and `EVENTS_QUEUE_NAME`, with their poison
/// queues, and its jobs' ledger.
const QUEUES: [&str; 6] = [
    "backup-requests",
    "backup-requests-poison",
    "backup-requests-shards",
    "backup-requests-shards-poison",
    "lake-events",
    "lake-events-poison",
];
const LEDGER: &str = "backup-requests-jobs";

/// Azurite with the lake's containers `lake` and `lake2` (a blob in each), `lakebak`, the ledger
/// and every queue created, as a deployment that has run once has them.
async fn deployed() -> (Azurite, lakebackup::app::App) {
    let Lake { azurite, app, .. } = Lake::start(&["lake", "lake2"]).await;
    for container in ["lake", "lake2"] {
        support::upload(&app.source.container(container).unwrap(), "a.csv", b"a").await;
    }
    app.backup
        .container("lakebak")
        .unwrap()
        .create()
        .await
        .unwrap();
    app.jobs.container(LEDGER).unwrap().create().await.unwrap();
    for queue in QUEUES {
        app.jobs
            .queue(queue)
            .unwrap()
            .create_if_missing()
            .await
            .unwrap();
    }
    (azurite, app)
}

/// A service SAS of one container (`sr=c`), signed with the account key ("Create a service
/// SAS", version 2022-11-02), as a connection string.
fn container_sas_connection(
    azurite: &Azurite,
    account: &str,
    key: &str,
    container: &str,
) -> String {
    let (permissions, expiry, version) = ("racwdlt", "2030-01-01T00:00:00Z", "2022-11-02");
    let canonical = format!("/blob/{account}/{container}");
    let string_to_sign = [
        permissions,
        "",
        expiry,
        &canonical,
        "",
        "",
        "",
        version,
        "c",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    ]
    .join("\n");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&BASE64.decode(key).unwrap()).unwrap();
    mac.update(string_to_sign.as_bytes());
    let sas = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", version)
        .append_pair("sr", "c")
        .append_pair("sp", permissions)
        .append_pair("se", expiry)
        .append_pair("sig", &BASE64.encode(mac.finalize().into_bytes()))
        .finish();
    format!(
        "BlobEndpoint={};SharedAccessSignature={sas}",
        azurite.blob_endpoint(account)
    )
}

#[tokio::test]
async fn a_role_on_the_containers_and_queues_it_uses_passes_and_each_is_judged() {
    let (azurite, _app) = deployed().await;
    let mut scope = vec!["source/lake", "backup/lakebak"];
    let ledger = format!("jobs/{LEDGER}");
    let queues: Vec<String> = QUEUES.iter().map(|q| format!("jobs/{q}")).collect();
    scope.push(&ledger);
    scope.extend(queues.iter().map(String::as_str));
    let role = ProxiedAzurite::start(&azurite, ProxyConfig::azurite().role_scope(scope)).unwrap();
    let mut settings = deployment(role.settings());
    settings.insert("RECONCILE_CONTAINERS".into(), "lake".into());
    let before = everything(&azurite).await;

    let (code, report, out) = doctor(&settings);
    assert_eq!(failed(&report), BTreeSet::new(), "{out}");
    assert_eq!(code, 0, "{out}");
    for (setting, place) in [
        ("SOURCE_STORAGE", "lake"),
        ("BACKUP_STORAGE", "lakebak"),
        ("AzureWebJobsStorage", LEDGER),
    ] {
        let (status, detail) = verdict(&report, &format!("{setting}: reachable and authorised"));
        assert_eq!(status, "ok", "{setting}: {detail}");
        assert!(
            detail.contains(&format!("it answers in {place}")),
            "{detail}"
        );
        let (status, detail) = verdict(&report, &format!("{setting}: rights"));
        assert_eq!(status, "ok", "{setting}: {detail}");
        assert!(detail.contains(&format!("in {place}")), "{detail}");
    }
    let (_, detail) = verdict(&report, "SOURCE_STORAGE: rights");
    assert!(detail.contains("take snapshots"), "{detail}");
    let (_, detail) = verdict(&report, "BACKUP_STORAGE: rights");
    assert!(detail.contains("create containers"), "{detail}");
    let (_, detail) = verdict(&report, "AzureWebJobsStorage: rights");
    assert_queue_rights(&detail, &[]);
    // RECONCILE_CONTAINERS names them, so listing the lake's containers is no need: a warning
    // only (a container added to the lake could go unnoticed).
    let detail = detail_of(&report, "SOURCE_STORAGE: the lake's containers", "warn");
    assert!(
        detail.contains("AuthorizationPermissionMismatch"),
        "{detail}"
    );

    // A container the role is not assigned on: its rights there are missing, and named.
    settings.insert("RECONCILE_CONTAINERS".into(), "lake,lake2".into());
    let (code, report, out) = doctor(&settings);
    assert_eq!(code, 1, "{out}");
    let detail = detail_of(&report, "SOURCE_STORAGE: reachable and authorised", "ok");
    assert!(detail.contains("may not list blobs in lake2"), "{detail}");
    let detail = detail_of(&report, "SOURCE_STORAGE: may take snapshots", "fail");
    assert!(
        detail.contains("403 AuthorizationPermissionMismatch") && detail.contains("(in lake2)"),
        "{detail}"
    );
    let (status, detail) = verdict(
        &report,
        "BACKUP_STORAGE: may write blobs and their metadata",
    );
    assert_eq!(status, "fail", "{detail}");
    assert!(detail.contains("(in lake2bak)"), "{detail}");

    // Without RECONCILE_CONTAINERS every reconciliation lists the lake's containers: it fails.
    settings.remove("RECONCILE_CONTAINERS");
    let (code, report, out) = doctor(&settings);
    assert_eq!(code, 1, "{out}");
    let detail = detail_of(&report, "SOURCE_STORAGE: the lake's containers", "fail");
    assert!(
        detail.contains("RECONCILE_CONTAINERS is unset") && detail.contains("every reconciliation"),
        "{detail}"
    );

    assert_changed_nothing(&azurite, &before).await;
}

#[tokio::test]
async fn a_role_on_the_work_queues_alone_may_use_them() {
    let (azurite, _app) = deployed().await;
    // Blob rights on the whole account; the queue role on the six queues by name only.
    let proxied = ProxiedAzurite::start(&azurite, ProxyConfig::azurite()).unwrap();
    let queues: Vec<String> = QUEUES.iter().map(|q| format!("jobs/{q}")).collect();
    proxied
        .queue
        .set_config(ProxyConfig::azurite().role_scope(queues.iter().map(String::as_str)));
    let mut settings = deployment(worker::settings(&azurite));
    settings.insert("AzureWebJobsStorage".into(), proxied.jobs());
    let before = everything(&azurite).await;

    let (code, report, out) = doctor(&settings);
    assert_eq!(failed(&report), BTreeSet::new(), "{out}");
    assert_eq!(code, 0, "{out}");
    let detail = detail_of(&report, "AzureWebJobsStorage: rights", "ok");
    assert_queue_rights(&detail, &[]);
    // Every queue request that reached Azurite named one of the six: the others were refused,
    // and none of those was one lakebackup uses.
    for (code, path) in proxied.queue.stats().azure_refusals {
        assert_eq!(code, "AuthorizationPermissionMismatch");
        assert!(
            !QUEUES
                .iter()
                .any(|q| path.ends_with(&format!("/{q}")) || path.contains(&format!("/{q}/"))),
            "{path}"
        );
    }
    assert_changed_nothing(&azurite, &before).await;
}

#[tokio::test]
async fn a_container_sas_passes_in_its_container_and_is_refused_in_another() {
    let (azurite, _app) = deployed().await;
    let (backup, _) = sas_connection(&azurite, "backup", BACKUP_KEY, "b", "racwdlt", in_a_year());
    let (jobs, _) = sas_connection(&azurite, "jobs", JOBS_KEY, "bq", "racwdlup", in_a_year());
    let mut settings = deployment(HashMap::from([
        (
            "SOURCE_STORAGE".to_owned(),
            container_sas_connection(&azurite, "source", SOURCE_KEY, "lake"),
        ),
        ("BACKUP_STORAGE".to_owned(), backup),
        ("AzureWebJobsStorage".to_owned(), jobs),
    ]));
    settings.insert("RECONCILE_CONTAINERS".into(), "lake".into());
    let (code, report, out) = doctor(&settings);
    assert_eq!(failed(&report), BTreeSet::new(), "{out}");
    assert_eq!(code, 0, "{out}");
    detail_of(&report, "SOURCE_STORAGE: reachable and authorised", "ok");
    let detail = detail_of(&report, "SOURCE_STORAGE: rights", "ok");
    assert!(
        detail.contains("take snapshots") && detail.contains("its SAS grants them"),
        "{detail}"
    );

    // In another container the service refuses it: not for a missing right (Azure answers
    // AuthenticationFailed, its signature being for another resource; Azurite 3.37
    // AuthorizationFailure), and the doctor says so.
    settings.insert("RECONCILE_CONTAINERS".into(), "lake,lake2".into());
    let (code, report, out) = doctor(&settings);
    assert_eq!(code, 1, "{out}");
    let detail = detail_of(&report, "SOURCE_STORAGE: reachable and authorised", "fail");
    assert!(
        detail.contains("in lake2, refused for another reason than a missing right")
            && detail.contains("sr=c")
            && detail.contains("it answers in lake"),
        "{detail}"
    );
}

#[tokio::test]
async fn a_refusal_for_another_reason_is_said_so_never_as_a_missing_right() {
    let (azurite, _app) = deployed().await;
    // Snapshots refused as a network rule refuses (AuthorizationFailure), not for a permission.
    let lake = ProxiedAzurite::start(
        &azurite,
        ProxyConfig::azurite()
            .deny_classes([OpClass::Snapshot])
            .deny_code("AuthorizationFailure"),
    )
    .unwrap();
    // The backup account behind a firewall: every request refused.
    let firewalled = ProxiedAzurite::start(
        &azurite,
        ProxyConfig::azurite()
            .deny_classes(OpClass::ALL)
            .deny_code("AuthorizationFailure"),
    )
    .unwrap();
    let mut settings = deployment(worker::settings(&azurite));
    settings.insert("SOURCE_STORAGE".into(), lake.source());
    settings.insert("BACKUP_STORAGE".into(), firewalled.backup());
    let (code, report, out) = doctor(&settings);
    assert_eq!(code, 1, "{out}");
    let detail = detail_of(&report, "SOURCE_STORAGE: may take snapshots", "fail");
    assert!(
        detail.contains("refused for another reason than a missing right: AuthorizationFailure")
            && detail.contains("network rules")
            && !detail.contains("AuthorizationPermissionMismatch"),
        "{detail}"
    );
    let detail = detail_of(&report, "BACKUP_STORAGE: reachable and authorised", "fail");
    assert!(
        detail.contains("refused for another reason than a missing right: AuthorizationFailure")
            && detail.contains("network rules"),
        "{detail}"
    );
}
