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
//!   whole classes of operations (a reader's: no write, snapshot, lease or delete);
//! - counts what it saw and did.
//!
//! It runs on its own thread and runtime, so it serves whatever the test's runtime is doing
//! (current-thread runtimes blocked in synchronous code included); dropping it stops it.
//! Requests are buffered whole before they are forwarded, so "reset before forwarding" means
//! Azurite never saw any of it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};

use super::azurite::{Azurite, BACKUP_KEY, DEV_KEY, JOBS_KEY, SOURCE_KEY};

/// Which Azurite service a proxy stands in front of; every request to a queue endpoint is of
/// class [`OpClass::Queue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Blob,
    Queue,
}

/// What a request does, for counting and for choosing where faults go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpClass {
    /// `comp=list`: List Blobs, List Containers (and List Queues on a queue endpoint is `Queue`).
    List,
    /// GET of a blob (also its block or page list).
    Read,
    /// HEAD of a blob: Get Blob Properties.
    Head,
    /// PUT of blob content: Put Blob, Put Block, Put Block List, Append Block, Put Page.
    Write,
    /// A PUT with `x-ms-copy-source` (Copy Blob, Copy Blob From URL, Put Block From URL) and
    /// Abort Copy.
    Copy,
    /// `comp=metadata|properties|tags|tier` (and the other per-blob settings) on a blob.
    Properties,
    /// `comp=snapshot`.
    Snapshot,
    /// DELETE of a blob or snapshot.
    Delete,
    /// `comp=lease`, on a blob or a container.
    Lease,
    /// Anything on a container itself: create, delete, properties, metadata, ACL.
    Container,
    /// Any request to a queue endpoint.
    Queue,
    /// Account-level calls (service properties, user delegation key, batch).
    Other,
}

impl OpClass {
    pub const ALL: [OpClass; 12] = [
        OpClass::List,
        OpClass::Read,
        OpClass::Head,
        OpClass::Write,
        OpClass::Copy,
        OpClass::Properties,
        OpClass::Snapshot,
        OpClass::Delete,
        OpClass::Lease,
        OpClass::Container,
        OpClass::Queue,
        OpClass::Other,
    ];
}

/// A fault the proxy can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// 500 `InternalError` in Azure's XML error shape, answered by the proxy: Azurite never
    /// sees the request.
    InternalError,
    /// 503 `ServerBusy` with `Retry-After: 1`, answered by the proxy.
    ServerBusy,
    /// The request is read whole, then the connection is reset; Azurite never sees it.
    ResetBeforeForwarding,
    /// The request is forwarded and Azurite's whole answer read, then the connection is reset:
    /// the work is done, the client cannot know it.
    ResetAfterForwarding,
    /// A pause drawn from [`Faults::delay`] before the request is forwarded as usual.
    Delay,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] = [
        FaultKind::InternalError,
        FaultKind::ServerBusy,
        FaultKind::ResetBeforeForwarding,
        FaultKind::ResetAfterForwarding,
        FaultKind::Delay,
    ];
}

/// Where, how often and which faults are injected.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    pub seed: u64,
    /// The chance, 0.0–1.0, that a request of a chosen class gets a fault.
    pub rate: f64,
    pub classes: BTreeSet<OpClass>,
    /// The kinds a fault is drawn from, uniformly.
    pub kinds: BTreeSet<FaultKind>,
    /// The range a [`FaultKind::Delay`] is drawn from, uniformly.
    pub delay: (Duration, Duration),
}

impl Faults {
    /// No faults at all.
    pub fn off() -> Faults {
        Faults {
            seed: 0,
            rate: 0.0,
            classes: BTreeSet::new(),
            kinds: BTreeSet::new(),
            delay: (Duration::from_millis(200), Duration::from_secs(2)),
        }
    }

    /// Every kind into every class at `rate`, from `seed`; narrow with the builders.
    pub fn new(seed: u64, rate: f64) -> Faults {
        Faults {
            seed,
            rate,
            classes: OpClass::ALL.into_iter().collect(),
            kinds: FaultKind::ALL.into_iter().collect(),
            ..Faults::off()
        }
    }

    pub fn classes(mut self, classes: impl IntoIterator<Item = OpClass>) -> Faults {
        self.classes = classes.into_iter().collect();
        self
    }

    pub fn kinds(mut self, kinds: impl IntoIterator<Item = FaultKind>) -> Faults {
        self.kinds = kinds.into_iter().collect();
        self
    }

    pub fn delay(mut self, min: Duration, max: Duration) -> Faults {
        self.delay = (min, max.max(min));
        self
    }

    fn applies_to(&self, class: OpClass) -> bool {
        self.rate > 0.0 && !self.kinds.is_empty() && self.classes.contains(&class)
    }
}

impl Default for Faults {
    fn default() -> Self {
        Faults::off()
    }
}

