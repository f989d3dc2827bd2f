//! Connection and request counters, one set per capture listener.
//!
//! Plain relaxed atomics: a connection touches only its listener's counters, never a lock, and
//! the admin server reads them without stopping anyone.

use crate::route::{Direction, INBOUND_PASSTHROUGH_CLUSTER, PASSTHROUGH_CLUSTER};
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
}

impl Counters {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "cx_total": self.cx_total.load(Relaxed),
            "cx_active": self.cx_active.load(Relaxed),
            "rq_total": self.rq_total.load(Relaxed),
            "upstream_fail": self.upstream_fail.load(Relaxed),
            "original_dst_fail": self.original_dst_fail.load(Relaxed),
        })
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    pub outbound: Counters,
    pub inbound: Counters,
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

    /// The clusters that exist today: the two passthrough ones, with their counters.
    pub fn clusters_json(&self) -> serde_json::Value {
        serde_json::json!({
            "clusters": [
                { "name": PASSTHROUGH_CLUSTER, "direction": "outbound", "stats": self.outbound.to_json() },
                { "name": INBOUND_PASSTHROUGH_CLUSTER, "direction": "inbound", "stats": self.inbound.to_json() },
            ]
        })
    }
}

pub struct ActiveGuard<'a>(&'a Counters);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.cx_active.fetch_sub(1, Relaxed);
    }
}
