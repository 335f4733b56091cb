//! What a proxy has seen and done: requests by class, faults injected, listings paged and
//! re-signed, refusals.

use std::collections::BTreeMap;

use super::{FaultKind, Injected, OpClass};

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
    /// Client connections accepted (a client that reuses its connections opens few).
    pub connections_accepted: u64,
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
        self.connections_accepted += other.connections_accepted;
    }
}
