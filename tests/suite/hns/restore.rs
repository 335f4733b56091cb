//! A restore of a lake with a hierarchical namespace (the dfs stand-in), the real binary: every
//! directory comes back as a directory (empty ones included), and every path with its exact
//! owner, group, permissions and ACL (default ACLs, the sticky bit) of the instant; an owner the
//! service refuses to set fails the job and names the path, with its bytes restored; a restore
//! into a flat account restores the files and says once that access control was not applied.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{
    backup::lake_on_stand_in,
    directories::{access_now, make_directory, set_access, DEFAULT_ACL},
};
use crate::support::{self, proxy::ProxiedAzurite, worker, Lake};

type AccessOf = (String, String, String, String);

/// The lake of these tests: directories with a default ACL, an owner, a sticky bit, an empty
/// one; files under them with ACLs of their own. Backed up once; returns each file's bytes.
async fn a_lake_backed_up(
    lake: &Lake,
    proxied: &ProxiedAzurite,
) -> BTreeMap<&'static str, Vec<u8>> {
    make_directory(proxied, "🦀", &[("x-ms-acl", DEFAULT_ACL)]).await;
    make_directory(proxied, "🦀/空｡", &[]).await;
    set_access(proxied, "🦀/空｡", &[("x-ms-permissions", "1770")]).await;
    make_directory(
        proxied,
        "🦀/日本",
        &[("x-ms-owner", "o-1"), ("x-ms-group", "g-1")],
    )
    .await;
    let files = BTreeMap::from([
        ("🦀/a.csv", b"crab".to_vec()),
        ("🦀/日本/東京.txt", "東京".as_bytes().to_vec()),
        ("x｡y.csv", b"halfwidth".to_vec()),
    ]);
    for (name, bytes) in &files {
        support::upload(&lake.lake("lake"), name, bytes).await;
    }
    set_access(
        proxied,
        "🦀/日本/東京.txt",
        &[("x-ms-owner", "o-2"), ("x-ms-group", "g-2")],
    )
    .await;
    set_access(proxied, "x｡y.csv", &[("x-ms-permissions", "rw-r-----")]).await;
    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    files
}

/// Every path of the lake now: (name → (access, is a directory)).
fn paths_now(proxied: &ProxiedAzurite, names: &[&str]) -> BTreeMap<String, (AccessOf, bool)> {
    let stand_in = proxied.blob.hns().unwrap();
    names
        .iter()
        .map(|name| {
            let directory = stand_in
                .access_control("source", "lake", name)
                .unwrap_or_else(|| panic!("{name} is not there"))
                .directory;
            (name.to_string(), (access_now(proxied, name), directory))
        })
        .collect()
}

const PATHS: [&str; 7] = [
    "🦀",
    "🦀/空｡",
    "🦀/日本",
    "🦀/a.csv",
    "🦀/日本/東京.txt",
    "x｡y.csv",
    "",
];

