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
            detail: redact_secrets(&error_chain(&error)),
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

/// The error and its causes, outermost first: "retry policy expired" alone hides the refused
/// connection behind it.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut cause = error.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
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
}
