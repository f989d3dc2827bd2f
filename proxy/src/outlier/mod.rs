//! Outlier detection (DestinationRule `trafficPolicy.outlierDetection`): an endpoint that keeps
//! failing is ejected from balancing for a while, then let back in.
//!
//! Every attempt's outcome is reported to its endpoint ([`OutlierPolicy::record`]): a few relaxed
//! atomics, no lock. Crossing a threshold (`consecutive5xxErrors`, `consecutiveGatewayErrors`,
//! `consecutiveLocalOriginFailures`) ejects at once, as Envoy's consecutive-error detectors do.
//!
//! There is no sweep timer. `interval` and the end of an ejection are evaluated lazily, by
//! whoever looks: a pick that meets an ejected endpoint whose time is up takes it back, and the
//! ejection multiplier decays by one per `interval` spent healthy when the next ejection is
//! decided. Why: a timer per cluster is a task to start, stop and hand over on every config
//! swap, and it wakes even when no traffic flows; lazy evaluation costs nothing while nothing
//! fails and gives the same answers, since an ejection only matters when someone picks.

mod health;

pub use health::{EndpointHealth, HealthView, Trip, TripKind};

use common::api::networking::destination_rule::OutlierDetection;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

/// How one attempt ended, as outlier detection counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered with this status.
    Response(u16),
    /// No connection could be made (local origin).
    ConnectFailure,
    /// The connection or stream broke before a response (local origin).
    Reset,
    /// The per-try timeout passed before a response (local origin).
    Timeout,
}

impl Outcome {
    fn is_local_origin(self) -> bool {
        !matches!(self, Outcome::Response(_))
    }
}

/// A cluster's outlier detection, read once per config from its merged traffic policy.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierPolicy {
    /// Eject after this many 5xx in a row; `None`: check off.
    pub consecutive_5xx: Option<u32>,
    /// Eject after this many 502/503/504 in a row; `None`: check off.
    pub consecutive_gateway: Option<u32>,
    /// `Some` when local-origin failures are counted apart (`splitExternalLocalOriginErrors`):
    /// eject after this many in a row. `None`: they count as gateway errors (503).
    pub consecutive_local_origin: Option<u32>,
    /// Counting local failures apart, even with their threshold off.
    pub split_local_origin: bool,
    /// The unit of the ejection multiplier's decay.
    pub interval: Duration,
    /// The first ejection's length; the n-th is n times as long (capped at [`MAX_EJECTION_TIME`]).
    pub base_ejection_time: Duration,
    /// At most this share of the cluster is ejected at once (one endpoint always may be,
    /// unless this is 0).
    pub max_ejection_percent: u32,
    /// Below this healthy share, ejections are ignored: traffic goes to every endpoint.
    pub min_health_percent: u32,
}

/// Envoy's cap on one ejection (`max_ejection_time`, not exposed by Istio): however often an
/// endpoint was ejected, it is tried again within five minutes.
pub const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

impl OutlierPolicy {
    pub fn new(settings: &OutlierDetection) -> Self {
        OutlierPolicy {
            consecutive_5xx: settings.consecutive_5xx_threshold(),
            consecutive_gateway: settings.consecutive_gateway_threshold(),
            consecutive_local_origin: settings.local_origin_threshold(),
            split_local_origin: settings.split_external_local_origin_errors == Some(true),
            interval: settings.interval_or_default().get(),
            base_ejection_time: settings.base_ejection_time_or_default().get(),
            max_ejection_percent: settings.max_ejection_percent_or_default(),
            min_health_percent: settings.min_health_percent_or_default(),
        }
    }

