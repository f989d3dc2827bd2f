//! `ServiceEntry`: adds a service to the mesh's registry that Kubernetes does not know, such as
//! an external API or a set of VMs, with its hosts, ports and endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::workload_entry::WorkloadEntrySpec;
use crate::api::MeshStatus;
use crate::validate::{Diagnostics, FieldPath, Validate, ValidationContext, rules};

/// Protocols the mesh handles on a ServiceEntry port (matched case-insensitively, as Istio does).
pub const SUPPORTED_PROTOCOLS: &[&str] = &["HTTP", "HTTPS", "GRPC", "HTTP2", "MONGO", "TCP", "TLS"];
/// Protocols Istio knows that the mesh accepts but does not handle specially yet.
const OTHER_ISTIO_PROTOCOLS: &[&str] = &["GRPC-WEB", "HTTP_PROXY", "MYSQL", "REDIS", "UDP", "THRIFT"];

/// The spec of a `ServiceEntry`, Istio's `networking.istio.io` `ServiceEntry` message.
#[derive(CustomResource, Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "ServiceEntry",
    namespaced,
    status = "MeshStatus",
    derive = "PartialEq",
    shortname = "se",
    category = "istio-io",
    category = "networking-istio-io",
    printcolumn = r#"{"name":"Hosts","type":"string","description":"The names of the service","jsonPath":".spec.hosts"}"#,
    printcolumn = r#"{"name":"Location","type":"string","description":"Inside the mesh (MESH_INTERNAL) or outside it (MESH_EXTERNAL)","jsonPath":".spec.location"}"#,
    printcolumn = r#"{"name":"Resolution","type":"string","description":"How endpoints are found (NONE, STATIC, DNS, DNS_ROUND_ROBIN, DYNAMIC_DNS)","jsonPath":".spec.resolution"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    /// The names of the service. Routes and DestinationRules refer to it by these; HTTP
    /// requests are matched by Host header and TLS connections by SNI against them. A leading
    /// wildcard (`*.example.com`) is allowed, with resolution NONE. Required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDR ranges of the service: TCP traffic to them is treated as traffic to
    /// this service. Without addresses, TCP ports are told apart by port alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// The ports of the service; port numbers are unique. Required unless resolution is NONE.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// Whether the service is part of the mesh (mTLS, mesh telemetry) or outside it.
    /// MESH_EXTERNAL when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// How the proxy finds the endpoints to connect to. NONE when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// The endpoints of the service, written inline; exclusive with `workloadSelector`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntrySpec>,
    /// Takes the endpoints from pods and WorkloadEntries in this namespace with these labels;
    /// only for MESH_INTERNAL services. Exclusive with `endpoints`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<EntryWorkloadSelector>,
    /// The namespaces whose proxies see this service: `.` (this one), `*` (all, the default)
    /// or namespace names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Identities the endpoints' certificates may carry, checked in mutual TLS. Not supported
    /// yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// One port of a ServiceEntry.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    /// The port callers connect to, 1-65535. Required; unique within the entry.
    #[serde(default)]
    pub number: u32,
    /// How traffic on the port is read: HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP or TLS.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// The port's name, a DNS label unique within the entry; endpoints map it to their own
    /// port numbers in their `ports`.
    #[serde(default)]
    pub name: String,
    /// The port the endpoints listen on, when it differs from `number` and the endpoint does
    /// not say otherwise. Not allowed with resolution NONE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// Selects workloads by label for a ServiceEntry (Istio's networking `WorkloadSelector`, whose
/// field is `labels`, not `matchLabels`).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EntryWorkloadSelector {
    /// Every label here must be on the workload with the same value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl EntryWorkloadSelector {
    /// Whether a workload with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(key, value)| labels.get(key) == Some(value))
    }
}

/// Whether a ServiceEntry's service is inside the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// Outside the mesh: no mesh mTLS towards it unless a DestinationRule asks.
    #[default]
    MeshExternal,
    /// Part of the mesh: endpoints run proxies, traffic to them uses mesh mTLS.
    MeshInternal,
}

