//! `Sidecar`: narrows what a workload's sidecar proxy knows and accepts. Its egress hosts limit
//! the services the proxy is configured for (less memory, fewer pushes), and its outbound
//! traffic policy decides whether destinations outside the registry may be reached at all.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::destination_rule::ConnectionPoolSettings;
use super::gateway::{Port, ServerTLSSettings, port_rules};
use super::service_entry::EntryWorkloadSelector;
use super::virtual_service::Destination;
use crate::api::MeshStatus;
use crate::hosts;
use crate::validate::{Diagnostics, FieldPath, Validate, ValidationContext, rules};

/// The spec of a `Sidecar`, Istio's `networking.istio.io` `Sidecar` message.
#[derive(CustomResource, Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "Sidecar",
    namespaced,
    status = "MeshStatus",
    derive = "PartialEq",
    category = "istio-io",
    category = "networking-istio-io",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SidecarSpec {
    /// The workloads of this namespace the Sidecar applies to, by `labels` (Istio's networking
    /// selector, shared with ServiceEntry). Unset makes it the namespace's
    /// default, for every workload no other Sidecar selects; a Sidecar in the root namespace
    /// without selector is the mesh-wide default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<EntryWorkloadSelector>,
    /// Ports on which the sidecar accepts inbound traffic and where it forwards it in the pod.
    /// Unset means the ports the workload's services declare.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IstioIngressListener>,
    /// The outbound destinations the sidecar is configured for. Unset means every service
    /// exported to this namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<IstioEgressListener>,
    /// Connection limits for inbound traffic to the workload on every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    /// What happens to outbound traffic to destinations the sidecar does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// How inbound or outbound traffic reaches a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    /// The environment's default (iptables capture here).
    Default,
    /// Traffic is redirected to the proxy by iptables.
    Iptables,
    /// No capture: the application talks to the listener's bind address itself.
    None,
}

/// An inbound listener of the sidecar.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IstioIngressListener {
    /// The port inbound traffic arrives on and its protocol.
    #[serde(default)]
    pub port: Port,
    /// The address the listener binds to; unset means the pod's addresses.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    /// How traffic reaches the listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// Where accepted traffic is forwarded in the pod: `127.0.0.1:PORT`, `0.0.0.0:PORT` or
    /// `unix:///path`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_endpoint: String,
    /// TLS terminated by the sidecar for traffic from outside the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTLSSettings>,
    /// Connection limits for this port, overriding `inboundConnectionPool`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// An outbound listener of the sidecar: the hosts it may reach, optionally on one port.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IstioEgressListener {
    /// Limits the listener to this port; unset means every port of the hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    /// The address the listener binds to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    /// How traffic reaches the listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// The services the sidecar is configured for, each `namespace/dnsName`: the namespace is
    /// a name, `.` (the Sidecar's), `*` (any) or `~` (none); the name is a host, `*.suffix` or
    /// `*`. Example: `istio-system/*` for everything in istio-system.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// Whether unknown outbound destinations are reachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficMode {
    /// Only services in the registry (Kubernetes services, ServiceEntries) are reachable;
    /// anything else is refused.
    RegistryOnly,
    /// Unknown destinations are passed through as they are.
    AllowAny,
}

/// The policy for outbound traffic to destinations the sidecar does not know.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutboundTrafficPolicy {
    /// `REGISTRY_ONLY` or `ALLOW_ANY`; unset means the mesh-wide setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutboundTrafficMode>,
    /// With `ALLOW_ANY`, send unknown traffic through this proxy service instead of directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<Destination>,
}

impl IstioEgressListener {
    /// The listener's hosts as `(namespace, host)`: `namespace` is a name, `.` (the Sidecar's
    /// own), `*` (any) or `~` (none); `host` a name, `*.suffix` or `*`. Entries without `/`
    /// (invalid, reported by validation) are skipped.
    pub fn namespaced_hosts(&self) -> impl Iterator<Item = (&str, &str)> {
        self.hosts.iter().filter_map(|value| value.split_once('/'))
    }
}

impl Validate for SidecarSpec {
    fn validate(&self, path: &FieldPath, _context: &ValidationContext, diagnostics: &mut Diagnostics) {
        if let Some(selector) = &self.workload_selector {
            let path = path.field("workloadSelector").field("labels");
            if selector.labels.is_empty() {
                diagnostics.error(
                    &path,
                    "set at least one label, or remove workloadSelector to make this the namespace's default Sidecar",
                );
            }
            rules::labels(&selector.labels, &path, diagnostics);
        }
        if self.ingress.is_empty()
            && self.egress.is_empty()
            && self.inbound_connection_pool.is_none()
            && self.outbound_traffic_policy.is_none()
        {
            diagnostics.error(
                path,
                "a Sidecar must say something; set egress, ingress, outboundTrafficPolicy or inboundConnectionPool",
            );
        }
        for (index, listener) in self.ingress.iter().enumerate() {
            let path = path.field("ingress").index(index);
            diagnostics.unsupported(&path);
            port_rules(&listener.port, true, &path.field("port"), diagnostics);
        }
        egress_rules(&self.egress, &path.field("egress"), diagnostics);
        if self.inbound_connection_pool.is_some() {
            diagnostics.unsupported(&path.field("inboundConnectionPool"));
        }
        if let Some(policy) = &self.outbound_traffic_policy
            && let Some(proxy) = &policy.egress_proxy
        {
            let path = path.field("outboundTrafficPolicy").field("egressProxy");
            diagnostics.unsupported(&path);
            if policy.mode != Some(OutboundTrafficMode::AllowAny) {
                diagnostics
                    .error(&path, "egressProxy only applies with mode ALLOW_ANY; set the mode or remove egressProxy");
            }
            if proxy.host.is_empty() {
                diagnostics.error(&path.field("host"), "set the host of the egress proxy service");
            }
        }
    }
}