    /// Counts `outcome` on `health`; `Some` when it crossed a threshold, so the endpoint
    /// should be ejected (if the cluster's limits allow). Outcomes of an ejected endpoint (late
    /// answers of requests sent before) are ignored.
    pub fn record(&self, health: &EndpointHealth, outcome: Outcome, now: Millis) -> Option<Trip> {
        if health.is_ejected(now) {
            return None;
        }
        if outcome.is_local_origin() && self.split_local_origin {
            return health.local_failure(self.consecutive_local_origin);
        }
        let status = match outcome {
            Outcome::Response(status) => status,
            // Not split: a failure the proxy saw counts as the gateway error it answers with.
            Outcome::Timeout => 504,
            Outcome::ConnectFailure | Outcome::Reset => 503,
        };
        if self.split_local_origin {
            // The endpoint answered: its connection works.
            health.local_success();
        }
        health.response(status, self.consecutive_5xx, self.consecutive_gateway)
    }

    /// How long the next ejection of an endpoint lasts, given its multiplier after counting
    /// this ejection.
    pub fn ejection_time(&self, multiplier: u32) -> Duration {
        self.base_ejection_time.saturating_mul(multiplier.max(1)).min(MAX_EJECTION_TIME.max(self.base_ejection_time))
    }

    /// How many of `endpoints` may be ejected at once.
    pub fn max_ejected(&self, endpoints: usize) -> usize {
        if self.max_ejection_percent == 0 {
            return 0;
        }
        (endpoints * self.max_ejection_percent as usize / 100).max(1)
    }

    /// Whether `healthy` of `endpoints` is below `minHealthPercent`, so ejections are ignored.
    pub fn below_min_health(&self, healthy: usize, endpoints: usize) -> bool {
        healthy * 100 < self.min_health_percent as usize * endpoints
    }
}

/// Milliseconds on the proxy's monotonic clock, from 1 (0 means "never").
pub type Millis = u64;

static EPOCH: LazyLock<(Instant, SystemTime)> = LazyLock::new(|| (Instant::now(), SystemTime::now()));

/// Now on the proxy's monotonic clock.
pub fn now() -> Millis {
    let elapsed = EPOCH.0.elapsed().as_millis();
    u64::try_from(elapsed).unwrap_or(u64::MAX - 1) + 1
}

/// `millis` as wall-clock time, for `/clusters` and logs.
pub fn wall_clock(millis: Millis) -> SystemTime {
    EPOCH.1 + Duration::from_millis(millis.saturating_sub(1))
}

/// `millis` as RFC 3339 text (`2026-12-03T19:24:18.123Z`).
pub fn rfc3339(millis: Millis) -> String {
    let time = time::OffsetDateTime::from(wall_clock(millis));
    time.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// A cluster's ejection counters, with Envoy's names (`outlier_detection.ejections_*`).
#[derive(Debug, Default)]
pub struct OutlierCounters {
    pub consecutive_5xx: AtomicU64,
    pub consecutive_gateway: AtomicU64,
    pub consecutive_local_origin: AtomicU64,
    /// Thresholds crossed while `maxEjectionPercent` endpoints were already ejected.
    pub overflow: AtomicU64,
}

impl OutlierCounters {
    pub fn count(&self, kind: TripKind) {
        let counter = match kind {
            TripKind::Consecutive5xx => &self.consecutive_5xx,
            TripKind::ConsecutiveGateway => &self.consecutive_gateway,
            TripKind::ConsecutiveLocalOrigin => &self.consecutive_local_origin,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub fn to_json(&self) -> serde_json::Value {
        let (a, b, c) = (
            self.consecutive_5xx.load(Relaxed),
            self.consecutive_gateway.load(Relaxed),
            self.consecutive_local_origin.load(Relaxed),
        );
        serde_json::json!({
            "ejections_enforced_total": a + b + c,
            "ejections_enforced_consecutive_5xx": a,
            "ejections_enforced_consecutive_gateway_failure": b,
            "ejections_enforced_consecutive_local_origin_failure": c,
            "ejections_overflow": self.overflow.load(Relaxed),
        })
    }
}

#[cfg(test)]
mod tests;
