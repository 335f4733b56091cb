//! How the answer to a probe is read: let through (a missing resource, a condition not met),
//! refused for want of a right (a 403 whose code says a permission is missing), refused for
//! another reason (network rules, a signature not accepted, a disabled account), or nothing said.

use crate::storage::{ErrorCode, StorageError};

/// What trying a right found.
#[derive(Debug)]
pub enum Probed {
    /// The service let the request through: what it answered (a missing resource, a condition).
    Allowed(String),
    /// Refused for want of the right: 403 with a code that says a permission is missing.
    Refused(StorageError),
    /// Refused for another reason than a missing right (a network rule, a signature or token not
    /// accepted, a disabled account): the error, and that reason in words.
    Blocked(StorageError, &'static str),
    /// Failed another way (unreachable, busy, an answer that says nothing of the right).
    Inconclusive(StorageError),
    /// Not tried: why it could not be without changing something.
    NotTried(&'static str),
}

/// What a refusal (401 or 403) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The credential was accepted, and lacks the permission (a role's action, a SAS's `sp`,
    /// `ss` or `srt`).
    MissingRight,
    /// Refused for another reason, in words.
    Other(&'static str),
}

/// Why a request was refused, by its error code, when no permission is what is missing.
fn refused_because(code: &str) -> &'static str {
    match code {
        "AuthorizationFailure" => {
            "the account's network rules (firewall, virtual networks, private endpoints) do not \
             let this client in, or another rule than a permission refuses it"
        }
        "AuthorizationSourceIPMismatch" => "its SAS allows other IP addresses only (sip)",
        "AuthorizationProtocolMismatch" => {
            "its SAS allows HTTPS only (spr=https), and the endpoint is http"
        }
        "AuthenticationFailed" | "InvalidAuthenticationInfo" | "NoAuthenticationInformation" => {
            "its key, SAS signature or token is not accepted (a wrong or rotated key, a SAS signed \
             for another resource or with another key, an expired token)"
        }
        "AccountIsDisabled" => "the account is disabled",
        _ => "the service refused it without naming a missing permission",
    }
}

impl StorageError {
    /// What a refusal says: a right missing, or another reason; `None` when this is no refusal.
    pub fn refusal(&self) -> Option<Refusal> {
        if !matches!(self.status, Some(401 | 403)) {
            return None;
        }
        let code = self.code_name();
        Some(match code.as_str() {
            "AuthorizationPermissionMismatch"
            | "AuthorizationServiceMismatch"
            | "AuthorizationResourceTypeMismatch" => Refusal::MissingRight,
            other => Refusal::Other(refused_because(other)),
        })
    }

    /// The service's error code as it sent it; empty when it sent none.
    pub fn code_name(&self) -> String {
        match &self.code {
            Some(ErrorCode::Other(code)) => code.clone(),
            Some(code) => format!("{code:?}"),
            None => String::new(),
        }
    }
}

/// What an operation that was let through, or refused, says of the right.
pub(super) fn judged<T>(answer: Result<T, StorageError>) -> Probed {
    match answer {
        Ok(_) => Probed::Allowed("it succeeded".into()),
        Err(e) => match e.refusal() {
            Some(Refusal::MissingRight) => Probed::Refused(e),
            Some(Refusal::Other(why)) => Probed::Blocked(e, why),
            None if matches!(e.status, Some(404 | 409 | 412)) => Probed::Allowed(format!(
                "answered {} {}",
                e.status.unwrap_or_default(),
                e.code_name()
            )),
            None => Probed::Inconclusive(e),
        },
    }
}
