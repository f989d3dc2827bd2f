//! Circuit breaking: DestinationRule `trafficPolicy.connectionPool`, enforced per cluster over
//! every worker thread.
//!
//! A cluster with a `connectionPool` gets a [`Breaker`]: its [`ClusterLimits`] and what is in
//! use now (connections, requests waiting for one, requests and retries in flight), in relaxed
//! atomics and one semaphore of `maxConnections` permits, so workers never take a lock to
//! count. A request over a limit is not queued: it is answered at once with 503 and
//! `x-mesh-reason: overflow <cluster>`; only up to `http1MaxPendingRequests` requests wait for a
//! connection, and they wait on the semaphore, not in a list that can grow. A cluster without
//! a `connectionPool` has no breaker, and its requests skip all of this after one pointer load.
//!
//! The breaker hangs off the cluster's [`ClusterStats`], which routing keeps across config
//! reloads, so connections and requests counted under one config are still counted under the
//! next; a changed `connectionPool` starts a new breaker (as Envoy rebuilds a changed
//! cluster), and connections of the old one close as they finish.

mod limits;
#[cfg(test)]
mod tests;

pub use limits::{ClusterLimits, Keepalive, UNLIMITED};

use crate::http::pool::SharedConns;
use crate::stats::ClusterStats;
use common::compile::Cluster;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One cluster's limits and what it uses of them now.
pub struct Breaker {
    pub limits: ClusterLimits,
    /// One permit per upstream connection; `None` when `maxConnections` is unlimited.
    slots: Option<Arc<Semaphore>>,
    gauges: Arc<Gauges>,
    /// The cluster's pooled connections. Shared by the workers, unlike the per-worker pools of
    /// clusters without limits: with a handful of connections allowed, a request must be able
    /// to reuse the one another worker returned, or it would wait for a slot that worker's
    /// idle connection holds.
    pub(crate) conns: SharedConns,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker").field("limits", &self.limits).field("gauges", &self.gauges).finish_non_exhaustive()
    }
}

/// What is in use now.
#[derive(Debug, Default)]
struct Gauges {
    connections: AtomicU32,
    pending: AtomicU32,
    /// Pending requests whose slot is on its way: a closed connection took them off `pending`
    /// when it freed its slot, before they woke up to take it (see [`ConnSlot`]'s drop).
    handed: AtomicU32,
    requests: AtomicU32,
    retries: AtomicU32,
}

/// Which limit a request or connection ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `tcp.maxConnections`, for a TCP connection (which never waits).
    Connections,
    /// `http.http1MaxPendingRequests`, with `maxConnections` open.
    Pending,
    /// `http.http2MaxRequests`.
    Requests,
    /// `http.maxRetries`.
    Retries,
}

/// A limit was reached: what the log line and the error say.
#[derive(Debug, thiserror::Error)]
#[error("circuit breaker open: {detail}")]
pub struct Overflow {
    pub limit: Limit,
    detail: String,
}

impl Breaker {
    pub fn new(limits: ClusterLimits) -> Self {
        let slots =
            (limits.max_connections != UNLIMITED).then(|| Arc::new(Semaphore::new(limits.max_connections as usize)));
        Breaker { limits, slots, gauges: Arc::default(), conns: SharedConns::default() }
    }

    fn overflow(&self, limit: Limit) -> Overflow {
        let l = &self.limits;
        let detail = match limit {
            Limit::Connections => format!("tcp.maxConnections {} of {} reached", l.max_connections, l.origin),
            Limit::Pending => format!(
                "tcp.maxConnections {} open and http.http1MaxPendingRequests {} waiting, set by {}",
                l.max_connections, l.max_pending, l.origin
            ),
            Limit::Requests => format!("http.http2MaxRequests {} of {} reached", l.max_requests, l.origin),
            Limit::Retries => format!("http.maxRetries {} of {} reached", l.max_retries, l.origin),
        };
        Overflow { limit, detail }
    }

