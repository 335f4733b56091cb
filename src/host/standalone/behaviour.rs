//! How `lakebackup run` behaves, as the host would: the queue trigger's settings and
//! `functionTimeout` read from `host.json` as the host reads them, and the reconciliation's
//! schedule (`RECONCILE_SCHEDULE`).

use std::{path::Path, time::Duration};

use croner::{parser::CronParser, parser::Seconds, Cron};
use serde_json::Value;

use super::StandaloneError;
use crate::settings::{Settings, SettingsError};

/// The queue trigger's behaviour, as `host.json` configures the host's.
#[derive(Debug, Clone)]
pub struct QueueBehaviour {
    /// `extensions.queues.maxDequeueCount` (default 5).
    pub max_dequeue_count: u64,
    /// `extensions.queues.batchSize` (default 16): messages in flight at once.
    pub batch_size: usize,
    /// `extensions.queues.visibilityTimeout` (default 0): how long a failed message waits.
    pub retry_delay: Duration,
    /// How long one invocation may run (`functionTimeout`; `None` for `-1`, unbounded).
    pub function_timeout: Option<Duration>,
    /// How long a taken message stays hidden before its window is renewed
    /// (`RUN_VISIBILITY_SECONDS`; renewed at half, while the invocation runs).
    pub visibility_window: Duration,
    /// `extensions.queues.maxPollingInterval` (default 1 s here): wait when the queue is empty.
    pub poll_interval: Duration,
}

impl Default for QueueBehaviour {
    fn default() -> Self {
        Self {
            max_dequeue_count: 5,
            batch_size: 16,
            retry_delay: Duration::ZERO,
            function_timeout: Some(Duration::from_secs(600)),
            visibility_window: Duration::from_secs(600),
            poll_interval: Duration::from_secs(1),
        }
    }
}

impl QueueBehaviour {
    /// Reads `host.json` at `path`; a missing file gives the host's defaults.
    pub fn from_host_json(path: &Path) -> Result<Self, StandaloneError> {
        let mut behaviour = Self::default();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(behaviour),
            Err(e) => return Err(host_json_error(path, e.to_string())),
        };
        let host: Value =
            serde_json::from_str(&text).map_err(|e| host_json_error(path, e.to_string()))?;
        let queues = &host["extensions"]["queues"];
        let number = |field: &str| queues[field].as_u64();
        if let Some(n) = number("maxDequeueCount") {
            behaviour.max_dequeue_count = n.max(1);
        }
        if let Some(n) = number("batchSize") {
            behaviour.batch_size = n.clamp(1, 32) as usize;
        }
        let timespan = |value: &Value, field: &str| -> Result<Option<Duration>, StandaloneError> {
            value
                .as_str()
                .map(|t| {
                    parse_timespan(t)
                        .ok_or_else(|| host_json_error(path, format!("{field} is not hh:mm:ss")))
                })
                .transpose()
        };
        if let Some(delay) = timespan(&queues["visibilityTimeout"], "visibilityTimeout")? {
            behaviour.retry_delay = delay;
        }
        if let Some(interval) = timespan(&queues["maxPollingInterval"], "maxPollingInterval")? {
            behaviour.poll_interval = interval.max(Duration::from_millis(100));
        }
        behaviour.function_timeout = function_timeout(&host)
            .map_err(|reason| host_json_error(path, reason))?
            .unwrap_or(behaviour.function_timeout);
        Ok(behaviour)
    }
}

/// `functionTimeout` of a parsed host.json: `None` when absent, `Some(None)` for `-1`
/// (unbounded), else the duration.
fn function_timeout(host: &Value) -> Result<Option<Option<Duration>>, String> {
    match &host["functionTimeout"] {
        Value::Null => Ok(None),
        Value::String(text) if text.trim() == "-1" => Ok(Some(None)),
        Value::String(text) => parse_timespan(text)
            .filter(|d| !d.is_zero())
            .map(|d| Some(Some(d)))
            .ok_or_else(|| "functionTimeout is not hh:mm:ss or -1".to_owned()),
        _ => Err("functionTimeout is not a string (hh:mm:ss or -1)".to_owned()),
    }
}

/// `functionTimeout` from the host.json at `path` (the host's default of 10 minutes when the
/// file or the field is absent; `None` for `-1`).
pub fn function_timeout_of(path: &Path) -> Result<Option<Duration>, StandaloneError> {
    Ok(QueueBehaviour::from_host_json(path)?.function_timeout)
}

