//! Azure Data Factory over REST: start a pipeline run and follow it to its end, authenticated with
//! a bearer token for the management resource from `azure_identity` (managed identity in Azure).
//! A poll that fails transiently (throttled, 5xx, no answer) is retried with backoff until the
//! run timeout; a run that is not followed to success is cancelled, so it never copies on after
//! its invocation gave up (and released the source's lease).
//! Reference: Data Factory REST API 2018-06-01, Pipelines - Create Run, Pipeline Runs - Get and
//! Pipeline Runs - Cancel.

use std::{future::Future, time::Duration};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{debug, info, warn};
use url::Url;

use crate::{
    settings::{Settings, SettingsError},
    storage::{redact::redact_secrets, BearerTokens},
};

const API_VERSION: &str = "2018-06-01";
/// The settings that name the pipeline; all or none must be set.
const PIPELINE_SETTINGS: [&str; 4] = [
    "ADF_SUBSCRIPTION_ID",
    "ADF_RESOURCE_GROUP",
    "ADF_FACTORY_NAME",
    "ADF_PIPELINE_NAME",
];

#[derive(Debug, Clone)]
pub struct AdfConfig {
    pub management_endpoint: Url,
    pub subscription_id: String,
    pub resource_group: String,
    pub factory_name: String,
    pub pipeline_name: String,
    pub client_id: Option<String>,
    pub poll_interval: Duration,
    pub run_timeout: Duration,
}

impl AdfConfig {
    /// `None` when no pipeline setting is present; an error naming what is missing when only
    /// some are.
    pub fn from_settings(settings: &Settings) -> Result<Option<Self>, SettingsError> {
        let values: Vec<Option<&str>> = PIPELINE_SETTINGS.iter().map(|s| settings.get(s)).collect();
        if values.iter().all(Option::is_none) {
            return Ok(None);
        }
        if let Some(i) = values.iter().position(Option::is_none) {
            return Err(SettingsError::new(
                PIPELINE_SETTINGS[i],
                "is not set, but other ADF_* settings are: the ADF copy engine needs all of \
                 ADF_SUBSCRIPTION_ID, ADF_RESOURCE_GROUP, ADF_FACTORY_NAME, ADF_PIPELINE_NAME",
            ));
        }
        let value = |i: usize| values[i].unwrap_or_default().to_owned();
        let endpoint_setting = "ADF_MANAGEMENT_ENDPOINT";
        let management_endpoint =
            Url::parse(settings.get_or(endpoint_setting, "https://management.azure.com"))
                .ok()
                .filter(|u| !u.cannot_be_a_base())
                .filter(|u| u.scheme() == "https" || (u.scheme() == "http" && is_loopback(u)))
                .ok_or_else(|| {
                    SettingsError::new(
                        endpoint_setting,
                        "is not an https URL (http is allowed only on loopback: a bearer token \
                         must not travel in clear text)",
                    )
                })?;
        Ok(Some(Self {
            management_endpoint,
            subscription_id: value(0),
            resource_group: value(1),
            factory_name: value(2),
            pipeline_name: value(3),
            client_id: settings.get("ADF_CLIENT_ID").map(str::to_owned),
            poll_interval: settings.get_duration("ADF_POLL_INTERVAL_MS", 15_000, 10..=600_000)?,
            run_timeout: settings.get_duration(
                "ADF_RUN_TIMEOUT_SECONDS",
                DEFAULT_RUN_TIMEOUT_SECONDS,
                1..=86_400,
            )?,
        }))
    }

    /// `…/factories/{factory}` followed by `tail`, each part percent-encoded.
    fn factory_url(&self, tail: &[&str]) -> Url {
        let mut url = self.management_endpoint.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend([
                "subscriptions",
                &self.subscription_id,
                "resourceGroups",
                &self.resource_group,
                "providers",
                "Microsoft.DataFactory",
                "factories",
                &self.factory_name,
            ]);
            segments.extend(tail);
        }
        url.query_pairs_mut()
            .append_pair("api-version", API_VERSION);
        url
    }

    /// The token scope of the management endpoint (`https://management.azure.com/.default`).
    fn scope(&self) -> String {
        format!(
            "{}/.default",
            self.management_endpoint.as_str().trim_end_matches('/')
        )
    }
}

/// `ADF_RUN_TIMEOUT_SECONDS` when unset: a run and its checks fit the default 10-minute
/// `functionTimeout`.
pub const DEFAULT_RUN_TIMEOUT_SECONDS: u64 = 480;

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The pipeline's four parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineParameters {
    pub container: String,
    pub container_backup: String,
    pub blob_name: String,
    pub blob_name_backup: String,
}

