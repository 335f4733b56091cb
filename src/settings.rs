//! App settings: the environment the Functions host (or `lakebackup run`) gives the worker, read
//! once at start-up into typed values.
//!
//! Every failure names the setting and says what is wrong with it, never what it contains: a
//! connection string holds an account key.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use thiserror::Error;

/// A problem with one setting; the message names the setting and never includes its value.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("setting {setting}: {reason}")]
pub struct SettingsError {
    pub setting: String,
    pub reason: String,
}

impl SettingsError {
    pub fn new(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            reason: reason.into(),
        }
    }
}

/// Every app setting the worker reads, by name: a connection by its own name (its identity
/// form, `NAME__blobServiceUri` and the like, belongs to it). The deployment template sets
/// these and no others (`tests/suite/template.rs`), and a test checks that the worker asks for
/// no name outside it ([`Settings::names_read`]).
pub const SETTING_NAMES: &[&str] = &[
    "SOURCE_STORAGE",
    "BACKUP_STORAGE",
    "AzureWebJobsStorage",
    "PRUNE_STORAGE",
    "RESTORE_TARGET_STORAGE",
    "BACKUP_QUEUE_NAME",
    "BACKUP_CONTAINER_SUFFIX",
    "SNAPSHOT_CONCURRENCY",
    "EVENTS_QUEUE_NAME",
    "EVENTS_CONTAINERS",
    "EVENTS_PREFIX",
    "RETENTION_KEEP_DAYS",
    "RETENTION_KEEP_DAILY",
    "RETENTION_KEEP_WEEKLY",
    "RETENTION_KEEP_MONTHLY",
    "RETENTION_KEEP_YEARLY",
    "RETENTION_DELETED_DAYS",
    "RETENTION_SNAPSHOT_DAYS",
    "COPY_THROUGH_WORKER_MAX_BYTES",
    "BACKUP_COPY_ENGINE",
    "BACKUP_USE_LEASE",
    "BACKUP_LEASE_WAIT_SECONDS",
    "COPY_TIMEOUT_SECONDS",
    "COPY_POLL_INTERVAL_MS",
    "ADF_SUBSCRIPTION_ID",
    "ADF_RESOURCE_GROUP",
    "ADF_FACTORY_NAME",
    "ADF_PIPELINE_NAME",
    "ADF_MANAGEMENT_ENDPOINT",
    "ADF_CLIENT_ID",
    "ADF_POLL_INTERVAL_MS",
    "ADF_RUN_TIMEOUT_SECONDS",
    "RECONCILE_SCHEDULE",
    "RECONCILE_CONTAINERS",
    "RECONCILE_CONTAINER_CONCURRENCY",
    "RESTORE_CONCURRENCY",
    "SHARD_TIME_BUDGET_SECONDS",
    "SHARD_PAGE_SIZE",
    "BACKUP_TAGS",
    "PRODUCER_WAIT_SECONDS",
    "LAKEBACKUP_HTTP",
    "RUN_VISIBILITY_SECONDS",
    "FUNCTIONS_CUSTOMHANDLER_PORT",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
];

/// A snapshot of the settings, so that reading them is pure and tests need not touch the
/// process environment.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    values: HashMap<String, String>,
    /// The names asked for (a prefix asked for as `NAME__`), shared by clones.
    read: Arc<Mutex<BTreeSet<String>>>,
}

impl Settings {
    pub fn from_env() -> Self {
        Self {
            values: std::env::vars().collect(),
            read: Arc::default(),
        }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            read: Arc::default(),
        }
    }

    /// The value, with surrounding white space removed; `None` when unset or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.asked(name);
        self.values
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn get_or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.get(name).unwrap_or(default)
    }

    /// A number within `range`, or `default` when unset.
    pub fn get_number(
        &self,
        name: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, SettingsError> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        match raw.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(SettingsError::new(
                name,
                format!(
                    "must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    /// A duration within `range`, or `default` when unset, in the unit the setting's name
    /// ends with (`_SECONDS` or `_MS`), so that the name and the reading never disagree.
    pub fn get_duration(
        &self,
        name: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<std::time::Duration, SettingsError> {
        let unit = match name {
            _ if name.ends_with("_SECONDS") => std::time::Duration::from_secs,
            _ if name.ends_with("_MS") => std::time::Duration::from_millis,
            _ => return Err(SettingsError::new(name, "names no unit (_SECONDS or _MS)")),
        };
        self.get_number(name, default, range).map(unit)
    }

    pub fn get_bool(&self, name: &str, default: bool) -> Result<bool, SettingsError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(_) => Err(SettingsError::new(name, "must be true or false")),
        }
    }

    /// Whether any setting starts with `prefix` (identity-based connections are spread over
    /// `NAME__…` settings).
    pub fn has_prefix(&self, prefix: &str) -> bool {
        !self.names_with_prefix(prefix).is_empty()
    }

    /// The names of the settings (not blank) that start with `prefix`, sorted.
    pub fn names_with_prefix(&self, prefix: &str) -> Vec<&str> {
        self.asked(prefix);
        let mut names: Vec<&str> = self
            .values
            .iter()
            .filter(|(k, v)| k.starts_with(prefix) && !v.trim().is_empty())
            .map(|(k, _)| k.as_str())
            .collect();
        names.sort_unstable();
        names
    }
}

impl Settings {
    fn asked(&self, name: &str) {
        if let Ok(mut read) = self.read.lock() {
            read.insert(name.to_owned());
        }
    }

    /// Every name asked for so far by anything holding these settings (or a clone), a prefix
    /// (`NAME__`) by the name before it: what a test compares with [`SETTING_NAMES`].
    pub fn names_read(&self) -> BTreeSet<String> {
        let read = self.read.lock().map(|r| r.clone()).unwrap_or_default();
        read.into_iter()
            .map(|name| match name.split_once("__") {
                Some((base, _)) => base.to_owned(),
                None => name,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_booleans_are_checked() {
        let s = Settings::from_pairs([("N", "12"), ("BAD", "x"), ("B", "TRUE"), ("E", "  ")]);
        assert_eq!(s.get_number("N", 1, 1..=100), Ok(12));
        assert_eq!(s.get_number("MISSING", 7, 1..=100), Ok(7));
        assert!(s.get_number("N", 1, 1..=10).is_err());
        let err = s.get_number("BAD", 1, 1..=10).unwrap_err();
        assert_eq!(
            err.to_string(),
            "setting BAD: must be a whole number from 1 to 10"
        );
        assert_eq!(s.get_bool("B", false), Ok(true));
        assert!(s.get_bool("BAD", false).is_err());
        assert_eq!(s.get("E"), None);
    }

    #[test]
    fn durations_are_read_in_the_unit_their_name_says() {
        use std::time::Duration;
        let s = Settings::from_pairs([("WAIT_SECONDS", "3"), ("POLL_MS", "3"), ("WAIT", "3")]);
        assert_eq!(
            s.get_duration("WAIT_SECONDS", 1, 1..=9),
            Ok(Duration::from_secs(3))
        );
        assert_eq!(
            s.get_duration("POLL_MS", 1, 1..=9),
            Ok(Duration::from_millis(3))
        );
        assert_eq!(
            s.get_duration("GONE_MS", 7, 1..=9),
            Ok(Duration::from_millis(7))
        );
        assert!(s.get_duration("WAIT_SECONDS", 1, 5..=9).is_err());
        assert!(s.get_duration("WAIT", 1, 1..=9).is_err());
    }
}
