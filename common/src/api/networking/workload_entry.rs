//! `WorkloadEntry`: a workload outside Kubernetes (a VM, a bare-metal host) described as if it
//! were a pod, so ServiceEntries can select it by labels.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::MeshStatus;
use crate::validate::{FieldPath, Validate, ValidationContext, rules};

/// The spec of a `WorkloadEntry`, Istio's `networking.istio.io` `WorkloadEntry` message.
#[derive(CustomResource, Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "WorkloadEntry",
    namespaced,
    status = "MeshStatus",
    derive = "PartialEq",
    shortname = "we",
    category = "istio-io",
    category = "networking-istio-io",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.address"}"#
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadEntrySpec {
    /// Where the workload is reached: an IP address or a DNS name. May be empty when `network`
    /// is set and the workload is reached through that network's gateway.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Port name to the port the workload listens on, overriding the service's port numbers
    /// (a ServiceEntry port named `http` is sent to `ports[http]` here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    /// The workload's labels, which ServiceEntries and subsets select.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The network the workload is on, when the mesh spans several networks.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    /// Where the workload runs, as `region/zone/subzone`, for locality-aware balancing.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub locality: String,
    /// Relative share of traffic among the endpoints of a service; 0 means the default of 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// The service account the workload runs as, which gives its mTLS identity.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account: String,
}

impl Validate for WorkloadEntrySpec {
    fn validate(&self, path: &FieldPath, _context: &ValidationContext, diagnostics: &mut crate::validate::Diagnostics) {
        if self.address.is_empty() && self.network.is_empty() {
            diagnostics
                .error(&path.field("address"), "set an address (an IP or DNS name), or a network to reach it through");
        }
        if let Some(address) = self.address.strip_prefix("unix://") {
            if address.is_empty() {
                diagnostics.error(&path.field("address"), "a unix:// address needs a socket path");
            }
        } else if !self.address.is_empty() && self.address.parse::<std::net::IpAddr>().is_err() {
            rules::hostname(&self.address, false, &path.field("address"), diagnostics);
        }
        for (name, number) in &self.ports {
            rules::port(*number, &path.field("ports").key(name), diagnostics);
        }
        rules::labels(&self.labels, &path.field("labels"), diagnostics);
        if let Some(weight) = self.weight
            && weight > 100_000
        {
            diagnostics.error(&path.field("weight"), format!("weight {weight} is too large; use 0 to 100000"));
        }
        if !self.network.is_empty() {
            diagnostics.unsupported(&path.field("network"));
        }
    }
}
