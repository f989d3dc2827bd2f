//! The boundary between the data path and routing.
//!
//! The listeners know *how* to carry bytes (TCP, HTTP/1.1, HTTP/2); routing decides *where*.
//! Routing arrives with `common::compile`'s tables; until then [`Passthrough`] does what Istio
//! does for destinations it has no config for (`ALLOW_ANY`): forward the connection to its
//! original destination as opaque TCP. A routing layer plugs in by implementing
//! [`ConnectionRouter`] (one call per accepted connection) and, for HTTP ports, [`HttpRouter`]
//! (one call per request), then handing it to [`crate::proxy::Proxy::start`].

use std::net::SocketAddr;
use std::sync::Arc;

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
    /// Where the peer was trying to go before iptables redirected it to us.
    pub original_dst: SocketAddr,
}

/// How a connection is carried. The protocol comes from configuration (port name or
/// `appProtocol`), never from sniffing, so the decision is made before reading a byte.
#[derive(Clone)]
pub enum ConnRoute {
    /// Opaque bytes to `upstream`, with half-close carried through. `cluster` names the
    /// destination in stats and `/clusters` (Istio's `PassthroughCluster` for unknown ones).
    Tcp { upstream: SocketAddr, cluster: &'static str },
    /// Parse HTTP/1.1 or HTTP/2 (detected from the preface) and route each request.
    Http(Arc<dyn HttpRouter>),
    /// Close the connection at once (e.g. `REGISTRY_ONLY` and an unknown destination).
    Reject,
}

/// Decides, once per connection, how it is carried.
pub trait ConnectionRouter: Send + Sync + 'static {
    fn route_connection(&self, ctx: &ConnContext) -> ConnRoute;

    /// A short description for `/config_dump`, honest about what routing is in force.
    fn describe(&self) -> serde_json::Value;
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

/// What to do with one HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRoute {
    Forward {
        upstream: SocketAddr,
        protocol: UpstreamProtocol,
        cluster: &'static str,
    },
    /// Answer locally with this status and no body (no route, fault injection, denied).
    Respond(http::StatusCode),
}

/// Decides, once per request, where it goes. Receives the request head only: the body streams
/// through untouched.
pub trait HttpRouter: Send + Sync + 'static {
    fn route_request(&self, ctx: &ConnContext, head: &http::request::Parts) -> HttpRoute;
}

/// Istio's name for traffic to destinations with no configuration.
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// Istio's name for inbound traffic forwarded to the app on its original port.
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";

/// The router in force until routing tables exist: everything to its original destination.
#[derive(Debug, Default, Clone, Copy)]
pub struct Passthrough;

impl ConnectionRouter for Passthrough {
    fn route_connection(&self, ctx: &ConnContext) -> ConnRoute {
        let cluster = match ctx.direction {
            Direction::Outbound => PASSTHROUGH_CLUSTER,
            Direction::Inbound => INBOUND_PASSTHROUGH_CLUSTER,
        };
        ConnRoute::Tcp { upstream: ctx.original_dst, cluster }
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "passthrough",
            "detail": "no routing tables yet: every connection is forwarded as TCP to its original destination (ALLOW_ANY)",
        })
    }
}

/// Treats every connection as HTTP and forwards each request to the original destination:
/// for benchmarks and tests of the HTTP path before routing tables exist.
#[derive(Debug, Default, Clone, Copy)]
pub struct HttpOnAllPorts;

impl ConnectionRouter for HttpOnAllPorts {
    fn route_connection(&self, _ctx: &ConnContext) -> ConnRoute {
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
    fn route_request(&self, ctx: &ConnContext, _head: &http::request::Parts) -> HttpRoute {
        let cluster = match ctx.direction {
            Direction::Outbound => PASSTHROUGH_CLUSTER,
            Direction::Inbound => INBOUND_PASSTHROUGH_CLUSTER,
        };
        HttpRoute::Forward { upstream: ctx.original_dst, protocol: UpstreamProtocol::SameAsDownstream, cluster }
    }
}
