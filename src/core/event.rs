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
    /// `Microsoft.Storage.DirectoryCreated` (ADLS Gen2).
    DirectoryCreated,
    /// `Microsoft.Storage.DirectoryDeleted` (ADLS Gen2): one event for the whole tree when
    /// recursive, never one per file.
    DirectoryDeleted,
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
    /// The event is about a snapshot or a version of the blob (its URL names one), not the blob.
    pub of_snapshot: bool,
    /// A rename's old name (`BlobRenamed`, `DirectoryRenamed`), from `data.sourceUrl`; `Err`
    /// with the reason where the event has none that can be read.
    pub renamed_from: Option<Result<RenameSource, String>>,
}

/// Where a renamed file or directory was before (ADLS Gen2 renames within one file system).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenameSource {
    pub container: String,
    /// Percent-decoded.
    pub path: String,
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
    /// The blob's URL, its path percent-encoded: the name exactly, whatever characters it has.
    #[serde(default)]
    url: Option<String>,
    /// A rename's new URL (`BlobRenamed`, `DirectoryRenamed`): the name now.
    #[serde(rename = "destinationUrl", default)]
    destination_url: Option<String>,
    /// A rename's old URL: the name before.
    #[serde(rename = "sourceUrl", default)]
    source_url: Option<String>,
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
        "Microsoft.Storage.DirectoryCreated" => EventKind::DirectoryCreated,
        "Microsoft.Storage.DirectoryDeleted" => EventKind::DirectoryDeleted,
        other => return Err(format!("event type {other:?} is not handled")),
    };
    let topic = raw
        .topic
        .or(raw.source)
        .ok_or("the event has no topic (Event Grid) or source (CloudEvents)")?;
    let account = account_of_topic(&topic)
        .ok_or_else(|| format!("the event's topic {topic:?} names no storage account"))?;
    let data = raw.data.unwrap_or_default();
    // The subject holds the blob's name literally (`/blobServices/default/containers/{c}/blobs/
    // {name}`); `data.url` is not reliably encoded (a `#` in a name has been seen raw there, which
    // cuts the name), so it is read only for what the subject lacks: the snapshot it names.
    let url = match kind {
        EventKind::Renamed | EventKind::DirectoryRenamed => data.destination_url.as_deref(),
        EventKind::Created
        | EventKind::Deleted
        | EventKind::DirectoryCreated
        | EventKind::DirectoryDeleted => data.url.as_deref(),
    };
    let from_url = url.map(parse_url);
    let (container, path) = match (&raw.subject, &from_url) {
        (Some(subject), _) => parse_subject(subject)?,
        (None, Some(Ok((container, path, _)))) => (container.clone(), path.clone()),
        (None, Some(Err(reason))) => return Err(reason.clone()),
        (None, None) => return Err("the event has no subject or data.url".into()),
    };
    let of_snapshot = matches!(from_url, Some(Ok((_, _, true))));
    let renamed_from = rename_source(&kind, &data);
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
        etag: data
            .etag
            .map(|e| normalize_etag(&e).to_owned())
            .filter(|e| !e.is_empty()),
        time,
        of_snapshot,
        renamed_from,
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

/// `https://{account}.blob.core.windows.net/{c}/{path}` (or the emulator's path-style
/// `http://127.0.0.1:port/{account}/{c}/{path}`) → (`c`, `path` percent-decoded).
fn parse_url(text: &str) -> Result<(String, String, bool), String> {
    let malformed = || format!("the event's data.url {text:?} is not a blob URL");
    let url = url::Url::parse(text).map_err(|_| malformed())?;
    let host = url.host_str().ok_or_else(malformed)?;
    let path_style = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok();
    let mut rest = url.path().trim_start_matches('/');
    if path_style {
        rest = rest.split_once('/').ok_or_else(malformed)?.1;
    }
    let (container, path) = rest.split_once('/').ok_or_else(malformed)?;
    let path = percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| malformed())?
        .into_owned();
    if container.is_empty() || path.is_empty() {
        return Err(malformed());
    }
    let of_snapshot = url.query_pairs().any(|(key, _)| {
        key.eq_ignore_ascii_case("snapshot") || key.eq_ignore_ascii_case("versionid")
    });
    Ok((container.to_owned(), path, of_snapshot))
}

/// A rename's old name, from its `data.sourceUrl`; `None` for an event that is no rename.
fn rename_source(kind: &EventKind, data: &RawData) -> Option<Result<RenameSource, String>> {
    matches!(kind, EventKind::Renamed | EventKind::DirectoryRenamed).then(|| {
        let source = data
            .source_url
            .as_deref()
            .ok_or("the rename event has no data.sourceUrl")?;
        let (container, path) = parse_source_url(source)?;
        Ok(RenameSource { container, path })
    })
}

/// A rename's `sourceUrl` (a dfs or blob URL of a path, never of a snapshot) → (`c`, `path`
/// percent-decoded). A `#` or `?` in it can only be part of the name (such URLs carry no
/// fragment or query, and a raw `#` has been seen in event URLs): read as the name's, never as
/// the end of the path.
fn parse_source_url(text: &str) -> Result<(String, String), String> {
    let literal = text.replace('#', "%23").replace('?', "%3F");
    let (container, path, _) = parse_url(&literal)
        .map_err(|_| format!("the event's data.sourceUrl {text:?} is not a path's URL"))?;
    Ok((container, path))
}

