//! The `lakebackup` command: `serve` runs the Functions custom handler, `run` the same functions
//! without the host; `produce`, `shard`, `reconcile`, `prune`, `restore`, `verify`, `job` and
//! `poison` are for admins. One function per command; each prints JSON lines on stdout — one object per
//! line, the summary last — and says by its exit code how it went: 0 done, 1 failed (a job, a
//! check, a gap, storage), 2 nothing done because the command line or the settings are wrong
//! (clap's usage errors exit 2 too). `serve`, `run` and `doctor`'s table are the exceptions.
//! This file parses the command line and hands each command to its runner in `cli`.

use std::{io::IsTerminal, path::Path, process::ExitCode, sync::Arc};

use clap::Parser;
use lakebackup::{
    app::App,
    engine::{restore::RestoreRequest, verify::VerifyRequest},
    host::standalone::QueueBehaviour,
    settings::Settings,
    telemetry::Telemetry,
};
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer as _};

mod cli;
use cli::{
    args::{Cli, Command},
    commands, jobs,
    output::settings_error,
    poison, progress_line, serving,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("lakebackup: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Telemetry when APPLICATIONINSIGHTS_CONNECTION_STRING is set: its spans from the same
    // `tracing` spans the log shows; flushed after the command, while the runtime still runs.
    // A malformed connection string never stops a command (a restore during an incident least
    // of all): it runs without telemetry, says so, and `doctor` fails the setting.
    let (telemetry, refused) =
        match Telemetry::start(&Settings::from_env(), runtime.handle().clone()) {
            Ok(telemetry) => (telemetry, None),
            Err(e) => (None, Some(e)),
        };
    // RUST_LOG filters the log only: telemetry always gets what the default log shows, so a
    // quiet log (RUST_LOG=warn) leaves the traces in Application Insights whole.
    let log = tracing_subscriber::fmt::layer()
        .with_writer(progress_line::LogWriter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter()));
    tracing_subscriber::registry()
        .with(log)
        .with(
            telemetry
                .as_ref()
                .map(|telemetry| telemetry.layer().with_filter(default_filter())),
        )
        .init();
    if let Some(e) = refused {
        tracing::warn!("{e}: running without telemetry");
    }
    let code = runtime.block_on(run(cli));
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    code
}

/// What the log shows unless `RUST_LOG` says otherwise, and what telemetry always gets.
fn default_filter() -> EnvFilter {
    EnvFilter::new("info,azure_core=warn,azure_identity=warn,typespec_client_core=warn")
}

async fn run(cli: Cli) -> ExitCode {
    // Only the long-running commands take SIGINT/SIGTERM over (to stop cleanly), and from the
    // start; the others keep the default, so Ctrl-C ends them.
    let signalled = matches!(cli.command, Command::Serve { .. } | Command::Run { .. })
        .then(serving::shutdown_signal);
    let settings = Settings::from_env();
    let host_json = host_json_of(&cli.command);
    // The doctor reports bad settings among its checks, so it runs without a worker's state.
    if let Command::Doctor { json } = cli.command {
        return commands::doctor(&settings, &host_json, json).await;
    }
    let app = match app_from(&settings, &host_json) {
        Ok(app) => app,
        Err(e) => return settings_error(e),
    };
    match cli.command {
        Command::Serve { port } => serving::serve(app, &settings, port, signalled).await,
        Command::Run { http, host_json } => {
            serving::run_standalone(app, &settings, http, &host_json, signalled).await
        }
        Command::Shard { container, prefix } => jobs::queue_job(&app, container, prefix).await,
        Command::Produce { container, prefix } => commands::produce(&app, container, prefix).await,
        Command::Reconcile {
            containers,
            dry_run,
        } => commands::reconcile(&app, containers, dry_run).await,
        Command::Prune {
            containers,
            prefix,
            dry_run,
            distributed,
        } => commands::prune(&app, containers, prefix, dry_run, distributed).await,
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
                from: from.into(),
                to_container,
                to_account,
                dry_run,
                verify_content,
            };
            commands::restore(&app, &request, distributed).await
        }
        Command::Job {
            list: Some(list), ..
        } => jobs::job_list(&app, list).await,
        Command::Job {
            job, wait, report, ..
        } => jobs::job_status(&app, job.as_deref().unwrap_or_default(), wait, report).await,
        Command::Poison { command } => poison::poison(&app, command).await,
        Command::Doctor { json } => commands::doctor(&settings, &host_json, json).await, // (above)
        Command::Verify {
            container,
            prefix,
            deep,
            distributed,
        } => {
            let request = VerifyRequest {
                container,
                prefix,
                deep,
            };
            commands::verify(&app, &request, distributed).await
        }
    }
}

/// Where host.json is: `run --host-json`, or the working directory's.
fn host_json_of(command: &Command) -> std::path::PathBuf {
    match command {
        Command::Run { host_json, .. } => host_json.clone(),
        _ => "host.json".into(),
    }
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
