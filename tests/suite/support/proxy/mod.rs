//! A fault-injecting HTTP/1.1 proxy between the product and Azurite, for tests.
//!
//! Azurite never fails on its own and answers listings in pages of up to 5,000, so code paths for
//! transient failures, ambiguous outcomes and page boundaries go untested against it. This proxy
//! sits on a free loopback port in front of one Azurite endpoint (blob or queue) and
//!
//! - passes every request and answer through byte for byte (it never touches an answer it
//!   forwarded);
//! - with a page size, lowers `maxresults` of every listing (`comp=list`) to it, re-signing a
//!   SharedKey request whose query it changed (SAS and bearer signatures do not cover it);
//! - with a seed, injects faults into chosen operation classes at a chosen rate, deterministically:
//!   each class draws from its own seeded stream, so the same seed and the same sequence of
//!   requests of a class give the same decisions;
//! - with [`ProxyConfig::azure_rules`], refuses as Azure does what Azurite lets through (see
//!   [`ProxyConfig::azure_rules`]);
//! - with [`ProxyConfig::refuse_tags`], answers as Azure does an identity that may read and
//!   write blobs but not their index tags (see [`ProxyConfig::refuse_tags`]);
//! - with [`ProxyConfig::deny_classes`], answers as Azure does an identity whose role lacks
//!   whole classes of operations (a reader's: no write, snapshot, lease or delete), or with
//!   another code ([`ProxyConfig::deny_code`]) a client refused for another reason;
//! - with [`ProxyConfig::role_scope`], answers as Azure does an identity whose roles are
//!   assigned on some containers and queues only;
//! - counts what it saw and did;
//! - started with [`ProxiedAzurite::start_hns`], is the dfs stand-in ([`hns`]): the accounts it
//!   names answer as Azure documents a lake with a hierarchical namespace (ADLS Gen2).
//!
//! It runs on its own thread and runtime, so it serves whatever the test's runtime is doing
//! (current-thread runtimes blocked in synchronous code included); dropping it stops it.
//! Requests are buffered whole before they are forwarded, so "reset before forwarding" means
//! Azurite never saw any of it.
//!
//! Its parts: [`config`] (what a proxy does: [`ProxyConfig`], the [`Service`] it fronts),
//! [`classes`] (what a request does: [`OpClass`], [`classify`]), [`faults`] (which faults, drawn
//! how: [`Faults`], [`FaultKind`], and the answers they give), [`stats`] (what it counted),
//! `wire` (HTTP/1.1 framing, byte for byte), `serve` (accepting, forwarding, paging listings and
//! re-signing them), `refusals` (what Azure refuses that Azurite accepts); and here the running
//! proxy itself, [`Proxy`] and [`ProxiedAzurite`].

mod classes;
mod config;
mod conn;
mod faults;
pub mod hns;
mod refusals;
mod serve;
mod stats;
mod wire;

