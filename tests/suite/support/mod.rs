//! Shared test support: Azurite and the lake on it ([`Lake`]), waiting for a condition
//! ([`wait_for`], [`next_second`]), and small helpers for arranging and checking data over the
//! product's storage seam (`lakebackup::storage`, with its `testing` operations).
#![allow(dead_code)]

pub mod adf;
pub mod azurite;
mod blobs;
mod deliver;
pub mod ingestion;
pub mod keys_off;
pub mod proxy;
mod wait;
pub mod worker;

use std::collections::HashMap;

use lakebackup::{
    app::App,
    settings::Settings,
    storage::{Container, Queue},
};

pub use azurite::Azurite;
// Not every test binary (`tests/keys_off`, `tests/bounded_memory`) delivers messages.
pub use blobs::*;
#[allow(unused_imports)]
pub use deliver::*;
pub use wait::*;

/// Azurite with its source, backup and jobs accounts, the worker's `App` on it with the settings
/// a Function App would have (and the test's own), and containers created in the lake: where
/// most tests start. The `App` arranges and checks; the worker under test runs with
/// [`Lake::settings`].
pub struct Lake {
    pub azurite: Azurite,
    pub app: App,
    settings: HashMap<String, String>,
}

impl Lake {
    /// The lake with `containers`, and the Function App's default settings.
    pub async fn start(containers: &[&str]) -> Lake {
        Lake::start_with(containers, &[]).await
    }

    /// The lake with `containers`, and the Function App's settings with `extra`.
    pub async fn start_with(containers: &[&str], extra: &[(&str, &str)]) -> Lake {
        Lake::on(Azurite::start(), containers, extra).await
    }

    /// The lake on `azurite` (started as the test needs it), as [`Lake::start_with`].
    pub async fn on(azurite: Azurite, containers: &[&str], extra: &[(&str, &str)]) -> Lake {
        let settings = with(worker::settings(&azurite), extra);
        let app = App::from_settings(&Settings::from_pairs(settings.clone())).unwrap();
        for container in containers {
            app.source
                .container(container)
                .unwrap()
                .create()
                .await
                .unwrap_or_else(|e| panic!("create {container}: {e}"));
        }
        Lake {
            azurite,
            app,
            settings,
        }
    }

    /// The Function App's settings the lake was started with.
    pub fn settings(&self) -> HashMap<String, String> {
        self.settings.clone()
    }

    /// The Function App's settings with `extra` besides.
    pub fn settings_with(&self, extra: &[(&str, &str)]) -> HashMap<String, String> {
        with(self.settings(), extra)
    }

    /// Container `name` of the lake (the source account).
    pub fn lake(&self, name: &str) -> Container {
        self.app.source.container(name).unwrap()
    }

    /// The backup container of the lake's `container`: `{container}bak`.
    pub fn vault(&self, container: &str) -> Container {
        self.app
            .backup
            .container(&format!("{container}bak"))
            .unwrap()
    }

    /// Queue `name` of the jobs account (`AzureWebJobsStorage`).
    pub fn queue(&self, name: &str) -> Queue {
        self.app.jobs.queue(name).unwrap()
    }

    /// `lakebackup serve` with the lake's settings and `extra`.
    pub fn serve(&self, extra: &[(&str, &str)]) -> worker::Worker {
        worker::Worker::serve(&self.settings_with(extra))
    }

    /// `lakebackup ARGS` with the lake's settings, to completion: (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        worker::run_once(&self.settings, args)
    }
}

/// `settings` with `extra` set (replacing what they name).
pub fn with(
    mut settings: HashMap<String, String>,
    extra: &[(&str, &str)],
) -> HashMap<String, String> {
    settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    settings
}

/// A producer job over the whole of `container`, run in this process (`lakebackup produce`): a
/// snapshot and a backup of every new version.
pub async fn produce(
    app: &App,
    container: &str,
) -> lakebackup::engine::jobs::LocalJob<lakebackup::engine::jobs::backup::BackupKind> {
    let request = lakebackup::functions::producer::ProduceRequest {
        container: container.into(),
        prefix: String::new(),
    };
    lakebackup::functions::producer::run_here(app, &request)
        .await
        .unwrap_or_else(|e| panic!("produce {container}: {e}"))
}

/// The restore of the whole of `container` from `from` into `to` (in place when `None`) as of
/// `as_of` (the newest versions when `None`): what `lakebackup restore` asks without other
/// options. Set the other fields with `..`.
pub fn restore_request(
    container: &str,
    from: lakebackup::core::restore_plan::RestoreFrom,
    to: Option<&str>,
    as_of: Option<time::OffsetDateTime>,
) -> lakebackup::engine::restore::RestoreRequest {
    lakebackup::engine::restore::RestoreRequest {
        container: container.into(),
        prefix: None,
        blob: None,
        as_of,
        from,
        to_container: to.map(str::to_owned),
        to_account: false,
        dry_run: false,
        verify_content: false,
    }
}

/// `len` bytes that do not repeat, the same for the same `seed`: no compression or framing
/// leaves them alike by accident.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// An account-SAS connection string to `account` of `azurite` (`key`: its key, base64) with no
/// key, as a deployment gives a SAS setting: `services` (`b`, `q`, `bq`) and `permissions` on
/// every resource type, until `expiry`.
pub fn sas_connection(
    azurite: &Azurite,
    account: &str,
    key: &str,
    services: &str,
    permissions: &str,
    expiry: time::OffsetDateTime,
) -> String {
    use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
    let grant = lakebackup::storage::sas::AccountSasGrant {
        services,
        resource_types: "sco",
        permissions,
        expiry,
    };
    let key = BASE64.decode(key).expect("a base64 key");
    let sas = lakebackup::storage::testing::account_sas(account, &key, grant);
    format!(
        "BlobEndpoint={};QueueEndpoint={};SharedAccessSignature={sas}",
        azurite.blob_endpoint(account),
        azurite.queue_endpoint(account)
    )
}

/// A loopback port nobody listens on (bound, then released).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// An account-key connection string for `account` whose blob endpoint nobody answers.
pub fn unreachable_connection(account: &str, key: &str) -> String {
    format!(
        "AccountName={account};AccountKey={key};BlobEndpoint=http://127.0.0.1:{}/{account}",
        closed_port()
    )
}
