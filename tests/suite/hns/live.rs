//! Opt-in: the HNS contracts the dfs stand-in assumes, and a backup → ACL change → restore
//! `--as-of` round trip, against a real ADLS Gen2 account. Runs only when
//! `LAKEBACKUP_LIVE_HNS` holds the connection string of an account with a hierarchical
//! namespace (the lake: a uniquely named file system is made there, and deleted after) and
//! `LAKEBACKUP_LIVE_BACKUP` one of another account (the backups, and the jobs' queues); the
//! key of each (SharedKey), so that owners may be set. Unset, it passes saying on stderr that
//! it was skipped and why: it never pretends to have run.
//!
//! The contracts checked (each one the stand-in plays): (a) a directory's listing `<Acl>`
//! (`include=permissions`) carries its `default:` entries; (b) a directory is listed as a blob
//! beside its prefix when it has children; (c) with named entries, the group triplet of the
//! permissions is the mask; (d) whether Set Access Control moves the ETag (said, not judged:
//! the product compares ACLs, never relies on the ETag); (e) whether the root directory
//! (`{fs}/?action=getAccessControl`) answers with an ETag and Last-Modified (said: the root's
//! version is named by the file system's where it does not).

use std::{collections::HashMap, panic::AssertUnwindSafe};

use futures::{FutureExt, TryStreamExt};
use lakebackup::{
    app::App,
    core::properties::Access,
    settings::Settings,
    storage::{
        dfs::AccessNow,
        listing::{list_directory, ListedEntry, ListingPage, ListingScope},
        StorageAccount,
    },
};

use crate::support::{self, worker};

/// The live accounts' settings, or why the test is skipped.
fn live_settings() -> Result<HashMap<String, String>, String> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| format!("{name} is not set"))
    };
    let (lake, backup) = (var("LAKEBACKUP_LIVE_HNS")?, var("LAKEBACKUP_LIVE_BACKUP")?);
    Ok(HashMap::from([
        ("SOURCE_STORAGE".to_owned(), lake),
        ("BACKUP_STORAGE".to_owned(), backup.clone()),
        ("AzureWebJobsStorage".to_owned(), backup),
    ]))
}

/// A named principal's object id (any GUID: ADLS takes it without looking it up).
const NAMED: &str = "5d0e5d0e-0000-4000-8000-00000000a11c";