/// How the endpoints of a ServiceEntry are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// No endpoints: connections go on to the address the caller dialled.
    #[default]
    None,
    /// The IP addresses of `endpoints` (or the selected workloads).
    Static,
    /// The hosts (or endpoint names) are resolved by DNS, and every address returned is used.
    Dns,
    /// The host is resolved by DNS and only the first address is used for new connections.
    DnsRoundRobin,
    /// Each request's own host is resolved when it is made (Istio's dynamic forward proxy), for
    /// wildcard hosts. The mesh does not resolve it itself yet and treats it as NONE.
    DynamicDns,
}

impl ServiceEntrySpec {
    /// The location in force, MESH_EXTERNAL when unset.
    pub fn location(&self) -> Location {
        self.location.unwrap_or_default()
    }

    /// The resolution in force, NONE when unset.
    pub fn resolution(&self) -> Resolution {
        self.resolution.unwrap_or_default()
    }

    /// The port named `name`, if any.
    pub fn port(&self, name: &str) -> Option<&ServicePort> {
        self.ports.iter().find(|port| port.name == name)
    }
}

impl Validate for ServiceEntrySpec {
    fn validate(&self, path: &FieldPath, context: &ValidationContext, diagnostics: &mut Diagnostics) {
        let resolution = self.resolution();
        hosts(self, path, diagnostics);
        let mut has_cidr = false;
        for (index, address) in self.addresses.iter().enumerate() {
            has_cidr |= address.contains('/');
            let valid = address.parse::<IpAddr>().is_ok() || address.parse::<ipnet::IpNet>().is_ok();
            if !valid {
                diagnostics.error(
                    &path.field("addresses").index(index),
                    format!("{address:?} is not an IP address or CIDR range; use one such as 240.0.0.1 or 10.0.0.0/16"),
                );
            }
        }
        if has_cidr && !matches!(resolution, Resolution::None | Resolution::Static) {
            diagnostics.error(
                &path.field("addresses"),
                "CIDR ranges are allowed only with resolution NONE or STATIC; give single IP addresses",
            );
        }
        ports(self, path, diagnostics);
        endpoints(self, path, context, diagnostics);
        if let Some(selector) = &self.workload_selector {
            let selector_path = path.field("workloadSelector");
            rules::labels(&selector.labels, &selector_path.field("labels"), diagnostics);
            if !self.endpoints.is_empty() {
                diagnostics.error(
                    &selector_path,
                    "set either workloadSelector or endpoints, not both; endpoints are listed inline or selected",
                );
            }
            if self.location() == Location::MeshExternal {
                diagnostics.warning(
                    &selector_path,
                    "selected workloads run in the mesh; a workloadSelector is meant for location MESH_INTERNAL",
                );
            }
        }
        rules::export_to(&self.export_to, &path.field("exportTo"), diagnostics);
        if !self.subject_alt_names.is_empty() {
            diagnostics.unsupported(&path.field("subjectAltNames"));
        }
    }
}

