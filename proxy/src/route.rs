//! The boundary between the data path and routing.
//!
//! The listeners know *how* to carry bytes (TCP, TLS passthrough, HTTP/1.1, HTTP/2); routing
//! decides *where*. A router implements [`ConnectionRouter`] (one call per accepted
//! connection), [`HttpRouter`] for HTTP ports (one call per request) and [`SniRouter`] for TLS
//! ports (one call once the ClientHello is read). [`Passthrough`] and [`HttpOnAllPorts`] need
//! no configuration; [`crate::routing::MeshRouter`] routes by the compiled tables.

use crate::http::header_ops::HeaderOps;
use crate::policy::RoutePolicy;
use crate::reason::Reason;
use crate::routing::table::Upstream;
use crate::stats::ClusterStats;
use bytes::Bytes;
use http::HeaderValue;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

/// Which capture listener a connection came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From an app in this pod, via the outbound listener (15001).
    Outbound,
    /// From another pod to this one, via the inbound listener (15006).
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// What is known about a connection when it is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnContext {
    pub direction: Direction,
    /// The peer that connected to us (the app for outbound, the other pod for inbound).
    pub peer: SocketAddr,
    /// Where the peer was trying to go before iptables redirected it to us; for a direct
    /// connection, the listener's own address.
    pub original_dst: SocketAddr,
    /// The connection was made straight to the listener, not redirected by the capture rules:
    /// it has no original destination and can only be routed by its HTTP `Host`/authority.
    pub direct: bool,
}

/// Where a connection or request is sent, and the cluster it is counted under.
#[derive(Clone)]
pub struct Target {
    pub upstream: Dial,
    pub cluster: Arc<ClusterStats>,
}

/// An endpoint to connect to: its address, and, when its pod runs a sidecar (auto mTLS) or its
/// DestinationRule says `ISTIO_MUTUAL`, the SPIFFE ID its mutual TLS must prove (empty: any
/// identity of the mesh).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dial {
    pub address: SocketAddr,
    pub mtls: Option<Arc<str>>,
}

impl Dial {
    /// A plaintext connection to `address` (the app, a passthrough, a service outside the mesh).
    pub fn plain(address: SocketAddr) -> Self {
        Dial { address, mtls: None }
    }
}

impl std::fmt::Display for Dial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.mtls {
            Some(_) => write!(f, "{} (mTLS)", self.address),
            None => write!(f, "{}", self.address),
        }
    }
}

/// The proxy's own answer instead of forwarding: why, and what to send.
#[derive(Clone, Debug)]
pub struct LocalReply {
    pub status: http::StatusCode,
    /// Set for failures: the `x-mesh-reason` header value and the counter to bump.
    pub reason: Option<(Reason, HeaderValue)>,
    /// `Location` of a redirect.
    pub location: Option<HeaderValue>,
    pub body: Bytes,
    /// Response header changes of the route that answered.
    pub headers: Option<Arc<HeaderOps>>,
}

impl LocalReply {
    /// A failure answered by the proxy, with `x-mesh-reason: <detail>`.
    pub fn failure(status: http::StatusCode, reason: Reason, detail: HeaderValue) -> Self {
        LocalReply {
            status,
            reason: Some((reason, detail)),
            location: None,
            body: Bytes::from_static(reason.body()),
            headers: None,
        }
    }
}

/// Why a connection was closed without being forwarded.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub reason: Reason,
    /// The resource or cluster that led there, for the log line.
    pub detail: String,
}

/// How a connection is carried. The protocol comes from configuration (port name or
/// `appProtocol`), never from sniffing, so the decision is made before reading a byte.
#[derive(Clone)]
pub enum ConnRoute {
    /// Opaque bytes to the target, with half-close carried through.
    Tcp(Target),
    /// Parse HTTP/1.1 or HTTP/2 (detected from the preface) and route each request.
    Http(Arc<dyn HttpRouter>),
    /// Read the TLS ClientHello (not terminating TLS), then route by its server name.
    Tls(Arc<dyn SniRouter>),
    /// Close the connection at once (e.g. `REGISTRY_ONLY` and an unknown destination).
    Reject(Refusal),
}

/// Decides, once per connection, how it is carried.
pub trait ConnectionRouter: Send + Sync + 'static {
    fn route_connection(&self, ctx: &ConnContext) -> ConnRoute;

    /// A description for `/config_dump`, honest about what routing is in force; called for
    /// every dump, so it shows the configuration current at that moment.
    fn describe(&self) -> serde_json::Value;

    /// The clusters and endpoints routing knows, for `/clusters`.
    fn clusters(&self) -> Vec<serde_json::Value> {
        Vec::new()
    }
}

