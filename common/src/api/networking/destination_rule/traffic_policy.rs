//! The policy bundle of a destination, a subset or a port, and how the layers merge.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ClientTLSSettings, ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection, Subset};
use crate::api::PortSelector;

/// Everything a proxy applies to traffic towards one destination.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficPolicy {
    /// How an endpoint is chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Limits on connections and requests (circuit breaking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// When failing endpoints are ejected from the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS towards the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTLSSettings>,
    /// Policies for single ports of the destination; a port's entry replaces the load
    /// balancer, connection pool, outlier detection and TLS of the level it sits in, all four
    /// together (fields it leaves out take their defaults, not the level's values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// Tunnels the connection through a proxy with HTTP CONNECT or POST. Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelSettings>,
    /// Sends a PROXY protocol header to the destination so it sees the original client
    /// address. Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Caps concurrent retries in proportion to active requests. Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

/// The policy of one port of the destination.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortTrafficPolicy {
    /// The service port this entry applies to. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    /// How an endpoint is chosen for traffic on this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Limits on connections and requests on this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejection of failing endpoints, judged on this port's traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS towards the destination on this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTLSSettings>,
}

/// Tunnelling of TCP traffic through an HTTP proxy.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TunnelSettings {
    /// `CONNECT` (the default) or `POST`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// The host the tunnel proxy connects on to. Required.
    #[serde(default)]
    pub target_host: String,
    /// The port the tunnel proxy connects on to. Required.
    #[serde(default)]
    pub target_port: u32,
}

/// The PROXY protocol header sent at the start of each connection.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProxyProtocol {
    /// Version 1 (text) or 2 (binary); `V1` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ProxyProtocolVersion>,
}

/// A PROXY protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum ProxyProtocolVersion {
    /// The human-readable header.
    #[default]
    V1,
    /// The binary header.
    V2,
}

/// A retry budget: concurrent retries allowed as a share of active requests.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryBudget {
    /// Retries may be at most this percentage of active requests; Istio's default is 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Retries always allowed in flight regardless of the percentage; Istio's default is 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retry_concurrency: Option<u32>,
}

impl TrafficPolicy {
    /// Whether nothing is set; Istio refuses an empty policy.
    pub fn is_empty(&self) -> bool {
        self == &TrafficPolicy::default()
    }

    /// The entry of `portLevelSettings` for `port`, if any (the first, should there be two).
    pub fn port_policy(&self, port: u32) -> Option<&PortTrafficPolicy> {
        self.port_level_settings.iter().find(|entry| entry.port.is_some_and(|selector| selector.number == port))
    }

    /// This policy with its `portLevelSettings` entry for `port` applied: a matching entry
    /// replaces load balancer, connection pool, outlier detection and TLS as a group (a field
    /// the entry leaves out becomes unset, that is Istio's default, not this level's value).
    /// The result has no `portLevelSettings`.
    pub fn for_port(&self, port: Option<u32>) -> TrafficPolicy {
        let mut resolved = TrafficPolicy { port_level_settings: Vec::new(), ..self.clone() };
        if let Some(entry) = port.and_then(|port| self.port_policy(port)) {
            resolved.load_balancer = entry.load_balancer.clone();
            resolved.connection_pool = entry.connection_pool.clone();
            resolved.outlier_detection = entry.outlier_detection.clone();
            resolved.tls = entry.tls.clone();
        }
        resolved
    }

    /// The effective policy for traffic to `subset` (or the whole service when `None`) on
    /// `port`, with `self` as the rule's top-level policy. As Istio resolves it:
    ///
    /// 1. the top-level policy, with its port-level entry for `port` applied ([`Self::for_port`]);
    /// 2. then each of the subset policy's load balancer, connection pool, outlier detection,
    ///    TLS, tunnel, proxy protocol and retry budget that is set replaces the value from 1
    ///    as a whole (no deep merge: a subset `connectionPool` with only `http` drops the
    ///    top-level `tcp` limits);
    /// 3. then the subset policy's port-level entry for `port`, if any, replaces load balancer,
    ///    connection pool, outlier detection and TLS as a group.
    ///
    /// The result never has `portLevelSettings`; unset fields mean Istio's defaults.
    pub fn merged_for(&self, subset: Option<&Subset>, port: Option<u32>) -> TrafficPolicy {
        let mut merged = self.for_port(port);
        let Some(subset_policy) = subset.and_then(|subset| subset.traffic_policy.as_ref()) else {
            return merged;
        };
        fn override_with<T: Clone>(target: &mut Option<T>, value: &Option<T>) {
            if value.is_some() {
                target.clone_from(value);
            }
        }
        override_with(&mut merged.load_balancer, &subset_policy.load_balancer);
        override_with(&mut merged.connection_pool, &subset_policy.connection_pool);
        override_with(&mut merged.outlier_detection, &subset_policy.outlier_detection);
        override_with(&mut merged.tls, &subset_policy.tls);
        override_with(&mut merged.tunnel, &subset_policy.tunnel);
        override_with(&mut merged.proxy_protocol, &subset_policy.proxy_protocol);
        override_with(&mut merged.retry_budget, &subset_policy.retry_budget);
        if let Some(entry) = port.and_then(|port| subset_policy.port_policy(port)) {
            merged.load_balancer = entry.load_balancer.clone();
            merged.connection_pool = entry.connection_pool.clone();
            merged.outlier_detection = entry.outlier_detection.clone();
            merged.tls = entry.tls.clone();
        }
        merged
    }
}
