//! The backup request: what the producer and the reconciler put on the queue and the consumer
//! takes off it.
//!
//! The contract is the seed's — `{"container": "…", "blob_name": "…", "etag": "…"}` — built with
//! serde so that any blob name (quotes, backslashes, unicode) round-trips. On the queue it is
//! base64-encoded, the Functions queue trigger's default encoding.

use serde::{Deserialize, Serialize};

use super::etag::normalize_etag;

/// A request to back up one exact version of one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRequest {
    pub container: String,
    pub blob_name: String,
    pub etag: String,
    /// How often the consumer put this request back because another invocation was copying the
    /// same version (lease mode); absent in a first request, so the contract stays the seed's.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deferrals: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl BackupRequest {
    pub fn new(container: &str, blob_name: &str, etag: &str) -> Self {
        Self {
            container: container.to_owned(),
            blob_name: blob_name.to_owned(),
            etag: normalize_etag(etag).to_owned(),
            deferrals: 0,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a struct of strings always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awkward_names_round_trip_through_the_queue_encoding() {
        let request = BackupRequest::new(
            "sales",
            "a \"quoted\" name\\with # ? % ünïcødé/数据.csv",
            "\"0x8DC1\"",
        );
        let json = request.to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["blob_name"], request.blob_name);
        assert_eq!(value["etag"], "0x8DC1");
        assert_eq!(value.as_object().unwrap().len(), 3);
        assert_eq!(
            serde_json::from_str::<BackupRequest>(&json).unwrap(),
            request
        );
    }
}
