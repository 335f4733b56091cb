//! The commands that queue jobs for the functions and follow them: `shard`, the
//! `--distributed` forms of `restore`, `verify` and `prune`, and `job`.

use std::process::ExitCode;

use lakebackup::{
    app::App,
    core::shard::directory_prefix,
    engine::{
        jobs::{
            self,
            backup::{BackupKind, BackupOptions},
            JobOrigin, NewJob, Queued, Root, Work,
        },
        prune,
        restore::{self, RestoreRequest},
        verify,
    },
};

use super::{
    output::{print_json_line, print_last_line},
    progress_line::ProgressLine,
};

/// `restore --distributed`: the job queued, one JSON line, exit 0 at once.
pub async fn start_restore(app: &App, request: &RestoreRequest) -> ExitCode {
    match restore::start(app, request).await {
        Ok(Queued { job, roots }) => {
            let target = roots.first().and_then(|root| match &root.work {
                Work::Restore(options) => options.target(&root.container),
                _ => None,
            });
            print_json_line(serde_json::json!({
                "job": job,
                "kind": JobOrigin::Restore.as_str(),
                "work": "restore",
                "status": "running",
                "container": request.container,
                "target_container": request.to_container.as_deref().unwrap_or(&request.container),
                "target": target,
                "from": request.from,
                "dry_run": request.dry_run,
            }));
            ExitCode::SUCCESS
        }
        Err(refused) => {
            print_json_line(serde_json::json!({
                "status": "failed",
                "container": request.container,
                "error": refused.to_string(),
            }));
            ExitCode::FAILURE
        }
    }
}

/// `verify --distributed`: the job queued, one JSON line, exit 0 at once.
pub async fn start_verify(app: &App, request: &verify::VerifyRequest) -> ExitCode {
    match verify::start(app, request).await {
        Ok(Queued { job, .. }) => {
            print_json_line(serde_json::json!({
                "job": job,
                "kind": JobOrigin::Verify.as_str(),
                "work": "verify",
                "status": "running",
                "container": request.container,
                "deep": request.deep,
            }));
            ExitCode::SUCCESS
        }
        Err(error) => {
            print_json_line(serde_json::json!({
                "status": "failed",
                "container": request.container,
                "error": error.to_string(),
            }));
            ExitCode::FAILURE
        }
    }
}

/// `prune --distributed`: a job queued per container, one JSON line each, exit 0 unless one
/// could not be queued.
pub async fn start_prune(
    app: &App,
    scope: Option<&[String]>,
    prefix: Option<String>,
    dry_run: bool,
) -> ExitCode {
    let containers = match lakebackup::engine::reconcile::containers_in_scope(app, scope).await {
        Ok(containers) => containers,
        Err(e) => {
            print_json_line(serde_json::json!({"status": "failed", "error": e.to_string()}));
            return ExitCode::FAILURE;
        }
    };
    let (mut all_queued, mut queued) = (true, Vec::new());
    for container in containers {
        let request = prune::PruneRequest {
            container,
            prefix: prefix.clone(),
            dry_run,
        };
        let line = match prune::start(app, &request).await {
            Ok(Some(Queued { job, .. })) => {
                queued.push(job.clone());
                serde_json::json!({
                    "job": job,
                    "kind": JobOrigin::Prune.as_str(),
                    "work": "prune",
                    "status": "running",
                    "container": request.container,
                    "dry_run": dry_run,
                })
            }
            Ok(None) => serde_json::json!({
                "status": "ok",
                "container": request.container,
                "detail": "no RETENTION_* setting: nothing is pruned",
            }),
            Err(e) => {
                all_queued = false;
                serde_json::json!({
                    "status": "failed",
                    "container": request.container,
                    "error": e.to_string(),
                })
            }
        };
        print_json_line(line);
    }
    // The summary: the jobs queued, one per container that has something to judge.
    let status = match (all_queued, queued.is_empty()) {
        (false, _) => "failed",
        (true, true) => "ok",
        (true, false) => "running",
    };
    let summary = serde_json::json!({"status": status, "work": "prune", "jobs": queued});
    print_last_line(&summary, all_queued)
}