fn access(owner: &str, acl: &str) -> Access {
    Access {
        owner: owner.into(),
        group: "$superuser".into(),
        permissions: String::new(),
        acl: acl.into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn live_adls_gen2_round_trip_and_the_stand_ins_contracts() {
    let settings = match live_settings() {
        Ok(settings) => settings,
        Err(why) => {
            eprintln!(
                "SKIPPED hns::live: {why}; set LAKEBACKUP_LIVE_HNS (an ADLS Gen2 account's \
                 connection string) and LAKEBACKUP_LIVE_BACKUP (another account's) to run it"
            );
            return;
        }
    };
    let app = App::from_settings(&Settings::from_pairs(settings.clone())).expect("settings");
    let unique = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
    let fs = format!("lbklive{unique:x}{:x}", std::process::id());
    let lake = app.source.container(&fs).unwrap();
    lake.create().await.expect("create the file system");
    let body = AssertUnwindSafe(round_trip(&app, &settings, &fs)).catch_unwind();
    let outcome = body.await;
    // Cleaned up whatever happened.
    let _ = lake.delete().await;
    if let Ok(vault) = app.backup.container(&format!("{fs}bak")) {
        let _ = vault.delete().await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn round_trip(app: &App, settings: &HashMap<String, String>, fs: &str) {
    let account: &StorageAccount = &app.source;
    let none = HashMap::new();
    account
        .create_directory(fs, "d", None, &none)
        .await
        .unwrap();
    account
        .create_directory(fs, "e", None, &none)
        .await
        .unwrap();
    support::upload(
        &app.source.container(fs).unwrap(),
        "d/f.csv",
        b"at the instant",
    )
    .await;
    let set = |path: &'static str, wanted: Access| async move {
        account
            .set_access_control(fs, path, &wanted, AccessNow::default())
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    };
    let defaults = ",default:user::rwx,default:group::r-x,default:other::---";
    set(
        "e",
        access(
            "$superuser",
            &format!("user::rwx,group::r-x,other::---{defaults}"),
        ),
    )
    .await;
    let named = format!("user::rw-,user:{NAMED}:r--,group::r--,mask::rw-,other::---");
    set("d/f.csv", access("$superuser", &named)).await;
    contracts(account, fs).await;

    let first = support::produce(app, fs).await;
    assert!(first.succeeded(), "{:?}", first.notes);
    let paths = ["", "d", "e", "d/f.csv"];
    let mut at_instant = Vec::new();
    for path in paths {
        at_instant.push(
            account
                .get_access_control(fs, path)
                .await
                .unwrap()
                .unwrap()
                .access,
        );
    }
    let instant = support::instant_after_writes().await;

    // After the instant: new bytes, and new ACLs on the root, a directory and the file.
    support::upload(&app.source.container(fs).unwrap(), "d/f.csv", b"later").await;
    set(
        "d/f.csv",
        access("$superuser", "user::rw-,group::---,other::---"),
    )
    .await;
    set("e", access("$superuser", "user::rwx,group::---,other::---")).await;
    set("", access("$superuser", "user::rwx,group::r-x,other::--x")).await;
    let second = support::produce(app, fs).await;
    assert!(second.succeeded(), "{:?}", second.notes);

    let args = [
        "restore",
        "--container",
        fs,
        "--from",
        "backup",
        "--as-of",
        &instant,
    ];
    let (code, _, summary) = worker::run_lines(settings, &args);
    assert_eq!(code, 0, "{summary}");
    let bytes = support::download(&app.source.container(fs).unwrap(), "d/f.csv").await;
    assert_eq!(bytes, b"at the instant", "{summary}");
    for (path, was) in paths.iter().zip(&at_instant) {
        let now = account
            .get_access_control(fs, path)
            .await
            .unwrap()
            .unwrap()
            .access;
        assert_eq!(&now, was, "{path:?}: {summary}");
    }
}

/// The contracts the stand-in plays, on the paths `round_trip` made.
async fn contracts(account: &StorageAccount, fs: &str) {
    let container = account.container(fs).unwrap();
    let pages = list_directory(
        &container,
        ListingScope {
            permissions: true,
            one_level: true,
            ..Default::default()
        },
    )
    .unwrap();
    let pages: Vec<ListingPage<_>> = pages.try_collect().await.unwrap();
    let entries: Vec<ListedEntry<_>> = pages.into_iter().flat_map(|p| p.entries).collect();
    let item = |name: &str| {
        entries.iter().find_map(|e| match e {
            ListedEntry::Item(v) if v.name == name => Some(v.clone()),
            _ => None,
        })
    };
    // (a) the listing's ACL of a directory carries its default entries.
    let e = item("e").expect("(a) directory e is listed");
    let acl = e
        .properties
        .access
        .as_ref()
        .map(|a| a.acl.clone())
        .unwrap_or_default();
    assert!(acl.contains("default:"), "(a) its listed ACL: {acl}");
    // (b) a directory with children is listed as a blob beside its prefix.
    assert!(
        item("d").is_some_and(|d| d.is_directory_placeholder()),
        "(b) {entries:?}"
    );
    assert!(
        entries.contains(&ListedEntry::Directory("d/".into())),
        "(b) {entries:?}"
    );
    // (c) with named entries, the group triplet of the permissions is the mask.
    let file = account
        .get_access_control(fs, "d/f.csv")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        &file.access.permissions[3..6],
        "rw-",
        "(c) {:?}",
        file.access
    );
    // (d) whether Set Access Control moves the ETag.
    let unchanged = access(
        &file.access.owner,
        &file.access.acl.replace("other::---", "other::r--"),
    );
    let now = AccessNow::default();
    account
        .set_access_control(fs, "d/f.csv", &unchanged, now)
        .await
        .unwrap();
    let after = account
        .get_access_control(fs, "d/f.csv")
        .await
        .unwrap()
        .unwrap();
    eprintln!(
        "hns::live (d): Set Access Control {} the ETag ({} → {})",
        if after.etag == file.etag {
            "keeps"
        } else {
            "moves"
        },
        file.etag,
        after.etag
    );
    // (e) whether the root answers with an ETag and Last-Modified (else its version is named
    // by the file system's): said, not judged.
    let root = account
        .get_access_control(fs, "")
        .await
        .unwrap()
        .expect("(e) the root");
    eprintln!(
        "hns::live (e): the root's Get Access Control answers ETag {:?}, Last-Modified {:?}",
        root.etag, root.last_modified
    );
}
