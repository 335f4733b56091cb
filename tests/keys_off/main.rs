//! Keys off: the worker with identity-only connections (`__blobServiceUri` / `__queueServiceUri`,
//! tokens from the managed-identity endpoint) against Azurite in OAuth mode over HTTPS. The
//! producer, the consumer's direct engine, the reconciler and restore all work, large copies go
//! through user-delegation SAS, and token failures are one clear line without the token.

// Its own test binary: the process must trust the test CA (`SSL_CERT_FILE`) before its first
// HTTP client, which the other tests' clients would otherwise come before.
#[path = "../suite/support/mod.rs"]
mod support;

mod hns;

use std::{collections::HashMap, time::Duration};

use lakebackup::{app::App, core::message::BackupRequest, settings::Settings};
use support::{
    azurite::{BACKUP_KEY, DEV_KEY, JOBS_KEY, SOURCE_KEY},
    keys_off::{IdentityEndpoint, TestTls},
    worker::{self, Standalone},
    Azurite,
};

/// Above the worker's 1 MiB copy-through threshold: copied server-side with a delegation SAS.
const LARGE: usize = 2 * 1024 * 1024 + 17;

struct KeysOff {
    tls: &'static TestTls,
    azurite: Azurite,
    identity: IdentityEndpoint,
    /// The tests' own view of the accounts, with keys: arranging and checking only.
    harness: App,
    dir: tempfile::TempDir,
}

impl KeysOff {
    async fn start() -> KeysOff {
        let tls = TestTls::shared();
        let azurite =
            Azurite::start_keys_off(std::path::Path::new(env!("CARGO_MANIFEST_DIR")), &tls.files)
                .unwrap_or_else(|e| panic!("{e}"));
        let harness =
            App::from_settings(&Settings::from_pairs(worker::settings(&azurite))).unwrap();
        harness
            .source
            .container("lake")
            .unwrap()
            .create()
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("host.json"),
            r#"{"version": "2.0", "functionTimeout": "00:00:30",
  "extensions": {"queues": {"maxDequeueCount": 3, "visibilityTimeout": "00:00:00.5", "maxPollingInterval": "00:00:00.2"}}}"#,
        )
        .unwrap();
        KeysOff {
            identity: IdentityEndpoint::start(),
            tls,
            azurite,
            harness,
            dir,
        }
    }

    /// The worker's settings: identity-based connections only, the backup account through a
    /// user-assigned identity, the others through the system-assigned one.
    fn settings(&self) -> HashMap<String, String> {
        let blob = |account: &str| self.azurite.blob_endpoint(account);
        let queue = |account: &str| self.azurite.queue_endpoint(account);
        HashMap::from([
            ("SOURCE_STORAGE__blobServiceUri".into(), blob("source")),
            ("BACKUP_STORAGE__blobServiceUri".into(), blob("backup")),
            ("BACKUP_STORAGE__clientId".into(), "backup-writer".into()),
            ("AzureWebJobsStorage__blobServiceUri".into(), blob("jobs")),
            ("AzureWebJobsStorage__queueServiceUri".into(), queue("jobs")),
            ("BACKUP_COPY_ENGINE".into(), "direct".into()),
            ("COPY_POLL_INTERVAL_MS".into(), "50".into()),
            ("COPY_TIMEOUT_SECONDS".into(), "20".into()),
            ("SHARD_TIME_BUDGET_SECONDS".into(), "5".into()),
            ("RUN_VISIBILITY_SECONDS".into(), "3".into()),
            ("IDENTITY_ENDPOINT".into(), self.identity.url.clone()),
            ("IDENTITY_HEADER".into(), self.identity.header.clone()),
            (
                "SSL_CERT_FILE".into(),
                self.tls.files.ca.to_string_lossy().into_owned(),
            ),
        ])
    }

    async fn upload(&self, name: &str, bytes: &[u8]) {
        support::upload(&self.harness.source.container("lake").unwrap(), name, bytes).await;
    }

    async fn request_backup(&self, name: &str) {
        let lake = self.harness.source.container("lake").unwrap();
        let (etag, _, _) = support::properties(&lake, name).await;
        self.harness
            .enqueue_backup(&BackupRequest::new("lake", name, &etag))
            .await
            .unwrap();
    }

    /// Stamped backups in lakebak, by source name: how many versions each has.
    async fn backups(&self) -> HashMap<String, usize> {
        let container = self.harness.backup.container("lakebak").unwrap();
        let mut versions = HashMap::new();
        if !container.exists().await.unwrap() {
            return versions;
        }
        for (name, _) in support::list_all(&container).await {
            let (_, _, metadata) = support::properties(&container, &name).await;
            let Ok(parsed) = lakebackup::core::naming::parse_backup_blob_name(&name) else {
                continue;
            };
            if lakebackup::core::stamp::stamped_etag(&metadata) == Some(parsed.etag.as_str()) {
                *versions.entry(parsed.source_name).or_default() += 1;
            }
        }
        versions
    }

    async fn wait_for_versions(&self, name: &str, count: usize) {
        let what = format!("{count} backups of {name}");
        support::eventually(Duration::from_secs(60), &what, || async {
            self.backups().await.get(name).copied().unwrap_or(0) >= count
        })
        .await
    }
}