/// What a proxy does besides forwarding.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProxyConfig {
    /// Listings ask for at most this many entries (at least 1). A SharedKey listing is clamped
    /// only when its account's key is in `keys`; otherwise it is left whole and counted in
    /// [`ProxyStats::listings_not_clamped`], rather than sent with a broken signature.
    pub page_size: Option<u32>,
    /// Account name → base64 account key, to re-sign SharedKey listings whose query changed.
    pub keys: BTreeMap<String, String>,
    pub faults: Faults,
    /// Refuse, as Azure does and Azurite 3.37 does not (both verified on Azurite, the Azure
    /// side from its documentation; see `../shared/azurite-notes.md`):
    /// - Copy Blob From URL (`x-ms-copy-source` with `x-ms-requires-sync: true`) whose source is
    ///   not a block blob: 409 `CannotVerifyCopySource`, "The copy source must be a block blob."
    ///   Azurite copies append and page blobs that way and keeps their type.
    /// - Copy Blob (asynchronous) onto an existing destination of another blob type: 409
    ///   `InvalidBlobType`. Azurite replaces the destination and gives it the source's type.
    ///
    /// The types are read by the proxy itself with a `HEAD` of the copy source's URL and of the
    /// destination, sent to the upstream (neither counted nor faulted; the destination's signed
    /// with the account's key from `keys`, or its own SAS). When a type cannot be read, or an
    /// asynchronous copy carries `If-None-Match: *` (Azure and Azurite both answer an existing
    /// destination with 409 `BlobAlreadyExists` then), the request is forwarded as it came. A
    /// refusal is answered by the proxy (Azurite never sees the request) in Azure's error shape
    /// and counted in [`ProxyStats::azure_refusals`]; whatever is forwarded is untouched.
    pub azure_rules: bool,
    /// Answer as Azure answers an identity with Storage Blob Data Contributor (read and write
    /// blobs, but no `…/blobs/tags/read` or `…/blobs/tags/write`; only Storage Blob Data Owner
    /// has them among the built-in roles), which Azurite cannot (it lets any credential list and
    /// set tags, see `../shared/azurite-notes.md`). Refused with 403
    /// `AuthorizationPermissionMismatch`, in Azure's error shape:
    /// - a listing (`comp=list`) whose `include` names `tags`: Azure refuses the whole listing;
    /// - Get Blob Tags and Set Blob Tags (`comp=tags`);
    /// - a write that sets tags: any `PUT` carrying a non-empty `x-ms-tags` (Put Blob, Put Block
    ///   List, append and page blob creation, Copy Blob, Copy Blob From URL), or asking for the
    ///   source's tags with `x-ms-copy-source-tag-option: COPY`.
    ///
    /// Every other request, a listing without tags and a write without them included, is
    /// forwarded unchanged. Refusals are answered by the proxy (Azurite never sees the request)
    /// and counted in [`ProxyStats::azure_refusals`]. Blob endpoints only: a queue has no tags.
    pub refuse_tags: bool,
    /// Containers whose names end in this (e.g. `bak`) answer as Azure does a container with a
    /// time-based retention policy (WORM): a blob can be created, but not deleted, overwritten,
    /// or have its metadata or properties set (409 `BlobImmutableDueToPolicy`); Get Container
    /// Properties says `x-ms-has-immutability-policy: true`. Azurite has no immutability at all.
    pub worm_suffix: Option<String>,
    /// Containers whose names end in this (e.g. `bak`) answer a blob DELETE as Azure does an
    /// identity whose role has no delete action (the least-privilege writer role): 403
    /// `AuthorizationPermissionMismatch`.
    pub deny_deletes_suffix: Option<String>,
    /// Requests of these classes answer as Azure does an identity whose role lacks their
    /// actions (a Storage Blob Data Reader has no write, snapshot, lease or delete): 403
    /// `AuthorizationPermissionMismatch`, in Azure's error shape, before the resource is looked
    /// at (a blob that does not exist is refused the same). Counted in
    /// [`ProxyStats::azure_refusals`]; Azurite never sees the request.
    pub deny_classes: BTreeSet<OpClass>,
}

impl ProxyConfig {
    /// The keys of the accounts [`Azurite`] creates, nothing else.
    pub fn azurite() -> ProxyConfig {
        let keys = [
            ("source", SOURCE_KEY),
            ("backup", BACKUP_KEY),
            ("jobs", JOBS_KEY),
            ("devstoreaccount1", DEV_KEY),
        ]
        .into_iter()
        .map(|(account, key)| (account.to_owned(), key.to_owned()))
        .collect();
        ProxyConfig {
            keys,
            ..ProxyConfig::default()
        }
    }

    pub fn page_size(mut self, page_size: u32) -> ProxyConfig {
        self.page_size = Some(page_size);
        self
    }

    pub fn faults(mut self, faults: Faults) -> ProxyConfig {
        self.faults = faults;
        self
    }

    /// See [`ProxyConfig::deny_deletes_suffix`].
    pub fn deny_deletes(mut self, suffix: &str) -> ProxyConfig {
        self.deny_deletes_suffix = Some(suffix.to_owned());
        self
    }

    /// See [`ProxyConfig::deny_classes`].
    pub fn deny_classes(mut self, classes: impl IntoIterator<Item = OpClass>) -> ProxyConfig {
        self.deny_classes = classes.into_iter().collect();
        self
    }

    /// See [`ProxyConfig::worm_suffix`].
    pub fn worm(mut self, suffix: &str) -> ProxyConfig {
        self.worm_suffix = Some(suffix.to_owned());
        self
    }

    /// See [`ProxyConfig::azure_rules`].
    pub fn azure_rules(mut self, on: bool) -> ProxyConfig {
        self.azure_rules = on;
        self
    }

    /// See [`ProxyConfig::refuse_tags`].
    pub fn refuse_tags(mut self, on: bool) -> ProxyConfig {
        self.refuse_tags = on;
        self
    }
}

/// One injected fault, in the order they were injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    pub class: OpClass,
    /// Which draw of its class's stream decided it (0 = the first request of the class that
    /// faults could apply to since the configuration was last set).
    pub draw: u64,
    pub kind: FaultKind,
    pub method: String,
    /// Path and query as received, with any SAS signature redacted.
    pub target: String,
}

