//! `WorkloadEntry`: a workload outside Kubernetes (a VM, a bare-metal host) described as if it
//! were a pod, so ServiceEntries can select it by labels.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::MeshStatus;
use crate::validate::{Diagnostics, FieldPath, Validate, ValidationContext, rules};

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
    fn validate(&self, path: &FieldPath, _context: &ValidationContext, diagnostics: &mut Diagnostics) {
        let address_path = path.field("address");
        if self.address.is_empty() && self.network.is_empty() {
            diagnostics.error(&address_path, "set an address (an IP or DNS name), or a network to reach it through");
        }
        if let Some(socket) = self.address.strip_prefix("unix://") {
            if socket.is_empty() {
                diagnostics
                    .error(&address_path, "a unix:// address needs a socket path, such as unix:///var/run/app.sock");
            }
            if !self.ports.is_empty() {
                diagnostics
                    .error(&path.field("ports"), "a unix:// address has no ports; remove ports or use an IP address");
            }
        } else if !self.address.is_empty() && self.address.parse::<std::net::IpAddr>().is_err() {
            rules::hostname(&self.address, false, &address_path, diagnostics);
        }
        for (name, number) in &self.ports {
            let port_path = path.field("ports").key(name);
            rules::dns_label(name, "port name", &port_path, diagnostics);
            rules::port(*number, &port_path, diagnostics);
        }
        rules::labels(&self.labels, &path.field("labels"), diagnostics);
        if let Some(weight) = self.weight
            && weight > MAX_WEIGHT
        {
            diagnostics.error(&path.field("weight"), format!("weight {weight} is too large; use 0 to {MAX_WEIGHT}"));
        }
        if !self.locality.is_empty() {
            let parts: Vec<&str> = self.locality.split('/').collect();
            if parts.len() > 3 || parts.iter().any(|part| part.is_empty()) {
                diagnostics.error(
                    &path.field("locality"),
                    format!(
                        "locality {:?} is malformed; write region, region/zone or region/zone/subzone",
                        self.locality
                    ),
                );
            }
        }
        if !self.service_account.is_empty() && !is_dns1123_subdomain(&self.service_account) {
            diagnostics.error(
                &path.field("serviceAccount"),
                format!(
                    "{:?} is not a service account name; use lowercase letters, digits, '-' and '.', such as bookinfo-ratings",
                    self.service_account
                ),
            );
        }
        if !self.network.is_empty() {
            diagnostics.unsupported(&path.field("network"));
        }
    }
}

/// The largest weight accepted, so that the sum over thousands of endpoints cannot overflow.
const MAX_WEIGHT: u32 = 100_000;

fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(crate::hosts::is_dns1123_label)
}