/// Bytes of a given length that differ with `seed`.
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn identity_only_settings_back_up_reconcile_and_restore_byte_identical() {
    let lake = KeysOff::start().await;
    let settings = lake.settings();
    for (name, value) in &settings {
        for secret in [SOURCE_KEY, BACKUP_KEY, JOBS_KEY, DEV_KEY] {
            assert!(!value.contains(secret), "{name} carries a key");
        }
        for field in ["AccountKey", "SharedAccessSignature", "sig="] {
            assert!(!value.contains(field), "{name} carries {field}");
        }
    }
    for connection in ["SOURCE_STORAGE", "BACKUP_STORAGE", "AzureWebJobsStorage"] {
        assert!(
            !settings.contains_key(connection),
            "no connection string at all: {connection}"
        );
    }

    // Azurite refuses a request that carries no token: what worked below used one.
    let anonymous =
        url::Url::parse(&format!("{}/lake", lake.azurite.blob_endpoint("source"))).unwrap();
    let refused = lakebackup::storage::testing::container_properties_unsigned(&anonymous)
        .await
        .unwrap_err();
    assert!(matches!(refused.status, Some(401 | 403)), "{refused}");

    lake.upload("small.csv", b"id,name\n1,\"quoted, name\"\n")
        .await;
    lake.upload("raw/2026/part-0001.parquet", &bytes(LARGE, 1))
        .await;

    // The producer over HTTP: snapshots and copies (one through the worker, one server-side
    // with a delegation SAS from the source account), its shard queue in AzureWebJobsStorage.
    let address = format!("127.0.0.1:{}", support::closed_port());
    let runner = Standalone::start(&settings, lake.dir.path(), &["--http", &address]);
    let url = format!("http://{address}/api/HttpSnapshotIncBackupContainerProducer?container=lake");
    let response = support::wait_for(Duration::from_secs(30), "the producer's answer", || async {
        reqwest::get(&url).await.ok()
    })
    .await;
    let reply: serde_json::Value = response.json().await.unwrap();
    assert_eq!(reply["status"], "done", "{reply}");
    assert_eq!(reply["backups_copied"], 2, "{reply}");

    // The consumer: a backup request per blob on the backup queue, for new versions.
    lake.upload("small.csv", b"id,name\n1,\"quoted, name\"\n2,second\n")
        .await;
    lake.upload("raw/2026/part-0001.parquet", &bytes(LARGE, 2))
        .await;
    lake.request_backup("small.csv").await;
    lake.request_backup("raw/2026/part-0001.parquet").await;
    lake.wait_for_versions("small.csv", 2).await;
    lake.wait_for_versions("raw/2026/part-0001.parquet", 2)
        .await;
    assert_eq!(runner.terminate(), 0, "clean shutdown");

    // The large versions were copied server-side from a user-delegation SAS for that one blob
    // (the service records the copy source), and Azurite checks its signature.
    let backups = lake.harness.backup.container("lakebak").unwrap();
    let mut delegated = Vec::new();
    for (name, _) in support::list_all(&backups).await {
        if !name.starts_with("raw/2026/part-0001_") {
            continue;
        }
        let state = backups.blob(&name).probe().await.unwrap().unwrap();
        delegated.push(state.copy_source.expect("a server-side copy"));
    }
    assert_eq!(delegated.len(), 2);
    for source in &delegated {
        let url = url::Url::parse(source).unwrap();
        let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(
            query["skoid"],
            support::keys_off::SYSTEM_OBJECT_ID,
            "{query:?}"
        );
        assert_eq!(query["sr"], "b");
        assert_eq!(query["sp"], "r");
        // Reached over HTTPS: the SAS is HTTPS-only, signed so (Azurite checks the signature).
        assert_eq!(query["spr"], "https", "{query:?}");
        let read = |url: url::Url| async move {
            lakebackup::storage::testing::blob_properties_unsigned(&url)
                .await
                .map_err(|e| e.status)
        };
        // The SAS may be used again until it expires; with its signature altered it is refused.
        let mut tampered = url.clone();
        let altered: Vec<(String, String)> = url
            .query_pairs()
            .into_owned()
            .map(|(k, v)| match k.as_str() {
                "skoid" => (k, support::keys_off::USER_ASSIGNED_OBJECT_ID.to_owned()),
                _ => (k, v),
            })
            .collect();
        tampered.query_pairs_mut().clear().extend_pairs(altered);
        assert_eq!(read(url).await, Ok(()), "the SAS as signed is accepted");
        assert_eq!(read(tampered).await, Err(Some(403)));
    }

    // The reconciler finds a blob nobody announced.
    lake.upload("raw/2026/late.bin", &bytes(LARGE, 3)).await;
    worker::run_ok(&settings, "reconcile --container lake");
    assert_eq!(lake.backups().await.get("raw/2026/late.bin"), Some(&1));

    // Restore from the backup account (server-side copies with a delegation SAS from the
    // backup account, under its user-assigned identity) into a new container.
    worker::run_ok(
        &settings,
        "restore --container lake --to-container restored",
    );
    let source = lake.harness.source.container("lake").unwrap();
    let restored = lake.harness.source.container("restored").unwrap();
    let names: Vec<String> = support::list_all(&source)
        .await
        .into_iter()
        .filter(|(_, snapshot)| snapshot.is_none())
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names.len(), 3);
    for name in &names {
        assert_eq!(
            support::download(&restored, name).await,
            support::download(&source, name).await,
            "{name} restored byte-identical"
        );
    }

    let (code, stdout, stderr) =
        worker::run_once(&settings, &["verify", "--container", "lake", "--deep"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");

    // Both identities asked for tokens, the way the platform's endpoint expects.
    assert!(
        lake.identity.refused().is_empty(),
        "{:?}",
        lake.identity.refused()
    );
    let identities = lake.identity.identities();
    assert!(identities.contains(&None), "the system-assigned identity");
    assert!(
        identities.contains(&Some("backup-writer".to_owned())),
        "BACKUP_STORAGE__clientId"
    );
}

#[tokio::test]
async fn token_failures_are_one_line_naming_the_connection_and_never_the_token() {
    let lake = KeysOff::start().await;
    lake.upload("a.csv", b"a").await;

    let mut unreachable = lake.settings();
    unreachable.insert(
        "IDENTITY_ENDPOINT".into(),
        format!("http://127.0.0.1:{}/msi/token", support::closed_port()),
    );
    let (code, stdout, stderr) =
        worker::run_once(&unreachable, &["reconcile", "--container", "lake"]);
    let output = format!("{stdout}\n{stderr}");
    assert_ne!(code, 0, "{output}");
    assert!(
        output.contains("SOURCE_STORAGE: could not get a token for https://storage.azure.com from the app's system-assigned managed identity"),
        "{output}"
    );

    lake.identity.issue_expired();
    let (code, stdout, stderr) =
        worker::run_once(&lake.settings(), &["reconcile", "--container", "lake"]);
    let output = format!("{stdout}\n{stderr}");
    assert_ne!(code, 0, "{output}");
    assert!(
        output.contains("SOURCE_STORAGE refused the request of its identity"),
        "{output}"
    );
    assert!(output.contains("expired"), "{output}");
    // A JWT starts with the base64url of `{"`: no token in any output.
    assert!(!output.contains("eyJ"), "{output}");
    assert!(!lake.identity.identities().is_empty());
}

#[tokio::test]
async fn doctor_tries_each_identity_right_without_changing_anything() {
    let lake = KeysOff::start().await;
    lake.upload("a.csv", b"a").await;
    let settings = lake.settings();
    let everything = || async {
        let mut names = Vec::new();
        for account in [
            &lake.harness.source,
            &lake.harness.backup,
            &lake.harness.jobs,
        ] {
            for container in lakebackup::storage::listing::list_container_names(account)
                .await
                .unwrap()
            {
                let client = account.container(&container).unwrap();
                names.push(format!("{container}/"));
                for (blob, snapshot) in support::list_all(&client).await {
                    names.push(format!("{container}/{blob}@{snapshot:?}"));
                }
            }
        }
        names
    };
    let doctor = || {
        let (_, stdout, stderr) = worker::run_once(&settings, &["doctor", "--json"]);
        let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!("doctor --json prints one object ({e}): {stdout}\n{stderr}")
        });
        report
    };
    let check = |report: &serde_json::Value, name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no check {name:?}: {report:#}"))
    };
    // The backup account holds no container yet: creating one is not tried (that would create
    // it), and the doctor says so.
    let before = everything().await;
    let report = doctor();
    let untried = check(&report, "BACKUP_STORAGE: may create containers");
    assert_eq!(untried["status"], "warn", "{untried}");
    assert_eq!(everything().await, before, "the doctor changed nothing");

    lake.harness
        .backup
        .container("lakebak")
        .unwrap()
        .create()
        .await
        .unwrap();
    let before = everything().await;
    let report = doctor();
    // Azurite checks no role (any valid token may do anything): every right is let through, so
    // each was asked for with the identity's token, and none was refused.
    for (setting, rights) in [
        (
            "SOURCE_STORAGE",
            &["list blobs", "take snapshots", "get a user delegation key"][..],
        ),
        (
            "BACKUP_STORAGE",
            &[
                "create containers",
                "write blobs and their metadata",
                "get a user delegation key",
            ][..],
        ),
        (
            "AzureWebJobsStorage",
            &["send messages", "write blobs and their metadata"][..],
        ),
    ] {
        let found = check(&report, &format!("{setting}: rights"));
        assert_eq!(found["status"], "ok", "{found}");
        let detail = found["detail"].as_str().unwrap();
        assert!(
            detail.contains("each tried by a request that changes nothing"),
            "{detail}"
        );
        for right in rights {
            assert!(detail.contains(right), "{setting} {right}: {detail}");
        }
    }
    assert_eq!(everything().await, before, "the doctor changed nothing");
    assert!(
        lake.identity.refused().is_empty(),
        "{:?}",
        lake.identity.refused()
    );
}