/// What a proxy has seen and done since it started or its stats were reset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub requests: BTreeMap<OpClass, u64>,
    pub faults: BTreeMap<(OpClass, FaultKind), u64>,
    pub injected: Vec<Injected>,
    /// Listings whose `maxresults` was added or lowered.
    pub listings_clamped: u64,
    /// Requests given a new SharedKey signature.
    pub re_signed: u64,
    /// SharedKey listings left as they were because the account's key is not configured.
    pub listings_not_clamped: u64,
    /// Requests answered 502 because Azurite could not be reached or answered garbage.
    pub upstream_errors: u64,
    /// Requests refused under [`ProxyConfig::azure_rules`] or [`ProxyConfig::refuse_tags`], by
    /// error code, with the request's path.
    pub azure_refusals: Vec<(String, String)>,
}

impl ProxyStats {
    pub fn requests_of(&self, class: OpClass) -> u64 {
        self.requests.get(&class).copied().unwrap_or(0)
    }

    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }

    pub fn faults_of_kind(&self, kind: FaultKind) -> u64 {
        self.faults
            .iter()
            .filter(|((_, k), _)| *k == kind)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn faults_in_class(&self, class: OpClass) -> u64 {
        self.faults
            .iter()
            .filter(|((c, _), _)| *c == class)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }

    /// Adds `other`'s counts to these (a blob and a queue proxy seen as one).
    pub fn merge(&mut self, other: &ProxyStats) {
        for (class, n) in &other.requests {
            *self.requests.entry(*class).or_default() += n;
        }
        for (key, n) in &other.faults {
            *self.faults.entry(*key).or_default() += n;
        }
        self.injected.extend(other.injected.iter().cloned());
        self.listings_clamped += other.listings_clamped;
        self.re_signed += other.re_signed;
        self.listings_not_clamped += other.listings_not_clamped;
        self.upstream_errors += other.upstream_errors;
        self.azure_refusals
            .extend(other.azure_refusals.iter().cloned());
    }
}

/// SplitMix64: tiny, seedable and good enough to spread decisions; no crate needed.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One stream per class, so faults in one class do not shift the decisions of another when
/// requests of different classes interleave differently between runs.
fn streams(seed: u64) -> BTreeMap<OpClass, (SplitMix64, u64)> {
    OpClass::ALL
        .into_iter()
        .enumerate()
        .map(|(i, class)| {
            let mut mixer = SplitMix64(seed ^ ((i as u64 + 1) << 56));
            (class, (SplitMix64(mixer.next()), 0))
        })
        .collect()
}

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
        let upstream = upstream_address(upstream)?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            service,
            upstream,
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

    /// `http://127.0.0.1:PORT`, to put where Azurite's endpoint would go.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn stats(&self) -> ProxyStats {
        self.shared.state().stats.clone()
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
        let mut config = config;
        for (account, key) in ProxyConfig::azurite().keys {
            config.keys.entry(account).or_insert(key);
        }
        let blob = Proxy::start(
            &format!("http://127.0.0.1:{}", azurite.blob_port),
            Service::Blob,
            config.clone(),
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

/// Says which class a request is of. `target` is the request target as sent (path and query);
/// `headers` are (name, value) pairs, names in any case.
pub fn classify(
    service: Service,
    method: &str,
    target: &str,
    headers: &[(String, String)],
) -> OpClass {
    if service == Service::Queue {
        return OpClass::Queue;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let comp = url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name.eq_ignore_ascii_case("comp"))
        .map(|(_, value)| value.to_ascii_lowercase())
        .unwrap_or_default();
    match comp.as_str() {
        "list" => return OpClass::List,
        "lease" => return OpClass::Lease,
        _ => {}
    }
    // Path-style: /account/container/blob/name/with/slashes.
    let mut segments = path.trim_start_matches('/').splitn(3, '/');
    let (_account, container, blob) = (
        segments.next().unwrap_or(""),
        segments.next().unwrap_or(""),
        segments.next().unwrap_or(""),
    );
    if blob.is_empty() {
        return if container.is_empty() {
            OpClass::Other
        } else {
            OpClass::Container
        };
    }
    match comp.as_str() {
        "snapshot" => return OpClass::Snapshot,
        "metadata"
        | "properties"
        | "tags"
        | "tier"
        | "expiry"
        | "immutabilitypolicies"
        | "legalhold" => return OpClass::Properties,
        "copy" => return OpClass::Copy,
        _ => {}
    }
    let method = method.to_ascii_uppercase();
    let copy_source = headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("x-ms-copy-source"));
    match method.as_str() {
        "PUT" if copy_source => OpClass::Copy,
        "PUT" => OpClass::Write,
        "DELETE" => OpClass::Delete,
        "HEAD" => OpClass::Head,
        "GET" => OpClass::Read,
        _ => OpClass::Other,
    }
}

/// A connection with what has been read from it but not yet used.
struct Wire {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// Bytes received since the last request was sent: a failure after any of them means the
    /// peer did answer.
    received: usize,
}

/// Heads (request line or status line and headers) larger than this are refused; Azure's own
/// limit is far lower.
const MAX_HEAD: usize = 1 << 20;

impl Wire {
    fn new(stream: TcpStream) -> Wire {
        Wire {
            stream,
            buffer: Vec::new(),
            received: 0,
        }
    }

