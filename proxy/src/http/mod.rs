//! HTTP/1.1 and HTTP/2 proxying.
//!
//! [`server`] accepts a downstream connection with hyper (HTTP/1.1 or HTTP/2, told apart by
//! the HTTP/2 preface, not by a timeout) and asks an [`crate::route::HttpRouter`] where each
//! request goes; [`client`] forwards a request to a chosen upstream address over pooled
//! connections: HTTP/2 with hyper's client, HTTP/1.1 with the proxy's own ([`h1`]). The body
//! streams through in both directions, trailers included, and `Upgrade` (WebSocket) turns into
//! an opaque byte stream once the upstream answers 101.

pub mod attempts;
pub mod client;
pub mod h1;
pub mod header_ops;
mod headers;
pub mod mirror;
pub mod pool;
pub mod replay;
pub mod server;
pub mod upstream_body;

use bytes::Bytes;
use http_body_util::{Either, Full};
use upstream_body::UpstreamBody;

/// A response body: streamed from the upstream, or made locally (errors, admin).
pub type ProxyBody = Either<UpstreamBody, Full<Bytes>>;