fn egress_rules(listeners: &[IstioEgressListener], path: &FieldPath, diagnostics: &mut Diagnostics) {
    let catch_all: Vec<usize> =
        listeners.iter().enumerate().filter(|(_, listener)| listener.port.is_none()).map(|(index, _)| index).collect();
    if catch_all.len() > 1 {
        diagnostics.error(
            &path.index(catch_all[1]),
            "only one egress listener may omit port; give this listener a port or merge its hosts into the other",
        );
    } else if let Some(&index) = catch_all.first()
        && index + 1 != listeners.len()
    {
        diagnostics.error(
            &path.index(index),
            "the egress listener without port catches everything else, so it must be the last one",
        );
    }
    for (index, listener) in listeners.iter().enumerate() {
        let path = path.index(index);
        if let Some(port) = &listener.port {
            diagnostics.unsupported(&path.field("port"));
            port_rules(port, false, &path.field("port"), diagnostics);
        }
        if !listener.bind.is_empty() {
            diagnostics.unsupported(&path.field("bind"));
        }
        if listener.capture_mode.is_some() {
            diagnostics.unsupported(&path.field("captureMode"));
        }
        if listener.hosts.is_empty() {
            diagnostics.error(
                &path.field("hosts"),
                "list at least one host as namespace/dnsName, such as ./* or istio-system/*",
            );
        }
        for (host_index, host) in listener.hosts.iter().enumerate() {
            egress_host(host, &path.field("hosts").index(host_index), diagnostics);
        }
    }
}

/// `namespace/dnsName`, where the namespace is a name, `.`, `*` or `~`, and the name a host,
/// `*.suffix` or `*`.
fn egress_host(value: &str, path: &FieldPath, diagnostics: &mut Diagnostics) {
    let Some((namespace, host)) = value.split_once('/') else {
        diagnostics.error(
            path,
            format!(
                "{value:?} has no namespace; write egress hosts as namespace/dnsName, such as ./{value} or */{value}"
            ),
        );
        return;
    };
    if !(matches!(namespace, "." | "*" | "~") || hosts::is_dns1123_label(namespace)) {
        diagnostics.error(
            path,
            format!("namespace {namespace:?} of {value:?} is invalid; use a namespace name, '.', '*' or '~'"),
        );
    }
    if host != "*" {
        rules::hostname(host, true, path, diagnostics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::ObjectRef;

    fn listener(port: Option<u32>, hosts: &[&str]) -> IstioEgressListener {
        IstioEgressListener {
            port: port.map(|number| Port { number, protocol: "HTTP".into(), ..Port::default() }),
            hosts: hosts.iter().map(ToString::to_string).collect(),
            ..IstioEgressListener::default()
        }
    }

    fn errors(spec: &SidecarSpec) -> Vec<String> {
        let mut diagnostics = Diagnostics::new(ObjectRef::new("Sidecar", "default", "default"));
        spec.validate(&FieldPath::spec(), &ValidationContext::standalone(), &mut diagnostics);
        diagnostics.of(crate::validate::Severity::Error).map(ToString::to_string).collect()
    }

    #[test]
    fn the_catch_all_egress_listener_is_single_and_last() {
        let ok = SidecarSpec {
            egress: vec![listener(Some(9080), &["./*"]), listener(None, &["istio-system/*"])],
            ..SidecarSpec::default()
        };
        assert!(errors(&ok).is_empty(), "{:?}", errors(&ok));
        let first = SidecarSpec {
            egress: vec![listener(None, &["./*"]), listener(Some(9080), &["./*"])],
            ..SidecarSpec::default()
        };
        assert!(errors(&first)[0].contains("spec.egress[0]: the egress listener without port"));
        let two =
            SidecarSpec { egress: vec![listener(None, &["./*"]), listener(None, &["*/*"])], ..SidecarSpec::default() };
        assert!(errors(&two)[0].contains("spec.egress[1]: only one egress listener may omit port"));
    }

    #[test]
    fn an_empty_workload_selector_is_refused() {
        let spec = SidecarSpec {
            workload_selector: Some(EntryWorkloadSelector::default()),
            egress: vec![listener(None, &["./*"])],
            ..SidecarSpec::default()
        };
        assert!(errors(&spec)[0].contains("spec.workloadSelector.labels: set at least one label"));
        let hosts: Vec<_> =
            listener(None, &["./*", "istio-system/*"]).namespaced_hosts().map(|(ns, _)| ns.to_string()).collect();
        assert_eq!(hosts, [".", "istio-system"]);
    }

    #[test]
    fn egress_hosts_need_a_namespace() {
        let spec = SidecarSpec {
            egress: vec![listener(
                None,
                &["~/*", "*/*.example.com", "prod/reviews.prod.svc.cluster.local", "reviews", "Bad/x"],
            )],
            ..SidecarSpec::default()
        };
        let found = errors(&spec);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("spec.egress[0].hosts[3]: \"reviews\" has no namespace"));
        assert!(found[1].contains("spec.egress[0].hosts[4]: namespace \"Bad\""));
    }
}