/// `/blobServices/default/containers/{c}/blobs/{path}` → (`c`, `path`), the path exactly as
/// written: the subject carries the name literally, so `%41` in it is three characters of the
/// name, not an encoded `A`. A container name never holds `/`, so the first `/blobs/` after it
/// ends it; the name may hold `/blobs/` itself.
fn parse_subject(subject: &str) -> Result<(String, String), String> {
    let malformed = || {
        format!(
            "the subject {subject:?} is not /blobServices/default/containers/{{c}}/blobs/{{path}}"
        )
    };
    let rest = subject
        .strip_prefix("/blobServices/default/containers/")
        .ok_or_else(malformed)?;
    let (container, path) = rest.split_once('/').ok_or_else(malformed)?;
    let path = path.strip_prefix("blobs/").ok_or_else(malformed)?;
    if container.is_empty() || path.is_empty() {
        return Err(malformed());
    }
    Ok((container.to_owned(), path.to_owned()))
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
            "/blobServices/default/containers/lake/blobs/a b/c.csv",
        );
        let cloud = serde_json::json!({
            "specversion": "1.0", "type": "Microsoft.Storage.BlobCreated", "source": TOPIC,
            "subject": "/blobServices/default/containers/lake/blobs/a b/c.csv",
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
    fn the_name_is_the_subjects_literally() {
        // The subject carries the name as it is: "%41" is three characters of it, and a "#" or
        // "?" that a raw data.url would cut the name at are part of it.
        let mut grid = event_grid(
            "Microsoft.Storage.BlobDeleted",
            "/blobServices/default/containers/lake/blobs/raw/100%41 #?/blobs/😀｡.csv",
        );
        grid["data"]["url"] =
            "https://lakeacct.blob.core.windows.net/lake/raw/100%41 #?/blobs/😀｡.csv".into();
        let event = parse_event(&grid.to_string()).unwrap();
        assert_eq!(event.path, "raw/100%41 #?/blobs/😀｡.csv");
        assert_eq!(event.kind, EventKind::Deleted);
        assert!(!event.of_snapshot);
        grid["data"]["url"] =
            "https://lakeacct.blob.core.windows.net/lake/a.csv?snapshot=2026-11-27T10:00:00.1234567Z"
                .into();
        assert!(parse_event(&grid.to_string()).unwrap().of_snapshot);
        // Without a subject, the URL's path is read, percent-decoded.
        let mut no_subject = grid.clone();
        no_subject.as_object_mut().unwrap().remove("subject");
        no_subject["data"]["url"] =
            "http://127.0.0.1:10000/lakeacct/lake/%F0%9F%98%80/%EF%BD%A1".into();
        let event = parse_event(&no_subject.to_string()).unwrap();
        assert_eq!(
            (event.container.as_str(), event.path.as_str()),
            ("lake", "😀/｡")
        );
        no_subject["data"]["url"] = "not a url".into();
        assert!(parse_event(&no_subject.to_string())
            .unwrap_err()
            .contains("data.url"));
    }

    #[test]
    fn directory_events_of_adls_gen2_are_read() {
        for (event_type, kind) in [
            (
                "Microsoft.Storage.DirectoryCreated",
                EventKind::DirectoryCreated,
            ),
            (
                "Microsoft.Storage.DirectoryDeleted",
                EventKind::DirectoryDeleted,
            ),
        ] {
            let grid = event_grid(
                event_type,
                "/blobServices/default/containers/lake/blobs/t/日本",
            );
            let event = parse_event(&grid.to_string()).unwrap();
            assert_eq!(
                (event.kind, event.container.as_str(), event.path.as_str()),
                (kind, "lake", "t/日本")
            );
        }
    }

    /// Azure's `BlobRenamed` and `DirectoryRenamed` (Event Grid schema): the subject is the new
    /// name, `data.sourceUrl` and `data.destinationUrl` are dfs URLs of the old and new paths.
    #[test]
    fn a_renames_old_name_is_read_from_its_source_url_whatever_its_characters() {
        let names = [
            ("raw/a b.csv", "raw/a%20b.csv"),
            (
                "t/日本/🦀｡x.csv",
                "t/%E6%97%A5%E6%9C%AC/%F0%9F%A6%80%EF%BD%A1x.csv",
            ),
            // Raw, as data.url has been seen: still the name, never a fragment or a query.
            ("odd/#1?.csv", "odd/#1?.csv"),
            ("pct/100%.csv", "pct/100%25.csv"),
        ];
        for (event_type, kind) in [
            ("Microsoft.Storage.BlobRenamed", EventKind::Renamed),
            (
                "Microsoft.Storage.DirectoryRenamed",
                EventKind::DirectoryRenamed,
            ),
        ] {
            for (old_name, encoded) in names {
                let mut grid = event_grid(
                    event_type,
                    "/blobServices/default/containers/lake/blobs/new/n",
                );
                grid["data"]["sourceUrl"] =
                    format!("https://lakeacct.dfs.core.windows.net/lake/{encoded}").into();
                grid["data"]["destinationUrl"] =
                    "https://lakeacct.dfs.core.windows.net/lake/new/n".into();
                let event = parse_event(&grid.to_string()).unwrap();
                assert_eq!(
                    (event.kind.clone(), event.path.as_str()),
                    (kind.clone(), "new/n")
                );
                assert_eq!(
                    event.renamed_from,
                    Some(Ok(RenameSource {
                        container: "lake".into(),
                        path: old_name.into()
                    })),
                    "{encoded}"
                );
            }
            // Without a source the event still names the new path; the old one is unknown.
            let grid = event_grid(
                event_type,
                "/blobServices/default/containers/lake/blobs/new/n",
            );
            let event = parse_event(&grid.to_string()).unwrap();
            assert!(matches!(event.renamed_from, Some(Err(_))), "{event:?}");
        }
        let created = event_grid(
            "Microsoft.Storage.BlobCreated",
            "/blobServices/default/containers/lake/blobs/a",
        );
        assert_eq!(
            parse_event(&created.to_string()).unwrap().renamed_from,
            None
        );
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
