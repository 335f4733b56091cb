//! What a storage call that failed says: the operation, the HTTP status, the service's error code
//! as a typed [`ErrorCode`] (the engines never match strings), and a detail whose secrets are
//! redacted.

use thiserror::Error;

use super::redact::redact_secrets;

/// The service's error codes the worker acts on; any other is kept as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    BlobNotFound,
    ContainerNotFound,
    /// A condition (`If-Match`, `If-None-Match`, `x-ms-source-if-match`) refused the request.
    ConditionNotMet,
    BlobAlreadyExists,
    /// The blob is in the archive tier: not readable until rehydrated.
    BlobArchived,
    LeaseAlreadyPresent,
    LeaseIdMissing,
    LeaseIdMismatchWithBlobOperation,
    BlobImmutableDueToPolicy,
    BlobImmutableDueToLegalHold,
    ContainerImmutableDueToPolicy,
    /// The blob is encrypted with a key its owner supplies with every request.
    BlobUsesCustomerSpecifiedEncryption,
    AuthorizationPermissionMismatch,
    AuthorizationFailure,
    Other(String),
}

impl ErrorCode {
    pub fn parse(code: &str) -> Self {
        match code {
            "BlobNotFound" => ErrorCode::BlobNotFound,
            "ContainerNotFound" => ErrorCode::ContainerNotFound,
            "ConditionNotMet" => ErrorCode::ConditionNotMet,
            "BlobAlreadyExists" => ErrorCode::BlobAlreadyExists,
            "BlobArchived" => ErrorCode::BlobArchived,
            "LeaseAlreadyPresent" => ErrorCode::LeaseAlreadyPresent,
            "LeaseIdMissing" => ErrorCode::LeaseIdMissing,
            "LeaseIdMismatchWithBlobOperation" => ErrorCode::LeaseIdMismatchWithBlobOperation,
            "BlobImmutableDueToPolicy" => ErrorCode::BlobImmutableDueToPolicy,
            "BlobImmutableDueToLegalHold" => ErrorCode::BlobImmutableDueToLegalHold,
            "ContainerImmutableDueToPolicy" => ErrorCode::ContainerImmutableDueToPolicy,
            "BlobUsesCustomerSpecifiedEncryption" => ErrorCode::BlobUsesCustomerSpecifiedEncryption,
            "AuthorizationPermissionMismatch" => ErrorCode::AuthorizationPermissionMismatch,
            "AuthorizationFailure" => ErrorCode::AuthorizationFailure,
            other => ErrorCode::Other(other.to_owned()),
        }
    }
}

/// A storage operation that failed, with what was being done; secrets are redacted.
#[derive(Debug, Error)]
#[error("{operation}: {detail}")]
pub struct StorageError {
    pub operation: String,
    /// The HTTP status, when the service answered.
    pub status: Option<u16>,
    /// The service's error code, when it gave one.
    pub code: Option<ErrorCode>,
    /// The request or its answer was lost on the way (a connection refused, reset or timed out).
    transport: bool,
    detail: String,
}

impl StorageError {
    pub fn new(operation: impl Into<String>, error: azure_core::Error) -> Self {
        let (status, code) = match error.kind() {
            azure_core::error::ErrorKind::HttpResponse {
                status, error_code, ..
            } => (
                Some(u16::from(*status)),
                error_code.as_deref().map(ErrorCode::parse),
            ),
            _ => (None, None),
        };
        Self {
            operation: operation.into(),
            status,
            code,
            transport: matches!(
                error.kind(),
                azure_core::error::ErrorKind::Io | azure_core::error::ErrorKind::Connection
            ),
            detail: redact_secrets(&describe(&error)),
        }
    }

