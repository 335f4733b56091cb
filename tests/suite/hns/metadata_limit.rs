//! An ACL kept in a backup's metadata must never be lost to Azure's 8 KiB metadata limit: a
//! file whose own user metadata and ACL together would pass it is a clear failure of its own
//! (named, the job failed), never a backup without its ACL or a backup recorded complete; the
//! other files of the pass are backed up as ever.

use lakebackup::storage::testing::NewBlob;

use super::{backup::lake_on_stand_in, directories::set_access};
use crate::support;

/// An ACL of `named` named users (object ids), with its mask.
fn long_acl(named: usize) -> String {
    let mut acl = String::from("user::rw-,group::r--,mask::r--,other::---");
    for i in 0..named {
        acl.push_str(&format!(",user:00000000-0000-0000-0000-{i:012}:r--"));
    }
    acl
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_whose_metadata_and_acl_pass_8_kib_fails_by_name_and_nothing_else_does() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    let container = lake.lake("lake");
    // Its own metadata is within Azure's limit; with its ACL in the stamp it is not.
    let notes = "n".repeat(7_000);
    let big = NewBlob::with_metadata([("notes", notes.as_str())]);
    support::upload_with(&container, "big.csv", b"big", &big).await;
    support::upload(&container, "small.csv", b"small").await;
    let acl = long_acl(40);
    for name in ["big.csv", "small.csv"] {
        set_access(&proxied, name, &[("x-ms-acl", &acl)]).await;
    }

    let job = support::produce(&lake.app, "lake").await;
    assert!(!job.succeeded(), "{:?}", job.totals);
    let failures: Vec<(&str, &str)> = job
        .notes
        .failures
        .iter()
        .map(|f| (f.blob.as_str(), f.reason.as_str()))
        .collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    let (blob, reason) = failures[0];
    assert_eq!(blob, "big.csv");
    assert!(
        reason.contains("8 KiB") && reason.contains("access control"),
        "{reason}"
    );
    // No backup of it at all; the other file's backup has its whole ACL.
    let backups = support::contents(&lake.vault("lake")).await;
    assert!(
        !backups.keys().any(|name| name.starts_with("big_")),
        "{:?}",
        backups.keys()
    );
    let small = backups
        .keys()
        .find(|name| name.starts_with("small_"))
        .expect("small.csv is backed up");
    let (_, _, metadata) = support::properties(&lake.vault("lake"), small).await;
    let stamped = lakebackup::core::stamp::stamped_access(&metadata).expect("its ACL is kept");
    assert_eq!(
        stamped.acl,
        proxied
            .blob
            .hns()
            .unwrap()
            .access_control("source", "lake", "small.csv")
            .unwrap()
            .acl()
    );
}