fn hosts(entry: &ServiceEntrySpec, path: &FieldPath, diagnostics: &mut Diagnostics) {
    let resolution = entry.resolution();
    if entry.hosts.is_empty() {
        diagnostics.error(&path.field("hosts"), "a ServiceEntry needs at least one host, such as api.example.com");
    }
    for (index, host) in entry.hosts.iter().enumerate() {
        let host_path = path.field("hosts").index(index);
        if host == "*" {
            diagnostics.error(&host_path, "the host * would capture all traffic; give a name such as *.example.com");
            continue;
        }
        rules::hostname(host, true, &host_path, diagnostics);
        if !host.starts_with('*') || matches!(resolution, Resolution::None | Resolution::DynamicDns) {
            continue;
        }
        if matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin) && entry.endpoints.is_empty() {
            diagnostics.error(
                &host_path,
                format!(
                    "wildcard host {host:?} cannot be resolved by DNS; with resolution {} and no endpoints every host \
                     must be a full name, or use resolution NONE",
                    resolution_name(resolution)
                ),
            );
        } else {
            diagnostics.warning(
                &host_path,
                format!(
                    "wildcard host {host:?} with resolution {} sends every matching name to the same endpoints; \
                     wildcards are meant for resolution NONE",
                    resolution_name(resolution)
                ),
            );
        }
    }
    let tcp_port = entry.ports.iter().any(|port| {
        let protocol = port.protocol.to_ascii_uppercase();
        !(protocol.starts_with("HTTP") || protocol.starts_with("GRPC") || protocol == "TLS")
    });
    if entry.hosts.len() > 1 && entry.addresses.is_empty() && tcp_port {
        diagnostics.warning(
            &path.field("hosts"),
            "several hosts share non-HTTP, non-TLS ports without addresses, so their TCP traffic cannot be told \
             apart; give addresses or one host per ServiceEntry",
        );
    }
}

fn resolution_name(resolution: Resolution) -> &'static str {
    match resolution {
        Resolution::None => "NONE",
        Resolution::Static => "STATIC",
        Resolution::Dns => "DNS",
        Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
        Resolution::DynamicDns => "DYNAMIC_DNS",
    }
}