    /// A failure found by us rather than reported by the SDK.
    pub fn other(operation: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            operation: operation.into(),
            status: None,
            code: None,
            transport: false,
            detail: detail.into(),
        }
    }

    /// The same failure, said to have happened while doing `operation`.
    pub fn context(mut self, operation: impl Into<String>) -> Self {
        self.operation = operation.into();
        self
    }

    /// A refusal as the service would answer it (tests of the rules that judge refusals).
    pub fn refused(operation: impl Into<String>, status: u16, code: ErrorCode) -> Self {
        Self {
            operation: operation.into(),
            status: Some(status),
            code: Some(code),
            transport: false,
            detail: "refused".into(),
        }
    }

    /// Whether the service answered with `code`.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.code.as_ref() == Some(&code)
    }

    /// The blob (or its container) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }

    /// The service did not answer at all (connection refused, DNS, timeout).
    pub fn is_unreachable(&self) -> bool {
        self.status.is_none()
    }

    /// A failure that may pass: the service was busy, failed inside, or could not be reached.
    /// Anything else (a refusal, a condition, a missing blob, a check of ours) happens again on
    /// a retry.
    pub fn is_transient(&self) -> bool {
        match self.status {
            None => self.transport,
            Some(status) => status == 408 || status == 429 || status >= 500,
        }
    }

    /// A condition refused a write: the blob changed, or one already stands under the name
    /// (409 or 412, save the archive tier's refusal, which is no condition).
    pub fn is_condition_conflict(&self) -> bool {
        matches!(self.status, Some(409 | 412))
            && !self.is(ErrorCode::BlobArchived)
            && !self.is(ErrorCode::BlobUsesCustomerSpecifiedEncryption)
    }

    /// The blob is immutable: a WORM policy or a legal hold keeps it as it is.
    pub fn is_immutable(&self) -> bool {
        self.is(ErrorCode::BlobImmutableDueToPolicy)
            || self.is(ErrorCode::BlobImmutableDueToLegalHold)
            || self.is(ErrorCode::ContainerImmutableDueToPolicy)
    }

    /// The blob is leased by someone else.
    pub fn is_leased(&self) -> bool {
        self.is(ErrorCode::LeaseIdMissing) || self.is(ErrorCode::LeaseIdMismatchWithBlobOperation)
    }

    /// The identity was recognised, but its role lacks the action (a firewall's or a bad
    /// signature's refusal is no such thing).
    pub fn is_permission_refusal(&self) -> bool {
        self.status == Some(403) && self.is(ErrorCode::AuthorizationPermissionMismatch)
    }

    /// The identity may read and write blobs but not their index tags (only Storage Blob Data
    /// Owner, a custom role with the tags actions, or a SAS with `t`, may).
    pub fn is_tags_refusal(&self) -> bool {
        self.status == Some(403)
            && (self.is(ErrorCode::AuthorizationPermissionMismatch)
                || self.is(ErrorCode::AuthorizationFailure))
    }
}

/// What the SDK's layers add around a failure, which says nothing an admin can act on.
const TRANSPORT_NOISE: [&str; 5] = [
    "retry policy expired and the request will no longer be retried",
    "non-transport error occurred which will not be retried",
    "failed to execute `reqwest` request",
    "error sending request",
    "client error (",
];

/// One line for a failure: the service's answer (its status, error code and the first line of
/// its message), or, for a request that got none, where it went and the innermost cause — never
/// the retry policy's and the transport's layers around it, nor the answer's XML.
fn describe(error: &azure_core::Error) -> String {
    match error.kind() {
        azure_core::error::ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let body = raw_response.as_deref().map(|r| &r.body()[..]);
            answer(u16::from(*status), error_code.as_deref(), body, error)
        }
        azure_core::error::ErrorKind::Io | azure_core::error::ErrorKind::Connection => {
            no_answer(error)
        }
        _ => error_chain(error),
    }
}

/// The service's answer in one line: `403 AuthorizationPermissionMismatch: This request is not
/// authorized…`.
fn answer(
    status: u16,
    code: Option<&str>,
    body: Option<&[u8]>,
    error: &azure_core::Error,
) -> String {
    let message = body
        .and_then(service_message)
        // Our own message (a refusal hint), or the SDK's text: the status and an unparsed body;
        // either may sit under the retry policy's "will not be retried".
        .or_else(|| {
            let text = error_chain(error);
            let text = text
                .strip_prefix(&status.to_string())
                .map_or(text.as_str(), |rest| rest.trim_start_matches(':').trim());
            (!text.is_empty() && !text.starts_with('<'))
                .then(|| text.lines().next().unwrap_or_default().trim().to_owned())
        });
    let code = code.map_or_else(
        || {
            azure_core::http::StatusCode::from(status)
                .canonical_reason()
                .into_owned()
        },
        str::to_owned,
    );
    match message {
        // A message of ours that names the code already.
        Some(message) if message.contains(&code) => message,
        Some(message) => format!("{status} {code}: {message}"),
        None => format!("{status} {code}"),
    }
}

/// The first line of `<Message>` in Azure Storage's XML error (its other lines are the request
/// id and the time).
fn service_message(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Message>")? + "<Message>".len();
    let end = text[start..]
        .find("</Message>")
        .map_or(text.len(), |i| start + i);
    let first = text[start..end].lines().next()?.trim();
    let unescaped = first
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    (!unescaped.is_empty()).then_some(unescaped)
}

