//! App settings: the environment the Functions host (or `lakebackup run`) gives the worker, read
//! once at start-up into typed values.
//!
//! Every failure names the setting and says what is wrong with it, never what it contains: a
//! connection string holds an account key.

use std::collections::HashMap;

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

/// A snapshot of the settings, so that reading them is pure and tests need not touch the
/// process environment.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    values: HashMap<String, String>,
}

impl Settings {
    pub fn from_env() -> Self {
        Self {
            values: std::env::vars().collect(),
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
        }
    }

    /// The value, with surrounding white space removed; `None` when unset or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
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
