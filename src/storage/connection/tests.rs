//! Unit tests of the connections read as Azure Functions reads them.

use super::*;

const KEY: &str = "c2VjcmV0LWtleS1ieXRlcw==";

fn parse(value: &str) -> Result<StorageConnection, SettingsError> {
    StorageConnection::from_settings("CONN", &Settings::from_pairs([("CONN", value)]))
}

#[test]
fn development_storage_points_at_azurite_defaults() {
    let c = parse("UseDevelopmentStorage=true").unwrap();
    assert_eq!(
        c.blob_endpoint.unwrap().as_str(),
        "http://127.0.0.1:10000/devstoreaccount1"
    );
    assert_eq!(
        c.queue_endpoint.unwrap().as_str(),
        "http://127.0.0.1:10001/devstoreaccount1"
    );
    assert!(matches!(c.auth, StorageAuth::SharedKey { ref account, .. } if account == DEV_ACCOUNT));
}

#[test]
fn account_key_with_protocol_and_suffix_derives_endpoints() {
    let c = parse(&format!(
        "DefaultEndpointsProtocol=https;AccountName=lake;AccountKey={KEY};EndpointSuffix=core.chinacloudapi.cn"
    ))
    .unwrap();
    assert_eq!(
        c.blob_endpoint.unwrap().as_str(),
        "https://lake.blob.core.chinacloudapi.cn/"
    );
    assert_eq!(
        c.queue_endpoint.unwrap().as_str(),
        "https://lake.queue.core.chinacloudapi.cn/"
    );
    match c.auth {
        StorageAuth::SharedKey { account, key } => {
            assert_eq!(account, "lake");
            assert_eq!(key.bytes(), b"secret-key-bytes");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn explicit_endpoints_win() {
    let c = parse(&format!(
        "AccountName=source;AccountKey={KEY};BlobEndpoint=http://127.0.0.1:5000/source;"
    ))
    .unwrap();
    assert_eq!(
        c.blob_endpoint.unwrap().as_str(),
        "http://127.0.0.1:5000/source"
    );
    assert_eq!(
        c.queue_endpoint.unwrap().as_str(),
        "https://source.queue.core.windows.net/"
    );
}

#[test]
fn sas_connection_keeps_the_signature_secret() {
    let c = parse(
        "BlobEndpoint=https://lake.blob.core.windows.net;SharedAccessSignature=?sv=2024&sig=abc%3D",
    )
    .unwrap();
    match &c.auth {
        StorageAuth::Sas { query } => assert_eq!(query.secret(), "sv=2024&sig=abc%3D"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(!format!("{c:?}").contains("abc"));
}

#[test]
fn identity_based_settings() {
    let settings = Settings::from_pairs([
        ("CONN__blobServiceUri", "https://lake.blob.core.windows.net"),
        ("CONN__accountName", "lake"),
        ("CONN__clientId", "1234"),
    ]);
    let c = StorageConnection::from_settings("CONN", &settings).unwrap();
    assert_eq!(
        c.blob_endpoint.unwrap().as_str(),
        "https://lake.blob.core.windows.net/"
    );
    assert_eq!(
        c.queue_endpoint.unwrap().as_str(),
        "https://lake.queue.core.windows.net/"
    );
    assert!(matches!(c.auth, StorageAuth::Identity { client_id: Some(ref id) } if id == "1234"));
    let http = Settings::from_pairs([("CONN__blobServiceUri", "http://lake")]);
    assert!(StorageConnection::from_settings("CONN", &http).is_err());
}

#[test]
fn an_identity_connection_may_name_its_dfs_endpoint() {
    let settings = Settings::from_pairs([
        ("CONN__blobServiceUri", "https://lake.blob.core.windows.net"),
        ("CONN__dfsServiceUri", "https://lake-dfs.example.net"),
    ]);
    let c = StorageConnection::from_settings("CONN", &settings).unwrap();
    assert_eq!(
        c.dfs_endpoint.unwrap().as_str(),
        "https://lake-dfs.example.net/"
    );
    let unset =
        Settings::from_pairs([("CONN__blobServiceUri", "https://lake.blob.core.windows.net")]);
    assert!(StorageConnection::from_settings("CONN", &unset)
        .unwrap()
        .dfs_endpoint
        .is_none());
    // A token never goes over http, to the dfs endpoint either.
    let http = Settings::from_pairs([
        ("CONN__blobServiceUri", "https://lake.blob.core.windows.net"),
        ("CONN__dfsServiceUri", "http://lake-dfs.example.net"),
    ]);
    let refused = StorageConnection::from_settings("CONN", &http).unwrap_err();
    assert!(refused.to_string().contains("https"), "{refused}");
}

#[test]
fn a_connection_string_beside_identity_settings_is_named_as_the_one_used() {
    let key = "a2V5IGZvciB0ZXN0cw==";
    let both = Settings::from_pairs([
        (
            "AzureWebJobsStorage",
            format!("AccountName=f;AccountKey={key}"),
        ),
        ("AzureWebJobsStorage__accountName", "f".to_owned()),
        (
            "AzureWebJobsStorage__credential",
            "managedidentity".to_owned(),
        ),
    ]);
    let used = StorageConnection::from_settings("AzureWebJobsStorage", &both).unwrap();
    assert!(matches!(used.auth, StorageAuth::SharedKey { .. }));
    let warning = StorageConnection::shadowed("AzureWebJobsStorage", &both).unwrap();
    assert!(
        warning
            .contains("AzureWebJobsStorage__accountName, AzureWebJobsStorage__credential ignored"),
        "{warning}"
    );
    assert!(
        warning.contains("--setting-names AzureWebJobsStorage"),
        "{warning}"
    );
    assert!(!warning.contains(key), "{warning}");
    let identity_only = Settings::from_pairs([("AzureWebJobsStorage__accountName", "f")]);
    assert_eq!(
        StorageConnection::shadowed("AzureWebJobsStorage", &identity_only),
        None
    );
    let string_only = Settings::from_pairs([("AzureWebJobsStorage", "UseDevelopmentStorage=true")]);
    assert_eq!(
        StorageConnection::shadowed("AzureWebJobsStorage", &string_only),
        None
    );
}

#[test]
fn bad_settings_name_the_setting_and_hide_the_value() {
    let cases = [
        (
            "AccountName=lake;AccountKey=not*base64!",
            "not valid base64",
        ),
        ("AccountName=lake", "neither AccountKey"),
        ("just some text", "Name=Value"),
        (&format!("AccountKey={KEY}"), "no AccountName"),
        (
            &format!("AccountName=Lake_1;AccountKey={KEY}"),
            "account name",
        ),
        (
            &format!("AccountName=lake;AccountKey={KEY};BlobEndpoint=not a url"),
            "BlobEndpoint",
        ),
        (
            &format!("AccountName=lake;AccountKey={KEY};Colour=blue"),
            "Colour",
        ),
    ];
    for (value, expected) in cases {
        let err = parse(value).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("setting CONN: "), "{text}");
        assert!(text.contains(expected), "{text}");
        assert!(
            !text.contains(KEY) && !text.contains("not*base64"),
            "{text}"
        );
    }
    let missing = StorageConnection::from_settings("CONN", &Settings::default()).unwrap_err();
    assert!(missing.to_string().contains("is not set"));
}
