//! Routes as the data path reads them: HTTP routes with their actions, TLS and TCP routes, and
//! weighted destinations.

use std::net::IpAddr;

use serde::Serialize;

use super::ClusterKey;
use super::display_option;
use crate::api::networking::virtual_service::{
    CorsPolicy, HttpDirectResponse, HttpFaultInjection, HttpRedirect, HttpRetry, HttpRewrite,
};
use crate::api::{Duration, Headers};
use crate::compile::matching::HttpRequestMatch;
use crate::validate::ObjectRef;

/// Where a route came from, so the proxy can say which resource led a request where it went.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RouteOrigin {
    /// The VirtualService; `None` for a default route to the service itself.
    #[serde(serialize_with = "display_option")]
    pub resource: Option<ObjectRef>,
    /// The route's index in its list (`http`, `tls` or `tcp`); `None` for a default route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The route's path in the resource (`spec.http[1]`); empty for a default route.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
}

/// One HTTP route.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HttpRoute {
    /// The route's name (Istio's `name`, or `default` for the default route).
    pub name: String,
    /// Conditions, any of which selects the route; empty selects every request.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpRequestMatch>,
    /// What is done with a selected request.
    pub action: HttpAction,
    /// Path/authority rewrite before forwarding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Header changes on request and response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
    /// Total time allowed, retries included; `None` means no timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Retry policy as written (Istio's defaults apply when `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    /// Injected delay/abort.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFaultInjection>,
    /// Where copies of requests go.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    /// CORS answers for browsers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsPolicy>,
    /// The resource and route this came from.
    pub origin: RouteOrigin,
}

/// What an HTTP route does.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum HttpAction {
    /// Forward to one of these clusters, chosen by weight.
    Forward(WeightedClusters),
    /// Answer with a redirect.
    Redirect(HttpRedirect),
    /// Answer with a fixed response.
    DirectResponse(HttpDirectResponse),
}

/// Destinations with weights, picked by cumulative weight.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WeightedClusters {
    /// The destinations in the order written.
    pub clusters: Vec<WeightedCluster>,
    /// The sum of the weights (100 for valid resources).
    pub total_weight: u32,
}

impl WeightedClusters {
    /// Builds the list, summing the weights.
    pub fn new(clusters: Vec<WeightedCluster>) -> Self {
        let total_weight = clusters.iter().map(|cluster| cluster.weight).sum();
        Self { clusters, total_weight }
    }

    /// The destination for `roll`, a number in `0..total_weight` (drawn at random by the
    /// proxy): the first whose cumulative weight exceeds it. Destinations of weight 0 are
    /// never picked.
    pub fn pick(&self, roll: u32) -> Option<&WeightedCluster> {
        let mut cumulative = 0;
        self.clusters.iter().find(|cluster| {
            cumulative += cluster.weight;
            roll < cumulative
        })
    }
}

/// One weighted destination.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WeightedCluster {
    /// The cluster to send to.
    pub cluster: ClusterKey,
    /// Its share.
    pub weight: u32,
    /// Header changes when this destination is chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// A mirror destination.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mirror {
    /// Where copies go.
    pub cluster: ClusterKey,
    /// The share of requests copied, 0-100.
    pub percentage: f64,
}

/// A route for TLS connections, chosen by SNI.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TlsRoute {
    /// Conditions, any of which selects the route.
    pub matches: Vec<TlsMatch>,
    /// Where selected connections go.
    pub destinations: WeightedClusters,
    /// The resource and route this came from.
    pub origin: RouteOrigin,
}

/// A TLS condition: the SNI must match one of `sni_hosts` and the destination address one of
/// `destination_subnets` (when any are given).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TlsMatch {
    /// Server names, lowercase; a leading `*` matches any prefix.
    pub sni_hosts: Vec<String>,
    /// Destination subnets; empty means any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<ipnet::IpNet>,
}

impl TlsMatch {
    /// Whether a connection with this SNI to `destination` fits.
    pub fn matches(&self, sni: &str, destination: IpAddr) -> bool {
        self.sni_hosts.iter().any(|pattern| crate::hosts::wildcard_matches(pattern, sni))
            && (self.destination_subnets.is_empty()
                || self.destination_subnets.iter().any(|net| net.contains(&destination)))
    }
}

/// A route for opaque TCP connections.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TcpRoute {
    /// Destination subnets of which one must contain the destination; empty means any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<ipnet::IpNet>,
    /// Where selected connections go.
    pub destinations: WeightedClusters,
    /// The resource and route this came from.
    pub origin: RouteOrigin,
}

impl TcpRoute {
    /// Whether a connection to `destination` takes this route.
    pub fn matches(&self, destination: IpAddr) -> bool {
        self.destination_subnets.is_empty() || self.destination_subnets.iter().any(|net| net.contains(&destination))
    }
}
