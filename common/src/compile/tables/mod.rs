//! The tables a proxy routes by: what `compile` produces and the data path reads.
//!
//! Everything here is decided ahead of time: hosts are lowercase, regexes are compiled,
//! destinations are resolved to cluster keys, and lookup maps by domain and by address are
//! built, so matching a request is a few map lookups and comparisons. Every table serializes
//! to JSON for the proxy's `/config_dump`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde::{Serialize, Serializer};

mod cluster;
mod route;

pub use cluster::{Cluster, ClusterEndpoint, ClusterKey, ClusterStatus};
pub use route::{
    HttpAction, HttpRoute, Mirror, RouteOrigin, TcpRoute, TlsMatch, TlsRoute, WeightedCluster, WeightedClusters,
};

use super::inbound::InboundTables;
use crate::api::networking::gateway::ServerTLSSettings;
use crate::registry::Protocol;
use crate::validate::ObjectRef;

/// Everything one proxy routes by.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProxyTables {
    /// Outbound listeners by the port the application connects to.
    pub outbound: BTreeMap<u16, OutboundListener>,
    /// Every cluster a route refers to, by (host, subset, port).
    pub clusters: BTreeMap<ClusterKey, Cluster>,
    /// What the proxy accepts for its own workload.
    pub inbound: InboundTables,
    /// What happens to outbound traffic no listener or host knows.
    pub outbound_policy: OutboundPolicy,
}

impl ProxyTables {
    /// The listener for connections to `port`.
    pub fn listener(&self, port: u16) -> Option<&OutboundListener> {
        self.outbound.get(&port)
    }

    /// The virtual host a connection to `address:port` is for (a ClusterIP or entry address).
    pub fn virtual_host_at(&self, address: IpAddr, port: u16) -> Option<&VirtualHost> {
        self.outbound.get(&port)?.virtual_host_for_address(address)
    }

    /// The cluster a route's destination names.
    pub fn cluster(&self, key: &ClusterKey) -> Option<&Cluster> {
        self.clusters.get(key)
    }
}

/// Whether destinations unknown to the registry may be reached (Sidecar
/// `outboundTrafficPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    /// Unknown destinations are passed through to the address dialled (Istio's default).
    #[default]
    AllowAny,
    /// Only registry services are reachable; anything else is refused (502).
    RegistryOnly,
}

/// The outbound traffic policy in force, and the Sidecar that set it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OutboundPolicy {
    /// Pass unknown traffic through or refuse it.
    pub mode: OutboundMode,
    /// The Sidecar resource that narrows this proxy's view, if any.
    #[serde(serialize_with = "display_option")]
    pub sidecar: Option<ObjectRef>,
}

/// The services reachable on one port, each as a virtual host.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OutboundListener {
    /// The port.
    pub port: u16,
    /// The protocol most of its hosts speak: HTTP if any host on the port is HTTP (requests are
    /// then routed by authority), else TLS, else TCP. A connection to a known address uses the
    /// protocol of that address's host instead.
    pub protocol: Protocol,
    /// One per service host on this port, sorted by host.
    pub virtual_hosts: Vec<VirtualHost>,
    /// At a gateway, the Gateway servers on this port with their hosts and TLS settings as
    /// written (the proxy terminates TLS with them, choosing the certificate by SNI, or
    /// redirects to HTTPS). Empty for sidecars.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<GatewayServer>,
    #[serde(skip)]
    exact_domains: HashMap<String, usize, foldhash::fast::RandomState>,
    /// `(suffix after '*', index)`, longest suffix first so the most specific wildcard wins.
    #[serde(skip)]
    wildcard_domains: Vec<(String, usize)>,
    #[serde(skip)]
    addresses: HashMap<IpAddr, usize, foldhash::fast::RandomState>,
}

impl OutboundListener {
    /// A listener with these hosts, building its lookup maps. When two hosts claim the same
    /// domain or address, the first (hosts are sorted by name) keeps it.
    pub fn new(port: u16, virtual_hosts: Vec<VirtualHost>, addresses: Vec<(IpAddr, usize)>) -> Self {
        let protocol = if virtual_hosts.iter().any(|host| host.protocol.is_http()) {
            Protocol::Http
        } else if virtual_hosts.iter().any(|host| host.protocol.is_tls()) {
            Protocol::Tls
        } else {
            Protocol::Tcp
        };
        let mut exact_domains = HashMap::default();
        let mut wildcard_domains = Vec::new();
        for (index, host) in virtual_hosts.iter().enumerate() {
            for domain in &host.domains {
                match domain.strip_prefix('*') {
                    Some(suffix) => wildcard_domains.push((suffix.to_string(), index)),
                    None => {
                        exact_domains.entry(domain.clone()).or_insert(index);
                    }
                }
            }
        }
        wildcard_domains.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let mut address_index = HashMap::default();
        for (address, index) in addresses {
            address_index.entry(address).or_insert(index);
        }
        Self {
            port,
            protocol,
            virtual_hosts,
            servers: Vec::new(),
            exact_domains,
            wildcard_domains,
            addresses: address_index,
        }
    }

