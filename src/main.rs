//! The `lakebackup` command: `serve` runs the Functions custom handler, `run` the same functions
//! without the host; `produce`, `shard`, `reconcile`, `restore`, `verify` and `demo` are for
//! admins and first-time users.

use std::{io::IsTerminal, net::SocketAddr, process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use lakebackup::{
    app::App,
    functions::{
        producer::{self, ProduceRequest},
        prune, reconciler,
        restore::{self, RestoreFrom, RestoreRequest},
        verify,
    },
    host::{
        bindings, server,
        standalone::{self, QueueBehaviour},
    },
    settings::Settings,
};
use tracing_subscriber::EnvFilter;

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
    /// Serve the four functions to the Azure Functions host (custom handler).
    Serve {
        /// Port on 127.0.0.1; the host passes it in FUNCTIONS_CUSTOMHANDLER_PORT.
        #[arg(long, env = "FUNCTIONS_CUSTOMHANDLER_PORT")]
        port: u16,
    },
    /// Run the four functions without the Functions host: take backup requests and shards off
    /// their queues, start reconciliations on RECONCILE_SCHEDULE, and serve the producer.
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
        #[arg(long = "container")]
        containers: Vec<String>,
        /// Report what would be done and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete the backup versions and snapshots the retention policy (RETENTION_*) no longer
    /// keeps; one JSON line per deletion, then the summary.
    Prune {
        /// Limit to these containers (repeatable); default RECONCILE_CONTAINERS, else all.
        #[arg(long = "container")]
        containers: Vec<String>,
        /// Only blobs whose names start with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Print what would be deleted and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Restore a container (or a prefix) to an instant, from snapshots or the backup account.
    Restore {
        #[arg(long)]
        container: String,
        /// Only blobs whose names start with this.
        #[arg(long)]
        prefix: Option<String>,
        /// The instant, RFC 3339 (e.g. 2026-11-24T14:00:00Z); default: the newest versions.
        #[arg(long, value_parser = parse_instant)]
        as_of: Option<time::OffsetDateTime>,
        #[arg(long, value_enum, default_value = "backup")]
        from: RestoreFrom,
        /// Restore into this container instead of in place.
        #[arg(long)]
        to_container: Option<String>,
        /// List what would be restored and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Where a blob and its version cannot be compared by MD5, read both before writing.
        #[arg(long)]
        verify_content: bool,
    },
    /// Check that every current blob has a complete backup of its current version and a
    /// snapshot of it; report the gaps and the RPO (the age of the oldest change without a
    /// backup). Exit 1 on any gap or mismatch.
    Verify {
        #[arg(long)]
        container: String,
        /// Only blobs whose names start with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Also read each backup's bytes and check them against the version.
        #[arg(long)]
        deep: bool,
    },
    /// Run the whole flow against a throw-away Azurite and print what happened.
    Demo,
    /// Snapshot and back up the new and changed blobs of one container (or one directory tree)
    /// now, in this process, shard by shard; print the totals.
    Produce {
        #[arg(long)]
        container: String,
        /// Only this directory tree (e.g. raw/2026/11/).
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Start a sharded backup job: queue the root shard of a container (or of one directory);
    /// `lakebackup run` processes (or the Function App's QueueSnapshotBackupShard function)
    /// fan it out, directory by directory, each shard within SHARD_TIME_BUDGET_SECONDS.
    Shard {
        #[arg(long)]
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
        .with_writer(std::io::stderr)
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
    let shutdown = async move {
        match signalled {
            Some(signal) => signal.await,
            None => std::future::pending().await,
        }
    };
    if let Command::Demo = cli.command {
        let root = std::env::current_dir().unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
        return match lakebackup::demo::run(&root).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lakebackup demo: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let settings = Settings::from_env();
    let mut app = match App::from_settings(&settings) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("lakebackup: {e}");
            return ExitCode::from(2);
        }
    };
    // The host (and `run`) give a message up after host.json's maxDequeueCount deliveries.
    let host_json = match &cli.command {
        Command::Run { host_json, .. } => host_json.clone(),
        _ => "host.json".into(),
    };
    if let Ok(behaviour) = QueueBehaviour::from_host_json(&host_json) {
        app.config.max_dequeue_count = behaviour.max_dequeue_count;
        app.config.function_timeout = behaviour.function_timeout;
    }
    let app = Arc::new(app);
    match cli.command {
        Command::Serve { port } => {
            // The host runs the handler in the app's folder, beside its host.json.
            let fits = standalone::function_timeout_of(std::path::Path::new("host.json"))
                .map_err(|e| e.to_string())
                .and_then(|limit| {
                    app.config
                        .check_fits_invocation(limit)
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = fits {
                eprintln!("lakebackup: {e}");
                return ExitCode::from(2);
            }
            // The host resolves the triggers' %Setting% names itself; one it cannot resolve, or
            // a queue it binds under another name than ours, would only show as silence.
            for problem in bindings::check(std::path::Path::new("."), &settings, &app.config) {
                tracing::error!(function = problem.function, "{}", problem.message);
            }
            let address = SocketAddr::from(([127, 0, 0, 1], port));
            let served = match tokio::net::TcpListener::bind(address).await {
                Ok(listener) => server::serve(server::router(app), listener, shutdown).await,
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
        Command::Demo => unreachable!("handled before the settings are read"),
        Command::Run { http, host_json } => {
            let prepared = QueueBehaviour::from_host_json(&host_json).and_then(|mut b| {
                b.visibility_window = std::time::Duration::from_secs(settings.get_number(
                    "RUN_VISIBILITY_SECONDS",
                    600,
                    2..=7 * 86_400,
                )?);
                app.config.check_fits_invocation(b.function_timeout)?;
                Ok((b, Some(standalone::reconcile_schedule(&settings)?)))
            });
            let (behaviour, schedule) = match prepared {
                Ok(prepared) => prepared,
                Err(e) => {
                    eprintln!("lakebackup: {e}");
                    return ExitCode::from(2);
                }
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
            match standalone::run(app, behaviour, schedule, listener, shutdown).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("lakebackup: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Shard { container, prefix } => {
            if let Err(e) = lakebackup::core::naming::validate_container_name(&container) {
                eprintln!("lakebackup: {e}");
                return ExitCode::from(2);
            }
            let job = lakebackup::core::shard::new_job_id();
            let root = lakebackup::core::shard::Shard::root(
                &job,
                &container,
                &lakebackup::core::shard::directory_prefix(&prefix),
            );
            let started = lakebackup::job_ledger::start_job(
                &app,
                lakebackup::job_ledger::JobKind::Command,
                std::slice::from_ref(&root),
            );
            match started.await {
                Ok(()) => {
                    println!(
                        "{}",
                        serde_json::json!({"status": "queued", "job": job, "shard": root})
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("lakebackup: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Restore {
            container,
            prefix,
            as_of,
            from,
            to_container,
            dry_run,
            verify_content,
        } => {
            let request = RestoreRequest {
                container,
                prefix,
                as_of,
                from,
                to_container,
                dry_run,
                verify_content,
            };
            let summary = restore::restore(&app, &request, &mut print_json_line).await;
            print_last_line(&summary, summary.succeeded())
        }
        Command::Verify {
            container,
            prefix,
            deep,
        } => {
            let request = verify::VerifyRequest {
                container,
                prefix,
                deep,
            };
            let summary = verify::verify(&app, &request).await;
            for gap in summary.gaps.iter().chain(&summary.warnings) {
                eprintln!(
                    "{:<16} {}{}",
                    gap.problem,
                    gap.blob,
                    gap.detail
                        .as_deref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                );
            }
            print_summary(&summary, summary.succeeded())
        }
        Command::Reconcile {
            containers,
            dry_run,
        } => {
            let scope = container_scope(&app, containers);
            let summary = reconciler::reconcile(&app, scope.as_deref(), dry_run).await;
            print_summary(&summary, summary.succeeded())
        }
        Command::Prune {
            containers,
            prefix,
            dry_run,
        } => {
            let scope = container_scope(&app, containers);
            let summary = prune::prune_all(
                &app,
                scope.as_deref(),
                prefix,
                dry_run,
                &mut print_json_line,
            )
            .await;
            print_last_line(&summary, summary.status == "ok")
        }
        Command::Produce { container, prefix } => {
            let request = ProduceRequest { container, prefix };
            match producer::produce_here(&app, &request).await {
                Ok(job) => {
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
                        summary["failures"] =
                            serde_json::to_value(&job.notes.failures).unwrap_or_default();
                    }
                    if !job.notes.warnings.is_empty() {
                        summary["warnings"] =
                            serde_json::to_value(&job.notes.warnings).unwrap_or_default();
                    }
                    print_summary(&summary, job.succeeded())
                }
                Err(e) => {
                    eprintln!("lakebackup: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Prints a command's JSON summary on stdout; the exit code says whether it succeeded.
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
    if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_summary(summary: &impl serde::Serialize, succeeded: bool) -> ExitCode {
    println!(
        "{}",
        serde_json::to_string_pretty(summary).unwrap_or_default()
    );
    if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse_instant(text: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 instant like 2026-11-24T14:00:00Z: {e}"))
}

/// Completes on SIGINT or SIGTERM (the host stops its worker with SIGTERM).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
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