fn ports(entry: &ServiceEntrySpec, path: &FieldPath, diagnostics: &mut Diagnostics) {
    let resolution = entry.resolution();
    if entry.ports.is_empty() && resolution != Resolution::None {
        diagnostics.error(
            &path.field("ports"),
            format!(
                "resolution {} needs at least one port, such as {{number: 443, name: https, protocol: HTTPS}}",
                resolution_name(resolution)
            ),
        );
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut numbers: BTreeMap<u32, usize> = BTreeMap::new();
    for (index, port) in entry.ports.iter().enumerate() {
        let port_path = path.field("ports").index(index);
        rules::port(port.number, &port_path.field("number"), diagnostics);
        if let Some(first) = numbers.get(&port.number) {
            diagnostics.error(
                &port_path.field("number"),
                format!(
                    "port {} is already defined at {}; port numbers must be unique",
                    port.number,
                    path.field("ports").index(*first)
                ),
            );
        } else {
            numbers.insert(port.number, index);
        }
        if port.name.is_empty() {
            diagnostics.error(&port_path.field("name"), "every port needs a name, such as http or https-api");
        } else {
            rules::dns_label(&port.name, "port name", &port_path.field("name"), diagnostics);
            if let Some(first) = names.get(port.name.as_str()) {
                diagnostics.error(
                    &port_path.field("name"),
                    format!(
                        "port name {:?} is already used at {}; port names must be unique",
                        port.name,
                        path.field("ports").index(*first)
                    ),
                );
            } else {
                names.insert(&port.name, index);
            }
        }
        protocol(&port.protocol, &port_path.field("protocol"), diagnostics);
        if let Some(target) = port.target_port {
            rules::port(target, &port_path.field("targetPort"), diagnostics);
            if resolution == Resolution::None {
                diagnostics.error(
                    &port_path.field("targetPort"),
                    "targetPort is not allowed with resolution NONE, where connections keep the port they were made to",
                );
            }
        }
    }
}

fn protocol(value: &str, path: &FieldPath, diagnostics: &mut Diagnostics) {
    let upper = value.to_ascii_uppercase();
    if SUPPORTED_PROTOCOLS.contains(&upper.as_str()) {
        return;
    }
    if OTHER_ISTIO_PROTOCOLS.contains(&upper.as_str()) {
        diagnostics.unsupported(path);
        return;
    }
    let what =
        if value.is_empty() { "no protocol is set".to_string() } else { format!("protocol {value:?} is unknown") };
    diagnostics.error(path, format!("{what}; use one of {}", SUPPORTED_PROTOCOLS.join(", ")));
}

fn endpoints(entry: &ServiceEntrySpec, path: &FieldPath, context: &ValidationContext, diagnostics: &mut Diagnostics) {
    let resolution = entry.resolution();
    let port_names: BTreeSet<&str> = entry.ports.iter().map(|port| port.name.as_str()).collect();
    match resolution {
        Resolution::None if !entry.endpoints.is_empty() => diagnostics.error(
            &path.field("endpoints"),
            "resolution NONE takes no endpoints; use resolution STATIC or DNS to list endpoints",
        ),
        Resolution::DynamicDns => {
            diagnostics.unsupported(&path.field("resolution"));
            if !entry.endpoints.is_empty() {
                diagnostics.error(
                    &path.field("endpoints"),
                    "resolution DYNAMIC_DNS resolves each request's host and takes no endpoints; use DNS to list them",
                );
            }
        }
        Resolution::Static if entry.endpoints.is_empty() && entry.workload_selector.is_none() => diagnostics.warning(
            &path.field("endpoints"),
            "resolution STATIC without endpoints or a workloadSelector has nowhere to send traffic; list endpoints \
             with IP addresses",
        ),
        Resolution::DnsRoundRobin if entry.endpoints.len() > 1 => diagnostics.error(
            &path.field("endpoints"),
            "resolution DNS_ROUND_ROBIN takes at most one endpoint; use resolution DNS for several",
        ),
        _ => {}
    }
    for (index, endpoint) in entry.endpoints.iter().enumerate() {
        let endpoint_path = path.field("endpoints").index(index);
        endpoint.validate(&endpoint_path, context, diagnostics);
        let address = endpoint.address.as_str();
        let is_ip = address.parse::<IpAddr>().is_ok();
        let is_unix = address.starts_with("unix://");
        if resolution == Resolution::Static && !address.is_empty() && !is_ip && !is_unix {
            diagnostics.error(
                &endpoint_path.field("address"),
                format!("{address:?} is not an IP address; resolution STATIC needs IP endpoints, use DNS for names"),
            );
        }
        for name in endpoint.ports.keys() {
            if !port_names.contains(name.as_str()) {
                diagnostics.error(
                    &endpoint_path.field("ports").key(name),
                    format!(
                        "port {name:?} is not a port of this ServiceEntry; name one of: {}",
                        port_names.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::ObjectRef;

    fn check(yaml: &str) -> Diagnostics {
        let spec: ServiceEntrySpec = serde_yaml::from_str(yaml).expect("test entry parses");
        let mut diagnostics = Diagnostics::new(ObjectRef::new("ServiceEntry", "default", "test"));
        spec.validate(&FieldPath::spec(), &ValidationContext::standalone(), &mut diagnostics);
        diagnostics
    }

    #[test]
    fn protocols_are_matched_case_insensitively() {
        let report =
            check("hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: http}]\nresolution: DNS");
        assert!(report.is_empty(), "{report}");
    }

    #[test]
    fn dns_round_robin_takes_at_most_one_endpoint() {
        let report = check(
            "hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: DNS_ROUND_ROBIN\n\
             endpoints: [{address: a1.example.com}, {address: a2.example.com}]",
        );
        assert!(report.to_string().contains("error: spec.endpoints: resolution DNS_ROUND_ROBIN takes at most one"));
    }

    #[test]
    fn istio_protocols_the_mesh_does_not_handle_are_reported_not_refused() {
        let report = check("hosts: [a.example.com]\nports: [{number: 53, name: dns, protocol: UDP}]\nresolution: DNS");
        assert!(!report.has_errors(), "{report}");
        assert!(report.to_string().contains("not supported yet: spec.ports[0].protocol"));
    }

    #[test]
    fn endpoint_ports_must_name_entry_ports() {
        let report = check(
            "hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: STATIC\n\
             endpoints: [{address: 10.0.0.1, ports: {grpc: 9000}}]",
        );
        assert!(report.to_string().contains("error: spec.endpoints[0].ports[grpc]: port \"grpc\" is not a port"));
    }
}
