//! A restore's access control is pinned to the version the restore itself wrote: a file the
//! restore rewrites (server-side, over a newer version) or writes anew (through the worker,
//! where it was deleted), and which an ingestion rewrites between that write and the Set Access
//! Control, keeps its writer's bytes and access — never the instant's ACL — and is counted
//! `changed_since_plan`, named per path; the rest of the restore is unaffected.

use super::{
    backup::lake_on_stand_in,
    directories::{access_now, set_access},
    restore_exact::restore,
};
use crate::support;

const AT_INSTANT: &str = "user::rw-,group::r--,other::r--";
const LATER: &str = "user::rw-,group::---,other::---";

#[tokio::test(flavor = "multi_thread")]
async fn a_file_rewritten_after_the_restore_wrote_it_never_gets_the_instants_acl() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    let container = lake.lake("lake");
    for name in ["kept.csv", "gone.csv", "quiet.csv"] {
        support::upload(&container, name, b"at the instant").await;
        set_access(&proxied, name, &[("x-ms-acl", AT_INSTANT)]).await;
    }
    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    let instant = support::instant_after_writes().await;
    // After the instant: two files rewritten with another ACL, one deleted.
    for name in ["kept.csv", "quiet.csv"] {
        support::upload(&container, name, b"later").await;
        set_access(&proxied, name, &[("x-ms-acl", LATER)]).await;
    }
    let deleted = super::dfs(&proxied, "DELETE", "lake/gone.csv", "", &[]).await;
    assert_eq!(deleted.status, 202, "{}", deleted.body);
    let second = support::produce(&lake.app, "lake").await;
    assert!(second.succeeded(), "{:?}", second.notes);
    // An ingestion writes kept.csv and gone.csv again right after the restore has written
    // them, before their access control is set.
    let stand_in = proxied.blob.hns().unwrap();
    for name in ["kept.csv", "gone.csv"] {
        stand_in.rewrite_before_access_set("source", "lake", name, b"ingested".to_vec());
    }

    let (code, summary) = restore(&lake.settings(), &["--as-of", &instant]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(stand_in.counts().rewrites, 2, "{summary}");
    assert_eq!(summary["changed_since_plan"], 2, "{summary}");
    for name in ["kept.csv", "gone.csv"] {
        assert_eq!(support::download(&container, name).await, b"ingested");
        assert_ne!(
            access_now(&proxied, name).3,
            AT_INSTANT,
            "{name}: the ingested file is never given the instant's ACL: {summary}"
        );
    }
    assert_eq!(access_now(&proxied, "kept.csv").3, LATER, "{summary}");
    // The file no one touched is restored, bytes and ACL.
    assert_eq!(
        support::download(&container, "quiet.csv").await,
        b"at the instant"
    );
    assert_eq!(access_now(&proxied, "quiet.csv").3, AT_INSTANT);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_access_control_the_service_accepts_but_does_not_hold_is_a_failure_of_its_path() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    support::upload(&lake.lake("lake"), "f.csv", b"bytes").await;
    set_access(&proxied, "f.csv", &[("x-ms-acl", AT_INSTANT)]).await;
    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    let instant = support::instant_after_writes().await;
    set_access(&proxied, "f.csv", &[("x-ms-acl", LATER)]).await;
    let second = support::produce(&lake.app, "lake").await;
    assert!(second.succeeded(), "{:?}", second.notes);
    // The service answers 200 to every Set Access Control from now on, and keeps nothing.
    proxied.blob.hns().unwrap().ignore_access_sets();

    let (code, summary) = restore(&lake.settings(), &["--as-of", &instant]);
    assert_eq!(code, 1, "{summary}");
    assert_eq!(summary["access_failed"], 1, "{summary}");
    let failures = summary["failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 1, "{summary}");
    assert_eq!(failures[0]["blob"], "f.csv");
    let reason = failures[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("read back") && reason.contains(LATER),
        "{reason}"
    );
    assert_eq!(access_now(&proxied, "f.csv").3, LATER);
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_set_by_another_writer_after_the_restores_copy_keeps_the_instants_acl_off() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    let container = lake.lake("lake");
    support::upload(&container, "kept.csv", b"at the instant").await;
    set_access(&proxied, "kept.csv", &[("x-ms-acl", AT_INSTANT)]).await;
    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    let instant = support::instant_after_writes().await;
    support::upload(&container, "kept.csv", b"later").await;
    set_access(&proxied, "kept.csv", &[("x-ms-acl", LATER)]).await;
    let second = support::produce(&lake.app, "lake").await;
    assert!(second.succeeded(), "{:?}", second.notes);
    // Another writer sets kept.csv's metadata right after the restore's server-side copy ends:
    // the copy's properties (x-ms-copy-source, -id, -status) stay through it.
    let stand_in = proxied.blob.hns().unwrap();
    stand_in.set_metadata_after_copy("source", "lake", "kept.csv", &[("writer", "other")]);

    let (code, summary) = restore(&lake.settings(), &["--as-of", &instant]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(
        stand_in.counts().rewrites,
        1,
        "the copy was server-side: {summary}"
    );
    assert_eq!(summary["changed_since_plan"], 1, "{summary}");
    let (_, _, metadata) = support::properties(&container, "kept.csv").await;
    assert_eq!(metadata.get("writer").map(String::as_str), Some("other"));
    assert_ne!(
        access_now(&proxied, "kept.csv").3,
        AT_INSTANT,
        "the other writer's version is never given the instant's ACL: {summary}"
    );
}
