//! How the mesh decides what a port speaks: Istio's protocol selection.
//!
//! `appProtocol` wins when set; otherwise the port name's prefix decides (`http`, `http-web`,
//! `grpc-api`, ...), as Istio documents. A port nothing identifies is [`Protocol::Unknown`],
//! which the proxy treats as opaque TCP.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The protocol spoken on a service port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Protocol {
    /// HTTP/1.1 (routed by Host header and VirtualService HTTP routes).
    Http,
    /// HTTP/2 in clear text.
    Http2,
    /// gRPC, which is HTTP/2 with routing and retries aware of gRPC status.
    Grpc,
    /// gRPC-Web, HTTP/1.1 or HTTP/2 carrying gRPC frames.
    GrpcWeb,
    /// TLS whose server name (SNI) the proxy reads but does not terminate.
    Tls,
    /// HTTPS: TLS from the application; routed by SNI like [`Protocol::Tls`].
    Https,
    /// Opaque TCP: routed by destination address and port only.
    Tcp,
    /// MongoDB wire protocol; proxied as TCP.
    Mongo,
    /// MySQL; proxied as TCP.
    Mysql,
    /// Redis; proxied as TCP.
    Redis,
    /// UDP; the mesh does not proxy it.
    Udp,
    /// Nothing identifies the protocol (no recognised name prefix, no `appProtocol`); proxied
    /// as TCP. Istio would sniff the first bytes; the mesh does not, so name the port.
    #[default]
    Unknown,
}

impl Protocol {
    /// Reads an Istio protocol name (`HTTP`, `grpc-web`, ...), case-insensitively. Kubernetes'
    /// own `appProtocol` values for HTTP/2 and WebSockets are understood too.
    pub fn from_name(name: &str) -> Option<Protocol> {
        let lower = name.to_ascii_lowercase();
        Some(match lower.as_str() {
            "http" | "kubernetes.io/ws" => Protocol::Http,
            "http2" | "kubernetes.io/h2c" => Protocol::Http2,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "tls" => Protocol::Tls,
            "https" | "kubernetes.io/wss" => Protocol::Https,
            "tcp" => Protocol::Tcp,
            "mongo" => Protocol::Mongo,
            "mysql" => Protocol::Mysql,
            "redis" => Protocol::Redis,
            "udp" => Protocol::Udp,
            _ => return None,
        })
    }

    /// The protocol of a Kubernetes service port: `appProtocol` when it names a protocol,
    /// otherwise the port name's prefix before the first `-` (`http-web` is HTTP, `grpc-web` is
    /// gRPC-Web because the whole name is checked first). A UDP port is always UDP.
    pub fn for_service_port(name: &str, app_protocol: Option<&str>, transport: Option<&str>) -> Protocol {
        if transport.is_some_and(|transport| transport.eq_ignore_ascii_case("UDP")) {
            return Protocol::Udp;
        }
        if let Some(protocol) = app_protocol.and_then(Protocol::from_name) {
            return protocol;
        }
        if let Some(protocol) = Protocol::from_name(name) {
            return protocol;
        }
        let prefix = name.split('-').next().unwrap_or_default();
        Protocol::from_name(prefix).unwrap_or(Protocol::Unknown)
    }

    /// Whether requests are parsed and routed as HTTP (HTTP/1.1, HTTP/2, gRPC).
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb)
    }

    /// Whether connections are routed by the TLS server name (SNI).
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Tls | Protocol::Https)
    }

    /// The name as Istio writes it (`HTTP`, `GRPC-WEB`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-WEB",
            Protocol::Tls => "TLS",
            Protocol::Https => "HTTPS",
            Protocol::Tcp => "TCP",
            Protocol::Mongo => "MONGO",
            Protocol::Mysql => "MYSQL",
            Protocol::Redis => "REDIS",
            Protocol::Udp => "UDP",
            Protocol::Unknown => "UNKNOWN",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
