//! The dfs stand-in answers as Azure documents an HNS account: what it refuses, the directories
//! it makes, the access control it keeps and inherits, what it lists and deletes.

use lakebackup::{app::App, settings::Settings, storage::testing::NewBlob};

use super::{dfs, hns_lake};
use crate::support::{self, Azurite};

async fn lake_app(proxied: &crate::support::proxy::ProxiedAzurite) -> App {
    let app = App::from_settings(&Settings::from_pairs(proxied.settings())).unwrap();
    app.source
        .container("lake")
        .unwrap()
        .create()
        .await
        .unwrap();
    app
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stand_in_says_hns_refuses_snapshots_and_tags_and_makes_parent_directories() {
    let azurite = Azurite::start();
    let proxied = hns_lake(&azurite);
    let app = lake_app(&proxied).await;
    let hns = proxied.blob.hns().unwrap();
    let lake = app.source.container("lake").unwrap();

    let info = dfs(&proxied, "GET", "", "restype=account&comp=properties", &[]).await;
    assert_eq!(info.status, 200, "{}", info.body);
    assert_eq!(info.header("x-ms-is-hns-enabled"), Some("true"));

    // A file's missing parents become directories: empty blobs marked hdi_isfolder.
    let name = "年/🦀 x｡y/a.csv";
    support::upload(&lake, name, b"bytes").await;
    let listed = support::list_all(&lake).await;
    let names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for directory in ["年", "年/🦀 x｡y"] {
        assert!(names.contains(&directory), "{names:?}");
        let state = lake.blob(directory).state().await.unwrap().unwrap();
        assert_eq!(state.version.content_length, 0);
        assert_eq!(
            state.metadata().get("hdi_isfolder").map(String::as_str),
            Some("true"),
            "{directory}"
        );
        assert!(
            hns.access_control("source", "lake", directory)
                .unwrap()
                .directory
        );
    }
    assert_eq!(hns.counts().directories_created, 2);

    // Snapshots and tags are refused with 409, and never reach Azurite.
    let snapshot = lake.blob(name).take_snapshot(None).await.unwrap_err();
    assert_eq!(snapshot.status, Some(409), "{snapshot}");
    let tags = [("k".to_owned(), "v".to_owned())].into_iter().collect();
    let tagged = lake.blob(name).set_tags(&tags).await.unwrap_err();
    assert_eq!(tagged.status, Some(409), "{tagged}");
    let written = lake
        .blob("tagged.csv")
        .upload_with(b"x".to_vec(), &NewBlob::with_tags([("k", "v")]))
        .await
        .unwrap_err();
    assert_eq!(written.status, Some(409), "{written}");
    let counts = hns.counts();
    assert_eq!(
        (counts.snapshots, counts.tag_requests),
        (1, 2),
        "{counts:?}"
    );
    assert!(support::list_all(&lake)
        .await
        .iter()
        .all(|(n, s)| s.is_none() && n != "tagged.csv"));

    // The backup account is flat, and keeps its snapshots.
    let vault = app.backup.container("vault").unwrap();
    vault.create().await.unwrap();
    support::upload(&vault, "a/b.csv", b"x").await;
    assert_eq!(support::list_all(&vault).await.len(), 1);
    vault.blob("a/b.csv").take_snapshot(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn access_control_is_kept_per_path_inherited_at_create_listed_and_deleted_recursively() {
    let azurite = Azurite::start();
    let proxied = hns_lake(&azurite);
    let app = lake_app(&proxied).await;
    let lake = app.source.container("lake").unwrap();

    // A directory with a default ACL: files made under it afterwards inherit it.
    let acl = "user::rwx,group::r-x,other::---,default:user::rwx,default:user:5d0e-u1:r-x,\
               default:group::r-x,default:mask::rwx,default:other::---";
    let made = dfs(
        &proxied,
        "PUT",
        "lake/raw",
        "resource=directory",
        &[("x-ms-acl", acl)],
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let again = dfs(
        &proxied,
        "PUT",
        "lake/raw",
        "resource=directory",
        &[("if-none-match", "*")],
    )
    .await;
    assert_eq!(again.status, 409);
    assert!(again.body.contains("PathAlreadyExists"), "{}", again.body);
    support::upload(&lake, "raw/日本/a.csv", b"a").await;
    let read = dfs(
        &proxied,
        "HEAD",
        "lake/raw/日本/a.csv",
        "action=getAccessControl",
        &[],
    )
    .await;
    assert_eq!(read.status, 200);
    assert_eq!(read.header("x-ms-owner"), Some("$superuser"));
    assert_eq!(
        read.header("x-ms-acl"),
        Some("user::rw-,user:5d0e-u1:r-x,group::r-x,mask::rw-,other::---")
    );
    assert_eq!(read.header("x-ms-permissions"), Some("rw-rw----+"));
    let directory = dfs(
        &proxied,
        "HEAD",
        "lake/raw/日本",
        "action=getAccessControl",
        &[],
    )
    .await;
    assert!(
        directory
            .header("x-ms-acl")
            .unwrap()
            .contains("default:user:5d0e-u1:r-x"),
        "a new directory inherits the default ACL as its own: {:?}",
        directory.header("x-ms-acl")
    );

    // Set Access Control changes what is read, and a bad value is refused.
    let set = dfs(
        &proxied,
        "PATCH",
        "lake/raw/日本/a.csv",
        "action=setAccessControl",
        &[
            ("x-ms-owner", "o-2"),
            ("x-ms-group", "g-2"),
            ("x-ms-permissions", "rwxr-x--T"),
        ],
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.body);
    let both = dfs(
        &proxied,
        "PATCH",
        "lake/raw/日本/a.csv",
        "action=setAccessControl",
        &[
            ("x-ms-permissions", "0640"),
            ("x-ms-acl", "user::rw-,group::r--,other::---"),
        ],
    )
    .await;
    assert_eq!(both.status, 400);
    let read = dfs(
        &proxied,
        "HEAD",
        "lake/raw/日本/a.csv",
        "action=getAccessControl",
        &[],
    )
    .await;
    assert_eq!(read.header("x-ms-owner"), Some("o-2"));
    assert_eq!(read.header("x-ms-group"), Some("g-2"));
    assert_eq!(read.header("x-ms-permissions"), Some("rwxr-x--T+"));
    let missing = dfs(
        &proxied,
        "HEAD",
        "lake/raw/none.csv",
        "action=getAccessControl",
        &[],
    )
    .await;
    assert_eq!(missing.status, 404);

    // A listing with include=permissions says each path's.
    let listed = dfs(
        &proxied,
        "GET",
        "lake",
        "restype=container&comp=list&include=permissions,metadata",
        &[],
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert!(
        listed
            .body
            .contains("<Owner>o-2</Owner><Group>g-2</Group><Permissions>rwxr-x--T+</Permissions>"),
        "{}",
        listed.body
    );
    assert_eq!(
        listed
            .body
            .matches("<ResourceType>directory</ResourceType>")
            .count(),
        2,
        "{}",
        listed.body
    );
    assert_eq!(
        listed
            .body
            .matches("<ResourceType>file</ResourceType>")
            .count(),
        1
    );
    let old = dfs(
        &proxied,
        "GET",
        "lake",
        "restype=container&comp=list&include=permissions",
        &[("x-ms-version", "2020-04-08")],
    )
    .await;
    assert_eq!(
        old.status, 400,
        "permissions are listed from service version 2020-06-12 on"
    );

    // A non-empty directory goes only recursively, everything under it with it.
    let refused = dfs(&proxied, "DELETE", "lake/raw", "recursive=false", &[]).await;
    assert_eq!(refused.status, 409);
    assert!(
        refused.body.contains("DirectoryNotEmpty"),
        "{}",
        refused.body
    );
    let deleted = dfs(&proxied, "DELETE", "lake/raw", "recursive=true", &[]).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(support::list_all(&lake).await, Vec::new());
    let gone = dfs(&proxied, "HEAD", "lake/raw", "action=getAccessControl", &[]).await;
    assert_eq!(gone.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_signed_with_another_key_is_refused() {
    let azurite = Azurite::start();
    let proxied = hns_lake(&azurite);
    let _app = lake_app(&proxied).await;
    // The signature covers x-ms-version: sending another one than was signed breaks it.
    let forged = dfs(&proxied, "PUT", "lake/d", "resource=directory", &[]).await;
    assert_eq!(forged.status, 201);
    let mut url = url::Url::parse(&proxied.blob.url()).unwrap();
    url.set_path("/source/lake/e");
    url.set_query(Some("resource=directory"));
    let unsigned = reqwest::Client::new()
        .put(url)
        .header("x-ms-version", "2026-04-06")
        .header("authorization", "SharedKey source:AAAA")
        .body(Vec::<u8>::new())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status().as_u16(), 403);
}