#[derive(Debug, Error)]
pub enum AdfError {
    #[error("getting a management token: {0}")]
    Token(String),
    #[error("Data Factory is unreachable: {0}")]
    Unreachable(String),
    #[error("Data Factory answered {status} to {operation}: {body}")]
    Http {
        operation: &'static str,
        status: u16,
        body: String,
    },
    #[error("Data Factory sent an unexpected reply to {operation}: {detail}")]
    BadReply {
        operation: &'static str,
        detail: String,
    },
    #[error("pipeline run {run_id} ended {status}: {message}")]
    RunEnded {
        run_id: String,
        status: String,
        message: String,
    },
    #[error("pipeline run {run_id} did not finish within {waited:?}; it was cancelled")]
    Timeout { run_id: String, waited: Duration },
    #[error("pipeline run {run_id} was abandoned and cancelled: {reason}")]
    Abandoned { run_id: String, reason: String },
}

impl AdfError {
    /// Worth polling again: throttled, a server error, or no answer.
    fn is_transient(&self) -> bool {
        match self {
            AdfError::Unreachable(_) => true,
            AdfError::Http { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

#[derive(Debug, Deserialize)]
struct CreateRunReply {
    #[serde(rename = "runId")]
    run_id: String,
}

#[derive(Debug, Deserialize)]
struct PipelineRun {
    status: String,
    #[serde(default)]
    message: String,
}

pub struct AdfClient {
    config: AdfConfig,
    http: reqwest::Client,
    tokens: BearerTokens,
}

impl AdfClient {
    pub fn new(config: AdfConfig) -> Result<Self, SettingsError> {
        let tokens =
            BearerTokens::of_identity("ADF_CLIENT_ID", "ADF_CLIENT_ID", &config.client_id)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| SettingsError::new("ADF_MANAGEMENT_ENDPOINT", e.to_string()))?;
        Ok(Self {
            config,
            http,
            tokens,
        })
    }

    pub fn config(&self) -> &AdfConfig {
        &self.config
    }

    async fn bearer(&self) -> Result<String, AdfError> {
        let scope = self.config.scope();
        self.tokens.header(&scope).await.map_err(AdfError::Token)
    }

    /// Whether the pipeline can be read through ARM with the app's identity (Get Pipeline):
    /// what `lakebackup doctor` checks, writing nothing.
    pub async fn check_pipeline(&self) -> Result<(), AdfError> {
        const OPERATION: &str = "get pipeline";
        let url = self
            .config
            .factory_url(&["pipelines", &self.config.pipeline_name]);
        let response = self
            .http
            .get(url)
            .header("authorization", self.bearer().await?)
            .send()
            .await
            .map_err(unreachable)?;
        read_json::<serde_json::Value>(OPERATION, response).await?;
        Ok(())
    }

    /// Starts a run of the pipeline; returns its run id.
    pub async fn create_run(&self, parameters: &PipelineParameters) -> Result<String, AdfError> {
        const OPERATION: &str = "createRun";
        let url = self
            .config
            .factory_url(&["pipelines", &self.config.pipeline_name, "createRun"]);
        let response = self
            .http
            .post(url)
            .header("authorization", self.bearer().await?)
            .json(parameters)
            .send()
            .await
            .map_err(unreachable)?;
        let reply: CreateRunReply = read_json(OPERATION, response).await?;
        info!(run_id = reply.run_id, "pipeline run started");
        Ok(reply.run_id)
    }

    /// Follows the run until `Succeeded`; `Failed`/`Cancelled` end it with an error. It is
    /// cancelled when the run timeout passes or `abandon` resolves (with its reason) first, and
    /// on any other failure, so that no run outlives the wait for it.
    pub async fn follow_run(
        &self,
        run_id: &str,
        abandon: impl Future<Output = String>,
    ) -> Result<(), AdfError> {
        let result = tokio::select! {
            result = tokio::time::timeout(self.config.run_timeout, self.wait_for_end(run_id)) => {
                result.unwrap_or_else(|_| Err(AdfError::Timeout {
                    run_id: run_id.to_owned(),
                    waited: self.config.run_timeout,
                }))
            }
            reason = abandon => Err(AdfError::Abandoned { run_id: run_id.to_owned(), reason }),
        };
        if matches!(&result, Err(e) if !matches!(e, AdfError::RunEnded { .. })) {
            if let Err(e) = self.cancel_run(run_id).await {
                warn!(run_id, error = %e, "could not cancel the pipeline run");
            }
        }
        result
    }

    async fn wait_for_end(&self, run_id: &str) -> Result<(), AdfError> {
        loop {
            let run = self.poll_with_retries(run_id).await?;
            debug!(run_id, status = run.status, "pipeline run polled");
            match run.status.as_str() {
                "Succeeded" => return Ok(()),
                "Failed" | "Cancelled" | "Canceled" => {
                    return Err(AdfError::RunEnded {
                        run_id: run_id.to_owned(),
                        status: run.status,
                        message: run.message,
                    })
                }
                _ => tokio::time::sleep(self.config.poll_interval).await,
            }
        }
    }

    /// One status read; throttling, server errors and silence are retried with backoff
    /// (`Retry-After` honoured) until the caller's deadline ends the wait.
    async fn poll_with_retries(&self, run_id: &str) -> Result<PipelineRun, AdfError> {
        const OPERATION: &str = "pipelineruns";
        let mut backoff = Duration::from_millis(500);
        loop {
            let url = self.config.factory_url(&["pipelineruns", run_id]);
            let sent = self
                .http
                .get(url)
                .header("authorization", self.bearer().await?)
                .send()
                .await
                .map_err(unreachable);
            let (result, retry_after) = match sent {
                Ok(response) => {
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    (read_json(OPERATION, response).await, retry_after)
                }
                Err(e) => (Err(e), None),
            };
            match result {
                Err(e) if e.is_transient() => {
                    let wait = retry_after.unwrap_or(backoff).min(Duration::from_secs(60));
                    warn!(run_id, error = %e, ?wait, "polling the pipeline run failed; retrying");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                other => return other,
            }
        }
    }

    /// Asks Data Factory to cancel the run.
    pub async fn cancel_run(&self, run_id: &str) -> Result<(), AdfError> {
        let url = self.config.factory_url(&["pipelineruns", run_id, "cancel"]);
        let response = self
            .http
            .post(url)
            .header("authorization", self.bearer().await?)
            .header("content-length", "0")
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let body = response.text().await.unwrap_or_default();
            return Err(AdfError::Http {
                operation: "cancel",
                status,
                body: redact_secrets(&body.chars().take(500).collect::<String>()),
            });
        }
        info!(run_id, "pipeline run cancelled");
        Ok(())
    }
}

fn unreachable(error: reqwest::Error) -> AdfError {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        text.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    AdfError::Unreachable(redact_secrets(&text))
}

async fn read_json<T: serde::de::DeserializeOwned>(
    operation: &'static str,
    response: reqwest::Response,
) -> Result<T, AdfError> {
    let status = response.status().as_u16();
    let body = response.text().await.map_err(unreachable)?;
    if !(200..300).contains(&status) {
        return Err(AdfError::Http {
            operation,
            status,
            body: redact_secrets(&body.chars().take(500).collect::<String>()),
        });
    }
    serde_json::from_str(&body).map_err(|e| AdfError::BadReply {
        operation,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn pipeline_settings_are_all_or_nothing() {
        assert!(AdfConfig::from_settings(&Settings::default())
            .unwrap()
            .is_none());
        let err = AdfConfig::from_settings(&settings(&[("ADF_FACTORY_NAME", "f")])).unwrap_err();
        assert_eq!(err.setting, "ADF_SUBSCRIPTION_ID");
    }

    #[test]
    fn urls_follow_the_rest_api_and_encode_names() {
        let config = AdfConfig::from_settings(&settings(&[
            ("ADF_SUBSCRIPTION_ID", "sub"),
            ("ADF_RESOURCE_GROUP", "rg (prod)"),
            ("ADF_FACTORY_NAME", "factory"),
            ("ADF_PIPELINE_NAME", "copy blob"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            config
                .factory_url(&["pipelines", &config.pipeline_name, "createRun"])
                .as_str(),
            "https://management.azure.com/subscriptions/sub/resourceGroups/rg%20(prod)/providers/\
             Microsoft.DataFactory/factories/factory/pipelines/copy%20blob/createRun?api-version=2018-06-01"
        );
        assert_eq!(config.scope(), "https://management.azure.com/.default");
    }

    #[test]
    fn a_token_never_travels_in_clear_text_off_loopback() {
        let with_endpoint = |endpoint: &str| {
            AdfConfig::from_settings(&settings(&[
                ("ADF_SUBSCRIPTION_ID", "sub"),
                ("ADF_RESOURCE_GROUP", "rg"),
                ("ADF_FACTORY_NAME", "factory"),
                ("ADF_PIPELINE_NAME", "copy"),
                ("ADF_MANAGEMENT_ENDPOINT", endpoint),
            ]))
        };
        assert!(with_endpoint("https://management.usgovcloudapi.net").is_ok());
        assert!(with_endpoint("http://127.0.0.1:8080").is_ok());
        assert!(with_endpoint("http://localhost:8080").is_ok());
        let err = with_endpoint("http://management.example.com").unwrap_err();
        assert_eq!(err.setting, "ADF_MANAGEMENT_ENDPOINT");
        assert!(with_endpoint("ftp://127.0.0.1").is_err());
    }
}
