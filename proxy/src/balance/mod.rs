//! Load balancing (DestinationRule `trafficPolicy.loadBalancer`): which endpoint of a cluster
//! takes a request or connection.
//!
//! A [`Balancer`] is built once per config for each cluster: the round-robin schedule, the
//! ring or the Maglev table are made then, so a pick is lookups and an atomic or two. Every
//! algorithm proposes endpoints in its own order (the turn, two random choices, the ring from
//! the key's point, the table from the key's slot); the first one [`Eligible`] accepts wins:
//! not ejected by outlier detection (unless the cluster is below `minHealthPercent`), and for
//! a retry, not tried yet while an untried one is left.
//!
//! Locality (`localityLbSetting`) is not implemented; it fits in front of this: group a
//! cluster's endpoints by priority (same locality first, then the failover order) and run the
//! same balancer over the first group with enough healthy endpoints. `Eligible` already knows
//! health; a priority would be one more slice per group.

mod hash;
mod key;
mod maglev;
mod ring;
mod schedule;

pub use key::{CookieKey, HashKey, KeyHash};

use crate::outlier::{Millis, OutlierPolicy};
use crate::routing::endpoint::Endpoint;
use common::api::networking::destination_rule::{LoadBalancerSettings, SimpleLb};
use http::HeaderValue;
use maglev::Maglev;
use ring::Ring;
use schedule::Schedule;
use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// What a pick may look at.
#[derive(Clone, Copy, Default)]
pub struct PickContext<'a> {
    /// The address the client dialled (PASSTHROUGH, and passthrough clusters).
    pub original_dst: Option<SocketAddr>,
    /// The caller's address (`useSourceIp`).
    pub source: Option<IpAddr>,
    /// The request head (header, cookie and query keys); `None` for TCP.
    pub request: Option<&'a http::request::Parts>,
    /// Endpoints this request already tried (retries avoid them while another is left).
    pub tried: &'a [SocketAddr],
}

/// The algorithm in force, by Istio's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    LeastRequest,
    Random,
    Passthrough,
    RingHash,
    Maglev,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "ROUND_ROBIN",
            Algorithm::LeastRequest => "LEAST_REQUEST",
            Algorithm::Random => "RANDOM",
            Algorithm::Passthrough => "PASSTHROUGH",
            Algorithm::RingHash => "RING_HASH",
            Algorithm::Maglev => "MAGLEV",
        }
    }
}

enum Kind {
    /// The schedule in turn.
    RoundRobin {
        schedule: Schedule,
        cursor: AtomicUsize,
    },
    /// Power of two choices: the next in turn against a random other, fewer active requests
    /// (per unit of weight) wins, the one in turn on a tie.
    LeastRequest {
        schedule: Schedule,
        cursor: AtomicUsize,
    },
    Random {
        schedule: Schedule,
    },
    Passthrough,
    Ring {
        key: HashKey,
        ring: Ring,
    },
    Maglev {
        key: HashKey,
        table: Maglev,
    },
}

/// One cluster's balancer, built for its endpoints of one config.
pub struct Balancer {
    kind: Kind,
}

/// The endpoint chosen, by index, and the `Set-Cookie` a cookie hash made up.
#[derive(Debug, Default)]
pub struct Choice {
    pub index: Option<usize>,
    pub set_cookie: Option<HeaderValue>,
}

impl Balancer {
    /// The balancer `settings` ask for (Istio's default, LEAST_REQUEST, when unset) over
    /// `endpoints`.
    pub fn new(settings: Option<&LoadBalancerSettings>, endpoints: &[Arc<Endpoint>]) -> Self {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        let cursor = || AtomicUsize::new(0);
        let kind = match settings.and_then(|s| s.consistent_hash.as_ref()) {
            Some(hash) if hash.maglev.is_some() => Kind::Maglev {
                key: HashKey::new(hash),
                table: Maglev::new(
                    endpoints,
                    hash.maglev.as_ref().and_then(|m| m.table_size).unwrap_or(maglev::DEFAULT_TABLE_SIZE),
                ),
            },
            Some(hash) => Kind::Ring { key: HashKey::new(hash), ring: Ring::new(endpoints, hash.ring_size()) },
            None => match settings.and_then(|s| s.simple).unwrap_or_default().effective() {
                SimpleLb::RoundRobin => Kind::RoundRobin { schedule: Schedule::new(&weights), cursor: cursor() },
                SimpleLb::Random => Kind::Random { schedule: Schedule::new(&weights) },
                SimpleLb::Passthrough => Kind::Passthrough,
                _ => Kind::LeastRequest { schedule: Schedule::new(&weights), cursor: cursor() },
            },
        };
        Balancer { kind }
    }

    pub fn algorithm(&self) -> Algorithm {
        match &self.kind {
            Kind::RoundRobin { .. } => Algorithm::RoundRobin,
            Kind::LeastRequest { .. } => Algorithm::LeastRequest,
            Kind::Random { .. } => Algorithm::Random,
            Kind::Passthrough => Algorithm::Passthrough,
            Kind::Ring { .. } => Algorithm::RingHash,
            Kind::Maglev { .. } => Algorithm::Maglev,
        }
    }

