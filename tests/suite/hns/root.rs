//! The root directory of an HNS lake (`/`: owner, group, permissions, access and default
//! ACL), which no listing shows: backed up once a pass as the directory version named `""`
//! (`_{time}_{etag}` at the root of `lakebak`), judged by verify, and set back by a restore
//! `--as-of` — read and written with Get/Set Access Control on the file system's root
//! (`{fs}/?action=...`), as Azure answers it.

use serde_json::Value;

use super::{
    backup::lake_on_stand_in,
    directories::{access_now, set_access},
    restore_exact::restore,
};
use crate::support::{self, worker, Lake};

const FIRST_ACL: &str = "user::rwx,group::r-x,other::---,default:user::rwx,\
                         default:group::r-x,default:other::---";
const LATER_ACL: &str = "user::rwx,user:5d0e-u2:r-x,group::r-x,mask::r-x,other::--x";

/// The names of the root directory's backups in `lakebak`.
async fn root_backups(lake: &Lake) -> Vec<String> {
    let names: Vec<String> = support::contents(&lake.vault("lake"))
        .await
        .into_keys()
        .filter(|name| {
            lakebackup::core::naming::parse_backup_blob_name(name)
                .is_ok_and(|parsed| parsed.source_name.is_empty())
        })
        .collect();
    names
}

fn gaps(summary: &Value) -> Vec<(String, String)> {
    summary["gaps"]
        .as_array()
        .unwrap_or_else(|| panic!("{summary}"))
        .iter()
        .map(|gap| {
            let field = |name: &str| gap[name].as_str().unwrap_or_default().to_owned();
            (field("blob"), field("problem"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_root_directory_is_backed_up_verified_and_restored_as_of_an_instant() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    support::upload(&lake.lake("lake"), "d/f.csv", b"bytes").await;
    set_access(
        &proxied,
        "",
        &[("x-ms-owner", "owner-1"), ("x-ms-acl", FIRST_ACL)],
    )
    .await;
    let at_instant = access_now(&proxied, "");
    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    assert_eq!(root_backups(&lake).await.len(), 1, "the root's one version");
    // Backed up again only when it changes.
    let again = support::produce(&lake.app, "lake").await;
    assert!(again.succeeded(), "{:?}", again.notes);
    assert_eq!(root_backups(&lake).await.len(), 1, "nothing new to keep");
    let settings = lake.settings();
    let (code, _, clean) = worker::run_lines(&settings, &["verify", "--container", "lake"]);
    assert_eq!((code, gaps(&clean)), (0, Vec::new()), "{clean}");
    let instant = support::instant_after_writes().await;

    // After the instant: the root's owner and ACL change (its ETag stays, on the stand-in).
    support::next_second().await;
    set_access(
        &proxied,
        "",
        &[("x-ms-owner", "owner-2"), ("x-ms-acl", LATER_ACL)],
    )
    .await;
    let (code, _, changed) = worker::run_lines(&settings, &["verify", "--container", "lake"]);
    assert_eq!(code, 1, "{changed}");
    assert_eq!(
        gaps(&changed),
        [("/".to_owned(), "access_differs".to_owned())],
        "{changed}"
    );
    let second = support::produce(&lake.app, "lake").await;
    assert!(second.succeeded(), "{:?}", second.notes);
    assert_eq!(root_backups(&lake).await.len(), 2, "its new access kept");
    let later = access_now(&proxied, "");
    assert_ne!(later, at_instant);

    let (code, restored) = restore(&settings, &["--as-of", &instant]);
    assert_eq!(code, 0, "{restored}");
    assert_eq!(access_now(&proxied, ""), at_instant, "{restored}");
    // And a restore to now brings the later access control back.
    let (code, now) = restore(&settings, &[]);
    assert_eq!(code, 0, "{now}");
    assert_eq!(access_now(&proxied, ""), later, "{now}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_root_answered_without_an_etag_is_named_by_its_file_systems() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    // Azure does not document an ETag on the root's Get Access Control answer.
    proxied.blob.hns().unwrap().root_without_etag();
    set_access(&proxied, "", &[("x-ms-acl", FIRST_ACL)]).await;
    let at_instant = access_now(&proxied, "");
    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    let (etag, _) = lake
        .lake("lake")
        .etag_and_modified()
        .await
        .unwrap()
        .unwrap();
    let roots = root_backups(&lake).await;
    assert_eq!(roots.len(), 1, "{roots:?}");
    let parsed = lakebackup::core::naming::parse_backup_blob_name(&roots[0]).unwrap();
    assert_eq!(parsed.etag, etag, "named by the file system's ETag");
    let instant = support::instant_after_writes().await;
    set_access(&proxied, "", &[("x-ms-acl", LATER_ACL)]).await;
    let second = support::produce(&lake.app, "lake").await;
    assert!(second.succeeded(), "{:?}", second.notes);

    let (code, restored) = restore(&lake.settings(), &["--as-of", &instant]);
    assert_eq!(code, 0, "{restored}");
    assert_eq!(access_now(&proxied, ""), at_instant, "{restored}");
}

/// The root's ETag as Get Access Control on the file system's root answers it.
async fn root_etag(proxied: &crate::support::proxy::ProxiedAzurite) -> String {
    let got = super::dfs(proxied, "HEAD", "lake/", "action=getAccessControl", &[]).await;
    assert_eq!(got.status, 200, "{}", got.body);
    got.header("etag").unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_root_whose_etag_moves_with_its_children_gets_a_version_only_when_its_access_changes() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    // Whether Azure moves a directory's ETag when a child is written is not documented: here
    // it does, with every write.
    proxied.blob.hns().unwrap().root_moves_with_children();
    support::upload(&lake.lake("lake"), "a.csv", b"one").await;
    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    assert_eq!(root_backups(&lake).await.len(), 1, "the root's one version");
    let before = root_etag(&proxied).await;
    support::next_second().await;
    support::upload(&lake.lake("lake"), "b.csv", b"two").await;
    assert_ne!(root_etag(&proxied).await, before, "the root's ETag moved");
    let second = support::produce(&lake.app, "lake").await;
    assert!(second.succeeded(), "{:?}", second.notes);
    let roots = root_backups(&lake).await;
    assert_eq!(roots.len(), 1, "its access did not change: {roots:?}");
    // Verify judges the root by its access control, not its ETag.
    let settings = lake.settings();
    let (code, _, clean) = worker::run_lines(&settings, &["verify", "--container", "lake"]);
    assert_eq!((code, gaps(&clean)), (0, Vec::new()), "{clean}");

    support::next_second().await;
    set_access(&proxied, "", &[("x-ms-acl", LATER_ACL)]).await;
    let third = support::produce(&lake.app, "lake").await;
    assert!(third.succeeded(), "{:?}", third.notes);
    assert_eq!(root_backups(&lake).await.len(), 2, "its new access kept");
    let (code, _, clean) = worker::run_lines(&settings, &["verify", "--container", "lake"]);
    assert_eq!((code, gaps(&clean)), (0, Vec::new()), "{clean}");
}
