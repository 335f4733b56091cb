//! The Azure Functions custom-handler protocol: the payloads the host POSTs to `/{FunctionName}`
//! and the reply it reads back. Liberal in what it accepts (the host's shapes vary between
//! versions and with how a trigger was fired), strict in what it sends.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

/// What the host sends: trigger and input binding data, and trigger metadata.
#[derive(Debug, Default, Deserialize)]
pub struct InvokeRequest {
    #[serde(rename = "Data", default)]
    pub data: Map<String, Value>,
    #[serde(rename = "Metadata", default)]
    pub metadata: Map<String, Value>,
}

/// What the handler answers: output bindings, log lines for the invocation, and a return value.
#[derive(Debug, Default, Serialize)]
pub struct InvokeResponse {
    #[serde(rename = "Outputs")]
    pub outputs: Map<String, Value>,
    #[serde(rename = "Logs")]
    pub logs: Vec<String>,
    #[serde(rename = "ReturnValue")]
    pub return_value: Value,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("the invocation carries no HTTP request binding (expected Data.req)")]
    NoHttpRequest,
    #[error("the invocation's {0} is not in a shape this handler understands")]
    Malformed(&'static str),
}

/// An HTTP trigger's request, whether it came wrapped in `Data.req` or forwarded raw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpTriggerRequest {
    pub method: String,
    pub url: String,
    pub query: BTreeMap<String, String>,
    /// Header names lowercased; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
}

/// The binding name the function.json files use for the HTTP request.
pub const HTTP_REQUEST_BINDING: &str = "req";
/// The binding name the function.json files use for the HTTP response.
pub const HTTP_RESPONSE_BINDING: &str = "res";

impl HttpTriggerRequest {
    /// Reads `Data.req`; a binding under another name is accepted when it is the only object
    /// that looks like a request.
    pub fn from_invoke(invoke: &InvokeRequest) -> Result<Self, ProtocolError> {
        let looks_like_request = |v: &&Value| {
            v.as_object()
                .is_some_and(|o| o.contains_key("Method") || o.contains_key("Url"))
        };
        let value = invoke
            .data
            .get(HTTP_REQUEST_BINDING)
            .or_else(|| invoke.data.values().find(looks_like_request))
            .ok_or(ProtocolError::NoHttpRequest)?;
        let request = value
            .as_object()
            .ok_or(ProtocolError::Malformed("Data.req"))?;
        let text = |field: &str| request.get(field).and_then(Value::as_str).unwrap_or("");
        Ok(Self {
            method: text("Method").to_ascii_uppercase(),
            url: text("Url").to_owned(),
            query: string_map(request.get("Query"), "Data.req.Query")?,
            headers: string_map(request.get("Headers"), "Data.req.Headers")?
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            body: match request.get("Body") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            },
        })
    }

    /// The body parsed as a JSON object; `Ok(None)` when there is no body.
    pub fn json_body(&self) -> Result<Option<Map<String, Value>>, ProtocolError> {
        match self.body.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => Ok(Some(map)),
                _ => Err(ProtocolError::Malformed(
                    "request body (expected a JSON object)",
                )),
            },
        }
    }
}

/// A map of strings from an object (values that are strings, arrays of strings, or scalars), or
/// from a JSON string holding such an object.
fn string_map(
    value: Option<&Value>,
    what: &'static str,
) -> Result<BTreeMap<String, String>, ProtocolError> {
    let object = match value {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(o)) => o.clone(),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(BTreeMap::new()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(o)) => o,
            _ => return Err(ProtocolError::Malformed(what)),
        },
        Some(_) => return Err(ProtocolError::Malformed(what)),
    };
    object
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s,
                Value::Array(items) => items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| i.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            Ok((k, text))
        })
        .collect()
}

/// The binding name of the queue trigger in `QueueCreateBlobBackupADFv2/function.json`.
pub const QUEUE_MESSAGE_BINDING: &str = "message";

/// A queue trigger's message and the metadata the handler logs.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueTrigger {
    pub message: Value,
    pub message_id: String,
    pub dequeue_count: u64,
}

impl QueueTrigger {
    /// Reads `Data.message` (or the only binding) with `Metadata.Id` and `Metadata.DequeueCount`.
    pub fn from_invoke(invoke: &InvokeRequest) -> Result<Self, ProtocolError> {
        let message = invoke
            .data
            .get(QUEUE_MESSAGE_BINDING)
            .or_else(|| match invoke.data.len() {
                1 => invoke.data.values().next(),
                _ => None,
            })
            .ok_or(ProtocolError::Malformed(
                "Data (expected the queue message binding)",
            ))?;
        let number = |v: &Value| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok());
        Ok(Self {
            message: message.clone(),
            message_id: match invoke.metadata.get("Id") {
                Some(Value::String(id)) => id.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            },
            dequeue_count: invoke
                .metadata
                .get("DequeueCount")
                .and_then(number)
                .unwrap_or(1),
        })
    }
}

