//! Directories of a lake with a hierarchical namespace are versions of their own: every one,
//! empty ones included, is backed up as an empty backup stamped as a directory, with its owner,
//! group, permissions and ACL — its default ACL included — and an ACL-only change on a
//! directory is a new version.

use std::collections::{BTreeMap, HashMap};

use lakebackup::core::{naming::parse_backup_blob_name, stamp};

use super::backup::lake_on_stand_in;
use crate::support::{self, proxy::ProxiedAzurite, Lake};

/// A default ACL (with a named user, so the permissions carry `+`).
pub(super) const DEFAULT_ACL: &str =
    "user::rwx,user:5d0e-u1:r-x,group::r-x,mask::r-x,other::---,default:user::rwx,\
     default:user:5d0e-u1:r-x,default:group::r-x,default:mask::r-x,default:other::---";

/// Creates directory `path` of container `lake` through the dfs endpoint, with `headers`.
pub(super) async fn make_directory(proxied: &ProxiedAzurite, path: &str, headers: &[(&str, &str)]) {
    let made = super::dfs(
        proxied,
        "PUT",
        &format!("lake/{path}"),
        "resource=directory",
        headers,
    )
    .await;
    assert_eq!(made.status, 201, "{path}: {}", made.body);
}

/// Sets `headers` (`x-ms-acl`, `x-ms-owner`...) on `path` of container `lake`.
pub(super) async fn set_access(proxied: &ProxiedAzurite, path: &str, headers: &[(&str, &str)]) {
    let set = super::dfs(
        proxied,
        "PATCH",
        &format!("lake/{path}"),
        "action=setAccessControl",
        headers,
    )
    .await;
    assert_eq!(set.status, 200, "{path}: {}", set.body);
}

/// The access control the stand-in keeps for `path`: (owner, group, permissions, ACL).
pub(super) fn access_now(proxied: &ProxiedAzurite, path: &str) -> (String, String, String, String) {
    let access = proxied
        .blob
        .hns()
        .unwrap()
        .access_control("source", "lake", path)
        .unwrap_or_else(|| panic!("{path} has no access control"));
    (
        access.owner.clone(),
        access.group.clone(),
        access.permissions(),
        access.acl(),
    )
}