/// `job`: a job's status (after its report lines, with `--report`), once, or when it ends.
pub async fn job_status(app: &App, job: &str, wait: bool, report: bool) -> ExitCode {
    let unknown = || {
        print_json_line(serde_json::json!({
            "job": job,
            "status": "unknown",
            "error": format!("no job {job:?} in the jobs' ledger ({}-jobs of AzureWebJobsStorage)", app.config.backup_queue),
        }));
        ExitCode::FAILURE
    };
    let failed = |error: lakebackup::storage::StorageError| {
        print_json_line(
            serde_json::json!({"job": job, "status": "unknown", "error": error.to_string()}),
        );
        ExitCode::FAILURE
    };
    let line = if wait {
        ProgressLine::manual(job, "shards")
    } else {
        ProgressLine::hidden()
    };
    let status = loop {
        let status = match jobs::status(app, job).await {
            Ok(Some(status)) => status,
            Ok(None) => return unknown(),
            Err(e) => return failed(e),
        };
        let progress = &status.progress;
        if !wait || progress.state != lakebackup::core::job::JobState::Running {
            break status;
        }
        let counts: Vec<String> = progress
            .totals
            .iter()
            .filter(|(_, value)| **value > 0)
            .map(|(name, value)| format!("{name} {value}"))
            .collect();
        line.set(
            progress.shards_finished,
            progress.shards_queued,
            counts.join(", "),
        );
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    };
    line.finish();
    if report {
        match jobs::ledger::job_report(app, job).await {
            Ok(Some(lines)) => lines.iter().for_each(|line| println!("{line}")),
            Ok(None) => return unknown(),
            Err(e) => return failed(e),
        }
    }
    let ended_well = status.progress.state != lakebackup::core::job::JobState::Failed;
    print_last_line(&status, ended_well)
}

/// `shard`: a job over a container (or one directory tree) queued for the functions.
pub async fn queue_job(app: &App, container: String, prefix: String) -> ExitCode {
    let new = NewJob::<BackupKind> {
        origin: JobOrigin::Command,
        container,
        roots: vec![Root::directory(&directory_prefix(&prefix))],
        options: BackupOptions::default(),
    };
    match jobs::queue(app, new).await {
        Ok(Queued { job, roots }) => {
            let shard = roots.first();
            print_json_line(serde_json::json!({"status": "queued", "job": job, "shard": shard}));
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_json_line(serde_json::json!({"status": "failed", "error": e.to_string()}));
            ExitCode::FAILURE
        }
    }
}

/// `job list`: the ledger's jobs, newest first, that the filters admit — a table for people, or
/// with `--json` a JSON line per job and a summary. Reads the ledger only (it is not created).
pub async fn job_list(app: &App, command: super::args::JobCommand) -> ExitCode {
    let super::args::JobCommand::List {
        state,
        container,
        kind,
        since,
        json,
    } = command;
    let filter = jobs::ledger::JobFilter {
        state: state.map(Into::into),
        container,
        kind,
        since,
    };
    let listed = match app.jobs.container(&app.config.job_ledger) {
        Ok(ledger) => jobs::ledger::list_jobs(&ledger, &filter).await,
        Err(e) => Err(e),
    };
    let listed = match listed {
        Ok(listed) => listed,
        Err(e) => {
            let error = e.to_string();
            if json {
                print_json_line(serde_json::json!({"status": "failed", "error": error}));
            } else {
                eprintln!("lakebackup: {error}");
            }
            return ExitCode::FAILURE;
        }
    };
    if json {
        listed.iter().for_each(print_json_line);
        let summary = serde_json::json!({"status": "ok", "jobs": listed.len()});
        return print_last_line(&summary, true);
    }
    print!("{}", job_table(&listed));
    ExitCode::SUCCESS
}

/// The jobs as a table: one row each, the counts that are not zero last.
fn job_table(listed: &[jobs::ledger::ListedJob]) -> String {
    let mut rows = vec![[
        "job",
        "kind",
        "work",
        "container",
        "status",
        "started",
        "finished",
        "shards",
        "counts",
    ]
    .map(str::to_owned)];
    for job in listed {
        let status = &job.status;
        let progress = &status.progress;
        let state = serde_json::to_value(progress.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let counts: Vec<String> = progress
            .totals
            .iter()
            .filter(|(_, value)| **value > 0)
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        rows.push([
            status.job.clone(),
            status.kind.clone(),
            status.work.clone(),
            status.container.clone(),
            state,
            status.started.clone(),
            job.finished.clone().unwrap_or_else(|| "-".to_owned()),
            format!(
                "{}/{} ({} failed)",
                progress.shards_finished, progress.shards_queued, progress.shards_failed
            ),
            counts.join(" "),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|column| {
            rows.iter()
                .map(|r| r[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut table = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        table.push_str(cells.join("  ").trim_end());
        table.push('\n');
    }
    table.push_str(&format!("{} jobs\n", listed.len()));
    table
}
