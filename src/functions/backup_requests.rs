//! `QueueCreateBlobBackupADFv2`: one backup request `{"container","blob_name","etag"}` → the
//! backup engine. A request that can never succeed is unusable (poisoned unchanged); a failure
//! fails the invocation, so the host retries it.

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use tracing::{warn, Instrument};

use super::{Delivery, Handled};
use crate::{
    app::App,
    core::{etag::normalize_etag, message::BackupRequest, naming},
    engine::backup::{self, BackupError, BackupOutcome},
};

pub const FUNCTION_NAME: &str = "QueueCreateBlobBackupADFv2";

/// Handles one delivery.
pub async fn handle(app: &App, delivery: &Delivery) -> Result<Handled<BackupOutcome>, BackupError> {
    let request = match parse_request(&delivery.text) {
        Ok(request) => request,
        Err(reason) => return Ok(Handled::Unusable(reason)),
    };
    let span =
        tracing::info_span!("blob", container = %request.container, blob = %request.blob_name);
    match backup::back_up(app, &request).instrument(span).await {
        Ok(outcome) => Ok(Handled::Done(outcome)),
        Err(BackupError::Unusable { reason, .. }) => Ok(Handled::Unusable(reason)),
        Err(error) => {
            warn!(error = %error, "backup failed; the host will retry the message");
            Err(error)
        }
    }
}

/// Reads the contract `{"container","blob_name","etag"}`; also accepts it base64-encoded (a
/// message queued with another encoding setting).
pub fn parse_request(text: &str) -> Result<BackupRequest, String> {
    let parse = |t: &str| serde_json::from_str::<BackupRequest>(t.trim());
    let request = parse(text)
        .or_else(|first| {
            BASE64
                .decode(text.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .and_then(|decoded| parse(&decoded).ok())
                .ok_or(first)
        })
        .map_err(|e| {
            format!("not a backup request {{\"container\",\"blob_name\",\"etag\"}}: {e}")
        })?;
    naming::validate_container_name(&request.container).map_err(|e| e.to_string())?;
    naming::validate_blob_name(&request.blob_name).map_err(|e| e.to_string())?;
    if normalize_etag(&request.etag).is_empty() {
        return Err("the request's etag is empty".into());
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_are_read_from_json_or_base64() {
        let json = r#"{"container":"lake","blob_name":"a \"b\".csv","etag":"0x1"}"#;
        let request = parse_request(json).unwrap();
        assert_eq!(request.blob_name, "a \"b\".csv");
        assert_eq!(parse_request(&BASE64.encode(json)).unwrap(), request);
    }

    #[test]
    fn unusable_requests_say_why() {
        for (text, why) in [
            ("not json", "not a backup request"),
            (r#"{"container":"lake"}"#, "not a backup request"),
            (
                r#"{"container":"Lake!","blob_name":"a","etag":"0x1"}"#,
                "invalid container name",
            ),
            (
                r#"{"container":"lake","blob_name":"","etag":"0x1"}"#,
                "must not be empty",
            ),
            (
                r#"{"container":"lake","blob_name":"a","etag":"\"\""}"#,
                "etag is empty",
            ),
        ] {
            let reason = parse_request(text).unwrap_err();
            assert!(reason.contains(why), "{text}: {reason}");
        }
        let long = json!({"container": "lake", "blob_name": "x".repeat(1025), "etag": "0x1"});
        assert!(parse_request(&long.to_string()).is_err());
    }
}