    /// A connection slot if one is free now.
    pub fn try_connection(&self) -> Result<ConnSlot, Overflow> {
        let permit = match &self.slots {
            None => None,
            Some(slots) => Some(slots.clone().try_acquire_owned().map_err(|_| self.overflow(Limit::Connections))?),
        };
        Ok(self.slot(permit))
    }

    /// A connection slot, waiting for one if `maxConnections` are open: the request counts
    /// as pending meanwhile, and fails at once if `http1MaxPendingRequests` already wait.
    /// `make_room` runs once the request is counted, to close idle connections that hold
    /// slots (a returned connection checks [`Breaker::has_waiters`] after it is pooled, so
    /// one of the two always sees the other).
    pub async fn connection(&self, make_room: impl FnOnce()) -> Result<ConnSlot, Overflow> {
        if let Ok(slot) = self.try_connection() {
            return Ok(slot);
        }
        let _pending = self.pending()?;
        make_room();
        self.wait_connection().await
    }

    /// A connection slot, waiting as long as it takes; the caller counts itself as pending.
    pub async fn wait_connection(&self) -> Result<ConnSlot, Overflow> {
        let permit = match &self.slots {
            None => None,
            Some(slots) => Some(slots.clone().acquire_owned().await.map_err(|_| self.overflow(Limit::Pending))?),
        };
        Ok(self.slot(permit))
    }

    fn slot(&self, permit: Option<OwnedSemaphorePermit>) -> ConnSlot {
        self.gauges.connections.fetch_add(1, Relaxed);
        ConnSlot { gauges: self.gauges.clone(), _permit: permit }
    }

    /// Counts a request as waiting for a connection, unless `http1MaxPendingRequests` already
    /// do. SeqCst, because [`Breaker::has_waiters`] must see it.
    pub fn pending(&self) -> Result<Pending<'_>, Overflow> {
        acquire(&self.gauges.pending, self.limits.max_pending, SeqCst)
            .map(|_| Pending(&self.gauges))
            .ok_or_else(|| self.overflow(Limit::Pending))
    }

    /// Whether requests wait for a connection slot: a returned connection then closes, so its
    /// slot goes to one of them.
    pub fn has_waiters(&self) -> bool {
        self.gauges.pending.load(SeqCst) > 0
    }

    /// Counts a request in flight, unless `http2MaxRequests` already are.
    pub fn request(&self) -> Result<InFlight<'_>, Overflow> {
        acquire(&self.gauges.requests, self.limits.max_requests, Relaxed)
            .map(InFlight)
            .ok_or_else(|| self.overflow(Limit::Requests))
    }

    /// Counts a retry in flight, unless `maxRetries` already are.
    pub fn retry(&self) -> Result<InFlight<'_>, Overflow> {
        acquire(&self.gauges.retries, self.limits.max_retries, Relaxed)
            .map(InFlight)
            .ok_or_else(|| self.overflow(Limit::Retries))
    }

    /// Limits and occupancy, for `/clusters`.
    pub fn to_json(&self) -> serde_json::Value {
        let l = &self.limits;
        let limit = |n: u32| if n == UNLIMITED { serde_json::Value::Null } else { n.into() };
        let g = &self.gauges;
        serde_json::json!({
            "set_by": &*l.origin,
            "limits": {
                "max_connections": limit(l.max_connections),
                "max_pending_requests": limit(l.max_pending),
                "max_requests": limit(l.max_requests),
                "max_retries": limit(l.max_retries),
                "max_requests_per_connection": l.max_requests_per_connection,
                "connect_timeout_ms": l.connect_timeout.map(|d| d.as_millis() as u64),
                "idle_timeout_ms": l.idle_timeout.map(|d| d.as_millis() as u64),
            },
            "connections": g.connections.load(Relaxed),
            "pending_requests": g.pending.load(Relaxed),
            "active_requests": g.requests.load(Relaxed),
            "active_retries": g.retries.load(Relaxed),
        })
    }
}

/// A request's cluster breaker, carried in the request's extensions from the attempts loop to
/// the client, which counts the request and picks connections by it. (Mirrors carry none:
/// their copies are fire-and-forget and bounded on their own.)
#[derive(Clone)]
pub struct Attached(pub Arc<Breaker>);