/// Decides where a TLS connection goes once its SNI is known (`None`: the client sent none).
pub trait SniRouter: Send + Sync + 'static {
    fn route_sni(&self, ctx: &ConnContext, sni: Option<&str>) -> ConnRoute;
}

/// The HTTP version spoken to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    /// HTTP/2 with prior knowledge (h2c), as gRPC and `http2` ports need.
    Http2,
    /// Whatever the downstream request used: protocol preserved end to end.
    SameAsDownstream,
}

/// A route's timeouts, retries, faults and mirrors, with the cluster its retries pick from.
#[derive(Clone)]
pub struct Resilience {
    pub policy: Arc<RoutePolicy>,
    pub cluster: Arc<Upstream>,
    /// The address the client dialled, for passthrough clusters.
    pub original_dst: Option<SocketAddr>,
}

/// What to do with one HTTP request.
#[derive(Clone)]
pub enum HttpRoute {
    Forward {
        target: Target,
        protocol: UpstreamProtocol,
        /// Applied to the upstream's response before it is returned.
        response_headers: Option<Arc<HeaderOps>>,
        /// `None`: one attempt, no time limit (passthrough traffic).
        resilience: Option<Resilience>,
    },
    /// Answer locally (no route, redirect, direct response, unavailable cluster).
    Respond(LocalReply),
}

/// Decides, once per request, where it goes. Receives the request head, which it may change
/// (rewrites, header operations); the body streams through untouched.
pub trait HttpRouter: Send + Sync + 'static {
    fn route_request(&self, ctx: &ConnContext, head: &mut http::request::Parts) -> HttpRoute;
}

/// Istio's name for traffic to destinations with no configuration.
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// Istio's name for inbound traffic forwarded to the app on its original port.
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";

static PASSTHROUGH_STATS: LazyLock<Arc<ClusterStats>> =
    LazyLock::new(|| Arc::new(ClusterStats::new(PASSTHROUGH_CLUSTER.to_string())));
static INBOUND_PASSTHROUGH_STATS: LazyLock<Arc<ClusterStats>> =
    LazyLock::new(|| Arc::new(ClusterStats::new(INBOUND_PASSTHROUGH_CLUSTER.to_string())));

/// The passthrough cluster of a direction, shared by every router.
pub fn passthrough_cluster(direction: Direction) -> Arc<ClusterStats> {
    match direction {
        Direction::Outbound => PASSTHROUGH_STATS.clone(),
        Direction::Inbound => INBOUND_PASSTHROUGH_STATS.clone(),
    }
}

/// Closes direct connections: without an original destination a passthrough router would
/// send the connection to the listener itself.
fn refuse_direct() -> ConnRoute {
    ConnRoute::Reject(Refusal {
        reason: Reason::NoRoute,
        detail: "connection made straight to the capture port and no routing tables to route it by Host".into(),
    })
}

/// The router in force without routing tables: everything to its original destination.
#[derive(Debug, Default, Clone, Copy)]
pub struct Passthrough;

impl ConnectionRouter for Passthrough {
    fn route_connection(&self, ctx: &ConnContext) -> ConnRoute {
        if ctx.direct {
            return refuse_direct();
        }
        ConnRoute::Tcp(Target { upstream: Dial::plain(ctx.original_dst), cluster: passthrough_cluster(ctx.direction) })
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "passthrough",
            "detail": "no routing tables: every connection is forwarded as TCP to its original destination (ALLOW_ANY)",
        })
    }
}

/// Treats every connection as HTTP and forwards each request to the original destination:
/// for benchmarks and tests of the HTTP path without routing tables.
#[derive(Debug, Default, Clone, Copy)]
pub struct HttpOnAllPorts;

impl ConnectionRouter for HttpOnAllPorts {
    fn route_connection(&self, ctx: &ConnContext) -> ConnRoute {
        if ctx.direct {
            return refuse_direct();
        }
        ConnRoute::Http(Arc::new(HttpPassthrough))
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "http-passthrough",
            "detail": "no routing tables: every connection is parsed as HTTP/1.1 or HTTP/2 and each request forwarded to the original destination",
        })
    }
}

/// Forwards every request to the connection's original destination, keeping the protocol.
/// Used where a port is known to be HTTP but nothing more is configured.
#[derive(Debug, Default, Clone, Copy)]
pub struct HttpPassthrough;

impl HttpRouter for HttpPassthrough {
    fn route_request(&self, ctx: &ConnContext, _head: &mut http::request::Parts) -> HttpRoute {
        HttpRoute::Forward {
            target: Target { upstream: Dial::plain(ctx.original_dst), cluster: passthrough_cluster(ctx.direction) },
            protocol: UpstreamProtocol::SameAsDownstream,
            response_headers: None,
            resilience: None,
        }
    }
}