    /// Reads more; `false` at the end of the stream.
    async fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        self.received += n;
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The next head, CRLF CRLF included; `None` when the peer closed cleanly before sending
    /// any of it.
    async fn head(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut searched = 0;
        loop {
            if let Some(at) = find(&self.buffer[searched..], b"\r\n\r\n") {
                let end = searched + at + 4;
                return Ok(Some(self.buffer.drain(..end).collect()));
            }
            searched = self.buffer.len().saturating_sub(3);
            if self.buffer.len() > MAX_HEAD {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
            }
            if !self.fill().await? {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }

    /// Exactly `n` bytes.
    async fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        if self.buffer.len() >= n {
            return Ok(self.buffer.drain(..n).collect());
        }
        let mut bytes = std::mem::take(&mut self.buffer);
        let have = bytes.len();
        bytes.resize(n, 0);
        self.received += n - have;
        self.stream.read_exact(&mut bytes[have..]).await?;
        Ok(bytes)
    }

    /// One line, CRLF included.
    async fn line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(at) = find(&self.buffer, b"\r\n") {
                return Ok(self.buffer.drain(..at + 2).collect());
            }
            if self.buffer.len() > MAX_HEAD {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            if !self.fill().await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// A chunked body exactly as sent: chunk sizes, extensions, data and trailers.
    async fn chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut raw = Vec::new();
        loop {
            let line = self.line().await?;
            let size_text = String::from_utf8_lossy(&line);
            let size_text = size_text.trim_end().split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            raw.extend_from_slice(&line);
            if size == 0 {
                loop {
                    let trailer = self.line().await?;
                    raw.extend_from_slice(&trailer);
                    if trailer == b"\r\n" {
                        return Ok(raw);
                    }
                }
            }
            raw.extend(self.take(size + 2).await?);
        }
    }

    async fn rest(&mut self) -> io::Result<Vec<u8>> {
        let mut bytes = std::mem::take(&mut self.buffer);
        self.received += self.stream.read_to_end(&mut bytes).await?;
        Ok(bytes)
    }

    /// Resets the connection (RST instead of FIN).
    fn reset(self) {
        let _ = self.stream.set_zero_linger();
        drop(self.stream);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A parsed head: its first line and its headers, in order, as sent.
struct Head {
    first: String,
    headers: Vec<(String, String)>,
}

impl Head {
    /// Lossy, because the raw bytes are what is forwarded; the text only steers.
    fn parse(raw: &[u8]) -> Head {
        let text = String::from_utf8_lossy(raw);
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or("").to_owned();
        let headers = lines
            .filter(|line| !line.is_empty())
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.to_owned(), value.trim().to_owned()))
            .collect();
        Head { first, headers }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn content_length(&self) -> io::Result<Option<usize>> {
        self.header("content-length")
            .map(|v| {
                v.parse()
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))
            })
            .transpose()
    }

    /// The head rebuilt with `first` as its first line and `replace`'s headers in place of
    /// theirs; everything else as it came.
    fn rebuild(&self, first: &str, replace: &[(&str, &str)]) -> Vec<u8> {
        let mut text = format!("{first}\r\n");
        for (name, value) in &self.headers {
            let value = replace
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map_or(value.as_str(), |(_, v)| v);
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        text.into_bytes()
    }
}

/// A request read whole from the client.
struct Request {
    raw_head: Vec<u8>,
    head: Head,
    method: String,
    target: String,
    body: Vec<u8>,
    /// The client asked for `100 Continue` and the proxy gave it, so Azurite's own is dropped.
    continued: bool,
    close: bool,
}

async fn read_request(client: &mut Wire) -> io::Result<Option<Request>> {
    let Some(raw_head) = client.head().await? else {
        return Ok(None);
    };
    let head = Head::parse(&raw_head);
    let mut parts = head.first.split(' ');
    let (method, target, version) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    if method.is_empty() || target.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request line",
        ));
    }
    let continued = head.has_token("expect", "100-continue");
    if continued {
        // The body is read before anything is forwarded, so the client must be told to send it.
        client
            .stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await?;
    }
    let body = if head.has_token("transfer-encoding", "chunked") {
        client.chunked().await?
    } else {
        match head.content_length()? {
            Some(n) => client.take(n).await?,
            None => Vec::new(),
        }
    };
    let close = head.has_token("connection", "close")
        || (version == "HTTP/1.0" && !head.has_token("connection", "keep-alive"));
    Ok(Some(Request {
        raw_head,
        head,
        method,
        target,
        body,
        continued,
        close,
    }))
}

/// An answer read whole from Azurite, as raw bytes.
struct Answer {
    /// Interim (1xx) answers to pass on before the final one.
    interim: Vec<u8>,
    head: Vec<u8>,
    body: Vec<u8>,
    /// The client's connection must close after this answer (it says so, or ends at the end
    /// of the stream).
    close: bool,
    /// Azurite's connection cannot carry another request.
    spent: bool,
}

async fn read_answer(upstream: &mut Wire, request: &Request) -> io::Result<Answer> {
    let mut interim = Vec::new();
    loop {
        let Some(raw) = upstream.head().await? else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        let head = Head::parse(&raw);
        let status: u16 = head
            .first
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
        if (100..200).contains(&status) && status != 101 {
            if !(request.continued && status == 100) {
                interim.extend_from_slice(&raw);
            }
            continue;
        }
        let bodiless =
            request.method.eq_ignore_ascii_case("HEAD") || matches!(status, 101 | 204 | 304);
        let mut close = head.has_token("connection", "close") || request.close;
        let body = if bodiless {
            Vec::new()
        } else if head.has_token("transfer-encoding", "chunked") {
            upstream.chunked().await?
        } else if let Some(n) = head.content_length()? {
            upstream.take(n).await?
        } else {
            close = true;
            upstream.rest().await?
        };
        // Bytes beyond the answer: Azurite's connection is in a state nobody can use.
        let spent = close || !upstream.buffer.is_empty();
        return Ok(Answer {
            interim,
            head: raw,
            body,
            close,
            spent,
        });
    }
}

