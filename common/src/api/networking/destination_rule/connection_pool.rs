//! Limits on the connections and requests a proxy keeps open to a service: the circuit
//! breaker. Requests over a limit fail fast (HTTP 503) instead of queueing without bound.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::Duration;

/// Connection pool limits, shared by TCP and HTTP traffic to one destination.
///
/// Also used by `Sidecar` ingress listeners for the pool towards the local application.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectionPoolSettings {
    /// Limits that apply to every connection, HTTP or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
    /// Limits on HTTP requests, on top of the TCP ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
}

/// Connection-level limits.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpSettings {
    /// At most this many connections from one proxy to all endpoints of the destination;
    /// further connections (and, for HTTP/1.1, further requests) are refused. Unlimited
    /// (2^32-1) by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i32>,
    /// A connection attempt that has not completed after this long fails. Istio's default
    /// is 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// Keeps idle connections alive with TCP keepalive probes, so that middleboxes do not
    /// drop them silently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// A connection is closed after this long, busy or not. Unlimited by default. Not
    /// supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<Duration>,
    /// A TCP connection with no bytes in either direction for this long is closed. Istio's
    /// default is 1h. Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
}

/// TCP keepalive probing of idle connections.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is declared dead. The OS default (9 on Linux)
    /// when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    /// Idle time before the first probe is sent. The OS default (2h on Linux) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Duration>,
    /// Time between probes. The OS default (75s on Linux) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
}

/// Request-level limits for HTTP/1.1, HTTP/2 and gRPC.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpSettings {
    /// At most this many requests may wait for a connection to the destination; more fail
    /// with 503. Unlimited (2^32-1) by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<i32>,
    /// At most this many requests may be in flight to the destination at once, over all
    /// connections. Unlimited (2^32-1) by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<i32>,
    /// A connection is closed after carrying this many requests; 1 disables keep-alive.
    /// 0 (the default) means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<i32>,
    /// At most this many retries may be outstanding to the destination at once, across all
    /// callers of one proxy. Unlimited (2^32-1) by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
    /// An HTTP connection with no request in flight for this long is closed. Istio's default
    /// is 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// Whether HTTP/1.1 connections to the destination are upgraded to HTTP/2. Not supported
    /// yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// Speak to the destination in the protocol the caller used (HTTP/1.1 or HTTP/2) instead
    /// of the one the port declares. Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_client_protocol: Option<bool>,
    /// At most this many concurrent streams per HTTP/2 connection to the destination.
    /// 2^31-1 by default. Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<i32>,
}

/// Whether HTTP/1.1 traffic is upgraded to HTTP/2 towards the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    /// Follow the mesh-wide setting.
    #[default]
    Default,
    /// Keep HTTP/1.1.
    DoNotUpgrade,
    /// Upgrade to HTTP/2.
    Upgrade,
}