/// Attaches `breaker` to `req`, if the cluster has one.
pub fn attach<B>(req: &mut http::Request<B>, breaker: Option<&Arc<Breaker>>) {
    if let Some(breaker) = breaker {
        req.extensions_mut().insert(Attached(breaker.clone()));
    }
}

/// Adds one to `gauge` unless it is at `max`; the guard takes it off again.
fn acquire(gauge: &AtomicU32, max: u32, order: std::sync::atomic::Ordering) -> Option<&AtomicU32> {
    if max == UNLIMITED {
        gauge.fetch_add(1, order);
        return Some(gauge);
    }
    gauge.fetch_update(order, Relaxed, |n| (n < max).then_some(n + 1)).ok().map(|_| gauge)
}

/// An open upstream connection's share of `maxConnections`; held by the connection's task,
/// so the slot is free again when the connection has closed.
pub struct ConnSlot {
    gauges: Arc<Gauges>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let g = &self.gauges;
        g.connections.fetch_sub(1, Relaxed);
        // The freed slot goes to a waiting request: it stops counting as pending now, not
        // when its task next runs, so a request arriving meanwhile may wait in its place
        // instead of overflowing (with one connection and one pending request, a client that
        // sends again as soon as it has its answer would otherwise overflow half the time).
        if self._permit.is_some() && g.pending.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok() {
            g.handed.fetch_add(1, SeqCst);
        }
    }
}

/// A request waiting for a connection.
pub struct Pending<'a>(&'a Gauges);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        // Leave through a slot handed over on our behalf if there is one, else through
        // `pending`; one of the two is above zero, or about to be (a hand-over between its
        // two steps), so this loop turns at most a few times.
        let take = |gauge: &AtomicU32| gauge.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok();
        while !take(&self.0.handed) && !take(&self.0.pending) {
            std::hint::spin_loop();
        }
    }
}

/// A request or retry in flight.
pub struct InFlight<'a>(&'a AtomicU32);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Gives the cluster of `stats` the breaker its `connectionPool` asks for: the one it has if
/// the limits are unchanged (so counts carry over a reload), a new one if they changed, none
/// without a `connectionPool`. Called when routing builds the cluster for a config.
pub fn configure(stats: &ClusterStats, cluster: &Cluster) {
    let limits = ClusterLimits::of(cluster);
    if stats.breaker.load().as_ref().map(|b| &b.limits) == limits.as_ref() {
        return;
    }
    let old = stats.breaker.swap(limits.map(|l| Arc::new(Breaker::new(l))));
    if let Some(old) = old {
        // Idle connections of the old limits close now; busy ones when they finish.
        old.conns.clear();
    }
}

/// Overflows of one cluster, kept across config reloads (Envoy's `upstream_cx_overflow`,
/// `upstream_rq_pending_overflow` and `upstream_rq_retry_overflow`, and ours for
/// `http2MaxRequests`).
#[derive(Debug, Default)]
pub struct OverflowCounters {
    pub cx: AtomicU64,
    pub rq_pending: AtomicU64,
    pub rq: AtomicU64,
    pub rq_retry: AtomicU64,
}

impl OverflowCounters {
    pub fn count(&self, limit: Limit) {
        let counter = match limit {
            Limit::Connections => &self.cx,
            Limit::Pending => &self.rq_pending,
            Limit::Requests => &self.rq,
            Limit::Retries => &self.rq_retry,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "upstream_cx_overflow": self.cx.load(Relaxed),
            "upstream_rq_pending_overflow": self.rq_pending.load(Relaxed),
            "upstream_rq_overflow": self.rq.load(Relaxed),
            "upstream_rq_retry_overflow": self.rq_retry.load(Relaxed),
        })
    }
}

/// A cluster's circuit breaking for `/clusters`: limits and occupancy (`null` without a
/// `connectionPool`) and the overflow counters.
pub fn cluster_json(stats: &ClusterStats) -> serde_json::Value {
    serde_json::json!({
        "breaker": stats.breaker.load().as_ref().map(|b| b.to_json()),
        "overflow": stats.overflow.to_json(),
    })
}
