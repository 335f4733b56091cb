//! A storage failure reaches the admin as one clear line: what was being done, then the
//! service's status, error code and the first line of its message — or, for an account that
//! does not answer, where and why — with neither the SDK's retry and transport layers, nor the
//! answer's XML, nor a secret. Through the real binary: an account on a closed port, a key
//! Azurite refuses (403), and 500s injected by the proxy on every request.

use crate::support;

use std::collections::HashMap;

use serde_json::Value;
use support::{
    azurite::SOURCE_KEY,
    proxy::{FaultKind, Faults, OpClass, ProxiedAzurite, ProxyConfig},
    worker, Azurite,
};

/// A key Azurite does not know for the source account: valid base64, so it signs, and is refused.
const WRONG_KEY: &str = "bm90IHRoZSBzb3VyY2UgYWNjb3VudCdzIGtleSwgYSB0ZXN0IG9uZSE=";

/// The `error` of the summary `lakebackup ARGS` ends with, after checking it is one clean line.
fn error_line(settings: &HashMap<String, String>, args: &[&str], secrets: &[&str]) -> String {
    let (code, stdout, stderr) = worker::run_once(settings, args);
    assert_eq!(code, 1, "{args:?}: {stdout}{stderr}");
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{args:?}: a JSON summary ({e}): {stdout}{stderr}"));
    let error = summary["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{args:?}: an error: {summary}"))
        .to_owned();
    assert!(!error.contains('\n'), "{args:?}: one line: {error:?}");
    for noise in [
        "retry policy",
        "no longer be retried",
        "reqwest",
        "client error",
        "error sending request",
        "<?xml",
        "<Error>",
        "RequestId",
    ] {
        assert!(!error.contains(noise), "{args:?}: {noise:?} in {error:?}");
    }
    for secret in secrets {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{args:?}: a secret in the output: {stdout}{stderr}"
        );
    }
    error
}

#[test]
fn an_unreachable_account_is_one_sentence_naming_where_and_why() {
    let port = support::closed_port();
    let mut settings = HashMap::new();
    for (setting, account) in [
        ("SOURCE_STORAGE", "source"),
        ("BACKUP_STORAGE", "backup"),
        ("AzureWebJobsStorage", "jobs"),
    ] {
        settings.insert(
            setting.to_owned(),
            format!(
                "AccountName={account};AccountKey={SOURCE_KEY};\
                 BlobEndpoint=http://127.0.0.1:{port}/{account};\
                 QueueEndpoint=http://127.0.0.1:{port}/{account}"
            ),
        );
    }
    let error = error_line(&settings, &["verify", "--container", "lake"], &[SOURCE_KEY]);
    assert_eq!(
        error,
        format!(
            "reading container lake: could not connect to http://127.0.0.1:{port}: Connection \
             refused (os error 111)"
        )
    );
    let error = error_line(&settings, &["reconcile"], &[SOURCE_KEY]);
    assert!(
        error.starts_with(&format!(
            "listing containers: could not connect to http://127.0.0.1:{port}: "
        )),
        "{error}"
    );
}

#[test]
fn a_refused_key_is_its_status_code_and_message() {
    let azurite = Azurite::start();
    let mut settings = worker::settings(&azurite);
    settings.insert(
        "SOURCE_STORAGE".into(),
        azurite.connection_string("source", WRONG_KEY),
    );
    // Azure answers a bad signature with AuthenticationFailed; Azurite with AuthorizationFailure
    // (and the same message): either is the service's own code, passed on as it came.
    let message = "Server failed to authenticate the request. Make sure the value of the \
                   Authorization header is formed correctly including the signature.";
    for (args, operation) in [
        (&["reconcile"][..], "listing containers"),
        (&["verify", "--container", "lake"], "reading container lake"),
    ] {
        let error = error_line(&settings, args, &[WRONG_KEY]);
        assert!(
            ["AuthenticationFailed", "AuthorizationFailure"]
                .iter()
                .any(|code| error == format!("{operation}: 403 {code}: {message}")),
            "{error}"
        );
    }
}

#[test]
fn a_failing_service_is_its_status_code_and_message_once() {
    let azurite = Azurite::start();
    let proxied = ProxiedAzurite::start(
        &azurite,
        ProxyConfig::azurite().faults(
            Faults::new(3, 1.0)
                .classes(OpClass::ALL)
                .kinds([FaultKind::InternalError]),
        ),
    )
    .expect("proxies start");
    let settings = proxied.settings();
    let error = error_line(&settings, &["verify", "--container", "lake"], &[SOURCE_KEY]);
    assert_eq!(
        error,
        "reading container lake: 500 InternalError: The server encountered an internal error. \
         Please retry the request."
    );
    // Retried, as a 500 should be, before the line was written.
    assert!(proxied.stats().faults_of_kind(FaultKind::InternalError) > 1);
}