/// Metadata names keep their case over HTTPS with tokens: the requests that write names with
/// capitals go through the worker's own HTTP/1.1 sender (`storage::metadata_case`), with TLS
/// trusted as the shared client trusts it. The blob is written by the harness through the same
/// sender (SharedKey over HTTPS); the worker backs it up and restores it with its identities.
#[tokio::test]
async fn metadata_names_keep_their_case_over_https_with_identities() {
    use futures::TryStreamExt;
    let lake = KeysOff::start().await;
    let metadata = HashMap::from([
        ("Owner".to_owned(), "alice".to_owned()),
        ("CamelCaseKey".to_owned(), "Value1".to_owned()),
    ]);
    let source = lake.harness.source.container("lake").unwrap();
    for (name, len) in [("small.csv", 100), ("raw/large.bin", LARGE)] {
        assert!(source
            .blob(name)
            .create(bytes(len, 7), metadata.clone())
            .await
            .unwrap());
    }
    let listed = |account: &'static str, container: &'static str| {
        let app = match account {
            "backup" => &lake.harness.backup,
            _ => &lake.harness.source,
        };
        let container = app.container(container).unwrap();
        async move {
            let pages = lakebackup::storage::listing::list_with_metadata(&container, "").unwrap();
            futures::pin_mut!(pages);
            let mut all = Vec::new();
            while let Some(page) = pages.try_next().await.unwrap() {
                all.extend(page);
            }
            all
        }
    };
    let user_part = |version: &lakebackup::core::version::Version| -> HashMap<String, String> {
        version
            .metadata_or_empty()
            .into_iter()
            .filter(|(k, _)| !k.starts_with("lakebackup_"))
            .collect()
    };
    for version in listed("source", "lake").await {
        assert_eq!(user_part(&version), metadata, "{} as written", version.name);
    }

    let settings = lake.settings();
    worker::run_ok(&settings, "reconcile --container lake");
    let backups = listed("backup", "lakebak").await;
    assert_eq!(backups.len(), 2, "{backups:?}");
    for backup in &backups {
        assert_eq!(user_part(backup), metadata, "the backup {}", backup.name);
    }

    worker::run_ok(
        &settings,
        "restore --container lake --to-container restored",
    );
    let restored = listed("source", "restored").await;
    assert_eq!(restored.len(), 2, "{restored:?}");
    for version in &restored {
        assert_eq!(
            version.metadata_or_empty(),
            metadata,
            "{} restored",
            version.name
        );
    }
}
