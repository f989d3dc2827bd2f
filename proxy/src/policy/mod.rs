//! What a route asks of each request besides where it goes: a time limit, retries, injected
//! faults and mirrors (VirtualService `timeout`, `retries`, `fault`, `mirror`/`mirrors`).
//!
//! Everything is parsed once per config, when the runtime tables are built, so a request only
//! compares numbers and draws thread-local random ones. The I/O (attempts, backoff, mirror
//! tasks) lives in [`crate::http::attempts`] and [`crate::http::mirror`].

pub mod fault;
pub mod retry;

use crate::routing::table::Upstream;
use common::compile::{ClusterKey, HttpRoute};
use fault::Fault;
use retry::RetryPolicy;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The resilience settings of one HTTP route, ready to run.
pub struct RoutePolicy {
    /// The route, for log lines: `VirtualService default/reviews spec.http[0]`.
    pub route: String,
    /// The whole exchange, retries and backoff included, until the response headers arrive;
    /// `None` waits as long as the upstream takes (Istio's default for HTTP).
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    pub fault: Option<Fault>,
    /// Clusters that get a copy of a share of the requests.
    pub mirrors: Vec<Mirror>,
}

/// One mirror destination.
pub struct Mirror {
    pub upstream: Arc<Upstream>,
    pub share: Share,
}

impl RoutePolicy {
    /// The policy of `route`; `route_name` names it in logs. Errors name the field.
    pub fn build(
        route: &HttpRoute,
        route_name: String,
        upstreams: &BTreeMap<ClusterKey, Arc<Upstream>>,
    ) -> Result<Self, String> {
        let retry = match &route.retries {
            Some(written) => RetryPolicy::written(written).map_err(|e| format!("retries.{e}"))?,
            None => RetryPolicy::istio_default(),
        };
        let fault = route.fault.as_ref().map(Fault::build).transpose().map_err(|e| format!("fault.{e}"))?;
        let mirrors = route
            .mirrors
            .iter()
            .map(|m| {
                let upstream =
                    upstreams.get(&m.cluster).cloned().ok_or(format!("mirror cluster {} missing", m.cluster))?;
                Ok(Mirror { upstream, share: Share::percent(m.percentage) })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let timeout = route.timeout.map(|t| t.get()).filter(|t| !t.is_zero());
        Ok(RoutePolicy { route: route_name, timeout, retry, fault, mirrors })
    }
}

/// A share of requests, drawn per request from a thread-local generator (no shared state).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Share(f64);

impl Share {
    /// From Istio's percentage, 0-100 (out-of-range values are clamped).
    pub fn percent(percent: f64) -> Self {
        Share((percent / 100.0).clamp(0.0, 1.0))
    }

    pub const ALL: Share = Share(1.0);

    /// Whether this request is in the share.
    pub fn draw(self) -> bool {
        self.0 >= 1.0 || (self.0 > 0.0 && fastrand::f64() < self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_draw_their_fraction() {
        assert!((0..1000).all(|_| Share::ALL.draw()));
        assert!((0..1000).all(|_| !Share::percent(0.0).draw()));
        let hits = (0..100_000).filter(|_| Share::percent(10.0).draw()).count();
        // σ = sqrt(n p (1-p)) ≈ 95; 6σ either side.
        assert!((9_430..=10_570).contains(&hits), "{hits}");
    }
}
