//! Which faults are injected, where and how often ([`Faults`], [`FaultKind`]), drawn from
//! seeded streams, one per class ([`SplitMix64`]); what was injected ([`Injected`]); and the
//! answers a fault or a failure to reach Azurite gives.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    time::Duration,
};

use super::{refusals::azure_error, wire::Request, OpClass};

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

    pub(super) fn applies_to(&self, class: OpClass) -> bool {
        self.rate > 0.0 && !self.kinds.is_empty() && self.classes.contains(&class)
    }
}

impl Default for Faults {
    fn default() -> Self {
        Faults::off()
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

/// SplitMix64: tiny, seedable and good enough to spread decisions; no crate needed.
#[derive(Debug, Clone)]
pub(super) struct SplitMix64(u64);

impl SplitMix64 {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(super) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One stream per class, so faults in one class do not shift the decisions of another when
/// requests of different classes interleave differently between runs.
pub(super) fn streams(seed: u64) -> BTreeMap<OpClass, (SplitMix64, u64)> {
    OpClass::ALL
        .into_iter()
        .enumerate()
        .map(|(i, class)| {
            let mut mixer = SplitMix64(seed ^ ((i as u64 + 1) << 56));
            (class, (SplitMix64(mixer.next()), 0))
        })
        .collect()
}

/// Azure's answer to a transient failure: its XML error shape, `x-ms-error-code`, and for
/// `ServerBusy` a `Retry-After`. A HEAD answer carries no body, as Azure's.
pub(super) fn error_answer(busy: bool, request: &Request) -> Vec<u8> {
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
pub(super) fn bad_gateway(error: &io::Error) -> Vec<u8> {
    let body = format!("test proxy: upstream failed: {error}\n");
    format!(
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
