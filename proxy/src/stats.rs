//! Connection and request counters, one set per capture listener.
//!
//! Plain relaxed atomics: a connection touches only its listener's counters, never a lock, and
//! the admin server reads them without stopping anyone.

use crate::breaker::{Breaker, OverflowCounters};
use crate::outlier::OutlierCounters;
use crate::reason::ReasonCounters;
use crate::route::{Direction, INBOUND_PASSTHROUGH_CLUSTER, PASSTHROUGH_CLUSTER};
use arc_swap::ArcSwapOption;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted.
    pub cx_total: AtomicU64,
    /// Connections open now.
    pub cx_active: AtomicU64,
    /// HTTP requests handled (0 for TCP-only traffic).
    pub rq_total: AtomicU64,
    /// Upstream connections or requests that failed before a response (the 503s).
    pub upstream_fail: AtomicU64,
    /// Accepted connections whose original destination could not be learnt, or pointed back
    /// at the proxy itself (a capture loop).
    pub original_dst_fail: AtomicU64,
    /// Retries sent (attempts after the first), over every cluster.
    pub upstream_rq_retry: AtomicU64,
    /// Requests answered 504 because the route's timeout or the last per-try timeout passed.
    pub upstream_rq_timeout: AtomicU64,
    /// Requests held back by an injected delay.
    pub fault_delayed: AtomicU64,
    /// Mirror copies sent, and mirror copies skipped (body over the replay limit, too many
    /// mirror requests in flight, no endpoint).
    pub mirror_sent: AtomicU64,
    pub mirror_skipped: AtomicU64,
    /// Connections from peer sidecars terminated in mutual TLS (inbound), and mutual TLS
    /// handshakes that failed (a peer with no or an untrusted certificate).
    pub mtls_accepted: AtomicU64,
    pub mtls_fail: AtomicU64,
}

impl Counters {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "cx_total": self.cx_total.load(Relaxed),
            "cx_active": self.cx_active.load(Relaxed),
            "rq_total": self.rq_total.load(Relaxed),
            "upstream_fail": self.upstream_fail.load(Relaxed),
            "original_dst_fail": self.original_dst_fail.load(Relaxed),
            "upstream_rq_retry": self.upstream_rq_retry.load(Relaxed),
            "upstream_rq_timeout": self.upstream_rq_timeout.load(Relaxed),
            "fault_delayed": self.fault_delayed.load(Relaxed),
            "mirror_sent": self.mirror_sent.load(Relaxed),
            "mirror_skipped": self.mirror_skipped.load(Relaxed),
            "mtls_accepted": self.mtls_accepted.load(Relaxed),
            "mtls_fail": self.mtls_fail.load(Relaxed),
        })
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    pub outbound: Counters,
    pub inbound: Counters,
    /// Local replies and refused connections, by reason.
    pub reasons: ReasonCounters,
}

/// Counters of one cluster. Kept across config reloads for clusters whose name stays, so a
/// reload does not reset what `/clusters` shows.
#[derive(Debug)]
pub struct ClusterStats {
    /// Istio's cluster name (`outbound|9080|v1|reviews.default.svc.cluster.local`).
    pub name: String,
    /// TCP connections forwarded to the cluster.
    pub cx_total: AtomicU64,
    /// HTTP requests forwarded to the cluster.
    pub rq_total: AtomicU64,
    /// Connections or requests that failed to reach an endpoint.
    pub upstream_fail: AtomicU64,
    /// Retries sent to the cluster (Envoy's `upstream_rq_retry`).
    pub upstream_rq_retry: AtomicU64,

    // Circuit breaking (`crate::breaker`).
    /// The cluster's limits and occupancy; `None` without a `connectionPool`.
    pub breaker: ArcSwapOption<Breaker>,
    /// Requests and connections refused by a limit.
    pub overflow: OverflowCounters,

    // Outlier detection (`crate::outlier`).
    /// Ejections, by the threshold crossed, and those refused by `maxEjectionPercent`.
    pub outlier: OutlierCounters,
}

impl ClusterStats {
    pub fn new(name: String) -> Self {
        ClusterStats {
            name,
            cx_total: AtomicU64::new(0),
            rq_total: AtomicU64::new(0),
            upstream_fail: AtomicU64::new(0),
            upstream_rq_retry: AtomicU64::new(0),
            breaker: ArcSwapOption::empty(),
            overflow: OverflowCounters::default(),
            outlier: OutlierCounters::default(),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "cx_total": self.cx_total.load(Relaxed),
            "rq_total": self.rq_total.load(Relaxed),
            "upstream_fail": self.upstream_fail.load(Relaxed),
            "upstream_rq_retry": self.upstream_rq_retry.load(Relaxed),
            "outlier_detection": self.outlier.to_json(),
        })
    }
}

impl Stats {
    pub fn of(&self, direction: Direction) -> &Counters {
        match direction {
            Direction::Outbound => &self.outbound,
            Direction::Inbound => &self.inbound,
        }
    }

    /// Connection counted as open until the guard drops.
    pub fn open(&self, direction: Direction) -> ActiveGuard<'_> {
        let c = self.of(direction);
        c.cx_total.fetch_add(1, Relaxed);
        c.cx_active.fetch_add(1, Relaxed);
        ActiveGuard(c)
    }

    /// The two passthrough clusters with the listeners' counters, then `routed` (the clusters
    /// of the routing tables, with endpoints and their own counters).
    pub fn clusters_json(&self, routed: Vec<serde_json::Value>) -> serde_json::Value {
        let mut clusters = vec![
            serde_json::json!({ "name": PASSTHROUGH_CLUSTER, "direction": "outbound", "stats": self.outbound.to_json() }),
            serde_json::json!({ "name": INBOUND_PASSTHROUGH_CLUSTER, "direction": "inbound", "stats": self.inbound.to_json() }),
        ];
        clusters.extend(routed);
        serde_json::json!({ "clusters": clusters })
    }

    /// Everything counted, for `/stats`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "outbound": self.outbound.to_json(),
            "inbound": self.inbound.to_json(),
            "local_replies": self.reasons.to_json(),
        })
    }
}

pub struct ActiveGuard<'a>(&'a Counters);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.cx_active.fetch_sub(1, Relaxed);
    }
}