/// Each backup in `lakebak` of a directory: source name → the access controls its backups
/// record, oldest first by name; and the user metadata of each.
async fn directory_backups(
    lake: &Lake,
) -> BTreeMap<String, Vec<((String, String, String, String), HashMap<String, String>)>> {
    let vault = lake.vault("lake");
    let mut found: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for (backup, bytes) in support::contents(&vault).await {
        let state = vault.blob(&backup).state().await.unwrap().unwrap();
        // The stamp's `lakebackup_resource_type` (read by its key, as the backup account has it).
        let directory = state
            .metadata()
            .iter()
            .any(|(k, v)| k == "lakebackup_resource_type" && v == "directory");
        if !directory {
            continue;
        }
        assert!(bytes.is_empty(), "{backup} holds bytes");
        let access = stamp::stamped_access(state.metadata())
            .unwrap_or_else(|| panic!("{backup} records no access control"));
        let source = parse_backup_blob_name(&backup).unwrap().source_name;
        found.entry(source).or_default().push((
            (access.owner, access.group, access.permissions, access.acl),
            stamp::user_metadata(state.metadata()),
        ));
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn every_directory_empty_ones_included_is_a_version_with_its_default_acl() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    // An empty directory with a default ACL, an empty one with an owner of its own, and the
    // directories a file's upload makes.
    make_directory(&proxied, "🦀", &[("x-ms-acl", DEFAULT_ACL)]).await;
    make_directory(&proxied, "🦀/空｡", &[]).await;
    make_directory(
        &proxied,
        "日本",
        &[("x-ms-owner", "o-1"), ("x-ms-group", "g-1")],
    )
    .await;
    support::upload(&lake.lake("lake"), "x｡y/東京/a.csv", b"a").await;
    let listed = ["x｡y", "x｡y/東京", "🦀", "🦀/空｡", "日本"];

    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    // And the root directory (`""`: `hns::root`).
    let directories = listed.len() as u64 + 1;
    assert_eq!(
        first.totals.get("directories"),
        directories,
        "{:?}",
        first.totals
    );
    assert_eq!(first.totals.get("directory_backups"), directories);
    assert_eq!(
        first.totals.blobs, 1,
        "directories are not counted as files"
    );
    assert_eq!(first.totals.backups_copied, 1);

    let backed_up = directory_backups(&lake).await;
    let mut names: Vec<&str> = backed_up.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut expected = listed.to_vec();
    expected.push("");
    expected.sort_unstable();
    assert_eq!(names, expected);
    for (name, versions) in &backed_up {
        assert_eq!(versions.len(), 1, "{name}");
        let (access, user) = &versions[0];
        assert_eq!(access, &access_now(&proxied, name), "{name}");
        assert!(
            user.is_empty(),
            "{name}: the folder mark stays out: {user:?}"
        );
    }
    // The default ACL is kept with the directory, and its empty child inherited it.
    assert!(backed_up["🦀"][0]
        .0
         .3
        .contains(",default:user:5d0e-u1:r-x,"));
    assert!(backed_up["🦀/空｡"][0]
        .0
         .3
        .contains("default:user:5d0e-u1:r-x"));
    assert_eq!(backed_up["日本"][0].0 .0, "o-1");

    // Nothing changed: nothing is written again.
    let again = support::produce(&lake.app, "lake").await;
    assert!(again.succeeded(), "{:?}", again.notes);
    assert_eq!(
        again.totals.get("directory_backups"),
        0,
        "{:?}",
        again.totals
    );
    assert_eq!(again.totals.get("directories"), directories);
    let counts = proxied.blob.hns().unwrap().counts();
    assert_eq!((counts.snapshots, counts.tag_requests), (0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acl_only_change_on_a_directory_is_a_new_version() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    make_directory(&proxied, "🦀/空", &[("x-ms-acl", DEFAULT_ACL)]).await;
    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    let before = access_now(&proxied, "🦀/空");

    support::next_second().await;
    let changed = "user::rwx,group::r-x,other::---,default:user::rwx,default:group::---,\
                   default:other::---";
    set_access(&proxied, "🦀/空", &[("x-ms-acl", changed)]).await;
    let second = support::produce(&lake.app, "lake").await;
    assert!(second.succeeded(), "{:?}", second.notes);
    assert_eq!(
        second.totals.get("directory_backups"),
        1,
        "{:?}",
        second.totals
    );
    let mut recorded: Vec<_> = directory_backups(&lake).await["🦀/空"]
        .iter()
        .map(|(access, _)| access.clone())
        .collect();
    recorded.sort();
    let mut expected = vec![before, access_now(&proxied, "🦀/空")];
    expected.sort();
    assert_eq!(recorded, expected);
    assert!(expected.iter().any(|a| a.3 == changed));
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_reports_a_directory_whose_acl_changed_and_one_never_backed_up() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    make_directory(&proxied, "🦀/空", &[("x-ms-acl", DEFAULT_ACL)]).await;
    support::upload(&lake.lake("lake"), "日本/a.csv", b"a").await;
    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    let verify = || {
        let (code, _, summary) =
            crate::support::worker::run_lines(&lake.settings(), &["verify", "--container", "lake"]);
        let mut gaps: Vec<(String, String)> = summary["gaps"]
            .as_array()
            .unwrap_or_else(|| panic!("{summary}"))
            .iter()
            .map(|g| {
                let field = |f: &str| g[f].as_str().unwrap().to_owned();
                (field("blob"), field("problem"))
            })
            .collect();
        gaps.sort();
        (code, summary, gaps)
    };
    let (code, clean, gaps) = verify();
    assert_eq!((code, gaps), (0, Vec::new()), "{clean}");
    assert_eq!(clean["directories"], 3 + 1, "and the root: {clean}");
    assert_eq!(clean["blobs"], 1, "{clean}");

    set_access(
        &proxied,
        "🦀/空",
        &[("x-ms-acl", "user::rwx,group::---,other::---")],
    )
    .await;
    make_directory(&proxied, "🦀/新", &[]).await;
    let (code, found, gaps) = verify();
    assert_eq!(code, 1, "{found}");
    assert_eq!(
        gaps,
        [
            ("🦀/新".to_owned(), "no_backup".to_owned()),
            ("🦀/空".to_owned(), "access_differs".to_owned()),
        ],
        "{found}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_created_event_backs_up_the_directory_with_its_acl() {
    use lakebackup::{app::WorkQueue, engine::events::EventOutcome};
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    make_directory(&proxied, "🦀/空｡", &[("x-ms-acl", DEFAULT_ACL)]).await;
    let event = serde_json::json!({
        "topic": "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/source",
        "subject": "/blobServices/default/containers/lake/blobs/🦀/空｡",
        "eventType": "Microsoft.Storage.DirectoryCreated",
        "eventTime": support::now_rfc3339(),
        "id": "created-1",
        "data": {
            "api": "CreateDirectory",
            "url": "https://source.dfs.core.windows.net/lake/%F0%9F%A6%80/%E7%A9%BA%EF%BD%A1",
            "sequencer": "00000000000000000000000000000001"
        },
        "dataVersion": "", "metadataVersion": "1"
    })
    .to_string();
    let deliver = || async {
        support::deliver_to::<EventOutcome>(&lake.app, WorkQueue::Events, &event, 1)
            .await
            .unwrap()
            .done()
    };
    let outcome = deliver().await;
    assert!(
        matches!(&outcome, EventOutcome::Protected { backup, .. } if backup == "backed_up"),
        "{outcome:?}"
    );
    let backed_up = directory_backups(&lake).await;
    assert_eq!(backed_up.keys().collect::<Vec<_>>(), ["🦀/空｡"]);
    assert_eq!(backed_up["🦀/空｡"][0].0, access_now(&proxied, "🦀/空｡"));
    // A repeated event writes nothing new.
    let again = deliver().await;
    assert!(
        matches!(&again, EventOutcome::Protected { backup, .. } if backup == "already_backed_up"),
        "{again:?}"
    );
    assert_eq!(directory_backups(&lake).await["🦀/空｡"].len(), 1);
}
