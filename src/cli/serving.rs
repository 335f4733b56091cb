//! The long-running commands: `serve` (the custom handler under the Functions host) and `run`
//! (every function without the host), and the signals that stop them cleanly.

use std::{net::SocketAddr, path::Path, process::ExitCode, sync::Arc};

use lakebackup::{
    app::App,
    host::{
        bindings, server,
        standalone::{self, QueueBehaviour},
    },
    settings::Settings,
};

use super::output::settings_error;

/// `serve`: the custom handler, on 127.0.0.1:`port`, until the host stops it.
pub async fn serve(
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
pub async fn run_standalone(
    app: Arc<App>,
    settings: &Settings,
    http: Option<SocketAddr>,
    host_json: &Path,
    signalled: Option<impl std::future::Future<Output = ()> + Send + 'static>,
) -> ExitCode {
    let prepared = QueueBehaviour::from_host_json(host_json).and_then(|mut behaviour| {
        behaviour.visibility_window =
            settings.get_duration("RUN_VISIBILITY_SECONDS", 600, 2..=7 * 86_400)?;
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

/// Completes when `signalled` does, or never.
async fn until(signalled: Option<impl std::future::Future<Output = ()>>) {
    match signalled {
        Some(signal) => signal.await,
        None => std::future::pending().await,
    }
}

/// Completes on SIGINT or SIGTERM (the host stops its worker with SIGTERM).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
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