impl QueueTrigger {
    /// The message text from the binding value: a string (possibly JSON-quoted once more), or
    /// an object the host already parsed.
    pub fn text(&self) -> String {
        match &self.message {
            Value::String(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::String(inner)) => inner,
                _ => text.clone(),
            },
            other => other.to_string(),
        }
    }
}

/// An HTTP reply with a JSON body: the ADF Azure Function activity accepts only JSON objects.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonReply {
    pub status: u16,
    pub body: Value,
    /// A `Location` header (a 202's status URL).
    pub location: Option<String>,
}

impl JsonReply {
    pub fn new(status: u16, body: Value) -> Self {
        Self {
            status,
            body,
            location: None,
        }
    }

    /// The reply as the `res` output binding.
    pub fn into_output(self) -> Value {
        let mut headers = serde_json::json!({ "Content-Type": "application/json; charset=utf-8" });
        if let Some(location) = self.location {
            headers["Location"] = Value::String(location);
        }
        serde_json::json!({
            "statusCode": self.status,
            "body": self.body.to_string(),
            "headers": headers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn invoke(value: Value) -> InvokeRequest {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn host_shaped_http_request_is_read() {
        let request = HttpTriggerRequest::from_invoke(&invoke(json!({
            "Data": {"req": {
                "Url": "http://localhost:7071/api/HttpSnapshotIncBackupContainerProducer?container=x",
                "Method": "post",
                "Query": {"container": "x"},
                "Headers": {"Content-Type": ["application/json"], "X-Many": ["a", "b"]},
                "Params": {},
                "Body": "{\"container\": \"sales\"}"
            }},
            "Metadata": {"Query": {"container": "x"}, "sys": {"MethodName": "f"}}
        })))
        .unwrap();
        assert_eq!(request.method, "POST");
        assert_eq!(request.query["container"], "x");
        assert_eq!(request.headers["content-type"], "application/json");
        assert_eq!(request.headers["x-many"], "a, b");
        assert_eq!(request.json_body().unwrap().unwrap()["container"], "sales");
    }

    #[test]
    fn query_as_json_string_and_body_as_object_are_accepted() {
        let request = HttpTriggerRequest::from_invoke(&invoke(json!({
            "Data": {"request": {"Method": "GET", "Query": "{\"container\":\"y\"}", "Body": {"a": 1}}}
        })))
        .unwrap();
        assert_eq!(request.query["container"], "y");
        assert_eq!(request.json_body().unwrap().unwrap()["a"], 1);
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        assert_eq!(
            HttpTriggerRequest::from_invoke(&invoke(json!({"Data": {}}))),
            Err(ProtocolError::NoHttpRequest)
        );
        assert!(HttpTriggerRequest::from_invoke(&invoke(json!({
            "Data": {"req": {"Method": "GET", "Query": 5}}
        })))
        .is_err());
        let bad_body = HttpTriggerRequest {
            body: Some("[1,2]".into()),
            ..Default::default()
        };
        assert!(bad_body.json_body().is_err());
    }

    #[test]
    fn queue_trigger_reads_message_and_metadata() {
        let trigger = QueueTrigger::from_invoke(&invoke(json!({
            "Data": {"message": "{\"container\":\"a\"}"},
            "Metadata": {"Id": "m-1", "DequeueCount": "3", "PopReceipt": "p"}
        })))
        .unwrap();
        assert_eq!(trigger.message_id, "m-1");
        assert_eq!(trigger.dequeue_count, 3);
        assert_eq!(trigger.message, json!("{\"container\":\"a\"}"));
        assert!(QueueTrigger::from_invoke(&invoke(json!({"Data": {}}))).is_err());
    }

    #[test]
    fn binding_values_unwrap_to_the_message_text() {
        let text = r#"{"container":"lake","blob_name":"a","etag":"0x1"}"#;
        let trigger = |message: Value| QueueTrigger {
            message,
            message_id: String::new(),
            dequeue_count: 1,
        };
        assert_eq!(trigger(json!(text)).text(), text);
        assert_eq!(trigger(json!(json!(text).to_string())).text(), text);
        let object = json!({"container": "lake"});
        assert_eq!(trigger(object.clone()).text(), object.to_string());
    }

    #[test]
    fn reply_is_a_res_binding_with_json_body() {
        let output = JsonReply::new(404, json!({"status": "error"})).into_output();
        assert_eq!(output["statusCode"], 404);
        assert_eq!(output["body"], "{\"status\":\"error\"}");
        assert!(output["headers"].get("Location").is_none());
        let accepted = JsonReply {
            location: Some("https://x/api/f?job=j".into()),
            ..JsonReply::new(202, json!({"status": "running"}))
        }
        .into_output();
        assert_eq!(accepted["headers"]["Location"], "https://x/api/f?job=j");
    }
}
