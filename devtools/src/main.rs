//! `lakebackup-dev demo`: the whole story against a throw-away Azurite (`scripts/demo.sh`).

use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match std::env::args().nth(1).as_deref() {
        Some("demo") => {}
        _ => {
            eprintln!("usage: lakebackup-dev demo");
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("lakebackup-dev: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let root = std::env::current_dir().unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    match runtime.block_on(lakebackup_devtools::demo::run(&root)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lakebackup demo: {e}");
            ExitCode::FAILURE
        }
    }
}
