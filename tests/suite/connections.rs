//! Every connection-string form against Azurite, which validates SharedKey and SAS signatures.

use crate::support;

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use lakebackup::{
    settings::Settings,
    storage::{sas::AccountSasGrant, testing::account_sas, StorageAccount},
};
use support::{azurite::SOURCE_KEY, Azurite};

fn connect(value: &str) -> StorageAccount {
    StorageAccount::connect(
        "SOURCE_STORAGE",
        &Settings::from_pairs([("SOURCE_STORAGE", value)]),
    )
    .expect("connection string is accepted")
}

/// Blob and queue round trip through `account`, with a name that needs URL encoding.
async fn round_trip(account: &StorageAccount, container: &str) {
    let client = account.container(container).unwrap();
    client.create().await.expect("create container");
    let name = "dir.v1/a b #1 ?x=%41 \"q\" ünï.csv";
    support::upload(&client, name, b"signed bytes").await;
    assert_eq!(support::download(&client, name).await, b"signed bytes");
    assert_eq!(support::list_all(&client).await, [(name.to_owned(), None)]);

    let queue = account.queue(&format!("{container}-q")).unwrap();
    queue.create_if_missing().await.expect("create queue");
    queue
        .send("hello".into(), None, "a message")
        .await
        .expect("send message");
}

#[tokio::test]
async fn account_key_connection_is_signed_and_accepted() {
    let azurite = Azurite::start();
    round_trip(&connect(&azurite.source()), "keyed").await;
}

#[tokio::test]
async fn development_storage_connection_uses_the_well_known_account() {
    let azurite = Azurite::start();
    let value = format!(
        "UseDevelopmentStorage=true;BlobEndpoint={};QueueEndpoint={}",
        azurite.blob_endpoint("devstoreaccount1"),
        azurite.queue_endpoint("devstoreaccount1")
    );
    round_trip(&connect(&value), "devstore").await;
}

#[tokio::test]
async fn sas_connection_is_accepted() {
    let azurite = Azurite::start();
    let sas = account_sas(
        "source",
        &BASE64.decode(SOURCE_KEY).unwrap(),
        AccountSasGrant {
            services: "bq",
            resource_types: "sco",
            permissions: "rwdlacup",
            expiry: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        },
    );
    let value = format!(
        "BlobEndpoint={};QueueEndpoint={};SharedAccessSignature={}",
        azurite.blob_endpoint("source"),
        azurite.queue_endpoint("source"),
        sas
    );
    round_trip(&connect(&value), "sassy").await;
}

#[tokio::test]
async fn wrong_key_is_refused_and_reported_without_the_key() {
    let azurite = Azurite::start();
    let wrong_key = BASE64.encode(b"this is not the account key of source");
    let account = connect(&azurite.connection_string("source", &wrong_key));
    let error = account
        .container("refused")
        .unwrap()
        .create()
        .await
        .expect_err("Azurite validates the signature");
    assert_eq!(error.status, Some(403), "{error}");
    assert!(
        error.is(lakebackup::storage::ErrorCode::AuthorizationFailure),
        "{error}"
    );
    let text = error.to_string();
    assert!(text.starts_with("creating container refused: "), "{text}");
    assert!(
        !text.contains(&wrong_key) && !text.contains(SOURCE_KEY),
        "{text}"
    );
}
