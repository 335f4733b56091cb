//! Azurite, the real storage emulator from the project's pinned npm dependency, run in memory on
//! free loopback ports with separate `source`, `backup` and `jobs` accounts (and the well-known
//! development account); stopped on drop. The demo and the tests use it; the worker never does.

use std::{
    ffi::OsStr,
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
    #[error("cannot start node to run Azurite (install Node.js {needed}): {error}")]
    Spawn {
        needed: String,
        error: std::io::Error,
    },
    #[error(
        "Azurite {azurite} needs Node.js {needed} (the `engines` of its package.json), and \
         `node` here is {found}: install Node.js 22 or later ({why})"
    )]
    NodeTooOld {
        azurite: String,
        needed: String,
        found: String,
        why: String,
    },
    #[error("Azurite did not report its listening ports within 60 s")]
    NoPorts,
    #[error("Azurite exited before it listened ({0})")]
    Exited(String),
}

/// What the installed Azurite says it needs (`engines.node` of its package.json), and what the
/// local `node` is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeCheck {
    azurite: String,
    /// The requirement as written, e.g. `>=22.0.0`.
    needed: String,
    /// `node --version`, e.g. `v20.20.2`; empty when it could not be run.
    found: String,
}

impl NodeCheck {
    fn of(project_root: &Path, node: &OsStr) -> NodeCheck {
        let package =
            std::fs::read_to_string(project_root.join("node_modules/azurite/package.json"))
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .unwrap_or_default();
        let found = Command::new(node)
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .unwrap_or_default();
        NodeCheck {
            azurite: package["version"].as_str().unwrap_or("?").to_owned(),
            needed: package["engines"]["node"]
                .as_str()
                .unwrap_or("22 or later")
                .to_owned(),
            found,
        }
    }

    /// Whether the local node is older than the `>=X.Y.Z` Azurite declares (`false` when either
    /// cannot be read: only a known shortfall is reported).
    fn too_old(&self) -> bool {
        let minimum = self.needed.trim().strip_prefix(">=").and_then(version);
        let found = version(self.found.trim_start_matches('v'));
        matches!((found, minimum), (Some(found), Some(minimum)) if found < minimum)
    }

    /// Azurite did not start: when the node is older than it needs, that is the likeliest why.
    fn failed(&self, why: String) -> AzuriteError {
        if self.too_old() {
            AzuriteError::NodeTooOld {
                azurite: self.azurite.clone(),
                needed: self.needed.clone(),
                found: self.found.clone(),
                why,
            }
        } else {
            AzuriteError::Exited(why)
        }
    }
}

/// `22.0.0` (or `22`, `22.1`) as a comparable triple.
fn version(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.trim().split('.').map(|p| p.parse::<u64>().ok());
    let major = parts.next()??;
    let minor = parts.next().unwrap_or(Some(0))?;
    let patch = parts.next().unwrap_or(Some(0))?;
    Some((major, minor, patch))
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
        Self::spawn_with(OsStr::new("node"), project_root, extra, access_log, tls)
    }

    fn spawn_with(
        node: &OsStr,
        project_root: &Path,
        extra: &[&str],
        access_log: bool,
        tls: Option<&AzuriteTls>,
    ) -> Result<Azurite, AzuriteError> {
        let script = project_root.join("node_modules/azurite/dist/src/azurite.js");
        if !script.exists() {
            return Err(AzuriteError::NotInstalled(project_root.to_owned()));
        }
        let node_check = NodeCheck::of(project_root, node);
        let mut command = Command::new(node);
        command
            .arg(script)
            .args(["--inMemoryPersistence", "--disableProductStyleUrl"])
            // Azurite's own telemetry (on by default since 3.35) tracks every request with the
            // Application Insights SDK and tries to send it to Microsoft: off, so the tests'
            // traffic stays on this machine and Azurite spends nothing on it (measured: a
            // request-heavy test ran in about 20% less time, with 10–15% less CPU).
            .arg("--disableTelemetry")
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
        let mut child = command.spawn().map_err(|error| AzuriteError::Spawn {
            needed: node_check.needed.clone(),
            error,
        })?;
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
            let line = match lines_rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => line,
                // Its stdout closed: it exited (a node too old for it fails here, at once).
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child
                        .wait()
                        .map_or_else(|e| e.to_string(), |s| s.to_string());
                    return Err(node_check.failed(status));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(match node_check.too_old() {
                        true => node_check.failed("no listening ports within 60 s".into()),
                        false => AzuriteError::NoPorts,
                    });
                }
            };
            let port = || line.rsplit(':').next().and_then(|p| p.trim().parse().ok());
            if line.contains("Blob service is successfully listening") {
                blob_port = port();
            } else if line.contains("Queue service is successfully listening") {
                queue_port = port();
            }
        }
        if node_check.too_old() {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                eprintln!(
                    "note: Azurite {} declares Node.js {}, and node here is {}: it started, but \
                     that Node is not one it supports",
                    node_check.azurite, node_check.needed, node_check.found
                )
            });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_numbers() {
        let check = |needed: &str, found: &str| NodeCheck {
            azurite: "3.37.0".into(),
            needed: needed.into(),
            found: found.into(),
        };
        assert!(check(">=22.0.0", "v20.20.2").too_old());
        assert!(check(">=22.0.0", "v9.9.9").too_old());
        assert!(!check(">=22.0.0", "v22.0.0").too_old());
        assert!(!check(">=22.0.0", "v100.1.0").too_old());
        // Only a known shortfall counts.
        assert!(!check("^18 || >=20", "v16.0.0").too_old());
        assert!(!check(">=22.0.0", "").too_old());
    }

    /// A project whose Azurite needs Node 22, and a `node` of version 20 that cannot run it:
    /// the launcher says which Node is needed and which one is here.
    #[test]
    fn a_node_too_old_for_azurite_is_named_with_the_version_needed() {
        use std::os::unix::fs::PermissionsExt;
        let root =
            std::env::temp_dir().join(format!("lakebackup-node-check-{}", std::process::id()));
        let azurite = root.join("node_modules/azurite");
        std::fs::create_dir_all(azurite.join("dist/src")).unwrap();
        std::fs::write(
            azurite.join("package.json"),
            r#"{"name": "azurite", "version": "3.37.0", "engines": {"node": ">=22.0.0"}}"#,
        )
        .unwrap();
        std::fs::write(azurite.join("dist/src/azurite.js"), "").unwrap();
        let node = root.join("node");
        std::fs::write(
            &node,
            "#!/bin/sh\n[ \"$1\" = --version ] && { echo v20.0.0; exit 0; }\n\
             echo 'SyntaxError: Unexpected token' >&2; exit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o755)).unwrap();

        let error = Azurite::spawn_with(node.as_os_str(), &root, &[], false, None)
            .err()
            .expect("Azurite cannot start on this node");
        let message = error.to_string();
        std::fs::remove_dir_all(&root).unwrap();
        assert!(
            matches!(error, AzuriteError::NodeTooOld { .. }),
            "{message}"
        );
        assert!(
            message.starts_with(
                "Azurite 3.37.0 needs Node.js >=22.0.0 (the `engines` of its package.json), and \
                 `node` here is v20.0.0: install Node.js 22 or later"
            ),
            "{message}"
        );
    }
}