/// Idle connections older than this are not reused: Azurite (Node) closes them after 5 s, and
/// a request written to a connection it is closing would be lost.
const POOL_IDLE: Duration = Duration::from_secs(2);

async fn forward(shared: &Shared, request: &Request, head: &[u8]) -> io::Result<Answer> {
    let pooled = {
        let mut pool = shared.pool();
        pool.retain(|(_, since)| since.elapsed() < POOL_IDLE);
        pool.pop().map(|(wire, _)| wire)
    };
    if let Some(mut wire) = pooled {
        match exchange(&mut wire, request, head).await {
            Ok(answer) => return finish(shared, wire, answer),
            // A kept-alive connection the server closed meanwhile: nothing was received, so the
            // request is sent again on a new one.
            Err((error, received)) if !received => drop(error),
            Err((error, _)) => return Err(error),
        }
    }
    let mut wire = Wire::new(TcpStream::connect(shared.upstream).await?);
    let _ = wire.stream.set_nodelay(true);
    match exchange(&mut wire, request, head).await {
        Ok(answer) => finish(shared, wire, answer),
        Err((error, _)) => Err(error),
    }
}

/// Sends the request and reads the answer; on failure, says whether any answer was received.
async fn exchange(
    wire: &mut Wire,
    request: &Request,
    head: &[u8],
) -> Result<Answer, (io::Error, bool)> {
    let mut bytes = Vec::with_capacity(head.len() + request.body.len());
    bytes.extend_from_slice(head);
    bytes.extend_from_slice(&request.body);
    wire.received = 0;
    wire.stream
        .write_all(&bytes)
        .await
        .map_err(|e| (e, false))?;
    read_answer(wire, request)
        .await
        .map_err(|e| (e, wire.received > 0))
}

fn finish(shared: &Shared, wire: Wire, answer: Answer) -> io::Result<Answer> {
    if !answer.spent {
        shared.pool().push((wire, Instant::now()));
    }
    Ok(answer)
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or similar: wait a little rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(Wire::new(stream), shared.clone()));
    }
}

/// Serves one client connection until it closes, a fault resets it, or something is unreadable.
async fn serve(mut client: Wire, shared: Arc<Shared>) {
    loop {
        let request = match read_request(&mut client).await {
            Ok(Some(request)) => request,
            _ => return,
        };
        let class = classify(
            shared.service,
            &request.method,
            &request.target,
            &request.head.headers,
        );
        let (head, fault) = {
            let mut state = shared.state();
            *state.stats.requests.entry(class).or_default() += 1;
            let head = clamp(&mut state, &request).unwrap_or_else(|| request.raw_head.clone());
            let fault = state.decide(class);
            if let Some((kind, _, draw)) = fault {
                *state.stats.faults.entry((class, kind)).or_default() += 1;
                state.stats.injected.push(Injected {
                    class,
                    draw,
                    kind,
                    method: request.method.clone(),
                    target: redact_sas(&request.target),
                });
            }
            (head, fault)
        };
        if let Some((FaultKind::Delay, pause, _)) = fault {
            tokio::time::sleep(pause).await;
        }
        if matches!(fault, None | Some((FaultKind::Delay, _, _))) {
            let refusal = match role_refusal(&shared, class, &request)
                .or_else(|| tags_refusal(&shared, class, &request))
            {
                Some(refusal) => Some(refusal),
                // Boxed: the connection's future stays small on the proxy's thread stack.
                None => match Box::pin(worm_refusal(&shared, &request)).await {
                    Some(refusal) => Some(refusal),
                    None => Box::pin(azure_refusal(&shared, class, &request)).await,
                },
            };
            if let Some(refusal) = refusal {
                if client.stream.write_all(&refusal).await.is_err() || request.close {
                    return;
                }
                continue;
            }
        }
        let answer = match fault {
            Some((kind @ (FaultKind::InternalError | FaultKind::ServerBusy), _, _)) => {
                let bytes = error_answer(kind == FaultKind::ServerBusy, &request);
                if client.stream.write_all(&bytes).await.is_err() || request.close {
                    return;
                }
                continue;
            }
            Some((FaultKind::ResetBeforeForwarding, _, _)) => {
                client.reset();
                return;
            }
            // Paused above, before the rules were applied.
            Some((FaultKind::Delay, _, _)) => forward(&shared, &request, &head).await,
            Some((FaultKind::ResetAfterForwarding, _, _)) => {
                // Whatever Azurite answered, the client learns nothing of it.
                let _ = forward(&shared, &request, &head).await;
                client.reset();
                return;
            }
            None => forward(&shared, &request, &head).await,
        };
        let mut answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                shared.state().stats.upstream_errors += 1;
                let _ = client.stream.write_all(&bad_gateway(&error)).await;
                return;
            }
        };
        if worm_container(&shared, &request).is_some_and(|(_, blob)| blob.is_none())
            && is_container_properties(&request)
        {
            answer.head = with_header(&answer.head, "x-ms-has-immutability-policy", "true");
        }
        let mut bytes =
            Vec::with_capacity(answer.interim.len() + answer.head.len() + answer.body.len());
        bytes.extend_from_slice(&answer.interim);
        bytes.extend_from_slice(&answer.head);
        bytes.extend_from_slice(&answer.body);
        if client.stream.write_all(&bytes).await.is_err() || answer.close {
            // An answer delimited by the end of the stream ends only when the connection does.
            let _ = client.stream.shutdown().await;
            return;
        }
    }
}

