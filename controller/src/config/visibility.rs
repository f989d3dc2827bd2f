//! Who sees what: one proxy's view of the world, as pure functions.
//!
//! A proxy sees its own namespace's resources, what other namespaces export to it, the root
//! namespace's workload policy, and (a sidecar with a `Sidecar` resource) only the hosts that
//! resource's egress lists, plus the services it serves itself. The Sidecar rules are the
//! proxy compiler's own (`common::compile::egress`): sending no more than that keeps pushes
//! small, and sending no less keeps the proxy's compile identical to one over everything.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use common::compile::ProxyKind;
use common::compile::egress::{EgressHost, egress_admits_any, select_sidecar, sidecar_egress};

use super::world::{Audience, Entry, World};

/// What the controller knows about a connected proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyInfo {
    /// Sidecar or gateway.
    pub kind: ProxyKind,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod_name: String,
    /// The pod's service account.
    pub service_account: String,
    /// The pod's labels (Sidecar selection).
    pub labels: BTreeMap<String, String>,
    /// The pod's IPs (the services it serves).
    pub ips: Vec<IpAddr>,
}

impl ProxyInfo {
    /// Fills in labels, IPs and the service account from the pod the registry knows, where
    /// the proxy did not say them itself.
    pub fn completed(mut self, world: &World) -> Self {
        if let Some(pod) = world.workloads.get(&format!("{}/{}", self.namespace, self.pod_name)) {
            if self.labels.is_empty() {
                self.labels = pod.labels.clone();
            }
            if self.ips.is_empty() {
                self.ips = pod.ips.clone();
            }
            if self.service_account.is_empty() {
                self.service_account = pod.service_account.clone();
            }
        }
        self
    }
}

/// A proxy's view: who it is and, when a Sidecar narrows it, the egress hosts it may reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyView {
    /// Sidecar or gateway.
    pub kind: ProxyKind,
    /// The proxy's namespace.
    pub namespace: String,
    /// The mesh's root namespace.
    pub root_namespace: String,
    /// The proxy's IPs.
    pub ips: Vec<IpAddr>,
    /// The egress hosts of the Sidecar that applies; `None` without one (or one without
    /// egress), meaning everything exported to the namespace.
    pub egress: Option<Arc<[EgressHost]>>,
}

impl ProxyView {
    /// The view of `proxy` in `world`, with the Sidecar Istio would pick for it: one of its
    /// namespace selecting it, else its namespace's default, else the root namespace's; the
    /// oldest when several qualify.
    pub fn new(proxy: &ProxyInfo, world: &World, root_namespace: &str) -> Self {
        let sidecar = match proxy.kind {
            ProxyKind::Sidecar => select_sidecar(
                world.sidecars.iter().map(|sidecar| &**sidecar),
                &proxy.namespace,
                &proxy.labels,
                root_namespace,
            ),
            ProxyKind::Gateway => None,
        };
        let egress =
            sidecar.and_then(|sidecar| sidecar_egress(sidecar, &proxy.namespace, &world.domain)).map(Arc::from);
        ProxyView {
            kind: proxy.kind,
            namespace: proxy.namespace.clone(),
            root_namespace: root_namespace.to_string(),
            ips: proxy.ips.clone(),
            egress,
        }
    }

    /// Whether this proxy may see `entry`.
    pub fn sees(&self, entry: &Entry) -> bool {
        match &entry.audience {
            Audience::Exported { namespace, export_to, hosts, sidecars, served_by } => {
                if served_by.iter().any(|ip| self.ips.contains(ip)) {
                    return true;
                }
                if self.kind == ProxyKind::Sidecar && !sidecars {
                    return false;
                }
                export_to.is_visible(namespace, &self.namespace)
                    && self.egress.as_ref().is_none_or(|egress| egress_admits_any(egress, namespace, hosts))
            }
            Audience::Local { namespace, sidecars_only } => {
                (!sidecars_only || self.kind == ProxyKind::Sidecar)
                    && (*namespace == self.namespace || *namespace == self.root_namespace)
            }
            Audience::Gateways => self.kind == ProxyKind::Gateway,
        }
    }
}