use std::{
    collections::{BTreeMap, HashMap},
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use tokio::{net::TcpListener, sync::oneshot};

use super::azurite::{Azurite, BACKUP_KEY, JOBS_KEY, SOURCE_KEY};
pub use classes::{classify, OpClass};
pub use config::{ProxyConfig, Service};
pub use conn::ProxyTls;
use faults::{streams, SplitMix64};
pub use faults::{FaultKind, Faults, Injected};
use serve::accept;
pub use stats::ProxyStats;
use wire::Wire;

struct State {
    config: ProxyConfig,
    /// Decoded keys, from `config.keys`.
    keys: HashMap<String, Vec<u8>>,
    streams: BTreeMap<OpClass, (SplitMix64, u64)>,
    stats: ProxyStats,
}

impl State {
    fn new(config: ProxyConfig) -> State {
        let mut state = State {
            config: ProxyConfig::default(),
            keys: HashMap::new(),
            streams: BTreeMap::new(),
            stats: ProxyStats::default(),
        };
        state.configure(config);
        state
    }

    fn configure(&mut self, config: ProxyConfig) {
        self.keys = config
            .keys
            .iter()
            .filter_map(|(account, key)| Some((account.clone(), BASE64.decode(key).ok()?)))
            .collect();
        self.streams = streams(config.faults.seed);
        self.config = config;
    }

    /// Draws the fault for one request of `class`. Every request faults could apply to takes
    /// three draws whatever the outcome, so a decision depends only on its position.
    fn decide(&mut self, class: OpClass) -> Option<(FaultKind, Duration, u64)> {
        let faults = &self.config.faults;
        if !faults.applies_to(class) {
            return None;
        }
        let (stream, drawn) = self.streams.get_mut(&class)?;
        let draw = *drawn;
        *drawn += 1;
        let (hit, pick, pause) = (stream.unit(), stream.unit(), stream.unit());
        if hit >= faults.rate {
            return None;
        }
        let kinds: Vec<FaultKind> = faults.kinds.iter().copied().collect();
        let index = ((pick * kinds.len() as f64) as usize).min(kinds.len().saturating_sub(1));
        let kind = *kinds.get(index)?;
        let (min, max) = faults.delay;
        let delay = min + (max.saturating_sub(min)).mul_f64(pause);
        Some((kind, delay, draw))
    }
}

struct Shared {
    service: Service,
    upstream: SocketAddr,
    /// The accounts played as lakes with a hierarchical namespace (the dfs stand-in, [`hns`]).
    hns: Option<Arc<hns::HnsLake>>,
    /// HTTPS on both sides (a keys-off test's), else plain HTTP.
    tls: Option<ProxyTls>,
    state: Mutex<State>,
    /// Idle upstream connections, newest last.
    pool: Mutex<Vec<(Wire, Instant)>>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a test thread panicked while holding it; the counts are
        // still the best there is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pool(&self) -> MutexGuard<'_, Vec<(Wire, Instant)>> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running proxy; dropping it stops it and closes every connection.
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("port", &self.port)
            .field("upstream", &self.shared.upstream)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Starts a proxy for `upstream` (`http://127.0.0.1:PORT`, Azurite's blob or queue port)
    /// on a free loopback port.
    pub fn start(upstream: &str, service: Service, config: ProxyConfig) -> io::Result<Proxy> {
        Proxy::start_with(upstream, service, config, None, None)
    }

    /// As [`Proxy::start`], playing `hns`'s accounts as lakes with a hierarchical namespace,
    /// over HTTPS on both sides with `tls`.
    fn start_with(
        upstream: &str,
        service: Service,
        config: ProxyConfig,
        hns: Option<Arc<hns::HnsLake>>,
        tls: Option<ProxyTls>,
    ) -> io::Result<Proxy> {
        let upstream = upstream_address(upstream)?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            service,
            upstream,
            hns,
            tls,
            state: Mutex::new(State::new(config)),
            pool: Mutex::new(Vec::new()),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-proxy")
            .thread_stack_size(8 << 20)
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("test-proxy-{port}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = accept(listener, serving) => {}
                        _ = stopped => {}
                    }
                });
                // Connection tasks may be waiting on Azurite; they are dropped, not awaited.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Proxy {
            port,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` (`https` when it speaks TLS), to put where Azurite's endpoint
    /// would go.
    pub fn url(&self) -> String {
        let scheme = if self.shared.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn stats(&self) -> ProxyStats {
        self.shared.state().stats.clone()
    }

    /// The hierarchical namespace this proxy plays, when it is the dfs stand-in.
    pub fn hns(&self) -> Option<Arc<hns::HnsLake>> {
        self.shared.hns.clone()
    }

    pub fn reset_stats(&self) {
        self.shared.state().stats = ProxyStats::default();
    }

    pub fn config(&self) -> ProxyConfig {
        self.shared.state().config.clone()
    }

    /// Replaces the configuration for the requests that arrive from now on. The fault streams
    /// restart from the (new) seed, so decisions after this call do not depend on what came
    /// before it.
    pub fn set_config(&self, config: ProxyConfig) {
        self.shared.state().configure(config);
    }

    /// Changes only the faults (their streams restart, as with [`Proxy::set_config`]).
    pub fn set_faults(&self, faults: Faults) {
        let mut state = self.shared.state();
        let config = ProxyConfig {
            faults,
            ..state.config.clone()
        };
        state.configure(config);
    }

    /// Changes only the page size; the fault streams go on.
    pub fn set_page_size(&self, page_size: Option<u32>) {
        self.shared.state().config.page_size = page_size;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A blob proxy and a queue proxy in front of one Azurite, with connection strings for its
/// accounts through them. All accounts share one blob proxy on purpose: for a cross-account
/// copy Azurite requires the copy source's host (here the proxy) to be the one the copy request
/// was sent to, or it refuses with `CannotVerifyCopySource`.
#[derive(Debug)]
pub struct ProxiedAzurite {
    pub blob: Proxy,
    pub queue: Proxy,
}

impl ProxiedAzurite {
    /// Proxies for `azurite`'s blob and queue ports; `config`'s keys are completed with those
    /// of Azurite's accounts.
    pub fn start(azurite: &Azurite, config: ProxyConfig) -> io::Result<ProxiedAzurite> {
        ProxiedAzurite::start_with(azurite, config, None)
    }

    /// As [`ProxiedAzurite::start`], the blob proxy the dfs stand-in ([`hns`]) that plays
    /// `accounts` as lakes with a hierarchical namespace (ADLS Gen2).
    pub fn start_hns(
        azurite: &Azurite,
        config: ProxyConfig,
        accounts: &[&str],
    ) -> io::Result<ProxiedAzurite> {
        let lake = Arc::new(hns::HnsLake::new(accounts.iter().copied()));
        ProxiedAzurite::start_with(azurite, config, Some(lake))
    }

    /// The dfs stand-in (as [`ProxiedAzurite::start_hns`]) in front of Azurite in OAuth mode
    /// over HTTPS (keys off): its blob proxy speaks HTTPS to clients and to Azurite with `tls`;
    /// its queue proxy is a plain one (keys-off workers reach Azurite's queues directly).
    pub fn start_hns_tls(azurite: &Azurite, tls: ProxyTls, accounts: &[&str]) -> io::Result<Proxy> {
        let config = ProxyConfig::azurite();
        let lake = Arc::new(hns::HnsLake::new(accounts.iter().copied()));
        Proxy::start_with(
            &format!("http://127.0.0.1:{}", azurite.blob_port),
            Service::Blob,
            config,
            Some(lake),
            Some(tls),
        )
    }

    fn start_with(
        azurite: &Azurite,
        config: ProxyConfig,
        hns: Option<Arc<hns::HnsLake>>,
    ) -> io::Result<ProxiedAzurite> {
        let mut config = config;
        for (account, key) in ProxyConfig::azurite().keys {
            config.keys.entry(account).or_insert(key);
        }
        let blob = Proxy::start_with(
            &format!("http://127.0.0.1:{}", azurite.blob_port),
            Service::Blob,
            config.clone(),
            hns,
            None,
        )?;
        let queue = Proxy::start(
            &format!("http://127.0.0.1:{}", azurite.queue_port),
            Service::Queue,
            config,
        )?;
        Ok(ProxiedAzurite { blob, queue })
    }

    /// An account-key connection string for `account` through the proxies.
    pub fn connection_string(&self, account: &str, key: &str) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};BlobEndpoint={}/{account};QueueEndpoint={}/{account};",
            self.blob.url(),
            self.queue.url()
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

    /// The three connection settings of a Function App, through the proxies.
    pub fn settings(&self) -> HashMap<String, String> {
        HashMap::from([
            ("SOURCE_STORAGE".to_owned(), self.source()),
            ("BACKUP_STORAGE".to_owned(), self.backup()),
            ("AzureWebJobsStorage".to_owned(), self.jobs()),
        ])
    }

    /// Sets both proxies (queue requests are all of class [`OpClass::Queue`], so one fault
    /// configuration serves both).
    pub fn set_config(&self, config: ProxyConfig) {
        self.blob.set_config(config.clone());
        self.queue.set_config(config);
    }

    pub fn set_faults(&self, faults: Faults) {
        self.blob.set_faults(faults.clone());
        self.queue.set_faults(faults);
    }

    /// Both proxies' stats added up.
    pub fn stats(&self) -> ProxyStats {
        let mut stats = self.blob.stats();
        stats.merge(&self.queue.stats());
        stats
    }

    pub fn reset_stats(&self) {
        self.blob.reset_stats();
        self.queue.reset_stats();
    }
}

fn upstream_address(upstream: &str) -> io::Result<SocketAddr> {
    let invalid =
        |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{upstream}: {why}"));
    let url = url::Url::parse(upstream).map_err(|e| invalid(&e.to_string()))?;
    if url.scheme() != "http" {
        return Err(invalid("only plain http is proxied"));
    }
    url.socket_addrs(|| Some(80))?
        .into_iter()
        .next()
        .ok_or_else(|| invalid("no address"))
}
