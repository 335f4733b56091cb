//! The admin commands that run in this process: `reconcile`, `prune`, `restore`, `verify`,
//! `produce` and `doctor`, each printing its JSON lines and saying by its exit code how it went.

use std::{path::Path, process::ExitCode, sync::Arc};

use lakebackup::{
    app::App,
    engine::{
        prune, reconcile,
        restore::{self, RestoreRequest},
        verify,
    },
    functions::producer::{self, ProduceRequest},
    settings::Settings,
};

use super::{
    jobs::{start_prune, start_restore, start_verify},
    output::{exit_code, print_json_line, print_last_line},
    progress_line::ProgressLine,
};

/// `reconcile`: repair missing snapshots and backups once; the summary.
pub async fn reconcile(app: &Arc<App>, containers: Vec<String>, dry_run: bool) -> ExitCode {
    let scope = container_scope(app, containers);
    let line = ProgressLine::of_app(app, "reconcile");
    let summary = reconcile::reconcile(app, scope.as_deref(), dry_run).await;
    line.finish();
    print_last_line(&summary, summary.succeeded())
}

/// `prune`: each deletion as a JSON line, then the summary; or, `--distributed`, a job queued
/// per container.
pub async fn prune(
    app: &Arc<App>,
    containers: Vec<String>,
    prefix: Option<String>,
    dry_run: bool,
    distributed: bool,
) -> ExitCode {
    let scope = container_scope(app, containers);
    if distributed {
        return start_prune(app, scope.as_deref(), prefix, dry_run).await;
    }
    let line = ProgressLine::of_app(app, "prune");
    let summary = prune::prune_all(app, scope.as_deref(), prefix, dry_run, &|action| {
        print_json_line(&action)
    })
    .await;
    line.finish();
    print_last_line(&summary, summary.status == "ok")
}

/// `restore`: each action as a JSON line, then the summary; or, `--distributed`, the job queued.
pub async fn restore(app: &Arc<App>, request: &RestoreRequest, distributed: bool) -> ExitCode {
    if distributed {
        return start_restore(app, request).await;
    }
    let line = ProgressLine::of_app(app, "restore");
    let summary = restore::restore(app, request, &mut print_json_line).await;
    line.finish();
    print_last_line(&summary, summary.succeeded())
}

/// `verify`: here, or, `--distributed`, the job queued.
pub async fn verify(
    app: &Arc<App>,
    request: &verify::VerifyRequest,
    distributed: bool,
) -> ExitCode {
    if distributed {
        start_verify(app, request).await
    } else {
        verify_container(app, request).await
    }
}

/// `doctor`: the checks as a table (or one JSON object); exit 1 if any failed.
pub async fn doctor(settings: &Settings, host_json: &Path, json: bool) -> ExitCode {
    let report = lakebackup::doctor::doctor(settings, host_json, Path::new(".")).await;
    if json {
        print_json_line(&report);
    } else {
        print!("{}", lakebackup::doctor::table(&report));
    }
    exit_code(report.status != lakebackup::doctor::Status::Fail)
}

/// `produce`: the producer's job over a container (or a prefix), run here, shard by shard.
pub async fn produce(app: &Arc<App>, container: String, prefix: String) -> ExitCode {
    let line = ProgressLine::of_app(app, "produce");
    let job = producer::run_here(app, &ProduceRequest { container, prefix }).await;
    line.finish();
    let job = match job {
        Ok(job) => job,
        Err(e) => {
            print_json_line(serde_json::json!({"status": "failed", "error": e.to_string()}));
            return ExitCode::FAILURE;
        }
    };
    let status = if job.succeeded() { "done" } else { "failed" };
    let mut summary = serde_json::json!({
        "status": status,
        "shards": job.shards,
        "shards_failed": job.shards_failed,
    });
    if let (Some(summary), Ok(serde_json::Value::Object(totals))) =
        (summary.as_object_mut(), serde_json::to_value(job.totals))
    {
        summary.extend(totals);
    }
    if !job.notes.failures.is_empty() {
        summary["failures"] = serde_json::to_value(&job.notes.failures).unwrap_or_default();
    }
    if !job.notes.warnings.is_empty() {
        summary["warnings"] = serde_json::to_value(&job.notes.warnings).unwrap_or_default();
    }
    print_last_line(&summary, job.succeeded())
}

/// `verify`: each gap and warning as a JSON line as it is found, then the summary.
async fn verify_container(app: &Arc<App>, request: &verify::VerifyRequest) -> ExitCode {
    let line = ProgressLine::of_app(app, "verify");
    let summary = verify::verify(app, request, &|gap| print_json_line(gap)).await;
    line.finish();
    print_last_line(&summary, summary.succeeded())
}

/// `--container` given on the command line, else `RECONCILE_CONTAINERS`, else every container.
fn container_scope(app: &App, containers: Vec<String>) -> Option<Vec<String>> {
    if containers.is_empty() {
        app.config.reconcile_containers.clone()
    } else {
        Some(containers)
    }
}
