//! The doctor's check of the ADF pipeline, with the `adf` copy engine: reachable through ARM with
//! the app's identity.

use super::{check, Check, Status};
use crate::{app::App, config::CopyEngine};

/// With the `adf` engine: the pipeline reachable through ARM with the app's identity.
pub(super) async fn pipeline(app: &App) -> Vec<Check> {
    if app.config.copy_engine != CopyEngine::Adf {
        return Vec::new();
    }
    let title = "ADF_PIPELINE_NAME: the pipeline reachable through ARM";
    match &app.adf {
        Some(adf) => match adf.check_pipeline().await {
            Ok(()) => vec![check(
                title,
                Status::Ok,
                format!("pipeline {} read", adf.config().pipeline_name),
            )],
            Err(e) => vec![check(title, Status::Fail, e.to_string())],
        },
        None => vec![check(
            title,
            Status::Fail,
            "BACKUP_COPY_ENGINE=adf without the ADF_* settings",
        )],
    }
}
