//! Identity-based (keys-off) connections: the Entra credential a connection uses, and the two
//! things that make its failures readable. A token that cannot be had, or a request the account
//! refuses, becomes one line naming the connection and what to check or grant; a token never
//! appears in it.

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::{
    credentials::{AccessToken, TokenCredential, TokenRequestOptions},
    error::ErrorKind,
    http::{
        headers::HeaderName,
        policies::{Policy, PolicyResult},
        ClientOptions, Context, ExponentialRetryOptions, Request, RetryOptions, StatusCode,
    },
    time::Duration,
};
use azure_identity::{
    DeveloperToolsCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId,
};

use super::redact::redact_secrets;
use crate::settings::SettingsError;

/// Managed identity where the platform offers one (App Service / Functions set
/// `IDENTITY_ENDPOINT`) or a user-assigned identity is named; the developer-tools chain
/// (Azure CLI, azd) on a workstation. Its errors name `setting`, and `client_id_setting` for a
/// user-assigned identity.
pub(crate) fn identity_credential(
    setting: &str,
    client_id_setting: &str,
    client_id: &Option<String>,
) -> Result<Arc<dyn TokenCredential>, SettingsError> {
    let on_platform = std::env::var_os("IDENTITY_ENDPOINT").is_some();
    let (credential, source): (azure_core::Result<Arc<dyn TokenCredential>>, _) = if on_platform
        || client_id.is_some()
    {
        let credential = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
            user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
            client_options: token_client_options(),
        }))
        .map(|c| c as Arc<dyn TokenCredential>);
        let source = match client_id {
            Some(_) => format!(
                "the user-assigned managed identity named by {client_id_setting} \
                     (is it assigned to this app?)"
            ),
            None => "the app's system-assigned managed identity (is it turned on?)".to_owned(),
        };
        (credential, source)
    } else {
        let credential = DeveloperToolsCredential::new(None).map(|c| c as Arc<dyn TokenCredential>);
        let source =
            "the developer tools (run `az login` or `azd auth login`; in Azure, turn on the app's \
                 managed identity)"
                .to_owned();
        (credential, source)
    };
    let credential = credential.map_err(|e| {
        SettingsError::new(
            setting,
            format!(
                "identity-based connection has no usable credential: {}",
                redact_secrets(&e.to_string())
            ),
        )
    })?;
    Ok(Arc::new(NamedCredential {
        inner: credential,
        connection: setting.to_owned(),
        source,
    }))
}

/// The identity endpoint is local to the host: a few quick retries, then a clear error. The
/// SDK's default backs off for well over a minute before it gives up.
fn token_client_options() -> ClientOptions {
    ClientOptions {
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: Duration::milliseconds(500),
            max_retries: 4,
            max_total_elapsed: Duration::seconds(15),
            max_delay: Duration::seconds(5),
        }),
        ..ClientOptions::default()
    }
}

/// A credential whose failures say which connection wanted the token and where it came from.
#[derive(Debug)]
struct NamedCredential {
    inner: Arc<dyn TokenCredential>,
    connection: String,
    source: String,
}

#[async_trait]
impl TokenCredential for NamedCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.inner.get_token(scopes, options).await.map_err(|e| {
            azure_core::Error::with_message(
                ErrorKind::Credential,
                format!(
                    "{}: could not get a token for {} from {}: {}",
                    self.connection,
                    scopes
                        .first()
                        .map_or("", |scope| scope.trim_end_matches("/.default")),
                    self.source,
                    root_cause(&e)
                ),
            )
        })
    }
}

/// The innermost cause, on one line and without secrets: the SDK's outer layers add retry
/// and troubleshooting text around it.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = error;
    while let Some(inner) = innermost.source() {
        innermost = inner;
    }
    redact_secrets(&innermost.to_string()).replace('\n', " ")
}

/// The service's error codes for a refused identity (as opposed to a refused operation).
const REFUSAL_CODES: [&str; 5] = [
    "AuthorizationPermissionMismatch",
    "AuthorizationFailure",
    "AuthenticationFailed",
    "InvalidAuthenticationInfo",
    "NoAuthenticationInformation",
];

/// Refused by an account with shared key access turned off.
const KEYS_OFF_CODE: &str = "KeyBasedAuthenticationNotPermitted";

/// Turns a 401 or 403 that refuses the connection's credential into an error naming the
/// connection and what to do: for an identity, the role to grant; for a key or SAS on an account
/// with keys off, the identity-based settings. Status and error code are kept, so callers still
/// tell a refusal from other failures. Runs after the authorization policy, per try.
#[derive(Debug)]
pub(super) struct RefusalHintPolicy {
    pub connection: String,
    /// The connection is identity-based (else a key or a SAS).
    pub identity: bool,
}

