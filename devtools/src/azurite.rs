//! Azurite, the real storage emulator from the project's pinned npm dependency, run in memory on
//! free loopback ports with separate `source`, `backup` and `jobs` accounts (and the well-known
//! development account); stopped on drop. The demo and the tests use it; the worker never does.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc,
    },
    time::Duration,
};

pub const SOURCE_KEY: &str =
    "qq54xS2mAdwrit/waE2mVPa28ad3YM381vw77qV3Zi60VEMEIVOeaUPZDwv3Y2mpz+NvyGkk5fqS3UpK3lECeQ==";
pub const BACKUP_KEY: &str =
    "Sb5gFBLLWGteCJKibeQBz46a8dS4R6u5Rh99oklYHIbjy8Tu30oWkXsnnYDP1Uxw4SPeQZYEZj+hATFlNEKUPg==";
pub const JOBS_KEY: &str =
    "f8gS7NllCgQSThF16KjNSPHmrYloLX4csqnwJjZFZHI1VSawQSNetMH00YCn+Aa7sCqMJF7GeBi89DpL/Zl6PQ==";

/// The development account's well-known key; naming extra accounts replaces the default one.
pub const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[derive(Debug, thiserror::Error)]
pub enum AzuriteError {
    #[error("Azurite is not installed: run `npm ci` in {}", .0.display())]
    NotInstalled(PathBuf),
    #[error("cannot start node to run Azurite: {0}")]
    Spawn(std::io::Error),
    #[error("Azurite did not report its listening ports within 60 s")]
    NoPorts,
}

/// HTTPS for Azurite, which its OAuth mode requires: the certificate it serves, its key, and
/// the CA that signed it. Azurite trusts the CA too (`NODE_EXTRA_CA_CERTS`): a copy between two
/// of its accounts makes it call its own endpoint.
#[derive(Debug, Clone)]
pub struct AzuriteTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// The project's root, where `node_modules` is (this crate is one of its members).
pub fn project_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_owned()
}

pub struct Azurite {
    child: Child,
    /// `http`, or `https` when started with [`Azurite::start_keys_off`].
    scheme: &'static str,
    pub blob_port: u16,
    pub queue_port: u16,
    /// Requests served so far (blob and queue), when started with its access log.
    served: Arc<AtomicU64>,
}

impl Azurite {
    /// Starts Azurite from `project_root/node_modules`.
    pub fn start_in(project_root: &Path) -> Result<Azurite, AzuriteError> {
        Self::start_in_with(project_root, &[])
    }

    /// Like [`Azurite::start_in`], with extra Azurite arguments (a benchmark's peer may send an
    /// API version this Azurite does not know: `--skipApiVersionCheck`).
    pub fn start_in_with(project_root: &Path, extra: &[&str]) -> Result<Azurite, AzuriteError> {
        Self::spawn(project_root, extra, false, None)
    }

    /// Azurite over HTTPS in OAuth mode (`--oauth basic`): it accepts bearer tokens whose
    /// audience, issuer and validity are right (it does not check their signature), and issues
    /// user delegation keys. Account keys keep working alongside, for the tests' own checks.
    pub fn start_keys_off(project_root: &Path, tls: &AzuriteTls) -> Result<Azurite, AzuriteError> {
        Self::spawn(project_root, &[], false, Some(tls))
    }

    /// Like [`Azurite::start_in_with`], with Azurite's access log on, so that
    /// [`Azurite::requests_served`] counts every request it serves — including those it makes
    /// to itself, such as the source check of a cross-account copy (benchmarks).
    pub fn start_counting(project_root: &Path, extra: &[&str]) -> Result<Azurite, AzuriteError> {
        Self::spawn(project_root, extra, true, None)
    }

