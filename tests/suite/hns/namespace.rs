//! The namespace of an account, detected from the account itself, once per process.

use lakebackup::{app::App, settings::Settings, storage::Namespace};

use crate::support::{
    proxy::{OpClass, ProxiedAzurite, ProxyConfig},
    Azurite,
};

#[tokio::test(flavor = "multi_thread")]
async fn the_lakes_namespace_is_read_from_the_account_once_per_process() {
    let azurite = Azurite::start();
    let proxied = super::hns_lake(&azurite);
    let app = App::from_settings(&Settings::from_pairs(proxied.settings())).unwrap();
    proxied.reset_stats();
    for _ in 0..3 {
        assert_eq!(
            app.source.namespace("lake").await.unwrap(),
            Namespace::Hierarchical
        );
    }
    assert_eq!(
        app.backup.namespace("lakebak").await.unwrap(),
        Namespace::Flat
    );
    // One Get Account Information per account, whatever the number of callers.
    assert_eq!(proxied.stats().requests_of(OpClass::Other), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_may_not_ask_the_account_asks_in_its_container() {
    let azurite = Azurite::start();
    // Roles assigned on the lake's container only: Get Account Information at the account is
    // refused (403), in the container it is answered.
    let config = ProxyConfig::azurite().role_scope(["source/lake", "backup/lakebak"]);
    let proxied = ProxiedAzurite::start_hns(&azurite, config, &["source"]).unwrap();
    let app = App::from_settings(&Settings::from_pairs(proxied.settings())).unwrap();
    assert_eq!(
        app.source.namespace("lake").await.unwrap(),
        Namespace::Hierarchical
    );
    assert_eq!(proxied.stats().requests_of(OpClass::Other), 1);
    assert_eq!(proxied.stats().requests_of(OpClass::Container), 1);
    assert_eq!(proxied.stats().azure_refusals.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_may_ask_nowhere_knows_it_does_not_know() {
    let azurite = Azurite::start();
    // No role on the lake at all: Get Account Information refused at the account and in the
    // container. Not taken as flat: a restore must not guess whether ACLs apply.
    let config = ProxyConfig::azurite().role_scope(["backup/lakebak"]);
    let proxied = ProxiedAzurite::start_hns(&azurite, config, &["source"]).unwrap();
    let app = App::from_settings(&Settings::from_pairs(proxied.settings())).unwrap();
    for _ in 0..2 {
        assert_eq!(
            app.source.namespace("lake").await.unwrap(),
            Namespace::Unknown
        );
    }
    // Asked once at the account and once in the container, then kept.
    assert_eq!(proxied.stats().azure_refusals.len(), 2);
}