#[async_trait]
impl Policy for RefusalHintPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let response = next[0].send(ctx, request, &next[1..]).await?;
        let status = response.status();
        if !matches!(status, StatusCode::Unauthorized | StatusCode::Forbidden) {
            return Ok(response);
        }
        let code = response
            .headers()
            .get_optional_string(&HeaderName::from_static("x-ms-error-code"));
        let message = if !self.identity {
            if code.as_deref() != Some(KEYS_OFF_CODE) {
                return Ok(response);
            }
            keys_off_hint(&self.connection)
        } else if code
            .as_deref()
            .is_some_and(|code| !REFUSAL_CODES.contains(&code))
        {
            return Ok(response);
        } else {
            refusal_hint(
                &self.connection,
                status,
                code.as_deref(),
                request.url().as_str(),
            )
        };
        Err(azure_core::Error::with_message(
            ErrorKind::HttpResponse {
                status,
                error_code: code,
                raw_response: None,
            },
            message,
        ))
    }
}

/// One line for a key or SAS refused by an account that allows only Entra ID.
fn keys_off_hint(connection: &str) -> String {
    format!(
        "{connection} was refused ({KEYS_OFF_CODE}): the account has shared key access turned \
         off, so its key or SAS cannot be used; give {connection}__blobServiceUri (and \
         {connection}__queueServiceUri) instead, for an identity-based connection"
    )
}

/// One line: which connection was refused, with which code, and what to grant or check.
fn refusal_hint(connection: &str, status: StatusCode, code: Option<&str>, url: &str) -> String {
    let authentication = status == StatusCode::Unauthorized
        || code.is_some_and(|code| {
            matches!(
                code,
                "AuthenticationFailed"
                    | "InvalidAuthenticationInfo"
                    | "NoAuthenticationInformation"
            )
        });
    let code = code.unwrap_or("no error code");
    let fix = if authentication {
        "the account did not accept its token (expired, or not issued for https://storage.azure.com); \
         check the managed identity and the machine's clock"
            .to_owned()
    } else if url.contains("comp=userdelegationkey") {
        "grant its identity the role Storage Blob Delegator on the account (Storage Blob Data \
         Contributor includes it): copies sign a user-delegation SAS"
            .to_owned()
    } else if url.contains(".queue.") || url.contains("/messages") {
        "grant its identity the role Storage Queue Data Contributor on the account".to_owned()
    } else {
        "grant its identity the role Storage Blob Data Contributor on the account".to_owned()
    };
    format!("{connection} refused the request of its identity ({code}): {fix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_connection_and_the_role() {
        let delegation = refusal_hint(
            "SOURCE_STORAGE",
            StatusCode::Forbidden,
            Some("AuthorizationPermissionMismatch"),
            "https://lake.blob.core.windows.net/?restype=service&comp=userdelegationkey",
        );
        assert!(
            delegation.starts_with("SOURCE_STORAGE refused"),
            "{delegation}"
        );
        assert!(
            delegation.contains("Storage Blob Delegator"),
            "{delegation}"
        );
        let queue = refusal_hint(
            "AzureWebJobsStorage",
            StatusCode::Forbidden,
            Some("AuthorizationPermissionMismatch"),
            "https://jobs.queue.core.windows.net/backup-requests/messages",
        );
        assert!(queue.contains("Storage Queue Data Contributor"), "{queue}");
        let blob = refusal_hint(
            "BACKUP_STORAGE",
            StatusCode::Forbidden,
            Some("AuthorizationFailure"),
            "https://bak.blob.core.windows.net/lakebak/x",
        );
        assert!(blob.contains("Storage Blob Data Contributor"), "{blob}");
        let expired = refusal_hint(
            "BACKUP_STORAGE",
            StatusCode::Forbidden,
            Some("AuthenticationFailed"),
            "https://bak.blob.core.windows.net/lakebak/x",
        );
        assert!(expired.contains("expired"), "{expired}");
        let keys_off = keys_off_hint("SOURCE_STORAGE");
        assert!(
            keys_off.contains("SOURCE_STORAGE__blobServiceUri"),
            "{keys_off}"
        );
    }
}

/// Bearer tokens of the app's identity for services other than storage (Data Factory's ARM
/// endpoint): the credential stays inside the seam, callers get the header's value.
#[derive(Clone)]
pub struct BearerTokens(Arc<dyn TokenCredential>);

impl BearerTokens {
    /// Tokens of the identity [`identity_credential`] picks; its errors name `setting`.
    pub fn of_identity(
        setting: &str,
        client_id_setting: &str,
        client_id: &Option<String>,
    ) -> Result<Self, SettingsError> {
        identity_credential(setting, client_id_setting, client_id).map(BearerTokens)
    }

    /// `Bearer {token}` for `scope`; the error is one line, without secrets.
    pub async fn header(&self, scope: &str) -> Result<String, String> {
        let token = self
            .0
            .get_token(&[scope], None)
            .await
            .map_err(|e| redact_secrets(&e.to_string()))?;
        Ok(format!("Bearer {}", token.token.secret()))
    }
}
