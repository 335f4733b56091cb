//! `lakebackup verify` on a lake with a hierarchical namespace (the dfs stand-in), the real
//! binary: no snapshot is asked of such a lake, and a file whose access control changed since
//! its backup (an ACL change keeps the ETag) is reported as a problem of its own.

use serde_json::Value;

use super::backup::lake_on_stand_in;
use crate::support::{self, worker};

/// The summary of `lakebackup verify --container lake`, and each gap as (blob, problem).
fn verify(
    settings: &std::collections::HashMap<String, String>,
) -> (i32, Value, Vec<(String, String)>) {
    let (code, lines, summary) = worker::run_lines(settings, &["verify", "--container", "lake"]);
    let gaps: Vec<(String, String)> = summary["gaps"]
        .as_array()
        .unwrap_or_else(|| panic!("{summary}"))
        .iter()
        .map(|gap| {
            (
                gap["blob"].as_str().unwrap().to_owned(),
                gap["problem"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(lines.len(), gaps.len(), "a line per gap: {lines:?}");
    (code, summary, gaps)
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_reports_exactly_the_file_whose_acl_changed_since_its_backup() {
    let (lake, proxied) = lake_on_stand_in(&[]).await;
    let container = lake.lake("lake");
    let names = ["🦀/a.csv", "日本/東京/b.txt", "x｡y.csv"];
    for name in names {
        support::upload(&container, name, name.as_bytes()).await;
    }
    let first = support::produce(&lake.app, "lake").await;
    assert!(first.succeeded(), "{:?}", first.notes);
    assert_eq!(first.totals.backups_copied, names.len() as u64);

    // Nothing changed: no gap at all (no snapshot is missing on a lake that has none).
    let (code, clean, gaps) = verify(&lake.settings());
    assert_eq!((code, gaps), (0, Vec::new()), "{clean}");
    assert_eq!(clean["status"], "ok");
    assert_eq!(clean["backed_up"], names.len() as u64);
    assert_eq!(clean["without_snapshot"], 0);
    assert_eq!(clean["access_differs"], 0);

    // One file's ACL changed (its ETag stays): that file, that problem, nothing else.
    let etag_of = |name: &'static str| {
        let blob = container.blob(name);
        async move { blob.state().await.unwrap().unwrap().version.etag }
    };
    let before = etag_of("日本/東京/b.txt").await;
    // Its backup again is named at the second a pass sees it: not the first backup's second.
    support::next_second().await;
    let acl = "user::rw-,user:5d0e-u2:rw-,group::r--,mask::rw-,other::---";
    let changed = super::dfs(
        &proxied,
        "PATCH",
        "lake/日本/東京/b.txt",
        "action=setAccessControl",
        &[("x-ms-acl", acl)],
    )
    .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(
        etag_of("日本/東京/b.txt").await,
        before,
        "an ACL change keeps the ETag"
    );

    let (code, found, gaps) = verify(&lake.settings());
    assert_eq!(code, 1, "{found}");
    assert_eq!(found["status"], "gaps");
    assert_eq!(
        gaps,
        [("日本/東京/b.txt".to_owned(), "access_differs".to_owned())]
    );
    assert_eq!(found["access_differs"], 1);
    assert_eq!(
        found["backed_up"],
        names.len() as u64,
        "its bytes are backed up"
    );
    let detail = found["gaps"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("ACL {acl} (its backup records ")),
        "{detail}"
    );

    // Backed up again (an ACL-only change is a version), verify finds nothing.
    let again = support::produce(&lake.app, "lake").await;
    assert_eq!(again.totals.backups_copied, 1, "{:?}", again.totals);
    let (code, clean, gaps) = verify(&lake.settings());
    assert_eq!((code, gaps), (0, Vec::new()), "{clean}");
}
