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
//! permissions is the mask; (d) Set Access Control keeps the ETag, or advances Last-Modified
//! (an ACL change's version is named by the ETag and Last-Modified, as seen when the ETag
//! stays: were the ETag to move and Last-Modified not, a restore could bring a later ACL back
//! at an earlier instant); (e) whether the root directory (`{fs}/?action=getAccessControl`)
//! answers with an ETag and Last-Modified (said: the root's version is named by the file
//! system's where it does not); (f) a file's and a directory's access as listed
//! (`include=permissions`) is, byte for byte, what Get Access Control answers (the restore's
//! read-back compares the two), and the root's as its backup records it. The round trip also
//! sets a standing directory's user metadata back (Set Blob Metadata on a directory).

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
    let team = HashMap::from([("owner".to_owned(), "team".to_owned())]);
    account
        .create_directory(fs, "e", None, &team)
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
    root_as_backed_up(app, fs).await;
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
    // And directory e's user metadata changes (Set Blob Metadata, the folder mark kept).
    let later = HashMap::from([
        ("owner".to_owned(), "other".to_owned()),
        ("hdi_isfolder".to_owned(), "true".to_owned()),
    ]);
    let container = app.source.container(fs).unwrap();
    container.blob("e").replace_metadata(&later).await.unwrap();
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
    // The standing directory's user metadata set back through the blob endpoint.
    let (_, _, metadata) = support::properties(&container, "e").await;
    assert_eq!(
        metadata.get("owner").map(String::as_str),
        Some("team"),
        "directory e's metadata (Set Blob Metadata on a directory): {metadata:?}: {summary}"
    );
    assert_eq!(
        metadata.get("hdi_isfolder").map(String::as_str),
        Some("true"),
        "{metadata:?}"
    );
}

/// (f) for the root, which no listing shows: the access its backup records (read with Get
/// Access Control) is what Get Access Control answers now.
async fn root_as_backed_up(app: &App, fs: &str) {
    let level = lakebackup::engine::vault::VaultLevel::of_directory(app, fs, "")
        .await
        .unwrap();
    let recorded = level
        .newest_root()
        .expect("(f) the root is backed up")
        .recorded_access();
    let now = app.source.get_access_control(fs, "").await.unwrap();
    assert_eq!(
        recorded,
        now.map(|root| root.access),
        "(f) the root's access as its backup records it"
    );
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
    // (f) a file's and a directory's access as listed is Get Access Control's, byte for byte.
    let listed_file = listed(&container, "d/", "d/f.csv").await;
    for (path, listed) in [("e", e.properties.access.clone()), ("d/f.csv", listed_file)] {
        let answered = account.get_access_control(fs, path).await.unwrap();
        assert_eq!(
            listed,
            answered.map(|a| a.access),
            "(f) {path}: its access as listed (include=permissions) is what Get Access \
             Control answers (the restore's read-back compares the two)"
        );
    }
    // (d) Set Access Control keeps the ETag, or advances Last-Modified (in the next second,
    // so that an advance shows).
    support::next_second().await;
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
    let advanced = matches!(
        (file.last_modified, after.last_modified),
        (Some(before), Some(after)) if after > before
    );
    assert!(
        after.etag == file.etag || advanced,
        "(d) Set Access Control moved the ETag ({} → {}) without advancing Last-Modified \
         ({:?} → {:?}): an ACL change's version is named by the ETag and Last-Modified, so a \
         restore could bring the later ACL back at an earlier instant",
        file.etag,
        after.etag,
        file.last_modified,
        after.last_modified
    );
    eprintln!(
        "hns::live (d): Set Access Control {} the ETag ({} → {}), Last-Modified {:?} → {:?}",
        if after.etag == file.etag {
            "keeps"
        } else {
            "moves"
        },
        file.etag,
        after.etag,
        file.last_modified,
        after.last_modified
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

/// The access control of `name` as listed (`include=permissions`) in directory `directory`.
async fn listed(
    container: &lakebackup::storage::Container,
    directory: &str,
    name: &str,
) -> Option<Access> {
    let pages = list_directory(
        container,
        ListingScope {
            prefix: Some(directory),
            permissions: true,
            one_level: true,
            ..Default::default()
        },
    )
    .unwrap();
    let pages: Vec<ListingPage<_>> = pages.try_collect().await.unwrap();
    pages
        .into_iter()
        .flat_map(|p| p.entries)
        .find_map(|e| match e {
            ListedEntry::Item(v) if v.name == name => Some(v.properties.access),
            _ => None,
        })
        .expect("(f) listed")
}