    /// The virtual host for an HTTP `Host`/`:authority` (or a TLS SNI): an exact domain with or
    /// without port, else the most specific wildcard. Allocates only for authorities that are
    /// not already lowercase.
    pub fn virtual_host_for_authority(&self, authority: &str) -> Option<&VirtualHost> {
        if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.lookup_authority(&authority.to_ascii_lowercase());
        }
        self.lookup_authority(authority)
    }

    fn lookup_authority(&self, authority: &str) -> Option<&VirtualHost> {
        if let Some(index) = self.exact_domains.get(authority) {
            return Some(&self.virtual_hosts[*index]);
        }
        let host = strip_port(authority);
        if let Some(index) = self.exact_domains.get(host) {
            return Some(&self.virtual_hosts[*index]);
        }
        self.wildcard_domains
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|(_, index)| &self.virtual_hosts[*index])
    }

    /// The virtual host whose service has `address` (a ClusterIP or entry address).
    pub fn virtual_host_for_address(&self, address: IpAddr) -> Option<&VirtualHost> {
        self.addresses.get(&address).map(|index| &self.virtual_hosts[*index])
    }
}

/// `host:port` without the port (IPv6 literals in brackets keep their colons).
fn strip_port(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(colon)
            if !authority[colon..].contains(']') && authority[colon + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            &authority[..colon]
        }
        _ => authority,
    }
}

/// A server of a Gateway, as a gateway proxy's listener serves it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GatewayServer {
    /// The Gateway resource.
    #[serde(serialize_with = "display_option")]
    pub gateway: Option<ObjectRef>,
    /// The server's index in `spec.servers`.
    pub index: usize,
    /// The server's name, if any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The protocol the server declares.
    pub protocol: Protocol,
    /// The hosts as written (`host` or `namespace/host`).
    pub hosts: Vec<String>,
    /// TLS settings as written: termination mode and credentials, or `httpsRedirect`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTLSSettings>,
}

/// One service host on one port, with its routes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VirtualHost {
    /// `host:port`, unique within the tables.
    pub name: String,
    /// The service's hostname (fully qualified, or a ServiceEntry wildcard).
    pub host: String,
    /// The service port.
    pub port: u16,
    /// What the port speaks; decides whether `http_routes`, `tls_routes` or `tcp_routes` apply.
    pub protocol: Protocol,
    /// The names requests may use for it: the FQDN, `name.namespace`, `name.namespace.svc`, the
    /// short name (same namespace only), the addresses; each also with `:port`.
    pub domains: Vec<String>,
    /// HTTP routes in order; the first that matches a request wins. Empty on non-HTTP ports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub http_routes: Vec<HttpRoute>,
    /// TLS routes in order, chosen by SNI. Only on TLS/HTTPS ports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tls_routes: Vec<TlsRoute>,
    /// TCP routes in order; on TLS ports they follow the TLS routes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tcp_routes: Vec<TcpRoute>,
    /// The VirtualService whose routes these are; `None` for the default route.
    #[serde(serialize_with = "display_option")]
    pub virtual_service: Option<ObjectRef>,
}

impl VirtualHost {
    /// Where a TLS or TCP connection to `destination` goes: the first TLS route whose SNI and
    /// subnet conditions fit (when the client sent an SNI), else the first TCP route whose
    /// subnets fit; `None` when nothing fits (the proxy then closes the connection).
    pub fn route_connection(&self, destination: IpAddr, sni: Option<&str>) -> Option<&WeightedClusters> {
        let by_sni = sni.and_then(|sni| {
            self.tls_routes
                .iter()
                .find(|route| route.matches.iter().any(|condition| condition.matches(sni, destination)))
        });
        match by_sni {
            Some(route) => Some(&route.destinations),
            None => self.tcp_routes.iter().find(|route| route.matches(destination)).map(|route| &route.destinations),
        }
    }

    /// The first HTTP route whose conditions the request meets (a route without conditions
    /// takes every request), as Istio's first-match rule says.
    pub fn route_request(&self, request: &impl super::matching::RequestAttributes) -> Option<&HttpRoute> {
        self.http_routes
            .iter()
            .find(|route| route.matches.is_empty() || route.matches.iter().any(|condition| condition.matches(request)))
    }
}

/// Serializes an optional object reference as `Kind namespace/name`.
pub(crate) fn display_option<S: Serializer>(value: &Option<ObjectRef>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(object) => serializer.collect_str(object),
        None => serializer.serialize_none(),
    }
}
