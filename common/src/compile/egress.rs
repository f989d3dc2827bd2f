//! Which Sidecar resource applies to a workload, and which hosts its egress lets it reach.
//!
//! Two places judge this and must agree: the proxy's compiler (which services and
//! VirtualServices a sidecar routes) and the controller (which resources it sends a proxy at
//! all). If the controller admitted less than the compiler, a proxy would miss config; if
//! more, pushes would grow for nothing. So both call these functions.

use std::collections::BTreeMap;

use super::age_key;
use crate::api::networking::sidecar::Sidecar;
use crate::hosts;

/// One `namespace/host` entry of a Sidecar's egress, `.` resolved and the host fully
/// qualified, with the egress listener's port if it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressHost {
    port: Option<u16>,
    namespace: String,
    host: String,
}

impl EgressHost {
    /// Whether this entry lets the workload reach `host` of `namespace`, on `port` when given
    /// (`None`: on any port).
    pub fn admits(&self, namespace: &str, host: &str, port: Option<u16>) -> bool {
        let port_fits = match (self.port, port) {
            (Some(listener), Some(port)) => listener == port,
            _ => true,
        };
        let namespace_fits = match self.namespace.as_str() {
            "*" => true,
            "~" => false,
            name => name == namespace,
        };
        port_fits && namespace_fits && (self.host == "*" || hosts::overlaps(&self.host, host))
    }
}

/// Whether any entry of `egress` admits any of `hosts` (of `namespace`) on some port.
pub fn egress_admits_any(
    egress: &[EgressHost],
    namespace: &str,
    hosts: impl IntoIterator<Item = impl AsRef<str>>,
) -> bool {
    hosts.into_iter().any(|host| egress.iter().any(|entry| entry.admits(namespace, host.as_ref(), None)))
}

/// The egress hosts of `sidecar` for a workload in `workload_namespace`; `None` when the
/// Sidecar lists no egress, which leaves everything exported to the namespace visible.
///
/// `.` is the workload's namespace: for a Sidecar of its own namespace that is the Sidecar's,
/// and the root namespace's default Sidecar means each workload's own namespace by it.
pub fn sidecar_egress(sidecar: &Sidecar, workload_namespace: &str, domain: &str) -> Option<Vec<EgressHost>> {
    if sidecar.spec.egress.is_empty() {
        return None;
    }
    let entries = sidecar.spec.egress.iter().flat_map(|listener| {
        let port = listener.port.as_ref().and_then(|port| u16::try_from(port.number).ok());
        listener.namespaced_hosts().map(move |(namespace, host)| {
            let namespace = if namespace == "." { workload_namespace.to_string() } else { namespace.to_string() };
            let host = if host == "*" || namespace == "*" || namespace == "~" {
                host.to_ascii_lowercase()
            } else {
                hosts::fully_qualify(host, &namespace, domain)
            };
            EgressHost { port, namespace, host }
        })
    });
    Some(entries.collect())
}

/// The Sidecar for a workload, as Istio chooses: one in its namespace whose selector matches
/// its labels, else its namespace's Sidecar without selector, else the root namespace's; the
/// oldest when several qualify.
pub fn select_sidecar<'a>(
    sidecars: impl IntoIterator<Item = &'a Sidecar>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    root_namespace: &str,
) -> Option<&'a Sidecar> {
    let mut sidecars: Vec<&Sidecar> = sidecars.into_iter().collect();
    sidecars.sort_by_key(|sidecar| age_key(&sidecar.metadata));
    let first = |in_namespace: &str, selected: &dyn Fn(&Sidecar) -> bool| {
        sidecars.iter().copied().find(|sidecar| {
            sidecar.metadata.namespace.as_deref().unwrap_or("default") == in_namespace && selected(sidecar)
        })
    };
    let selects_workload =
        |sidecar: &Sidecar| sidecar.spec.workload_selector.as_ref().is_some_and(|selector| selector.matches(labels));
    let namespace_wide = |sidecar: &Sidecar| sidecar.spec.workload_selector.is_none();
    first(namespace, &selects_workload)
        .or_else(|| first(namespace, &namespace_wide))
        .or_else(|| first(root_namespace, &namespace_wide))
}
