//! `VirtualService`: how requests addressed to a set of hosts are matched and routed, for HTTP,
//! TLS (by SNI) and plain TCP traffic, in sidecars and at gateways.
//!
//! The HTTP part lives in [`http`]; the TLS and TCP parts, and the destinations every route
//! shares, are here; the checks are in `validate.rs`.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::{MeshStatus, PortSelector};

mod actions;
pub mod http;
mod validate;

pub use http::{
    CorsPolicy, Delegate, HttpAbort, HttpBody, HttpDelay, HttpDirectResponse, HttpFaultInjection, HttpMatchRequest,
    HttpMirrorPolicy, HttpRedirect, HttpRetry, HttpRewrite, HttpRoute, HttpRouteDestination, RedirectPortSelection,
    RegexRewrite, UnmatchedPreflights,
};

/// The spec of a `VirtualService`, Istio's `networking.istio.io` `VirtualService` message.
#[derive(CustomResource, Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "VirtualService",
    namespaced,
    status = "MeshStatus",
    derive = "PartialEq",
    shortname = "vs",
    category = "istio-io",
    category = "networking-istio-io",
    printcolumn = r#"{"name":"Gateways","type":"string","description":"The gateways and sidecars that apply these routes","jsonPath":".spec.gateways"}"#,
    printcolumn = r#"{"name":"Hosts","type":"string","description":"The hosts whose traffic these routes handle","jsonPath":".spec.hosts"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    /// The hosts whose traffic these routes take over: service names (short names resolve in
    /// this resource's namespace), names with a leading wildcard (`*.example.com`), IP
    /// addresses, or `*` alone at a gateway. A request is handled here when its `Host`/SNI (or,
    /// for TCP, its destination) is one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Where the routes apply: gateway names (`name` in this namespace, or `namespace/name`),
    /// and the reserved word `mesh` for every sidecar. Empty means `mesh` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// HTTP/1.1, HTTP/2 and gRPC routes, tried in order; the first whose match fits the request
    /// handles it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    /// Routes for TLS traffic that is passed through unterminated, chosen by SNI; tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsRoute>,
    /// Routes for opaque TCP traffic, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
    /// The namespaces whose sidecars and gateways see these routes: `.` (this namespace), `*`
    /// (all, the default), or namespace names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

/// The service (and optionally subset and port) a request or connection is forwarded to.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Destination {
    /// The service to send to, as the registry knows it: a Kubernetes service (short names
    /// resolve in the VirtualService's namespace) or a ServiceEntry host.
    #[serde(default)]
    pub host: String,
    /// A subset defined by the host's DestinationRule, selecting only those endpoints (for
    /// example the pods labelled `version: v2`). Empty means every endpoint.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subset: String,
    /// The service port to send to; needed only when the service exposes several ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

/// A weighted destination of a TLS or TCP route.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteDestination {
    /// Where the connection goes.
    #[serde(default)]
    pub destination: Destination,
    /// Share of connections, 0-100, when the route splits traffic over several destinations;
    /// the weights of a route sum to 100. A single destination receives everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

/// A route for unterminated TLS, matched by SNI and connection attributes.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsRoute {
    /// Conditions, any one of which selects this route; each needs at least one SNI host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<TlsMatchAttributes>,
    /// Where matching connections go, split by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// A route for opaque TCP connections.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpRoute {
    /// Conditions, any one of which selects this route; none means every connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<L4MatchAttributes>,
    /// Where matching connections go, split by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// What a TLS connection must look like to take a TLS route; every field set must fit.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsMatchAttributes {
    /// Server names from the ClientHello that select the route; wildcards allowed. Each must
    /// fall under one of the VirtualService's hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
    /// Destination IPs or CIDR blocks (`10.1.0.0/16`) the connection must be addressed to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    /// The port the connection must be addressed to; useful when a host serves several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Only connections from workloads with these labels match (sidecars only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// Only at these gateways (or `mesh`); overrides the VirtualService's `gateways`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Only connections from workloads in this namespace match (sidecars only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_namespace: String,
}

/// What a TCP connection must look like to take a TCP route; every field set must fit.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct L4MatchAttributes {
    /// Destination IPs or CIDR blocks (`10.1.0.0/16`) the connection must be addressed to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    /// The port the connection must be addressed to; useful when a host serves several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Only connections from workloads with these labels match (sidecars only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// Only at these gateways (or `mesh`); overrides the VirtualService's `gateways`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Only connections from workloads in this namespace match (sidecars only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_namespace: String,
    /// Only connections from this IP address or CIDR block match (`10.1.0.0/16`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_subnet: String,
}

impl VirtualServiceSpec {
    /// The gateways the routes apply to, with the implicit `mesh` when none is written.
    pub fn effective_gateways(&self) -> Vec<&str> {
        if self.gateways.is_empty() { vec![MESH_GATEWAY] } else { self.gateways.iter().map(String::as_str).collect() }
    }
}

/// The reserved gateway name meaning "every sidecar of the mesh".
pub const MESH_GATEWAY: &str = "mesh";
