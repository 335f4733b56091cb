//! The `lakebackup` command: `serve` runs the Functions custom handler, `run` the same functions
//! without the host; `produce`, `shard`, `reconcile`, `prune`, `restore`, `verify` and `job` are
//! for admins. One function per command; each prints JSON lines on stdout — one object per
//! line, the summary last — and says by its exit code how it went: 0 done, 1 failed (a job, a
//! check, a gap, storage), 2 nothing done because the command line or the settings are wrong
//! (clap's usage errors exit 2 too). `serve`, `run` and `doctor`'s table are the exceptions.

use std::{io::IsTerminal, net::SocketAddr, path::Path, process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use lakebackup::{
    app::App,
    core::{naming, shard::directory_prefix},
    engine::{
        jobs::{
            self,
            backup::{BackupKind, BackupOptions},
            JobOrigin, NewJob, Queued, Root, Work,
        },
        prune, reconcile,
        restore::{self, RestoreFrom, RestoreRequest},
        verify,
    },
    functions::producer::{self, ProduceRequest},
    host::{
        bindings, server,
        standalone::{self, QueueBehaviour},
    },
    settings::Settings,
};
use tracing_subscriber::EnvFilter;

mod progress_line;
use progress_line::ProgressLine;

#[derive(Parser)]
#[command(
    version,
    about = "Keeps an Azure data lake recoverable: ETag-diffed snapshots and version-keeping backups"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the five functions to the Azure Functions host (custom handler).
    Serve {
        /// Port on 127.0.0.1; the host passes it in FUNCTIONS_CUSTOMHANDLER_PORT.
        #[arg(long, env = "FUNCTIONS_CUSTOMHANDLER_PORT")]
        port: u16,
    },
    /// Run the five functions without the Functions host: take backup requests, shards and
    /// (when EVENTS_QUEUE_NAME is set) blob events off their queues, start reconciliations on
    /// RECONCILE_SCHEDULE, and serve the producer.
    Run {
        /// Serve the producer at http://ADDR/api/HttpSnapshotIncBackupContainerProducer
        /// (e.g. 127.0.0.1:8080, or 0.0.0.0:8080 in a container).
        #[arg(long, env = "LAKEBACKUP_HTTP")]
        http: Option<SocketAddr>,
        /// The Function App's host.json, for the queue trigger's settings (maxDequeueCount, ...).
        #[arg(long, default_value = "host.json")]
        host_json: std::path::PathBuf,
    },
    /// Repair missing snapshots and backups once, and print the JSON summary.
    Reconcile {
        /// Limit to these containers (repeatable); default RECONCILE_CONTAINERS, else all.
        #[arg(long = "container", value_parser = container_name)]
        containers: Vec<String>,
        /// Report what would be done and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete the backup versions and snapshots the retention policy (RETENTION_*) no longer
    /// keeps; one JSON line per deletion, then the summary.
    Prune {
        /// Limit to these containers (repeatable); default RECONCILE_CONTAINERS, else all.
        #[arg(long = "container", value_parser = container_name)]
        containers: Vec<String>,
        /// Only blobs whose names start with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Print what would be deleted and delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Queue a prune job per container and exit at once (one JSON line each); `lakebackup
        /// job` follows them.
        #[arg(long)]
        distributed: bool,
    },
    /// Restore a container (or a prefix, or one blob) to an instant, from snapshots or the
    /// backup account.
    Restore {
        #[arg(long, value_parser = container_name)]
        container: String,
        /// Only blobs whose names start with this: `raw/a.csv` also takes `raw/a.csv.old` and
        /// `raw/a.csv/…`; end it with `/` to keep to one directory.
        #[arg(long, conflicts_with = "blob")]
        prefix: Option<String>,
        /// Only the blob of exactly this name (no other name it starts, no directory of it).
        #[arg(long, value_parser = blob_name)]
        blob: Option<String>,
        /// The instant, RFC 3339 (e.g. 2026-11-24T14:00:00Z); default: the newest versions.
        #[arg(long, value_parser = parse_instant)]
        as_of: Option<time::OffsetDateTime>,
        #[arg(long, value_enum, default_value = "backup")]
        from: RestoreFrom,
        /// Restore into this container instead of in place.
        #[arg(long, value_parser = container_name)]
        to_container: Option<String>,
        /// List what would be restored and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Where a blob and its version cannot be compared by MD5, read both before writing.
        #[arg(long)]
        verify_content: bool,
        /// Restore into the account of RESTORE_TARGET_STORAGE (with --to-container, or into a
        /// container of the same name) instead of the lake's.
        #[arg(long)]
        to_account: bool,
        /// Queue the restore as a job and exit at once: the Function App's shard function, or
        /// any number of `lakebackup run` processes, work it off; `lakebackup job` follows it.
        #[arg(long)]
        distributed: bool,
    },
    /// Check the deployment's set-up with its own settings and identity, writing nothing: a table
    /// of checks (ok, warn, fail); exit 1 if any fails.
    Doctor {
        /// One JSON object instead: {"status", "checks": [{"name", "status", "detail"}]}.
        #[arg(long)]
        json: bool,
    },
    /// Print a job's status (backup, reconcile, restore, verify or prune) as JSON: exit 0 unless
    /// it failed (a verify job that found a gap failed).
    Job {
        /// The job's id, as `restore --distributed`, `shard` or the producer printed it.
        job: String,
        /// Wait until the job is done or failed; exit 0 when done, 1 when failed.
        #[arg(long)]
        wait: bool,
        /// First print the per-blob lines the job's shards recorded (a restore's actions).
        #[arg(long)]
        report: bool,
    },
    /// Check that every current blob has a complete backup of its current version and a
    /// snapshot of it; report the gaps and the RPO (the age of the oldest change without a
    /// backup). Exit 1 on any gap or mismatch.
    Verify {
        #[arg(long, value_parser = container_name)]
        container: String,
        /// Only blobs whose names start with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Also read each backup's bytes and check them against the version.
        #[arg(long)]
        deep: bool,
        /// Queue the verify as a job and exit at once; `lakebackup job JOB --report` prints its
        /// gaps, and exits 1 when it found any.
        #[arg(long)]
        distributed: bool,
    },
    /// Snapshot and back up the new and changed blobs of one container (or one directory tree)
    /// now, in this process, shard by shard; print the totals.
    Produce {
        #[arg(long, value_parser = container_name)]
        container: String,
        /// Only this directory tree (e.g. raw/2026/11/).
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Start a sharded backup job: queue the root shard of a container (or of one directory);
    /// `lakebackup run` processes (or the Function App's QueueSnapshotBackupShard function)
    /// fan it out, directory by directory, each shard within SHARD_TIME_BUDGET_SECONDS.
    Shard {
        #[arg(long, value_parser = container_name)]
        container: String,
        /// Only this directory tree (e.g. raw/2026/11/).
        #[arg(long, default_value = "")]
        prefix: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            EnvFilter::new("info,azure_core=warn,azure_identity=warn,typespec_client_core=warn")
        }))
        .with_writer(progress_line::LogWriter)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("lakebackup: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    // Only the long-running commands take SIGINT/SIGTERM over (to stop cleanly), and from the
    // start; the others keep the default, so Ctrl-C ends them.
    let takes_signals = matches!(cli.command, Command::Serve { .. } | Command::Run { .. });
    let signalled = takes_signals.then(shutdown_signal);
    let settings = Settings::from_env();
    let host_json = match &cli.command {
        Command::Run { host_json, .. } => host_json.clone(),
        _ => "host.json".into(),
    };
    // The doctor reports bad settings among its checks, so it runs without a worker's state.
    if let Command::Doctor { json } = cli.command {
        return doctor(&settings, &host_json, json).await;
    }
    let app = match app_from(&settings, &host_json) {
        Ok(app) => app,
        Err(e) => return settings_error(e),
    };
    match cli.command {
        Command::Serve { port } => serve(app, &settings, port, signalled).await,
        Command::Run { http, host_json } => {
            run_standalone(app, &settings, http, &host_json, signalled).await
        }
        Command::Shard { container, prefix } => queue_job(&app, container, prefix).await,
        Command::Produce { container, prefix } => produce(&app, container, prefix).await,
        Command::Reconcile {
            containers,
            dry_run,
        } => {
            let scope = container_scope(&app, containers);
            let line = ProgressLine::of_app(&app, "reconcile");
            let summary = reconcile::reconcile(&app, scope.as_deref(), dry_run).await;
            line.finish();
            print_last_line(&summary, summary.succeeded())
        }
        Command::Prune {
            containers,
            prefix,
            dry_run,
            distributed,
        } => {
            let scope = container_scope(&app, containers);
            if distributed {
                return start_prune(&app, scope.as_deref(), prefix, dry_run).await;
            }
            let line = ProgressLine::of_app(&app, "prune");
            let summary = prune::prune_all(&app, scope.as_deref(), prefix, dry_run, &|action| {
                print_json_line(&action)
            })
            .await;
            line.finish();
            print_last_line(&summary, summary.status == "ok")
        }
        Command::Restore {
            container,
            prefix,
            blob,
            as_of,
            from,
            to_container,
            dry_run,
            verify_content,
            to_account,
            distributed,
        } => {
            let request = RestoreRequest {
                container,
                prefix,
                blob,
                as_of,
                from,
                to_container,
                to_account,
                dry_run,
                verify_content,
            };
            if distributed {
                start_restore(&app, &request).await
            } else {
                let line = ProgressLine::of_app(&app, "restore");
                let summary = restore::restore(&app, &request, &mut print_json_line).await;
                line.finish();
                print_last_line(&summary, summary.succeeded())
            }
        }
        Command::Job { job, wait, report } => job_status(&app, &job, wait, report).await,
        // Run above, before the worker's state is built; here only for completeness.
        Command::Doctor { json } => doctor(&settings, &host_json, json).await,
        Command::Verify {
            container,
            prefix,
            deep,
            distributed,
        } => {
            let request = verify::VerifyRequest {
                container,
                prefix,
                deep,
            };
            if distributed {
                start_verify(&app, &request).await
            } else {
                verify_container(&app, &request).await
            }
        }
    }
}

/// `restore --distributed`: the job queued, one JSON line, exit 0 at once.
async fn start_restore(app: &App, request: &RestoreRequest) -> ExitCode {
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

/// `doctor`: the checks as a table (or one JSON object); exit 1 if any failed.
async fn doctor(settings: &Settings, host_json: &Path, json: bool) -> ExitCode {
    let report = lakebackup::doctor::doctor(settings, host_json, Path::new(".")).await;
    if json {
        print_json_line(&report);
    } else {
        print!("{}", lakebackup::doctor::table(&report));
    }
    exit_code(report.status != lakebackup::doctor::Status::Fail)
}

/// `verify --distributed`: the job queued, one JSON line, exit 0 at once.
async fn start_verify(app: &App, request: &verify::VerifyRequest) -> ExitCode {
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
async fn start_prune(
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
async fn job_status(app: &App, job: &str, wait: bool, report: bool) -> ExitCode {
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

/// The worker's state from the settings, with host.json's `maxDequeueCount` and
/// `functionTimeout` (the host, and `run`, give a message up after that many deliveries).
fn app_from(settings: &Settings, host_json: &Path) -> Result<Arc<App>, String> {
    let mut app = App::from_settings(settings).map_err(|e| e.to_string())?;
    if let Ok(behaviour) = QueueBehaviour::from_host_json(host_json) {
        app.config.max_dequeue_count = behaviour.max_dequeue_count;
        app.config.function_timeout = behaviour.function_timeout;
    }
    Ok(Arc::new(app))
}

/// `serve`: the custom handler, on 127.0.0.1:`port`, until the host stops it.
async fn serve(
    app: Arc<App>,
    settings: &Settings,
    port: u16,
    signalled: Option<impl std::future::Future<Output = ()> + Send + 'static>,
) -> ExitCode {
    // The host runs the handler in the app's folder, beside its host.json.
    let fits = standalone::function_timeout_of(Path::new("host.json"))
        .map_err(|e| e.to_string())
        .and_then(|limit| {
            app.config
                .check_fits_invocation(limit)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = fits {
        return settings_error(e);
    }
    // The host resolves the triggers' %Setting% names itself; one it cannot resolve, or a queue
    // it binds under another name than ours, would only show as silence.
    for problem in bindings::check(Path::new("."), settings, &app.config) {
        tracing::error!(function = problem.function, "{}", problem.message);
    }
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let served = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => server::serve(server::router(app), listener, until(signalled)).await,
        Err(e) => Err(e),
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lakebackup: cannot serve on {address}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `run`: every function without the host, until stopped.
async fn run_standalone(
    app: Arc<App>,
    settings: &Settings,
    http: Option<SocketAddr>,
    host_json: &Path,
    signalled: Option<impl std::future::Future<Output = ()> + Send + 'static>,
) -> ExitCode {
    let prepared = QueueBehaviour::from_host_json(host_json).and_then(|mut behaviour| {
        behaviour.visibility_window = std::time::Duration::from_secs(settings.get_number(
            "RUN_VISIBILITY_SECONDS",
            600,
            2..=7 * 86_400,
        )?);
        app.config
            .check_fits_invocation(behaviour.function_timeout)?;
        Ok((behaviour, standalone::reconcile_schedule(settings)?))
    });
    let (behaviour, schedule) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => return settings_error(e),
    };
    let listener = match http {
        Some(address) => match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => Some(listener),
            Err(e) => {
                eprintln!("lakebackup: cannot serve on {address}: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    match standalone::run(app, behaviour, Some(schedule), listener, until(signalled)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lakebackup: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `shard`: a job over a container (or one directory tree) queued for the functions.
async fn queue_job(app: &App, container: String, prefix: String) -> ExitCode {
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

/// `produce`: the producer's job over a container (or a prefix), run here, shard by shard.
async fn produce(app: &Arc<App>, container: String, prefix: String) -> ExitCode {
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

/// Settings (or arguments) that cannot work: said on stderr, exit code 2.
fn settings_error(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("lakebackup: {error}");
    ExitCode::from(2)
}

/// `--container` given on the command line, else `RECONCILE_CONTAINERS`, else every container.
fn container_scope(app: &App, containers: Vec<String>) -> Option<Vec<String>> {
    if containers.is_empty() {
        app.config.reconcile_containers.clone()
    } else {
        Some(containers)
    }
}

/// One action as a JSON line, as it happens: a long run never holds its actions in memory.
fn print_json_line(action: impl serde::Serialize) {
    println!("{}", serde_json::to_string(&action).unwrap_or_default());
}

/// The summary as the last JSON line, after the actions' lines.
fn print_last_line(summary: &impl serde::Serialize, succeeded: bool) -> ExitCode {
    print_json_line(summary);
    exit_code(succeeded)
}

fn exit_code(succeeded: bool) -> ExitCode {
    if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A container name Azure accepts; any other is a usage error (exit 2), found before anything
/// is read or written.
fn container_name(text: &str) -> Result<String, String> {
    naming::validate_container_name(text)
        .map(|()| text.to_owned())
        .map_err(|e| e.to_string())
}

/// A blob's whole name (`restore --blob`): a valid name, and not a directory's.
fn blob_name(text: &str) -> Result<String, String> {
    naming::validate_blob_name(text).map_err(|e| e.to_string())?;
    if text.ends_with('/') {
        return Err(format!(
            "{text:?} names a directory, not a blob: restore it with --prefix"
        ));
    }
    Ok(text.to_owned())
}

fn parse_instant(text: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 instant like 2026-11-24T14:00:00Z: {e}"))
}

/// Completes when `signalled` does, or never.
async fn until(signalled: Option<impl std::future::Future<Output = ()>>) {
    match signalled {
        Some(signal) => signal.await,
        None => std::future::pending().await,
    }
}

/// Completes on SIGINT or SIGTERM (the host stops its worker with SIGTERM).
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    // Registered now, before any work starts: a SIGTERM that comes early (the host stopping a
    // worker that has just started) must stop it cleanly, not kill it with messages in flight.
    use tokio::signal::unix::{signal, SignalKind};
    let terminate = signal(SignalKind::terminate()).ok();
    let interrupt = signal(SignalKind::interrupt()).ok();
    async move {
        let wait = |stream: Option<tokio::signal::unix::Signal>| async move {
            match stream {
                Some(mut stream) => {
                    stream.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(terminate) => {},
            _ = wait(interrupt) => {},
        }
    }
}
