//! Blob events as an Event Grid subscription delivers them to a storage queue: one event per
//! message, in the Event Grid schema or the CloudEvents 1.0 schema, as plain JSON or base64.
//! Read with serde into what the events function needs. Pure.

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::etag::normalize_etag;

/// What happened to the blob (or directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// `Microsoft.Storage.BlobCreated`: created or replaced.
    Created,
    /// `Microsoft.Storage.BlobDeleted`.
    Deleted,
    /// `Microsoft.Storage.BlobRenamed` (ADLS Gen2): the subject is the new name.
    Renamed,
    /// `Microsoft.Storage.DirectoryRenamed` (ADLS Gen2): the subject is the new directory.
    DirectoryRenamed,
}

/// One blob event, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEvent {
    pub id: String,
    pub kind: EventKind,
    /// The storage account named by the event's topic (Event Grid) or source (CloudEvents).
    pub account: String,
    pub container: String,
    /// The blob's (or directory's) path, percent-decoded.
    pub path: String,
    /// The ETag the event saw, without quotes: a hint only.
    pub etag: Option<String>,
    pub time: Option<OffsetDateTime>,
}

/// The fields both schemas share under one name or another.
#[derive(Deserialize)]
struct RawEvent {
    #[serde(default)]
    id: Option<String>,
    /// Event Grid.
    #[serde(rename = "eventType", default)]
    event_type: Option<String>,
    /// CloudEvents.
    #[serde(rename = "type", default)]
    cloud_type: Option<String>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(rename = "eventTime", default)]
    event_time: Option<String>,
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    data: Option<RawData>,
}

#[derive(Deserialize, Default)]
struct RawData {
    #[serde(rename = "eTag", default)]
    etag: Option<String>,
}

/// Reads one queue message as a blob event; the reason it is not one otherwise.
pub fn parse_event(text: &str) -> Result<BlobEvent, String> {
    let json = decoded_json(text.trim())?;
    let raw: RawEvent = match json {
        serde_json::Value::Array(mut events) if events.len() == 1 => {
            serde_json::from_value(events.remove(0))
        }
        serde_json::Value::Array(events) => {
            return Err(format!(
                "{} events in one message; one per message is expected",
                events.len()
            ))
        }
        other => serde_json::from_value(other),
    }
    .map_err(|e| format!("not an Event Grid or CloudEvents event: {e}"))?;
    let event_type = raw
        .event_type
        .or(raw.cloud_type)
        .ok_or("the event has no eventType (Event Grid) or type (CloudEvents)")?;
    let kind = match event_type.as_str() {
        "Microsoft.Storage.BlobCreated" => EventKind::Created,
        "Microsoft.Storage.BlobDeleted" => EventKind::Deleted,
        "Microsoft.Storage.BlobRenamed" => EventKind::Renamed,
        "Microsoft.Storage.DirectoryRenamed" => EventKind::DirectoryRenamed,
        other => return Err(format!("event type {other:?} is not handled")),
    };
    let topic = raw
        .topic
        .or(raw.source)
        .ok_or("the event has no topic (Event Grid) or source (CloudEvents)")?;
    let account = account_of_topic(&topic)
        .ok_or_else(|| format!("the event's topic {topic:?} names no storage account"))?;
    let subject = raw.subject.ok_or("the event has no subject")?;
    let (container, path) = parse_subject(&subject)?;
    let time = raw
        .event_time
        .or(raw.time)
        .and_then(|t| OffsetDateTime::parse(&t, &Rfc3339).ok());
    Ok(BlobEvent {
        id: raw.id.unwrap_or_default(),
        kind,
        account,
        container,
        path,
        etag: raw
            .data
            .unwrap_or_default()
            .etag
            .map(|e| normalize_etag(&e).to_owned())
            .filter(|e| !e.is_empty()),
        time,
    })
}