    /// CPU time Azurite (one Node.js process) has used so far, from `/proc`; `None` where that
    /// cannot be read. Benchmarks compare it with wall time to see whether Azurite was the
    /// bottleneck.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name (which is in parentheses and may hold spaces).
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        // SAFETY: sysconf only reads a system constant.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        (per_second > 0).then(|| ticks / per_second as f64)
    }

    /// Requests served so far; 0 unless started with [`Azurite::start_counting`].
    pub fn requests_served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    fn spawn(
        project_root: &Path,
        extra: &[&str],
        access_log: bool,
        tls: Option<&AzuriteTls>,
    ) -> Result<Azurite, AzuriteError> {
        let script = project_root.join("node_modules/azurite/dist/src/azurite.js");
        if !script.exists() {
            return Err(AzuriteError::NotInstalled(project_root.to_owned()));
        }
        let mut command = Command::new("node");
        command
            .arg(script)
            .args(["--inMemoryPersistence", "--disableProductStyleUrl"])
            .args((!access_log).then_some("--silent"))
            .args(["--blobHost", "127.0.0.1", "--blobPort", "0"])
            .args(["--queueHost", "127.0.0.1", "--queuePort", "0"])
            .args(["--tableHost", "127.0.0.1", "--tablePort", "0"])
            .args(extra)
            .env(
                "AZURITE_ACCOUNTS",
                format!(
                    "source:{SOURCE_KEY};backup:{BACKUP_KEY};jobs:{JOBS_KEY};devstoreaccount1:{DEV_KEY}"
                ),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(tls) = tls {
            command
                .args(["--oauth", "basic", "--cert"])
                .arg(&tls.cert)
                .arg("--key")
                .arg(&tls.key)
                .env("NODE_EXTRA_CA_CERTS", &tls.ca);
        }
        // If our process dies without dropping us, the kernel still ends Azurite.
        // SAFETY: the closure runs in the forked child before exec and calls only prctl, which
        // is async-signal-safe; it touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(AzuriteError::Spawn)?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err(AzuriteError::NoPorts);
        };
        let (lines_tx, lines_rx) = mpsc::channel();
        let served = Arc::new(AtomicU64::new(0));
        let counter = served.clone();
        // `AZURITE_ACCESS_LOG=path` keeps the access log of a counting Azurite, to see which
        // requests a benchmark makes.
        let mut keep = std::env::var_os("AZURITE_ACCESS_LOG")
            .filter(|_| access_log)
            .and_then(|path| std::fs::File::create(path).ok());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // An access-log line: `127.0.0.1 - - [time] "GET /account/... HTTP/1.1" 200 -`.
                if line.contains(" HTTP/1.1\"") {
                    counter.fetch_add(1, Ordering::Relaxed);
                    if let Some(file) = keep.as_mut() {
                        use std::io::Write as _;
                        let _ = writeln!(file, "{line}");
                    }
                } else {
                    let _ = lines_tx.send(line);
                }
            }
        });
        let (mut blob_port, mut queue_port) = (None, None);
        while blob_port.is_none() || queue_port.is_none() {
            let Ok(line) = lines_rx.recv_timeout(Duration::from_secs(60)) else {
                let _ = child.kill();
                let _ = child.wait();
                return Err(AzuriteError::NoPorts);
            };
            let port = || line.rsplit(':').next().and_then(|p| p.trim().parse().ok());
            if line.contains("Blob service is successfully listening") {
                blob_port = port();
            } else if line.contains("Queue service is successfully listening") {
                queue_port = port();
            }
        }
        Ok(Azurite {
            child,
            scheme: if tls.is_some() { "https" } else { "http" },
            blob_port: blob_port.unwrap_or_default(),
            queue_port: queue_port.unwrap_or_default(),
            served,
        })
    }

    /// Starts Azurite from this source tree (tests); panics with the fix when it cannot.
    pub fn start() -> Azurite {
        Self::start_in(&project_root()).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn blob_endpoint(&self, account: &str) -> String {
        format!("{}://127.0.0.1:{}/{account}", self.scheme, self.blob_port)
    }

    pub fn queue_endpoint(&self, account: &str) -> String {
        format!("{}://127.0.0.1:{}/{account}", self.scheme, self.queue_port)
    }

    /// An account-key connection string with explicit endpoints.
    pub fn connection_string(&self, account: &str, key: &str) -> String {
        format!(
            "DefaultEndpointsProtocol={};AccountName={account};AccountKey={key};BlobEndpoint={};QueueEndpoint={};",
            self.scheme,
            self.blob_endpoint(account),
            self.queue_endpoint(account)
        )
    }

    pub fn source(&self) -> String {
        self.connection_string("source", SOURCE_KEY)
    }

    pub fn backup(&self) -> String {
        self.connection_string("backup", BACKUP_KEY)
    }

    pub fn jobs(&self) -> String {
        self.connection_string("jobs", JOBS_KEY)
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        // In-memory: nothing to flush. SIGTERM can hang on keep-alive clients, so kill outright.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
