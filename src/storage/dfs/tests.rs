//! The dfs client's pure parts: its endpoint, its encodings, which refusals it retries.

use super::*;

#[test]
fn the_dfs_endpoint_is_the_blob_endpoint_with_dfs_for_blob() {
    let dfs = |blob: &str| dfs_of_blob_endpoint(&Url::parse(blob).unwrap()).to_string();
    assert_eq!(
        dfs("https://lake.blob.core.windows.net/"),
        "https://lake.dfs.core.windows.net/"
    );
    assert_eq!(
        dfs("https://lake.blob.core.chinacloudapi.cn"),
        "https://lake.dfs.core.chinacloudapi.cn/"
    );
    assert_eq!(
        dfs("http://127.0.0.1:10000/devstoreaccount1"),
        "http://127.0.0.1:10000/devstoreaccount1"
    );
    assert_eq!(dfs("http://localhost:9/acct"), "http://localhost:9/acct");
}

#[test]
fn user_metadata_is_sent_as_base64_properties() {
    let metadata = HashMap::from([
        ("b".to_owned(), "東京".to_owned()),
        ("a".to_owned(), "x".to_owned()),
    ]);
    assert_eq!(x_ms_properties(&metadata), "a=eA==,b=5p2x5Lqs");
}

#[test]
fn an_owner_is_taken_as_refused_on_403_or_a_bad_header_value_not_on_any_400() {
    let answered = |status, code: &str| {
        owner_refusal(&StorageError::refused(
            "set",
            status,
            ErrorCode::parse(code),
        ))
    };
    assert!(answered(403, "AuthorizationPermissionMismatch"));
    assert!(answered(400, "InvalidHeaderValue"));
    assert!(answered(400, "InvalidInput"));
    assert!(!answered(400, "InvalidAccessControlList"));
    assert!(!answered(409, "InvalidHeaderValue"));
    assert!(!answered(412, "ConditionNotMet"));
}

#[test]
fn permissions_are_sent_without_the_extended_acl_mark() {
    assert_eq!(symbolic_permissions("rwxr-x---+"), "rwxr-x---");
    assert_eq!(symbolic_permissions("rwxr-x--t+"), "rwxr-x--t");
    assert_eq!(symbolic_permissions("rwxrwxrwT"), "rwxrwxrwT");
}
