//! A restore into an HNS lake that must not report success for what it did not restore: a sticky
//! bit gained after the instant is cleared; a target whose namespace cannot be read is refused
//! before any write; an ingestion write between the restore's write and its access control is
//! never given the instant's ACL.

use serde_json::Value;

use super::{
    backup::lake_on_stand_in,
    directories::{access_now, make_directory, set_access},
};
use crate::support::{self, worker};

/// `lakebackup restore --container lake --from backup ARGS` with `settings`.
pub(super) fn restore(
    settings: &std::collections::HashMap<String, String>,
    args: &[&str],
) -> (i32, Value) {
    let mut full = vec!["restore", "--container", "lake", "--from", "backup"];
    full.extend(args);
    let (code, _, summary) = worker::run_lines(settings, &full);
    (code, summary)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sticky_bit_gained_after_the_instant_is_cleared_by_a_restore_as_of_it() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    make_directory(&proxied, "d", &[]).await;
    support::upload(&lake.lake("lake"), "d/f.csv", b"bytes").await;
    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    let before = [access_now(&proxied, "d"), access_now(&proxied, "d/f.csv")];
    assert!(!before[0].2.contains(['t', 'T']), "{before:?}");
    let instant = support::instant_after_writes().await;

    // After the instant: the directory and the file gain the sticky bit (and nothing else).
    set_access(&proxied, "d", &[("x-ms-permissions", "1750")]).await;
    set_access(&proxied, "d/f.csv", &[("x-ms-permissions", "1640")]).await;
    assert_eq!(access_now(&proxied, "d").2, "rwxr-x--T");
    let second = support::produce(&lake.app, "lake").await;
    assert!(second.succeeded(), "{:?}", second.notes);

    let (code, summary) = restore(&lake.settings(), &["--as-of", &instant]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["access_set"], 2, "{summary}");
    let after = [access_now(&proxied, "d"), access_now(&proxied, "d/f.csv")];
    assert_eq!(after, before, "the sticky bits are cleared");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_whose_namespace_cannot_be_read_is_refused_before_any_write() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    make_directory(&proxied, "d", &[]).await;
    support::upload(&lake.lake("lake"), "d/f.csv", b"bytes").await;
    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    let deleted = super::dfs(&proxied, "DELETE", "lake/d", "recursive=true", &[]).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    // The restore's connection may not read the account's information, anywhere.
    let stand_in = proxied.blob.hns().unwrap();
    stand_in.refuse_account_information();
    stand_in.reset_counts();

    let (code, summary) = restore(&lake.settings(), &[]);
    assert_ne!(code, 0, "{summary}");
    assert!(
        summary.to_string().contains("Get Account Information"),
        "the missing right is named: {summary}"
    );
    // Nothing written: no directory, no file, no access control.
    assert!(stand_in.access_control("source", "lake", "d").is_none());
    assert!(stand_in
        .access_control("source", "lake", "d/f.csv")
        .is_none());
    assert_eq!(stand_in.counts().access_writes, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_an_ingestion_rewrites_before_its_access_is_set_keeps_the_writers_access() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    support::upload(&lake.lake("lake"), "f.csv", b"at the instant").await;
    set_access(
        &proxied,
        "f.csv",
        &[("x-ms-acl", "user::rw-,group::r--,other::r--")],
    )
    .await;
    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    let instant = support::instant_after_writes().await;
    // After the instant an ACL-only change (backed up), which the restore undoes...
    set_access(
        &proxied,
        "f.csv",
        &[("x-ms-acl", "user::rw-,group::---,other::---")],
    )
    .await;
    let second = support::produce(&lake.app, "lake").await;
    assert!(second.succeeded(), "{:?}", second.notes);
    let writers = access_now(&proxied, "f.csv");
    // ...but an ingestion rewrites the file between the restore's listing and its ACL call.
    let stand_in = proxied.blob.hns().unwrap();
    stand_in.rewrite_before_access_set("source", "lake", "f.csv", b"ingested".to_vec());

    let (code, summary) = restore(&lake.settings(), &["--as-of", &instant]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(stand_in.counts().rewrites, 1, "{summary}");
    assert_eq!(summary["changed_since_plan"], 1, "{summary}");
    assert_eq!(
        support::download(&lake.lake("lake"), "f.csv").await,
        b"ingested"
    );
    assert_eq!(
        access_now(&proxied, "f.csv"),
        writers,
        "the ingested file is never given the instant's ACL"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_is_created_with_its_exact_access_in_one_request() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    make_directory(
        &proxied,
        "d",
        &[
            ("x-ms-owner", "o-1"),
            ("x-ms-group", "g-1"),
            ("x-ms-acl", "user::rwx,group::---,other::---"),
        ],
    )
    .await;
    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    let was = access_now(&proxied, "d");
    // No access control call lands after the create (as if the worker died right after it).
    let stand_in = proxied.blob.hns().unwrap();
    stand_in.refuse_access_sets();

    let (code, summary) = restore(&lake.settings(), &["--to-container", "back"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["directories_created"], 1, "{summary}");
    let restored = stand_in
        .access_control("source", "back", "d")
        .expect("the directory is created");
    assert_eq!(
        (
            restored.owner.clone(),
            restored.group.clone(),
            restored.permissions(),
            restored.acl()
        ),
        was,
        "never a moment with a broader access than its own"
    );
    assert_eq!(stand_in.counts().access_writes, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn directories_without_a_version_at_the_instant_are_counted_and_named_once() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    make_directory(
        &proxied,
        "d",
        &[("x-ms-acl", "user::rwx,group::---,other::---")],
    )
    .await;
    support::upload(&lake.lake("lake"), "d/f.csv", b"bytes").await;
    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    // As an earlier release backed it up: the file's versions, none of the directory's.
    let vault = lake.vault("lake");
    let directory_versions: Vec<String> = support::contents(&vault)
        .await
        .into_keys()
        .filter(|name| name.starts_with("d_"))
        .collect();
    assert_eq!(directory_versions.len(), 1, "{directory_versions:?}");
    for name in &directory_versions {
        support::delete_with_snapshots(&vault, name).await;
    }

    let (code, summary) = restore(&lake.settings(), &["--to-container", "back"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["directories_without_version"], 1, "{summary}");
    let warnings: Vec<&str> = summary["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("{summary}"))
        .iter()
        .filter_map(|w| w["reason"].as_str())
        .filter(|r| r.contains("no version at the instant"))
        .collect();
    assert_eq!(warnings.len(), 1, "{summary}");
    assert!(warnings[0].contains("\"d\""), "{summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directorys_user_metadata_comes_back_with_it() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    // owner=team, city=Tokyo (base64 values, as Path - Create takes them; metadata values are
    // ASCII header values on Azure).
    make_directory(
        &proxied,
        "d",
        &[("x-ms-properties", "owner=dGVhbQ==,city=VG9reW8=")],
    )
    .await;
    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);

    let (code, summary) = restore(&lake.settings(), &["--to-container", "back"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["directories_created"], 1, "{summary}");
    let (_, _, metadata) = support::properties(&lake.lake("back"), "d").await;
    assert_eq!(
        metadata.get("owner").map(String::as_str),
        Some("team"),
        "{metadata:?}"
    );
    assert_eq!(
        metadata.get("city").map(String::as_str),
        Some("Tokyo"),
        "{metadata:?}"
    );
    assert_eq!(
        metadata.get("hdi_isfolder").map(String::as_str),
        Some("true")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_that_stands_gets_its_versions_user_metadata_back() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    make_directory(&proxied, "d", &[("x-ms-properties", "owner=dGVhbQ==")]).await;
    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    let instant = support::instant_after_writes().await;
    // After the instant the directory's metadata changes (a new version of it, backed up).
    let directory = lake.lake("lake").blob("d");
    let later = std::collections::HashMap::from([
        ("owner".to_owned(), "other".to_owned()),
        ("hdi_isfolder".to_owned(), "true".to_owned()),
    ]);
    directory.replace_metadata(&later).await.unwrap();
    let second = support::produce(&lake.app, "lake").await;
    assert!(second.succeeded(), "{:?}", second.notes);

    let (code, summary) = restore(&lake.settings(), &["--as-of", &instant]);
    assert_eq!(code, 0, "{summary}");
    let (_, _, metadata) = support::properties(&lake.lake("lake"), "d").await;
    assert_eq!(
        metadata.get("owner").map(String::as_str),
        Some("team"),
        "{metadata:?}: {summary}"
    );
    assert_eq!(
        metadata.get("hdi_isfolder").map(String::as_str),
        Some("true"),
        "still a directory"
    );
    assert!(
        proxied
            .blob
            .hns()
            .unwrap()
            .access_control("source", "lake", "d")
            .unwrap()
            .directory
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directorys_metadata_refused_leaves_a_warning_and_its_access_control_is_set() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    let first_acl = "user::rwx,group::r-x,other::---";
    make_directory(
        &proxied,
        "d",
        &[
            ("x-ms-properties", "owner=dGVhbQ=="),
            ("x-ms-acl", first_acl),
        ],
    )
    .await;
    let at_instant = super::directories::access_now(&proxied, "d");
    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    let instant = support::instant_after_writes().await;
    // After the instant both its metadata and its ACL change.
    let later = std::collections::HashMap::from([
        ("owner".to_owned(), "other".to_owned()),
        ("hdi_isfolder".to_owned(), "true".to_owned()),
    ]);
    lake.lake("lake")
        .blob("d")
        .replace_metadata(&later)
        .await
        .unwrap();
    super::directories::set_access(
        &proxied,
        "d",
        &[("x-ms-acl", "user::rwx,group::---,other::---")],
    )
    .await;
    let second = support::produce(&lake.app, "lake").await;
    assert!(second.succeeded(), "{:?}", second.notes);
    assert_ne!(super::directories::access_now(&proxied, "d"), at_instant);

    // Should Azure refuse Set Blob Metadata on a directory, its access control still comes back.
    proxied.blob.hns().unwrap().refuse_directory_metadata();
    let (code, summary) = restore(&lake.settings(), &["--as-of", &instant]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(
        super::directories::access_now(&proxied, "d"),
        at_instant,
        "{summary}"
    );
    assert_eq!(summary["directory_metadata_refused"], 1, "{summary}");
    let warned = summary["warnings"].as_array().cloned().unwrap_or_default();
    assert!(
        warned.iter().any(|w| w["blob"] == "d"
            && w["reason"]
                .as_str()
                .is_some_and(|r| r.contains("OperationNotSupportedOnDirectory"))),
        "{summary}"
    );
    let (_, _, metadata) = support::properties(&lake.lake("lake"), "d").await;
    assert_eq!(
        metadata.get("owner").map(String::as_str),
        Some("other"),
        "left as it stood"
    );
}