/// The head to forward when a listing's `maxresults` must change, re-signed when it was
/// SharedKey-signed; `None` to forward the request as it came.
fn clamp(state: &mut State, request: &Request) -> Option<Vec<u8>> {
    let page_size = state.config.page_size?.max(1);
    let (path, query) = request.target.split_once('?')?;
    let pieces: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    let name_of = |piece: &str| {
        let name = piece.split('=').next().unwrap_or("");
        percent_encoding::percent_decode_str(name)
            .decode_utf8_lossy()
            .to_ascii_lowercase()
    };
    let is_listing = pieces.iter().any(|p| {
        name_of(p) == "comp"
            && p.split_once('=')
                .is_some_and(|(_, v)| v.eq_ignore_ascii_case("list"))
    });
    if !is_listing {
        return None;
    }
    let asked = pieces
        .iter()
        .find(|p| name_of(p) == "maxresults")
        .and_then(|p| p.split_once('=')?.1.parse::<u32>().ok());
    if asked.is_some_and(|asked| asked <= page_size) {
        return None;
    }
    let mut new_pieces: Vec<String> = pieces
        .iter()
        .filter(|p| name_of(p) != "maxresults")
        .map(|p| (*p).to_owned())
        .collect();
    new_pieces.push(format!("maxresults={page_size}"));
    let target = format!("{path}?{}", new_pieces.join("&"));
    let version = request.head.first.rsplit(' ').next().unwrap_or("HTTP/1.1");
    let first = format!("{} {target} {version}", request.method);

    let authorization = request.head.header("authorization").unwrap_or("");
    let Some(signed_by) = authorization.strip_prefix("SharedKey ") else {
        // SAS or bearer: their signatures do not cover maxresults.
        state.stats.listings_clamped += 1;
        return Some(request.head.rebuild(&first, &[]));
    };
    let account = signed_by.split(':').next().unwrap_or("");
    let (Some(key), Ok(url)) = (
        state.keys.get(account),
        url::Url::parse(&format!("http://proxy{target}")),
    ) else {
        state.stats.listings_not_clamped += 1;
        return None;
    };
    let headers = request
        .head
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()));
    let signature = lakebackup::storage::shared_key::authorization(
        account,
        key,
        &request.method,
        &url,
        headers,
    );
    state.stats.listings_clamped += 1;
    state.stats.re_signed += 1;
    Some(
        request
            .head
            .rebuild(&first, &[("authorization", signature.as_str())]),
    )
}

/// A SAS signature is a credential even in a test's log.
fn redact_sas(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|piece| match piece.split_once('=') {
            Some((name, _)) if name.eq_ignore_ascii_case("sig") => format!("{name}=REDACTED"),
            _ => piece.to_owned(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// Azure's answer to a request that reads or sets blob index tags from an identity without the
/// tags rights (see [`ProxyConfig::refuse_tags`]), or `None` to forward the request as it came.
fn tags_refusal(shared: &Shared, class: OpClass, request: &Request) -> Option<Vec<u8>> {
    if shared.service != Service::Blob || !shared.state().config.refuse_tags {
        return None;
    }
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target.as_str(), ""));
    let parameter = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.into_owned())
            .collect::<Vec<_>>()
    };
    let lists_tags = class == OpClass::List
        && parameter("include").iter().any(|include| {
            include
                .split(',')
                .any(|item| item.trim().eq_ignore_ascii_case("tags"))
        });
    let blob_tags = parameter("comp")
        .iter()
        .any(|comp| comp.eq_ignore_ascii_case("tags"));
    let put = request.method.eq_ignore_ascii_case("PUT");
    let sets_tags = put
        && (request
            .head
            .header("x-ms-tags")
            .is_some_and(|tags| !tags.trim().is_empty())
            || request
                .head
                .header("x-ms-copy-source-tag-option")
                .is_some_and(|option| option.trim().eq_ignore_ascii_case("COPY")));
    if !(lists_tags || blob_tags || sets_tags) {
        return None;
    }
    let code = "AuthorizationPermissionMismatch";
    let message = "This request is not authorized to perform this operation using this permission.";
    shared
        .state()
        .stats
        .azure_refusals
        .push((code.to_owned(), path.to_owned()));
    Some(azure_error(
        &format!("403 {message}"),
        code,
        message,
        request,
        &[],
    ))
}

/// Azure's answer to a request of a class the identity's role lacks (see
/// [`ProxyConfig::deny_classes`]), or `None` to go on.
fn role_refusal(shared: &Shared, class: OpClass, request: &Request) -> Option<Vec<u8>> {
    if !shared.state().config.deny_classes.contains(&class) {
        return None;
    }
    let path = request.target.split('?').next().unwrap_or("");
    let code = "AuthorizationPermissionMismatch";
    let message = "This request is not authorized to perform this operation using this permission.";
    shared
        .state()
        .stats
        .azure_refusals
        .push((code.to_owned(), format!("{} {path}", request.method)));
    Some(azure_error(
        &format!("403 {message}"),
        code,
        message,
        request,
        &[],
    ))
}