/// A request that got no answer: the endpoint it went to and the innermost cause
/// (`could not connect to http://127.0.0.1:9: Connection refused (os error 111)`).
fn no_answer(error: &(dyn std::error::Error + 'static)) -> String {
    let mut endpoint = None;
    let mut connect = false;
    let mut innermost = error;
    let mut cause = Some(error);
    while let Some(inner) = cause {
        // The transport of requests that write metadata names (`metadata_case`) says the same.
        if let Some(ours) = inner.downcast_ref::<super::metadata_case::Unanswered>() {
            connect |= ours.connect;
            endpoint = endpoint.or_else(|| Some(ours.endpoint.clone()));
        }
        if let Some(request) = inner.downcast_ref::<reqwest::Error>() {
            connect |= request.is_connect();
            endpoint = endpoint.or_else(|| {
                request.url().map(|url| {
                    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
                    format!(
                        "{}://{}{port}",
                        url.scheme(),
                        url.host_str().unwrap_or_default()
                    )
                })
            });
        }
        innermost = inner;
        cause = inner.source();
    }
    let root = innermost.to_string().replace('\n', " ");
    let root = if TRANSPORT_NOISE.iter().any(|noise| root.contains(noise)) {
        "no answer".to_owned()
    } else {
        root
    };
    match (endpoint, connect) {
        (Some(endpoint), true) => format!("could not connect to {endpoint}: {root}"),
        (Some(endpoint), false) => format!("no answer from {endpoint}: {root}"),
        (None, _) => format!("no answer from the service: {root}"),
    }
}

/// The error and its causes, outermost first, without the SDK's layers of noise.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause = Some(error);
    while let Some(inner) = cause {
        let text = inner.to_string().replace('\n', " ");
        if !TRANSPORT_NOISE.iter().any(|noise| text.starts_with(noise))
            && !parts.iter().any(|p| p.contains(&text))
        {
            parts.push(text);
        }
        cause = inner.source();
    }
    parts.join(": ")
}

/// Attaches what was being done to an SDK result.
pub trait StorageResultExt<T> {
    fn during(self, operation: impl FnOnce() -> String) -> Result<T, StorageError>;
}

impl<T> StorageResultExt<T> for azure_core::Result<T> {
    fn during(self, operation: impl FnOnce() -> String) -> Result<T, StorageError> {
        self.map_err(|error| StorageError::new(operation(), error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_typed_and_judged() {
        assert_eq!(ErrorCode::parse("BlobNotFound"), ErrorCode::BlobNotFound);
        assert_eq!(
            ErrorCode::parse("SomethingNew"),
            ErrorCode::Other("SomethingNew".into())
        );
        let refused = StorageError::refused("x", 409, ErrorCode::BlobImmutableDueToPolicy);
        assert!(refused.is_immutable() && refused.is_condition_conflict());
        let archived = StorageError::refused("x", 409, ErrorCode::BlobArchived);
        assert!(!archived.is_condition_conflict());
        assert!(
            StorageError::refused("x", 403, ErrorCode::AuthorizationPermissionMismatch)
                .is_tags_refusal()
        );
        assert!(
            StorageError::refused("x", 503, ErrorCode::Other("ServerBusy".into())).is_transient()
        );
        assert!(!StorageError::other("x", "ours").is_transient());
    }

    #[test]
    fn a_service_answer_is_one_line_of_status_code_and_message() {
        use azure_core::{
            error::ErrorKind,
            http::{headers::Headers, RawResponse, StatusCode},
        };
        let answered = |status: StatusCode, code: Option<&str>, body: &str| {
            let raw = (!body.is_empty()).then(|| {
                Box::new(RawResponse::from_bytes(
                    status,
                    Headers::new(),
                    body.as_bytes().to_vec(),
                ))
            });
            let kind = ErrorKind::HttpResponse {
                status,
                error_code: code.map(str::to_owned),
                raw_response: raw,
            };
            let sdk_text = if body.is_empty() {
                status.to_string()
            } else {
                format!("{status}: {body}")
            };
            StorageError::new("reading x", azure_core::Error::with_message(kind, sdk_text))
                .to_string()
        };
        let xml = "\u{feff}<?xml version=\"1.0\"?><Error><Code>ServerBusy</Code><Message>Busy \
                   &amp; &apos;tired&apos;.\nRequestId:0f\nTime:2026-12-06</Message></Error>";
        assert_eq!(
            answered(StatusCode::ServiceUnavailable, Some("ServerBusy"), xml),
            "reading x: 503 ServerBusy: Busy & 'tired'."
        );
        // A HEAD has no body: the code comes from its header.
        assert_eq!(
            answered(StatusCode::NotFound, Some("BlobNotFound"), ""),
            "reading x: 404 BlobNotFound"
        );
        assert_eq!(
            answered(StatusCode::BadGateway, None, ""),
            "reading x: 502 Bad Gateway"
        );
        // A message of ours, wrapped by the retry policy: the message, which names the code.
        let hint = azure_core::Error::with_message(
            ErrorKind::HttpResponse {
                status: StatusCode::Forbidden,
                error_code: Some("AuthorizationPermissionMismatch".into()),
                raw_response: None,
            },
            "SOURCE_STORAGE refused the request of its identity (AuthorizationPermissionMismatch): grant…",
        )
        .with_context("non-transport error occurred which will not be retried");
        assert_eq!(
            StorageError::new("reading x", hint).to_string(),
            "reading x: SOURCE_STORAGE refused the request of its identity \
             (AuthorizationPermissionMismatch): grant…"
        );
    }
}
