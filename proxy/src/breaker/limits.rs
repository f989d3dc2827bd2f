//! A cluster's `connectionPool`, read once per config into the numbers the data path compares
//! against.

use common::api::networking::destination_rule::ConnectionPoolSettings;
use common::compile::Cluster;
use std::sync::Arc;
use std::time::Duration;

/// Istio's value for "no limit" (2^32-1); a limit left unset or set to 0 gets it.
pub const UNLIMITED: u32 = u32::MAX;

/// The limits of one cluster, as its DestinationRule (merged for subset and port) sets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterLimits {
    /// `tcp.maxConnections`: upstream connections open at once from this proxy to all the
    /// cluster's endpoints, over every worker thread.
    pub max_connections: u32,
    /// `http.http1MaxPendingRequests`: requests that may wait for a connection while
    /// `max_connections` are open; one more fails at once with 503.
    pub max_pending: u32,
    /// `http.http2MaxRequests`: requests in flight to the cluster at once (HTTP/1.1 and
    /// HTTP/2 alike, as in Envoy), counted from sending until the response headers arrive.
    pub max_requests: u32,
    /// `http.maxRetries`: retries in flight to the cluster at once; past it a failed attempt
    /// is answered as it is instead of retried.
    pub max_retries: u32,
    /// `http.maxRequestsPerConnection`: a connection is closed after carrying this many
    /// requests; `None` keeps it as long as it is useful (Istio's 0).
    pub max_requests_per_connection: Option<u32>,
    /// `tcp.connectTimeout`, replacing the proxy's 10 s for this cluster.
    pub connect_timeout: Option<Duration>,
    /// `http.idleTimeout`: a pooled HTTP/1.1 connection idle this long is closed.
    pub idle_timeout: Option<Duration>,
    /// `tcp.tcpKeepalive`: probe idle upstream connections so dead peers are noticed.
    pub keepalive: Option<Keepalive>,
    /// Who set the limits, for log lines: `DestinationRule default/httpbin`.
    pub origin: Arc<str>,
}

/// TCP keepalive on upstream sockets; a field left unset keeps the kernel's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
    pub probes: Option<u32>,
}

impl ClusterLimits {
    /// The limits of `cluster`; `None` when its policy has no `connectionPool`, so a cluster
    /// without one pays nothing for circuit breaking.
    pub fn of(cluster: &Cluster) -> Option<ClusterLimits> {
        let pool = cluster.policy.connection_pool.as_ref()?;
        let origin = cluster
            .destination_rule
            .as_ref()
            .map_or_else(|| format!("the policy of {}", cluster.key), |dr| dr.to_string());
        Some(ClusterLimits::from_settings(pool, origin.into()))
    }

    pub fn from_settings(pool: &ConnectionPoolSettings, origin: Arc<str>) -> ClusterLimits {
        let tcp = pool.tcp.as_ref();
        let http = pool.http.as_ref();
        let keepalive = tcp.and_then(|t| t.tcp_keepalive.as_ref()).map(|k| Keepalive {
            time: k.time.map(|d| d.get()),
            interval: k.interval.map(|d| d.get()),
            probes: k.probes,
        });
        ClusterLimits {
            max_connections: limit(tcp.and_then(|t| t.max_connections)),
            max_pending: limit(http.and_then(|h| h.http1_max_pending_requests)),
            max_requests: limit(http.and_then(|h| h.http2_max_requests)),
            max_retries: limit(http.and_then(|h| h.max_retries)),
            max_requests_per_connection: http
                .and_then(|h| h.max_requests_per_connection)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0),
            connect_timeout: tcp.and_then(|t| t.connect_timeout).map(|d| d.get()).filter(|d| !d.is_zero()),
            idle_timeout: http.and_then(|h| h.idle_timeout).map(|d| d.get()).filter(|d| !d.is_zero()),
            keepalive,
            origin,
        }
    }

    /// Whether a connection that has carried `served` requests must not carry another.
    pub fn retires_after(&self, served: u32) -> bool {
        self.max_requests_per_connection.is_some_and(|max| served >= max)
    }
}

/// Istio reads 0 (and an absent field) as "no limit"; validation has refused negatives.
fn limit(value: Option<i32>) -> u32 {
    match value.and_then(|v| u32::try_from(v).ok()) {
        Some(0) | None => UNLIMITED,
        Some(n) => n,
    }
}

impl Keepalive {
    /// Turns keepalive on for `socket` with the configured times.
    pub fn apply(&self, socket: socket2::SockRef<'_>) -> std::io::Result<()> {
        let mut params = socket2::TcpKeepalive::new();
        if let Some(time) = self.time {
            params = params.with_time(time);
        }
        if let Some(interval) = self.interval {
            params = params.with_interval(interval);
        }
        if let Some(probes) = self.probes {
            params = params.with_retries(probes);
        }
        socket.set_tcp_keepalive(&params)
    }
}
