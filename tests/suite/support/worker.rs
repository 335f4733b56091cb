//! Runs the real `lakebackup` binary as the Functions host would: `serve` on a free loopback
//! port with the app settings in its environment.

use std::{
    collections::HashMap,
    net::TcpListener,
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::Azurite;

pub struct Worker {
    child: Child,
    pub port: u16,
}

/// The settings a Function App would have, pointing at `azurite`.
pub fn settings(azurite: &Azurite) -> HashMap<String, String> {
    HashMap::from([
        ("SOURCE_STORAGE".to_owned(), azurite.source()),
        ("BACKUP_STORAGE".to_owned(), azurite.backup()),
        ("AzureWebJobsStorage".to_owned(), azurite.jobs()),
    ])
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The `lakebackup` binary the tests run: `LAKEBACKUP_BIN` when set (to drive another build,
/// e.g. an earlier release, with the same tests), else this crate's own.
pub fn binary() -> std::path::PathBuf {
    std::env::var_os("LAKEBACKUP_BIN")
        .filter(|path| !path.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_lakebackup").into())
}

fn command(settings: &HashMap<String, String>, args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .envs(settings);
    // SAFETY: only prctl, async-signal-safe, runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command
}

impl Worker {
    /// Starts `lakebackup serve` and waits until it accepts connections.
    pub fn serve(settings: &HashMap<String, String>) -> Worker {
        let port = free_port();
        let child = command(settings, &["serve"])
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .stdin(Stdio::null())
            .spawn()
            .expect("lakebackup starts");
        let mut worker = Worker { child, port };
        super::wait_for_blocking(
            Duration::from_secs(30),
            "lakebackup serve listening",
            || {
                if let Ok(Some(status)) = worker.child.try_wait() {
                    panic!("lakebackup serve exited early with {status}");
                }
                std::net::TcpStream::connect(("127.0.0.1", port))
                    .is_ok()
                    .then_some(())
            },
        );
        worker
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `lakebackup ARGS` to completion: (exit code, stdout, stderr).
pub fn run_once(settings: &HashMap<String, String>, args: &[&str]) -> (i32, String, String) {
    let output = command(settings, args)
        .stdin(Stdio::null())
        .output()
        .expect("lakebackup runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `lakebackup COMMAND` (its arguments separated by single spaces, none holding one) to
/// completion, which must exit 0: its stdout.
pub fn run_ok(settings: &HashMap<String, String>, command: &str) -> String {
    let args: Vec<&str> = command.split(' ').collect();
    let (code, stdout, stderr) = run_once(settings, &args);
    assert_eq!(code, 0, "lakebackup {command}: {stdout}{stderr}");
    stdout
}

/// `lakebackup COMMAND` that queues a job (`shard`, `restore --distributed`, ...; arguments as
/// for [`run_ok`]), which must exit 0: the job's id, from its first line.
pub fn queue_job(settings: &HashMap<String, String>, command: &str) -> String {
    let stdout = run_ok(settings, command);
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap_or(""))
        .unwrap_or_else(|e| panic!("lakebackup {command}: a JSON line ({e}): {stdout}"));
    first["job"]
        .as_str()
        .unwrap_or_else(|| panic!("lakebackup {command}: no job in {first}"))
        .to_owned()
}

/// `lakebackup ARGS` to completion, its stdout read as JSON lines, the summary last: (exit
/// code, the lines before the summary, the summary). Panics, showing stderr, on a line that is
/// not JSON or on no line at all.
pub fn run_lines(
    settings: &HashMap<String, String>,
    args: &[&str],
) -> (i32, Vec<serde_json::Value>, serde_json::Value) {
    let (code, stdout, stderr) = run_once(settings, args);
    let mut lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{stderr}")))
        .collect();
    let summary = lines
        .pop()
        .unwrap_or_else(|| panic!("{args:?}: no summary\n{stderr}"));
    (code, lines, summary)
}

/// `lakebackup run` (standalone mode) in `dir`, whose `host.json` configures the queue trigger.
pub struct Standalone {
    child: Child,
}

impl Standalone {
    pub fn start(settings: &HashMap<String, String>, dir: &std::path::Path, args: &[&str]) -> Self {
        let mut full = vec!["run"];
        full.extend(args);
        let child = command(settings, &full)
            .current_dir(dir)
            .stdin(Stdio::null())
            .spawn()
            .expect("lakebackup run starts");
        Standalone { child }
    }

    fn signal(&mut self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// SIGTERM, then the exit code once it has drained (at most 60 s).
    pub fn terminate(mut self) -> i32 {
        self.signal(libc::SIGTERM);
        let status =
            super::wait_for_blocking(Duration::from_secs(60), "lakebackup run stopped", || {
                self.child.try_wait().ok().flatten()
            });
        status.code().unwrap_or(-1)
    }

    /// SIGKILL: the worker dies mid-work, as on a crash or eviction.
    pub fn kill(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory whose `host.json` is `host_json` (a one-minute `functionTimeout`), for
/// `lakebackup run`; and `settings` with a shard's budget and a copy's timeout that fit it
/// (unless `settings` set them), or `run` refuses to start.
fn run_setup(
    settings: &HashMap<String, String>,
    host_json: &str,
) -> (tempfile::TempDir, HashMap<String, String>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("host.json"), host_json).unwrap();
    let mut worker_settings = settings.clone();
    for (key, value) in [
        ("COPY_TIMEOUT_SECONDS", "20"),
        ("SHARD_TIME_BUDGET_SECONDS", "30"),
    ] {
        worker_settings
            .entry(key.into())
            .or_insert_with(|| value.into());
    }
    (dir, worker_settings)
}

/// A queued job worked off by one `lakebackup run` process with `settings`: `job JOB --wait`
/// (at most `within`), then `job JOB --report`. Returns the exit code of `--wait`, the report's
/// per-blob lines and the job's final status.
pub async fn work_off_job(
    settings: &HashMap<String, String>,
    job: &str,
    within: Duration,
) -> (i32, Vec<serde_json::Value>, serde_json::Value) {
    let (dir, worker_settings) = run_setup(
        settings,
        r#"{"version": "2.0", "functionTimeout": "00:01:00", "extensions": {"queues": {"batchSize": 4, "maxPollingInterval": "00:00:00.2"}}}"#,
    );
    let worker = Standalone::start(&worker_settings, dir.path(), &[]);
    let waiting = {
        let (settings, job) = (settings.clone(), job.to_owned());
        tokio::task::spawn_blocking(move || run_once(&settings, &["job", &job, "--wait"]))
    };
    let (code, out, err) = tokio::time::timeout(within, waiting)
        .await
        .unwrap_or_else(|_| panic!("the worker did not end job {job} within {within:?}"))
        .unwrap();
    assert_eq!(worker.terminate(), 0, "lakebackup run stops cleanly");
    assert!(
        out.lines().count() > 0,
        "job --wait prints the status: {err}"
    );
    let (_, report, err) = run_once(settings, &["job", job, "--report"]);
    let mut lines: Vec<serde_json::Value> = report
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}\n{err}")))
        .collect();
    let status = lines.pop().unwrap_or_else(|| panic!("no status: {err}"));
    (code, lines, status)
}

/// A tiny deterministic generator: the kill points differ between kills, never between runs.
struct KillPoints(u64);

impl KillPoints {
    /// Milliseconds a worker runs before it is killed: 150 to 1,650.
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        150 + self.0 % 1_500
    }
}

/// `lakebackup run` processes working off `job` while one of the two is killed (SIGKILL) at
/// `kills` random points and started again; then both run to the job's end. A watcher reads
/// the job's status all along: the first time it reads `done`, `complete` must already hold.
/// Returns the final status and the report's lines.
pub async fn work_off_killing<F, Fut>(
    settings: &HashMap<String, String>,
    job: &str,
    kills: usize,
    seed: u64,
    complete: F,
) -> (serde_json::Value, Vec<serde_json::Value>)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    // Kills must not exhaust a shard's deliveries: in Azure a worker dies rarely.
    let (dir, worker_settings) = run_setup(
        settings,
        r#"{"version": "2.0", "functionTimeout": "00:01:00", "extensions": {"queues": {"batchSize": 4, "maxDequeueCount": 100, "maxPollingInterval": "00:00:00.2"}}}"#,
    );
    let settings = &worker_settings;
    let app = lakebackup::app::App::from_settings(&lakebackup::settings::Settings::from_pairs(
        settings.clone(),
    ))
    .unwrap();
    let watcher = {
        let job = job.to_owned();
        tokio::spawn(async move {
            // Longer than the wait below, which says more when it gives up.
            super::wait_for(Duration::from_secs(300), "the job's end", || async {
                let status = lakebackup::engine::jobs::status(&app, &job)
                    .await
                    .unwrap()
                    .unwrap();
                let state = status.progress.state;
                // Read the moment the job stopped running: its work must all be there.
                match state {
                    lakebackup::core::job::JobState::Running => None,
                    _ => Some((state, complete().await)),
                }
            })
            .await
        })
    };
    let steady = Standalone::start(settings, dir.path(), &[]);
    let mut points = KillPoints(seed);
    let mut killed = Vec::new();
    for _ in 0..kills {
        let victim = Standalone::start(settings, dir.path(), &[]);
        let after = points.next();
        // The kill point itself, drawn from the seed: no wait for anything.
        tokio::time::sleep(Duration::from_millis(after)).await;
        victim.kill();
        killed.push(after);
    }
    let last = Standalone::start(settings, dir.path(), &[]);
    let Ok(watched) = tokio::time::timeout(Duration::from_secs(240), watcher).await else {
        let app = lakebackup::app::App::from_settings(&lakebackup::settings::Settings::from_pairs(
            settings.clone(),
        ))
        .unwrap();
        let status = lakebackup::engine::jobs::status(&app, job)
            .await
            .unwrap()
            .unwrap();
        panic!("job {job} did not end within 4 minutes (kills {killed:?}): {status:?}");
    };
    let (state, complete) = watched.unwrap();
    assert_eq!(steady.terminate(), 0);
    assert_eq!(last.terminate(), 0);
    assert_eq!(
        state,
        lakebackup::core::job::JobState::Done,
        "kills after {killed:?} ms"
    );
    complete.unwrap_or_else(|e| panic!("read done before its work was: {e} (kills {killed:?})"));
    let (_, out, err) = run_once(settings, &["job", job, "--report"]);
    let mut lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{err}")))
        .collect();
    let status = lines.pop().unwrap();
    (status, lines)
}
