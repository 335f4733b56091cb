//! The doctor's checks of the settings themselves: every setting valid and its timeouts within
//! host.json's `functionTimeout`, and every `%Setting%` the function.json files bind resolving
//! to the worker's own names.

use std::path::Path;

use super::{check, Check, Status};
use crate::{
    app::App,
    host::{bindings, standalone},
    settings::Settings,
    telemetry::Telemetry,
};

/// The settings' timeouts against host.json's `functionTimeout`, which `app` takes on.
pub(super) fn timeouts(app: &mut App, host_json: &Path) -> Check {
    match standalone::function_timeout_of(host_json) {
        Ok(limit) => {
            app.config.function_timeout = limit;
            match app.config.check_fits_invocation(limit) {
                Ok(()) => check(
                    "settings",
                    Status::Ok,
                    "every setting is valid, and its timeouts fit host.json's functionTimeout",
                ),
                Err(e) => check(
                    format!("settings: {}", e.setting),
                    Status::Fail,
                    e.to_string(),
                ),
            }
        }
        Err(e) => check(
            "settings: host.json",
            Status::Warn,
            format!("{e}: the timeouts were not checked against functionTimeout"),
        ),
    }
}

/// Telemetry's connection string, where set: one the exporter takes, or the worker runs
/// without telemetry (it says so at start, and nothing reaches Application Insights).
pub(super) fn telemetry(settings: &Settings) -> Check {
    match Telemetry::check(settings) {
        Ok(true) => check(
            "settings: telemetry",
            Status::Ok,
            "APPLICATIONINSIGHTS_CONNECTION_STRING is set: traces and metrics go to Application \
             Insights",
        ),
        Ok(false) => check(
            "settings: telemetry",
            Status::Warn,
            "APPLICATIONINSIGHTS_CONNECTION_STRING is unset: no traces, metrics or alerts \
             (deploy/alerts.json) from the worker",
        ),
        Err(e) => check(
            format!("settings: {}", e.setting),
            Status::Fail,
            format!("{e}: the worker runs without telemetry"),
        ),
    }
}

/// The `%Setting%` names the function.json files in `app_dir` bind.
pub(super) fn host_bindings(app: &App, settings: &Settings, app_dir: &Path) -> Check {
    let problems = bindings::check(app_dir, settings, &app.config);
    let has_functions = std::fs::read_dir(app_dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|entry| entry.path().join("function.json").is_file())
    });
    if !has_functions {
        check(
            "host bindings (%Setting%)",
            Status::Warn,
            "no function folder here: run doctor in the app's folder (beside host.json) to check \
             the %Setting% names the host binds",
        )
    } else if problems.is_empty() {
        check(
            "host bindings (%Setting%)",
            Status::Ok,
            "every %Setting% the function.json files bind resolves to the worker's own names",
        )
    } else {
        check(
            "host bindings (%Setting%)",
            Status::Fail,
            problems
                .iter()
                .map(|p| format!("{}: {}", p.function, p.message))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}
