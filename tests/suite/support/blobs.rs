//! Arranging and checking data through the product's storage seam (`lakebackup::storage`, and
//! its `testing` operations for what only a test does): blobs written, read, listed and deleted,
//! backup requests and records of lives, queues drained.

use std::{collections::HashMap, time::Duration};

use lakebackup::storage::{testing::NewBlob, Container, Queue};

use super::wait_for;

pub async fn upload(container: &Container, name: &str, bytes: &[u8]) {
    container
        .blob(name)
        .upload(bytes)
        .await
        .unwrap_or_else(|e| panic!("upload {name}: {e}"));
}

/// Uploads `bytes` with `new`'s metadata, headers, tags and tier.
pub async fn upload_with(container: &Container, name: &str, bytes: &[u8], new: &NewBlob) {
    container
        .blob(name)
        .upload_with(bytes, new)
        .await
        .unwrap_or_else(|e| panic!("upload {name}: {e}"));
}

/// Deletes a blob with its snapshots (a blob with snapshots is not deleted on its own).
pub async fn delete_with_snapshots(container: &Container, name: &str) {
    container
        .blob(name)
        .delete_with_snapshots()
        .await
        .unwrap_or_else(|e| panic!("delete {name} with its snapshots: {e}"));
}

pub async fn download(container: &Container, name: &str) -> Vec<u8> {
    container
        .blob(name)
        .read(None)
        .await
        .unwrap_or_else(|e| panic!("download {name}: {e}"))
        .bytes
}

/// Every base blob's bytes; nothing for a container that does not exist.
pub async fn contents(container: &Container) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut contents = std::collections::BTreeMap::new();
    if !container.exists().await.unwrap() {
        return contents;
    }
    for (name, snapshot) in list_all(container).await {
        if snapshot.is_none() {
            let bytes = download(container, &name).await;
            contents.insert(name, bytes);
        }
    }
    contents
}

/// `(name, snapshot)` of every entry, snapshots included.
pub async fn list_all(container: &Container) -> Vec<(String, Option<String>)> {
    list_versions(container)
        .await
        .into_iter()
        .map(|(name, snapshot, _)| (name, snapshot))
        .collect()
}

/// `(name, snapshot, etag without quotes)` of every entry, snapshots included.
pub async fn list_versions(container: &Container) -> Vec<(String, Option<String>, String)> {
    container
        .entries()
        .await
        .unwrap_or_else(|e| panic!("list {}: {e}", container.name()))
        .into_iter()
        .map(|entry| (entry.name, entry.snapshot, entry.etag))
        .collect()
}

/// Takes every message off `queue` (hidden for five minutes, so each is read once) and returns
/// their texts.
pub async fn drain_queue(queue: &Queue) -> Vec<String> {
    let mut texts = Vec::new();
    loop {
        let batch = queue
            .take(32, Duration::from_secs(300))
            .await
            .expect("receive messages");
        if batch.is_empty() {
            return texts;
        }
        texts.extend(batch.into_iter().map(|m| m.text));
    }
}

/// Waits until messages put on `queue` with a visibility delay of up to `seconds` have become
/// visible, then takes them all.
pub async fn drain_queue_after(queue: &Queue, seconds: u64) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    wait_for(Duration::from_secs(seconds + 5), "messages", || async {
        let texts = drain_queue(queue).await;
        (!texts.is_empty() || tokio::time::Instant::now() >= deadline).then_some(texts)
    })
    .await
}

/// Whether `queue` exists.
pub async fn queue_exists(queue: &Queue) -> bool {
    queue.depth().await.expect("queue properties").is_some()
}

/// (ETag without quotes, last-modified, metadata) of a blob.
pub async fn properties(
    container: &Container,
    name: &str,
) -> (String, time::OffsetDateTime, HashMap<String, String>) {
    let version = container
        .blob(name)
        .probe()
        .await
        .unwrap_or_else(|e| panic!("properties of {name}: {e}"))
        .unwrap_or_else(|| panic!("properties of {name}: no such blob"))
        .version;
    (
        version.etag,
        version.last_modified,
        version.metadata.unwrap_or_default(),
    )
}

/// The backup request for the current version of `name`.
pub async fn request_for(container: &Container, name: &str) -> String {
    let (etag, _, _) = properties(container, name).await;
    serde_json::json!({"container": container.name(), "blob_name": name, "etag": etag}).to_string()
}

/// The records of lives in a backup container (deletions and returns), with when each was seen.
pub async fn life_records(
    vault: &Container,
) -> Vec<(lakebackup::core::life::Record, Option<time::OffsetDateTime>)> {
    let mut records = Vec::new();
    for (name, _) in list_all(vault).await {
        if let Some(record) = lakebackup::core::life::Record::parse(&name) {
            let (_, _, metadata) = properties(vault, &name).await;
            let seen = lakebackup::core::life::seen_in(&metadata, lakebackup::core::life::SEEN_KEY);
            records.push((record, seen));
        }
    }
    records
}

/// Writes the record that `name`'s life ending at `etag` was seen deleted at `seen`, as a pass
/// would have.
pub async fn record_deletion(
    vault: &Container,
    name: &str,
    etag: &str,
    seen: time::OffsetDateTime,
) {
    let record =
        lakebackup::core::life::Record::new(name, etag, lakebackup::core::life::Change::Deleted, 1);
    let new = NewBlob {
        metadata: lakebackup::core::life::record_metadata(seen),
        ..NewBlob::default()
    };
    upload_with(vault, &record.blob_name().unwrap(), b"", &new).await;
}

/// Writes `bytes` as one block and a block list: the service keeps `md5` exactly as given, or
/// none, without checking it (Azure documents it; Azurite 3.37 does the same), as for blobs ADF,
/// DFS and large uploads write.
pub async fn put_block_list(container: &Container, name: &str, bytes: &[u8], md5: Option<Vec<u8>>) {
    let new = NewBlob {
        md5,
        ..NewBlob::default()
    };
    container
        .blob(name)
        .put_block_list(&[bytes], &new)
        .await
        .unwrap_or_else(|e| panic!("put the block list of {name}: {e}"));
}
