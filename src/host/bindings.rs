//! The names the Functions host binds: each `function.json`'s `%Setting%` references, resolved
//! from the app settings as the host resolves them, against the queue names this worker uses.
//! A setting the host cannot resolve, or a queue it would bind under another name than the
//! worker's, is a deployment error that would otherwise show only as silence.

use std::path::Path;

use crate::{app::Config, settings::Settings};

/// One binding whose name does not come out as the worker expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingProblem {
    pub function: String,
    pub message: String,
}

/// The `%Setting%` names in `text`, in order.
pub fn referenced_settings(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('%') else { break };
        let name = &after[..end];
        if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            names.push(name.to_owned());
            rest = &after[end + 1..];
        } else {
            rest = after;
        }
    }
    names
}

/// Checks every `*/function.json` under `app_dir` against `settings` and the worker's `config`.
pub fn check(app_dir: &Path, settings: &Settings, config: &Config) -> Vec<BindingProblem> {
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(app_dir) else {
        return problems;
    };
    let mut folders: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    folders.sort();
    for folder in folders {
        let Ok(text) = std::fs::read_to_string(folder.join("function.json")) else {
            continue;
        };
        let function = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            problems.push(BindingProblem {
                function,
                message: "its function.json is not JSON".into(),
            });
            continue;
        };
        let bindings = json["bindings"].as_array().cloned().unwrap_or_default();
        for binding in bindings {
            for field in ["queueName", "schedule"] {
                let Some(pattern) = binding[field].as_str() else {
                    continue;
                };
                let mut resolved = pattern.to_owned();
                let mut unresolved = false;
                for name in referenced_settings(pattern) {
                    match settings.get(&name).filter(|v| !v.trim().is_empty()) {
                        Some(value) => resolved = resolved.replace(&format!("%{name}%"), value),
                        None => {
                            unresolved = true;
                            problems.push(BindingProblem {
                                function: function.clone(),
                                message: format!(
                                    "{field} {pattern:?} needs the app setting {name}, which is \
                                     not set: the Functions host cannot bind the trigger"
                                ),
                            });
                        }
                    }
                }
                if unresolved || field != "queueName" {
                    continue;
                }
                let expected = match function.as_str() {
                    "QueueCreateBlobBackupADFv2" => Some(config.backup_queue.clone()),
                    "QueueSnapshotBackupShard" => Some(config.shard_queue.clone()),
                    "QueueBlobEvents" => config.events.queue.clone(),
                    _ => None,
                };
                if let Some(expected) = expected {
                    if expected != resolved {
                        problems.push(BindingProblem {
                            function: function.clone(),
                            message: format!(
                                "the host binds queue {resolved:?}, but the worker uses \
                                 {expected:?}: messages would wait on one while the other is read"
                            ),
                        });
                    }
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_references_are_found() {
        assert_eq!(
            referenced_settings("%BACKUP_QUEUE_NAME%-shards"),
            ["BACKUP_QUEUE_NAME"]
        );
        assert_eq!(referenced_settings("%A%/%B_2%"), ["A", "B_2"]);
        assert!(referenced_settings("0 0 2 * * *").is_empty());
        assert!(referenced_settings("100% sure, 5% off").is_empty());
    }
}
