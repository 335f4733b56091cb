//! `lakebackup doctor` says which namespace the lake runs in, and what is protected in it: on the
//! dfs stand-in (hierarchical) and on plain Azurite (flat), the real binary.

use crate::{
    doctor::{detail_of, doctor},
    support::{
        self,
        proxy::{FaultKind, Faults, OpClass},
        Azurite,
    },
};

const NAMESPACE: &str = "SOURCE_STORAGE: namespace";

#[tokio::test(flavor = "multi_thread")]
async fn doctor_says_an_hns_lake_runs_without_snapshots_and_keeps_its_acls() {
    let azurite = Azurite::start();
    let proxied = super::hns_lake(&azurite);
    let settings = proxied.settings();
    let _lake = support::Lake::on(azurite, &["lake"], &[]).await;

    let (_, report, _) = doctor(&settings);
    let detail = detail_of(&report, NAMESPACE, "ok");
    assert!(detail.starts_with("hierarchical (ADLS Gen2)"), "{detail}");
    for said in [
        "pinned to the ETag listed",
        "owner, group, permissions, ACL",
        "no snapshots and no index tags",
        "shorter than one pass or event can be missed",
        "every directory (empty ones included) is a version",
        "sets each path's owner, group, permissions and ACLs back exactly",
    ] {
        assert!(detail.contains(said), "{said:?} not in {detail}");
    }
    // The lake's rights are those an HNS lake's backups use: no snapshot and no tags right is
    // needed (the stand-in refuses both, as Azure does), so none is missing.
    let lake_checks: Vec<&serde_json::Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["name"]
                .as_str()
                .unwrap()
                .starts_with("SOURCE_STORAGE: may")
        })
        .collect();
    assert!(lake_checks.is_empty(), "{lake_checks:#?}");
    let rights = detail_of(&report, "SOURCE_STORAGE: rights", "ok");
    for unused in ["snapshot", "tag"] {
        assert!(!rights.contains(unused), "{unused:?} in {rights}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_says_a_flat_lake_is_kept_by_snapshots_and_backups() {
    let lake = support::Lake::start(&["lake"]).await;
    let (_, report, _) = doctor(&lake.settings());
    let detail = detail_of(&report, NAMESPACE, "ok");
    assert!(detail.starts_with("flat (Blob Storage)"), "{detail}");
    for said in ["snapshot", "version-keeping backup", "index tags"] {
        assert!(detail.contains(said), "{said:?} not in {detail}");
    }
    assert!(!detail.contains("ACL"), "{detail}");
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_warns_when_the_lakes_namespace_cannot_be_asked() {
    let azurite = Azurite::start();
    let proxied = super::hns_lake(&azurite);
    let settings = proxied.settings();
    let _lake = support::Lake::on(azurite, &["lake"], &[]).await;
    // Every account-level call (Get Account Information among them) answered 500, retries too.
    proxied.set_faults(
        Faults::new(31, 1.0)
            .classes([OpClass::Other])
            .kinds([FaultKind::InternalError]),
    );
    let (_, report, _) = doctor(&settings);
    let detail = detail_of(&report, NAMESPACE, "warn");
    assert!(detail.starts_with("could not be read: "), "{detail}");
}