/// The container (and blob, if any) a blob request names, when the container's name ends in
/// `suffix`.
fn container_with_suffix(
    shared: &Shared,
    request: &Request,
    suffix: Option<String>,
) -> Option<(String, Option<String>)> {
    if shared.service != Service::Blob {
        return None;
    }
    let suffix = suffix?;
    let path = request.target.split('?').next().unwrap_or("");
    // Path-style, as Azurite's: /{account}/{container}[/{blob}].
    let mut segments = path.trim_start_matches('/').splitn(3, '/');
    let _account = segments.next()?;
    let container = percent_encoding::percent_decode_str(segments.next()?)
        .decode_utf8_lossy()
        .into_owned();
    let blob = segments.next().filter(|b| !b.is_empty()).map(str::to_owned);
    container
        .ends_with(suffix.as_str())
        .then_some((container, blob))
}

/// The container (and blob) of a request to one of [`ProxyConfig::worm_suffix`]'s containers.
fn worm_container(shared: &Shared, request: &Request) -> Option<(String, Option<String>)> {
    let suffix = shared.state().config.worm_suffix.clone();
    container_with_suffix(shared, request, suffix)
}

fn query_value(request: &Request, name: &str) -> Option<String> {
    let query = request.target.split_once('?').map_or("", |(_, q)| q);
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.into_owned())
}

/// Get Container Properties (`restype=container` without a `comp`).
fn is_container_properties(request: &Request) -> bool {
    (request.method.eq_ignore_ascii_case("GET") || request.method.eq_ignore_ascii_case("HEAD"))
        && query_value(request, "restype").is_some_and(|r| r.eq_ignore_ascii_case("container"))
        && query_value(request, "comp").is_none()
}

/// Azure's answer to a blob DELETE from an identity without the delete action (see
/// [`ProxyConfig::deny_deletes_suffix`]).
fn delete_refusal(shared: &Shared, request: &Request) -> Option<Vec<u8>> {
    if !request.method.eq_ignore_ascii_case("DELETE") {
        return None;
    }
    let suffix = shared.state().config.deny_deletes_suffix.clone();
    let (_, blob) = container_with_suffix(shared, request, suffix)?;
    blob?;
    let path = request.target.split('?').next().unwrap_or("");
    let code = "AuthorizationPermissionMismatch";
    shared
        .state()
        .stats
        .azure_refusals
        .push((code.to_owned(), format!("DELETE {path}")));
    Some(azure_error(
        "403 This request is not authorized to perform this operation using this permission.",
        code,
        "This request is not authorized to perform this operation using this permission.",
        request,
        &[],
    ))
}

/// `head` with `name: value`, replacing any such header it had.
fn with_header(head: &[u8], name: &str, value: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let body_start = text.find("\r\n\r\n").unwrap_or(text.len());
    let mut lines: Vec<&str> = text[..body_start]
        .split("\r\n")
        .filter(|line| {
            !line
                .split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        })
        .collect();
    let added = format!("{name}: {value}");
    lines.push(&added);
    format!("{}\r\n\r\n", lines.join("\r\n")).into_bytes()
}

/// Azure's answer to a request that would change an existing blob of a WORM container (see
/// [`ProxyConfig::worm_suffix`]), or `None` to forward it: deleting it, writing over it, or
/// setting its metadata or properties. Creating a blob is allowed, as are reads, leases,
/// snapshots, tags and tiers.
async fn worm_refusal(shared: &Shared, request: &Request) -> Option<Vec<u8>> {
    if let Some(refusal) = delete_refusal(shared, request) {
        return Some(refusal);
    }
    let (_, blob) = worm_container(shared, request)?;
    blob.as_ref()?;
    let comp = query_value(request, "comp").map(|c| c.to_ascii_lowercase());
    let changes = if request.method.eq_ignore_ascii_case("DELETE") {
        true
    } else if request.method.eq_ignore_ascii_case("PUT") {
        matches!(
            comp.as_deref(),
            None | Some("blocklist" | "metadata" | "properties" | "page" | "appendblock")
        )
    } else {
        false
    };
    // A create-only write (`If-None-Match: *`) onto an existing blob is refused too: whether
    // Azure answers it with its policy or with the condition (409 `BlobAlreadyExists`) is not
    // documented, so the product must take either as "it is there".
    if !changes {
        return None;
    }
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target.as_str(), ""));
    // Only a blob that exists is protected: creating one is what the policy allows.
    destination_blob_type(shared, request, path, query).await?;
    let code = "BlobImmutableDueToPolicy";
    shared
        .state()
        .stats
        .azure_refusals
        .push((code.to_owned(), format!("{} {path}", request.method)));
    Some(azure_error(
        "409 Conflict",
        code,
        "This operation is not permitted as the blob is immutable due to a policy.",
        request,
        &[],
    ))
}

/// What Azure would refuse that Azurite accepts (see [`ProxyConfig::azure_rules`]): the answer
/// to give instead of forwarding, or `None` to forward the request as it came.
async fn azure_refusal(shared: &Shared, class: OpClass, request: &Request) -> Option<Vec<u8>> {
    if class != OpClass::Copy
        || !request.method.eq_ignore_ascii_case("PUT")
        || !shared.state().config.azure_rules
    {
        return None;
    }
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target.as_str(), ""));
    // Only Copy Blob and Copy Blob From URL: Put Block From URL, Put Page From URL and the like
    // carry a `comp`.
    if url::form_urlencoded::parse(query.as_bytes())
        .any(|(name, _)| name.eq_ignore_ascii_case("comp"))
    {
        return None;
    }
    let source = request.head.header("x-ms-copy-source")?;
    let synchronous = request
        .head
        .header("x-ms-requires-sync")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let source_type = source_blob_type(shared, request, source).await?;
    let refusal = if synchronous {
        (source_type != "BlockBlob").then_some((
            "CannotVerifyCopySource",
            "The copy source must be a block blob.",
        ))
    } else {
        if request
            .head
            .header("if-none-match")
            .is_some_and(|v| v.trim() == "*")
        {
            return None;
        }
        let destination_type = destination_blob_type(shared, request, path, query).await?;
        (destination_type != source_type).then_some((
            "InvalidBlobType",
            "The blob type is invalid for this operation.",
        ))
    };
    let (code, message) = refusal?;
    shared
        .state()
        .stats
        .azure_refusals
        .push((code.to_owned(), path.to_owned()));
    Some(azure_error("409 Conflict", code, message, request, &[]))
}