/// `lakebackup restore --container lake ARGS` with `settings`: exit code and summary.
fn restore(settings: &std::collections::HashMap<String, String>, args: &[&str]) -> (i32, Value) {
    let mut full = vec!["restore", "--container", "lake", "--from", "backup"];
    full.extend(args);
    let (code, _, summary) = worker::run_lines(settings, &full);
    (code, summary)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_hns_lake_comes_back_exactly_as_of_before_acl_changes_and_a_recursive_delete() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    let files = a_lake_backed_up(&lake, &proxied).await;
    let at_the_instant = paths_now(&proxied, &PATHS[..6]);
    assert!(at_the_instant["🦀/空｡"].0 .2.contains('T'), "sticky");
    let instant = support::instant_after_writes().await;

    // The incident: ACL-only changes (backed up as versions of their own), then a recursive
    // delete of a subtree (seen gone by the next pass).
    set_access(
        &proxied,
        "x｡y.csv",
        &[("x-ms-acl", "user::rw-,group::---,other::---")],
    )
    .await;
    set_access(
        &proxied,
        "🦀",
        &[("x-ms-acl", "user::rwx,group::---,other::---,default:user::rwx,default:group::---,default:other::---")],
    )
    .await;
    let after = support::produce(&lake.app, "lake").await;
    assert!(after.succeeded(), "{:?}", after.notes);
    assert_eq!(
        after.totals.get("directory_backups"),
        1,
        "{:?}",
        after.totals
    );
    let deleted = super::dfs(&proxied, "DELETE", "lake/🦀/日本", "recursive=true", &[]).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let deleted = super::dfs(&proxied, "DELETE", "lake/🦀/空｡", "recursive=true", &[]).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let seen = support::produce(&lake.app, "lake").await;
    assert!(seen.succeeded(), "{:?}", seen.notes);
    let stand_in = proxied.blob.hns().unwrap();
    stand_in.reset_counts();

    let (code, summary) = restore(&lake.settings(), &["--as-of", &instant]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary.get("access_failed"), None, "{summary}");
    assert!(
        summary["directories_created"].as_u64() >= Some(1),
        "{summary}"
    );
    for (name, bytes) in &files {
        assert_eq!(
            &support::download(&lake.lake("lake"), name).await,
            bytes,
            "{name}"
        );
    }
    // Every path as it was at the instant: directories as directories (the empty one too),
    // owners, groups, permissions (sticky bit) and ACLs (default ACLs) exactly.
    let restored = paths_now(&proxied, &PATHS[..6]);
    for (name, was) in &at_the_instant {
        assert_eq!(&restored[name], was, "{name}");
    }
    let counts = stand_in.counts();
    assert_eq!((counts.snapshots, counts.tag_requests), (0, 0));
    assert!(counts.access_writes > 0);

    // Again: nothing to write, no access control to set.
    stand_in.reset_counts();
    let (code, again) = restore(&lake.settings(), &["--as-of", &instant]);
    assert_eq!(code, 0, "{again}");
    assert_eq!(again.get("access_set"), None, "{again}");
    assert_eq!(stand_in.counts().access_writes, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_owner_the_service_refuses_fails_the_job_naming_the_path_with_its_bytes_restored() {
    an_owner_refused(|stand_in| stand_in.refuse_owner_changes()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_owner_the_service_takes_for_an_invalid_value_is_refused_the_same_way() {
    // 400 InvalidHeaderValue, as Path - Update answers a header value it cannot take.
    an_owner_refused(|stand_in| stand_in.refuse_owner_values()).await;
}

/// A restore to now whose owner and group changes the stand-in refuses as `refuse` says: the
/// two paths whose owner is no longer the creator's named, their ACLs set all the same.
async fn an_owner_refused(refuse: impl FnOnce(&crate::support::proxy::hns::HnsLake)) {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    let files = a_lake_backed_up(&lake, &proxied).await;
    let at_the_instant = paths_now(&proxied, &PATHS[..6]);
    let deleted = super::dfs(&proxied, "DELETE", "lake/🦀/日本", "recursive=true", &[]).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    refuse(&proxied.blob.hns().unwrap());

    let (code, summary) = restore(&lake.settings(), &[]);
    assert_eq!(code, 1, "{summary}");
    assert_eq!(summary["status"], "failed", "{summary}");
    for (name, bytes) in &files {
        assert_eq!(
            &support::download(&lake.lake("lake"), name).await,
            bytes,
            "{name}"
        );
    }
    // The two paths whose owner is no longer the creator's: named, each with why.
    let mut refused: Vec<&str> = summary["failures"]
        .as_array()
        .unwrap_or_else(|| panic!("{summary}"))
        .iter()
        .map(|f| f["blob"].as_str().unwrap())
        .collect();
    refused.sort_unstable();
    assert_eq!(refused, ["🦀/日本", "🦀/日本/東京.txt"], "{summary}");
    assert!(
        summary["failures"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("owner"),
        "{summary}"
    );
    assert_eq!(summary["access_failed"], 2, "{summary}");
    // Their ACLs were set all the same.
    let now = paths_now(&proxied, &["🦀/日本", "🦀/日本/東京.txt"]);
    for name in ["🦀/日本", "🦀/日本/東京.txt"] {
        assert_eq!(now[name].0 .3, at_the_instant[name].0 .3, "{name}");
        assert!(now[name].1 == at_the_instant[name].1, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_into_a_flat_account_restores_the_files_and_says_once_acls_were_not_applied() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    let files = a_lake_backed_up(&lake, &proxied).await;
    // The flat target: Azurite's own account, straight (no stand-in).
    let target = lake
        .azurite
        .connection_string("devstoreaccount1", lakebackup_dev_key());
    let mut settings = lake.settings();
    settings.insert("RESTORE_TARGET_STORAGE".into(), target.clone());
    let (code, summary) = restore(&settings, &["--to-account", "--to-container", "restored"]);
    assert_eq!(code, 0, "{summary}");
    let restored = lakebackup::storage::StorageAccount::connect(
        "T",
        &lakebackup::settings::Settings::from_pairs([("T".to_owned(), target)]),
    )
    .unwrap()
    .container("restored")
    .unwrap();
    let contents = support::contents(&restored).await;
    let expected: BTreeMap<String, Vec<u8>> = files
        .iter()
        .map(|(name, bytes)| (name.to_string(), bytes.clone()))
        .collect();
    assert_eq!(
        contents, expected,
        "the files, and no directory placeholder"
    );
    let warnings: Vec<&str> = summary["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("{summary}"))
        .iter()
        .map(|w| w["reason"].as_str().unwrap())
        .filter(|reason| reason.contains("were not applied"))
        .collect();
    assert_eq!(warnings.len(), 1, "{summary}");
    assert_eq!(
        summary["access_not_applied"],
        6 + 1,
        "the root's too: {summary}"
    );
}

fn lakebackup_dev_key() -> &'static str {
    crate::support::azurite::DEV_KEY
}