fn host_json_error(path: &Path, reason: String) -> StandaloneError {
    StandaloneError::HostJson {
        path: path.display().to_string(),
        reason,
    }
}

/// `hh:mm:ss` (optionally `d.hh:mm:ss`), the .NET TimeSpan form host.json uses.
fn parse_timespan(text: &str) -> Option<Duration> {
    if text.contains('-') {
        return None;
    }
    let (days, clock) = match text.split_once('.') {
        Some((d, rest)) if rest.contains(':') && !d.contains(':') => (d.parse::<u64>().ok()?, rest),
        _ => (0, text),
    };
    let parts: Vec<f64> = clock
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = parts[..] else { return None };
    if [h, m, s].iter().any(|p| !p.is_finite() || *p < 0.0) {
        return None;
    }
    Duration::try_from_secs_f64(days as f64 * 86_400.0 + h * 3600.0 + m * 60.0 + s).ok()
}

/// The reconciler's schedule when `RECONCILE_SCHEDULE` is unset: daily at 02:00 UTC.
pub const DEFAULT_RECONCILE_SCHEDULE: &str = "0 0 2 * * *";

/// `RECONCILE_SCHEDULE`, a 6-field NCRONTAB expression (seconds first); daily by default.
pub fn reconcile_schedule(settings: &Settings) -> Result<Cron, SettingsError> {
    let text = settings.get_or("RECONCILE_SCHEDULE", DEFAULT_RECONCILE_SCHEDULE);
    CronParser::builder()
        .seconds(Seconds::Required)
        .build()
        .parse(text)
        .map_err(|e| {
            SettingsError::new(
                "RECONCILE_SCHEDULE",
                format!(
                    "is not a 6-field NCRONTAB expression (sec min hour day month weekday): {e}"
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_json_configures_the_queue_trigger() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.json");
        std::fs::write(
            &path,
            r#"{"version":"2.0","functionTimeout":"00:10:00","extensions":{"queues":{"maxDequeueCount":2,"batchSize":4,"visibilityTimeout":"00:00:01.5"}}}"#,
        )
        .unwrap();
        let behaviour = QueueBehaviour::from_host_json(&path).unwrap();
        assert_eq!(behaviour.max_dequeue_count, 2);
        assert_eq!(behaviour.batch_size, 4);
        assert_eq!(behaviour.retry_delay, Duration::from_millis(1500));
        assert_eq!(behaviour.function_timeout, Some(Duration::from_secs(600)));
        let missing = QueueBehaviour::from_host_json(&dir.path().join("none.json")).unwrap();
        assert_eq!(missing.max_dequeue_count, 5);
        std::fs::write(&path, "{not json").unwrap();
        assert!(QueueBehaviour::from_host_json(&path).is_err());
        std::fs::write(&path, r#"{"functionTimeout":"-1"}"#).unwrap();
        assert_eq!(
            QueueBehaviour::from_host_json(&path)
                .unwrap()
                .function_timeout,
            None
        );
        for bad in [
            "-00:00:01",
            "99999999999999999999:00:00",
            "NaN:00:00",
            "00:00:00",
            "soon",
        ] {
            std::fs::write(&path, format!(r#"{{"functionTimeout":"{bad}"}}"#)).unwrap();
            assert!(QueueBehaviour::from_host_json(&path).is_err(), "{bad}");
        }
    }

    #[test]
    fn timespans_and_schedules_are_read() {
        assert_eq!(parse_timespan("00:00:30"), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_timespan("1.00:00:00"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(parse_timespan("soon"), None);
        let every_minute = Settings::from_pairs([("RECONCILE_SCHEDULE", "0 * * * * *")]);
        let next = reconcile_schedule(&every_minute)
            .unwrap()
            .find_next_occurrence(&chrono::Utc::now(), false)
            .unwrap();
        assert!(next - chrono::Utc::now() <= chrono::Duration::seconds(60));
        let default = reconcile_schedule(&Settings::default()).unwrap();
        assert_eq!(default.pattern.to_string(), DEFAULT_RECONCILE_SCHEDULE);
        let five_fields = Settings::from_pairs([("RECONCILE_SCHEDULE", "0 2 * * *")]);
        assert_eq!(
            reconcile_schedule(&five_fields).unwrap_err().setting,
            "RECONCILE_SCHEDULE"
        );
    }
}
