//! The progress line of the admin commands: on a terminal, `restore`, `reconcile`, `produce`,
//! `verify`, `prune` and `job --wait` show on stderr the blobs done out of those seen so far,
//! the rate and the elapsed time. When stderr is not a terminal nothing is drawn, so logs and
//! JSON lines stay exactly as they are. Part of the command, never of the Function App.

use std::{
    io::{IsTerminal, Write},
    sync::{Arc, OnceLock},
    time::Duration,
};

use indicatif::{ProgressBar, ProgressStyle};
use lakebackup::app::App;

/// The line being drawn, for the log writer to lift while it writes.
static DRAWN: OnceLock<ProgressBar> = OnceLock::new();

/// A progress line on stderr, or nothing when stderr is not a terminal.
pub struct ProgressLine {
    bar: Option<ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl ProgressLine {
    /// Follows what `app` reports it has seen and done, until [`ProgressLine::finish`].
    pub fn of_app(app: &Arc<App>, what: &str) -> Self {
        let Some(bar) = new_bar(what, "blobs") else {
            return Self::hidden();
        };
        let (app, ticking) = (Arc::clone(app), bar.clone());
        let ticker = tokio::spawn(async move {
            loop {
                let (done, seen) = app.progress.now();
                ticking.set_length(seen);
                ticking.set_position(done);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self {
            bar: Some(bar),
            ticker: Some(ticker),
        }
    }

    /// A line whose caller sets it (`job --wait`: shards finished of those queued).
    pub fn manual(what: &str, unit: &str) -> Self {
        Self {
            bar: new_bar(what, unit),
            ticker: None,
        }
    }

    /// No line at all.
    pub fn hidden() -> Self {
        Self {
            bar: None,
            ticker: None,
        }
    }

    pub fn set(&self, done: u64, seen: u64, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_length(seen.max(done));
            bar.set_position(done);
            bar.set_message(message);
        }
    }

    /// Takes the line off the terminal (the command's output follows on stdout).
    pub fn finish(self) {
        if let Some(ticker) = &self.ticker {
            ticker.abort();
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn new_bar(what: &str, unit: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let template =
        format!("{{prefix}} {{pos}}/{{len}} {unit} · {{per_sec}} · {{elapsed_precise}} {{msg}}");
    let bar = ProgressBar::new(0).with_prefix(what.to_owned());
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    // Drawn at once, so even a command done within the first tick shows where it stood.
    bar.tick();
    let _ = DRAWN.set(bar.clone());
    Some(bar)
}

/// The log's writer: stderr, with the progress line lifted while a log line is written.
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LiftingStderr;

    fn make_writer(&'a self) -> Self::Writer {
        LiftingStderr
    }
}

pub struct LiftingStderr;

impl Write for LiftingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match DRAWN.get() {
            Some(bar) if !bar.is_finished() => bar.suspend(|| std::io::stderr().write(buf)),
            _ => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