/// The `x-ms-blob-type` of the copy source, read with a `HEAD` of its URL (its own SAS, or the
/// account key when it has none) sent to the upstream.
async fn source_blob_type(shared: &Shared, request: &Request, source: &str) -> Option<String> {
    let url = url::Url::parse(source).ok()?;
    let mut target = url.path().to_owned();
    if let Some(query) = url.query() {
        target.push('?');
        target.push_str(query);
    }
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str()?),
        None => url.host_str()?.to_owned(),
    };
    let signed = url.query_pairs().any(|(name, _)| name == "sig");
    blob_type_by_head(shared, request, &host, &target, !signed).await
}

/// The `x-ms-blob-type` of the copy's destination, `None` when it does not exist (or cannot be
/// read).
async fn destination_blob_type(
    shared: &Shared,
    request: &Request,
    path: &str,
    query: &str,
) -> Option<String> {
    let host = request
        .head
        .header("host")
        .unwrap_or("127.0.0.1")
        .to_owned();
    let signed = url::form_urlencoded::parse(query.as_bytes()).any(|(name, _)| name == "sig");
    let target = if signed {
        format!("{path}?{query}")
    } else {
        path.to_owned()
    };
    blob_type_by_head(shared, request, &host, &target, !signed).await
}

/// One `HEAD` of `target` at the upstream, SharedKey-signed when `sign` (by the account its
/// path names, whose key must be configured); the blob type it answers with.
async fn blob_type_by_head(
    shared: &Shared,
    request: &Request,
    host: &str,
    target: &str,
    sign: bool,
) -> Option<String> {
    let date = lakebackup::storage::testing::http_date(time::OffsetDateTime::now_utc());
    let version = request
        .head
        .header("x-ms-version")
        .unwrap_or("2026-04-06")
        .to_owned();
    let mut headers = vec![
        ("Host".to_owned(), host.to_owned()),
        ("x-ms-date".to_owned(), date),
        ("x-ms-version".to_owned(), version),
    ];
    if sign {
        let account = target.trim_start_matches('/').split('/').next()?.to_owned();
        let key = shared.state().keys.get(&account)?.clone();
        let url = url::Url::parse(&format!("http://proxy{target}")).ok()?;
        let authorization = lakebackup::storage::shared_key::authorization(
            &account,
            &key,
            "HEAD",
            &url,
            headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        );
        headers.push(("Authorization".to_owned(), authorization));
    }
    let mut text = format!("HEAD {target} HTTP/1.1\r\n");
    for (name, value) in &headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    let raw_head = text.into_bytes();
    let head = Request {
        head: Head::parse(&raw_head),
        raw_head: raw_head.clone(),
        method: "HEAD".to_owned(),
        target: target.to_owned(),
        body: Vec::new(),
        continued: false,
        close: false,
    };
    let answer = forward(shared, &head, &raw_head).await.ok()?;
    let answered = Head::parse(&answer.head);
    let ok = answered.first.split(' ').nth(1) == Some("200");
    ok.then(|| answered.header("x-ms-blob-type").map(str::to_owned))
        .flatten()
}

/// An error answer in Azure's shape (its XML with a BOM, `x-ms-error-code`, the request's
/// `x-ms-version`), with `extra` headers. A HEAD answer carries no body, as Azure's.
fn azure_error(
    status: &str,
    code: &str,
    message: &str,
    request: &Request,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = format!(
        "00000000-0000-4000-8000-{:012x}",
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let now = time::OffsetDateTime::now_utc();
    let time = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let body = if request.method.eq_ignore_ascii_case("HEAD") {
        String::new()
    } else {
        format!(
            "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{message}\nRequestId:{id}\nTime:{time}</Message></Error>"
        )
    };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/xml\r\nServer: lakebackup-test-proxy\r\nx-ms-request-id: {id}\r\nx-ms-error-code: {code}\r\nDate: {}\r\n",
        body.len(),
        lakebackup::storage::testing::http_date(now)
    );
    if let Some(version) = request.head.header("x-ms-version") {
        head.push_str(&format!("x-ms-version: {version}\r\n"));
    }
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if request.close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

/// Azure's answer to a transient failure: its XML error shape, `x-ms-error-code`, and for
/// `ServerBusy` a `Retry-After`. A HEAD answer carries no body, as Azure's.
fn error_answer(busy: bool, request: &Request) -> Vec<u8> {
    let (status, code, message) = if busy {
        (
            "503 Service Unavailable",
            "ServerBusy",
            "The server is currently unable to receive requests. Please retry your request.",
        )
    } else {
        (
            "500 Internal Server Error",
            "InternalError",
            "The server encountered an internal error. Please retry the request.",
        )
    };
    let extra: &[(&str, &str)] = if busy { &[("Retry-After", "1")] } else { &[] };
    azure_error(status, code, message, request, extra)
}

/// The proxy's own failure to reach Azurite, never to be mistaken for one of Azurite's answers.
fn bad_gateway(error: &io::Error) -> Vec<u8> {
    let body = format!("test proxy: upstream failed: {error}\n");
    format!(
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