    /// The hash key of a consistent hash.
    pub fn hash_key(&self) -> Option<&HashKey> {
        match &self.kind {
            Kind::Ring { key, .. } | Kind::Maglev { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The points of a ring or the slots of a Maglev table.
    pub fn table_size(&self) -> Option<usize> {
        match &self.kind {
            Kind::Ring { ring, .. } => Some(ring.len()),
            Kind::Maglev { table, .. } => Some(table.len()),
            _ => None,
        }
    }

    /// The endpoint for a request or connection. `None` for PASSTHROUGH (the caller sends it
    /// to the original destination) and when no endpoint is eligible.
    pub fn pick(&self, ctx: &PickContext<'_>, eligible: &Eligible<'_>) -> Choice {
        let n = eligible.endpoints.len();
        if n == 0 {
            return Choice::default();
        }
        let index = match &self.kind {
            Kind::Passthrough => None,
            Kind::RoundRobin { schedule, cursor } => {
                let start = cursor.fetch_add(1, Relaxed);
                eligible.first((0..schedule.len()).map(|i| schedule.at(start.wrapping_add(i))))
            }
            Kind::LeastRequest { schedule, cursor } => least_request(schedule, cursor, eligible),
            Kind::Random { schedule } => {
                let start = fastrand::usize(..schedule.len().max(1));
                eligible.first((0..schedule.len()).map(|i| schedule.at(start.wrapping_add(i))))
            }
            Kind::Ring { key, ring } => {
                let hashed = key.hash(ctx);
                let hash = hashed.hash.unwrap_or_else(|| fastrand::u64(..));
                return Choice { index: eligible.first(ring.walk(hash)), set_cookie: hashed.set_cookie };
            }
            Kind::Maglev { key, table } => {
                let hashed = key.hash(ctx);
                let hash = hashed.hash.unwrap_or_else(|| fastrand::u64(..));
                return Choice { index: eligible.first(table.walk(hash)), set_cookie: hashed.set_cookie };
            }
        };
        Choice { index, set_cookie: None }
    }
}

/// LEAST_REQUEST: the endpoint in turn against a random other one; the one with fewer active
/// requests per unit of weight wins, the one in turn on a tie. Taking the first candidate from
/// the turn rather than at random spreads an idle cluster's requests evenly instead of in
/// random clumps.
fn least_request(schedule: &Schedule, cursor: &AtomicUsize, eligible: &Eligible<'_>) -> Option<usize> {
    let n = eligible.endpoints.len();
    let start = cursor.fetch_add(1, Relaxed);
    let first = schedule.at(start);
    if n == 1 {
        return eligible.first(std::iter::once(first));
    }
    let other = fastrand::usize(..n - 1);
    let second = if other >= first { other + 1 } else { other };
    match (eligible.accepts(first, true), eligible.accepts(second, true)) {
        (true, true) => {
            let load = |i: usize| {
                let e = &eligible.endpoints[i];
                (u128::from(e.active_requests()) + 1, u128::from(e.weight))
            };
            let ((a1, w1), (a2, w2)) = (load(first), load(second));
            Some(if a2 * w1 < a1 * w2 { second } else { first })
        }
        (true, false) => Some(first),
        (false, true) => Some(second),
        (false, false) => eligible.first((1..schedule.len()).map(|i| schedule.at(start.wrapping_add(i)))),
    }
}

/// Which endpoints a pick may take: not ejected (unless the cluster is below its
/// `minHealthPercent`, when outlier detection steps aside), and not tried yet while an
/// untried one is left. Reads the clock and counts the healthy share only when it meets an
/// ejected endpoint, which is rare.
pub struct Eligible<'a> {
    endpoints: &'a [Arc<Endpoint>],
    tried: &'a [SocketAddr],
    outlier: Option<&'a OutlierPolicy>,
    now: Cell<Option<Millis>>,
    ignore_ejections: Cell<Option<bool>>,
}

impl<'a> Eligible<'a> {
    pub fn new(endpoints: &'a [Arc<Endpoint>], tried: &'a [SocketAddr], outlier: Option<&'a OutlierPolicy>) -> Self {
        Eligible { endpoints, tried, outlier, now: Cell::new(None), ignore_ejections: Cell::new(None) }
    }

    fn ejected(&self, index: usize) -> bool {
        let Some(policy) = self.outlier else { return false };
        let endpoint = &self.endpoints[index];
        let mut now = self.now.get();
        let ejected = endpoint.is_ejected(&mut now);
        self.now.set(now);
        if !ejected {
            return false;
        }
        let ignore = *self.ignore_ejections.get().get_or_insert_with(|| {
            let mut now = self.now.get();
            let healthy = self.endpoints.iter().filter(|e| !e.is_ejected(&mut now)).count();
            policy.below_min_health(healthy, self.endpoints.len())
        });
        self.ignore_ejections.set(Some(ignore));
        !ignore
    }

    /// Whether `index` may be taken; `avoid_tried`: also refuse endpoints already tried.
    pub fn accepts(&self, index: usize, avoid_tried: bool) -> bool {
        let Some(endpoint) = self.endpoints.get(index) else { return false };
        let tried = avoid_tried && self.tried.contains(&endpoint.address);
        !tried && !self.ejected(index)
    }

    /// The first of `candidates` accepted. If none of the first few is, every endpoint from
    /// the first candidate on; then, when only tried ones are left, a tried one. `None` when
    /// every endpoint is ejected.
    pub fn first(&self, candidates: impl Iterator<Item = usize>) -> Option<usize> {
        let n = self.endpoints.len();
        let mut start = None;
        for candidate in candidates.take(2 * n + 2) {
            start.get_or_insert(candidate);
            if self.accepts(candidate, true) {
                return Some(candidate);
            }
        }
        let start = start.unwrap_or(0);
        let around = |avoid_tried| (0..n).map(|i| (start + i) % n).find(|i| self.accepts(*i, avoid_tried));
        around(true).or_else(|| around(false))
    }
}

#[cfg(test)]
pub(crate) mod tests;