/// The message as JSON: as it is, or base64-decoded (both occur, by the queue's encoding).
fn decoded_json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).or_else(|plain| {
        BASE64
            .decode(text)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| format!("neither JSON nor base64 JSON: {plain}"))
    })
}

/// `.../providers/Microsoft.Storage/storageAccounts/{account}` → `account`.
fn account_of_topic(topic: &str) -> Option<String> {
    let lower = topic.to_ascii_lowercase();
    let at = lower.find("/storageaccounts/")? + "/storageaccounts/".len();
    let account = topic[at..].split('/').next()?;
    (!account.is_empty()).then(|| account.to_owned())
}

/// `/blobServices/default/containers/{c}/blobs/{path}` → (`c`, `path` percent-decoded).
fn parse_subject(subject: &str) -> Result<(String, String), String> {
    let malformed = || {
        format!(
            "the subject {subject:?} is not /blobServices/default/containers/{{c}}/blobs/{{path}}"
        )
    };
    let rest = subject
        .strip_prefix("/blobServices/default/containers/")
        .ok_or_else(malformed)?;
    let (container, path) = rest.split_once("/blobs/").ok_or_else(malformed)?;
    let path = percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| malformed())?
        .into_owned();
    if container.is_empty() || path.is_empty() {
        return Err(malformed());
    }
    Ok((container.to_owned(), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/lakeacct";

    fn event_grid(event_type: &str, subject: &str) -> serde_json::Value {
        serde_json::json!({
            "topic": TOPIC,
            "subject": subject,
            "eventType": event_type,
            "eventTime": "2026-11-27T10:00:00.1234567Z",
            "id": "e-1",
            "data": {"api": "PutBlob", "eTag": "0x8DC1", "contentLength": 3, "blobType": "BlockBlob",
                     "url": "https://lakeacct.blob.core.windows.net/lake/a%20b/c.csv"},
            "dataVersion": "", "metadataVersion": "1"
        })
    }

    #[test]
    fn both_schemas_plain_or_base64_read_the_same() {
        let grid = event_grid(
            "Microsoft.Storage.BlobCreated",
            "/blobServices/default/containers/lake/blobs/a%20b/c.csv",
        );
        let cloud = serde_json::json!({
            "specversion": "1.0", "type": "Microsoft.Storage.BlobCreated", "source": TOPIC,
            "subject": "/blobServices/default/containers/lake/blobs/a%20b/c.csv",
            "id": "e-1", "time": "2026-11-27T10:00:00.1234567Z",
            "data": {"api": "FlushWithClose", "eTag": "\"0x8DC1\""}
        });
        for json in [grid, cloud] {
            let text = json.to_string();
            for message in [text.clone(), BASE64.encode(&text), format!("[{text}]")] {
                let event = parse_event(&message).unwrap();
                assert_eq!(event.kind, EventKind::Created);
                assert_eq!(event.account, "lakeacct");
                assert_eq!(
                    (event.container.as_str(), event.path.as_str()),
                    ("lake", "a b/c.csv")
                );
                assert_eq!(event.etag.as_deref(), Some("0x8DC1"));
                assert!(event.time.is_some());
            }
        }
    }

    #[test]
    fn unusable_events_say_why() {
        let cases = [
            ("not json".to_owned(), "neither JSON"),
            (
                event_grid("Microsoft.Storage.BlobTierChanged", "/blobServices/default/containers/c/blobs/x").to_string(),
                "not handled",
            ),
            (
                event_grid("Microsoft.Storage.BlobCreated", "/containers/c/x").to_string(),
                "subject",
            ),
            (
                serde_json::json!({"eventType": "Microsoft.Storage.BlobCreated", "topic": "/subscriptions/s",
                                   "subject": "/blobServices/default/containers/c/blobs/x"}).to_string(),
                "storage account",
            ),
            ("[{}, {}]".to_owned(), "one per message"),
        ];
        for (message, reason) in cases {
            let error = parse_event(&message).unwrap_err();
            assert!(error.contains(reason), "{message}: {error}");
        }
    }
}
