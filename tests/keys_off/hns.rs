//! Keys off on a lake with a hierarchical namespace: a restore's dfs calls (Get and Set Access
//! Control, the root's included) go with the identity's bearer token, as its blob calls do,
//! to the dfs stand-in in front of Azurite over HTTPS, which checks each token's claims and
//! counts how every dfs request was authorized.

use std::collections::HashMap;

use lakebackup::{app::App, core::properties::Access, settings::Settings, storage::dfs::AccessNow};

use super::{support, KeysOff};
use crate::support::{
    azurite::{BACKUP_KEY, JOBS_KEY, SOURCE_KEY},
    proxy::{ProxiedAzurite, Proxy, ProxyTls},
    worker,
};

const AT_INSTANT: &str = "user::rw-,group::r--,other::---";
const LATER: &str = "user::rw-,group::---,other::---";

/// Key-based settings through the stand-in, for the test's own arranging and checking.
fn harness_settings(keys_off: &KeysOff, proxy: &Proxy) -> HashMap<String, String> {
    let through = |account: &str, key: &str| {
        format!(
            "DefaultEndpointsProtocol=https;AccountName={account};AccountKey={key};\
             BlobEndpoint={}/{account};QueueEndpoint={};",
            proxy.url(),
            keys_off.azurite.queue_endpoint(account)
        )
    };
    HashMap::from([
        ("SOURCE_STORAGE".to_owned(), through("source", SOURCE_KEY)),
        ("BACKUP_STORAGE".to_owned(), through("backup", BACKUP_KEY)),
        ("AzureWebJobsStorage".to_owned(), through("jobs", JOBS_KEY)),
    ])
}

fn access(acl: &str) -> Access {
    Access {
        owner: "$superuser".into(),
        group: "$superuser".into(),
        permissions: String::new(),
        acl: acl.into(),
    }
}

#[tokio::test]
async fn a_keys_off_restore_sets_access_control_with_the_identitys_bearer_token() {
    let keys_off = KeysOff::start().await;
    let files = &keys_off.tls.files;
    let tls = ProxyTls::new(&files.cert, &files.key, &files.ca);
    let proxy = ProxiedAzurite::start_hns_tls(&keys_off.azurite, tls, &["source"]).unwrap();
    let stand_in = proxy.hns().unwrap();
    let harness =
        App::from_settings(&Settings::from_pairs(harness_settings(&keys_off, &proxy))).unwrap();
    let lake = harness.source.container("lake").unwrap();
    support::upload(&lake, "d/f.csv", b"bytes").await;
    let set = |acl: &'static str| {
        let harness = &harness;
        async move {
            let wanted = access(acl);
            let now = AccessNow::default();
            let set = harness
                .source
                .set_access_control("lake", "d/f.csv", &wanted, now);
            set.await.unwrap();
        }
    };
    set(AT_INSTANT).await;
    let first = support::produce(&harness, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    let instant = support::instant_after_writes().await;
    set(LATER).await;
    let second = support::produce(&harness, "lake").await;
    assert!(second.succeeded(), "{:?}", second.notes);
    assert!(
        stand_in.counts().dfs_shared_key > 0,
        "the harness signs with keys"
    );
    stand_in.reset_counts();

    // The worker keys off, every blob endpoint through the stand-in (Azurite checks that a
    // copy source is on the host the copy was sent to).
    let mut settings = keys_off.settings();
    for (connection, account) in [
        ("SOURCE_STORAGE", "source"),
        ("BACKUP_STORAGE", "backup"),
        ("AzureWebJobsStorage", "jobs"),
    ] {
        let through = format!("{}/{account}", proxy.url());
        settings.insert(format!("{connection}__blobServiceUri"), through);
    }
    let args = [
        "restore",
        "--container",
        "lake",
        "--from",
        "backup",
        "--as-of",
        &instant,
    ];
    let (code, _, summary) = worker::run_lines(&settings, &args);
    assert_eq!(code, 0, "{summary}");
    let counts = stand_in.counts();
    assert!(counts.access_writes >= 1, "{counts:?}: {summary}");
    assert!(counts.access_reads >= 1, "the root's, read: {counts:?}");
    assert_eq!(
        (counts.dfs_shared_key, counts.dfs_sas),
        (0, 0),
        "keys off: every dfs call with a bearer token: {counts:?}"
    );
    assert!(
        counts.dfs_bearer >= counts.access_writes + counts.access_reads,
        "{counts:?}"
    );
    let now = stand_in
        .access_control("source", "lake", "d/f.csv")
        .unwrap();
    assert_eq!(now.acl(), AT_INSTANT, "{summary}");
}
