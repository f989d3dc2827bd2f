//! `DestinationRule`: what happens to traffic for a service after routing chose it: how
//! endpoints are balanced, how many connections and requests may be outstanding, when an
//! endpoint is ejected for failing, and how the connection to it is secured.
//!
//! The policy a connection gets is resolved in layers (service, port, subset, subset port);
//! [`TrafficPolicy::merged_for`] and [`DestinationRuleSpec::policy_for`] do that resolution so
//! the compiler never has to.

mod connection_pool;
mod load_balancer;
mod outlier_detection;
mod tls;
mod traffic_policy;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use connection_pool::{ConnectionPoolSettings, H2UpgradePolicy, HttpSettings, TcpKeepalive, TcpSettings};
pub use load_balancer::{
    ConsistentHashLb, HttpCookie, HttpCookieAttribute, LoadBalancerSettings, LocalityDistribute, LocalityFailover,
    LocalityLbSetting, MagLev, RingHash, SimpleLb, WarmupConfiguration,
};
pub use outlier_detection::OutlierDetection;
pub use tls::{ClientTLSSettings, TlsMode};
pub use traffic_policy::{
    PortTrafficPolicy, ProxyProtocol, ProxyProtocolVersion, RetryBudget, TrafficPolicy, TunnelSettings,
};

use crate::api::{MeshStatus, WorkloadSelector};

/// The spec of a `DestinationRule`, Istio's `networking.istio.io` `DestinationRule` message.
#[derive(CustomResource, Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "DestinationRule",
    namespaced,
    status = "MeshStatus",
    derive = "PartialEq",
    shortname = "dr",
    category = "istio-io",
    category = "networking-istio-io",
    printcolumn = r#"{"name":"Host","type":"string","description":"The service this rule applies to","jsonPath":".spec.host"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    /// The service the rule applies to, as the registry knows it: a short name (`reviews`,
    /// read in the rule's namespace), a fully qualified name (`reviews.prod.svc.cluster.local`),
    /// a ServiceEntry host, or a wildcard (`*.example.com`). Required.
    #[serde(default)]
    pub host: String,
    /// The policy for every connection to the host, unless a port or subset overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named groups of the host's endpoints (usually versions), selected by labels; routes send
    /// traffic to a subset by name, and a subset may carry its own policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    /// The namespaces whose proxies see this rule: `.` (this one), `*` (all, the default) or
    /// namespace names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Applies the rule only to client workloads with these labels in the rule's namespace;
    /// without it the rule applies to every client that sees it. Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
}

/// A named group of a service's endpoints, such as one version of it.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Subset {
    /// The name routes use to send traffic here (`v1`); a DNS label, unique within the rule.
    #[serde(default)]
    pub name: String,
    /// The endpoints of the host that carry all of these labels belong to the subset; added to
    /// the service's own selector, never replacing it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Overrides the rule's top-level policy for traffic to this subset, field by field: a
    /// load balancer, connection pool, outlier detection or TLS setting given here replaces the
    /// top-level one as a whole; anything not given is inherited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

impl Subset {
    /// Whether an endpoint with `labels` belongs to this subset.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(key, value)| labels.get(key) == Some(value))
    }
}

impl DestinationRuleSpec {
    /// The subset called `name`, if the rule defines it.
    pub fn subset(&self, name: &str) -> Option<&Subset> {
        self.subsets.iter().find(|subset| subset.name == name)
    }

    /// The names of the subsets, in the order written.
    pub fn subset_names(&self) -> impl Iterator<Item = &str> {
        self.subsets.iter().map(|subset| subset.name.as_str())
    }

    /// The effective policy for traffic to `subset` (by name; `None` for the whole service) on
    /// service port `port` (`None` when no port is known), resolved as Istio does; see
    /// [`TrafficPolicy::merged_for`]. A subset name the rule does not define resolves as the
    /// whole service.
    pub fn policy_for(&self, subset: Option<&str>, port: Option<u32>) -> TrafficPolicy {
        let subset = subset.and_then(|name| self.subset(name));
        self.traffic_policy.clone().unwrap_or_default().merged_for(subset, port)
    }
}
