//! What one proxy sees: the services, VirtualServices and DestinationRules exported to its
//! namespace and allowed by its Sidecar resource, and which VirtualService owns each host.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::egress::{EgressHost, egress_admits_any, select_sidecar, sidecar_egress};
use super::tables::{OutboundMode, OutboundPolicy};
use super::{CompileDiagnostic, DiagnosticCode, ProxyIdentity, ProxyKind, age_key};
use crate::api::networking::destination_rule::DestinationRule;
use crate::api::networking::sidecar::{OutboundTrafficMode, Sidecar};
use crate::api::networking::virtual_service::{MESH_GATEWAY, VirtualService};
use crate::hosts;
use crate::registry::{ExportTo, Registry, Service};
use crate::resource::Resource;
use crate::validate::{FieldPath, ObjectRef, Severity};

/// The view of one proxy.
pub(super) struct Scope<'a> {
    pub registry: &'a Registry,
    pub proxy: &'a ProxyIdentity,
    sidecar: Option<&'a Sidecar>,
    egress: Option<Vec<EgressHost>>,
    /// Visible services, by hostname.
    pub services: Vec<&'a Arc<Service>>,
    /// VirtualServices that may apply to this proxy (for a sidecar: those bound to `mesh`),
    /// oldest first.
    pub virtual_services: Vec<&'a VirtualService>,
    /// DestinationRules exported to this proxy, oldest first.
    pub destination_rules: Vec<&'a DestinationRule>,
    exact_claims: BTreeMap<String, usize>,
    wildcard_claims: Vec<(String, usize)>,
}

impl<'a> Scope<'a> {
    pub fn new(
        resources: &[&'a Resource],
        registry: &'a Registry,
        proxy: &'a ProxyIdentity,
        diagnostics: &mut Vec<CompileDiagnostic>,
    ) -> Self {
        // Sidecar resources shape sidecars only; a gateway sees everything exported to it.
        let sidecar = match proxy.kind {
            ProxyKind::Sidecar => select_sidecar(
                resources.iter().filter_map(|resource| match resource {
                    Resource::Sidecar(sidecar) => Some(sidecar),
                    _ => None,
                }),
                &proxy.namespace,
                &proxy.labels,
                &proxy.root_namespace,
            ),
            ProxyKind::Gateway => None,
        };
        let egress = sidecar.and_then(|sidecar| sidecar_egress(sidecar, &proxy.namespace, registry.domain()));
        let mut scope = Scope {
            registry,
            proxy,
            sidecar,
            egress,
            services: Vec::new(),
            virtual_services: Vec::new(),
            destination_rules: Vec::new(),
            exact_claims: BTreeMap::new(),
            wildcard_claims: Vec::new(),
        };
        scope.services = registry.services().filter(|service| scope.sees_service(service)).collect();
        let mut virtual_services: Vec<&VirtualService> = resources
            .iter()
            .filter_map(|resource| match resource {
                Resource::VirtualService(vs) => Some(vs),
                _ => None,
            })
            .filter(|vs| scope.sees_virtual_service(vs))
            .collect();
        virtual_services.sort_by_key(|vs| age_key(&vs.metadata));
        scope.virtual_services = virtual_services;
        let mut destination_rules: Vec<&DestinationRule> = resources
            .iter()
            .filter_map(|resource| match resource {
                Resource::DestinationRule(dr) => Some(dr),
                _ => None,
            })
            .filter(|dr| ExportTo(dr.spec.export_to.clone()).is_visible(namespace_of(&dr.metadata), &proxy.namespace))
            .collect();
        destination_rules.sort_by_key(|dr| age_key(&dr.metadata));
        scope.destination_rules = destination_rules;
        if proxy.kind == ProxyKind::Sidecar {
            scope.claim_hosts(diagnostics);
        }
        scope
    }

    /// Whether the proxy sees `service` on any port.
    pub fn sees_service(&self, service: &Service) -> bool {
        service.export_to.is_visible(&service.namespace, &self.proxy.namespace) && self.egress_admits(service, None)
    }

    /// Whether the Sidecar (if any) lets the proxy reach `service` on `port`.
    pub fn egress_admits(&self, service: &Service, port: Option<u16>) -> bool {
        self.egress
            .as_ref()
            .is_none_or(|egress| egress.iter().any(|entry| entry.admits(&service.namespace, &service.hostname, port)))
    }

    /// A VirtualService applies to this sidecar when it is exported to the proxy's namespace,
    /// bound to `mesh` (the default), and (with a Sidecar) one of its hosts is admitted.
    fn sees_virtual_service(&self, vs: &VirtualService) -> bool {
        let namespace = namespace_of(&vs.metadata);
        ExportTo(vs.spec.export_to.clone()).is_visible(namespace, &self.proxy.namespace)
            && (self.proxy.kind == ProxyKind::Gateway || vs.spec.effective_gateways().contains(&MESH_GATEWAY))
            && self.egress.as_ref().is_none_or(|egress| {
                let hosts =
                    vs.spec.hosts.iter().map(|host| hosts::fully_qualify(host, namespace, self.registry.domain()));
                egress_admits_any(egress, namespace, hosts)
            })
    }

    /// Gives each host to the oldest VirtualService that names it, warning about the others.
    fn claim_hosts(&mut self, diagnostics: &mut Vec<CompileDiagnostic>) {
        let mut owners: BTreeMap<String, usize> = BTreeMap::new();
        for (index, vs) in self.virtual_services.iter().enumerate() {
            let namespace = namespace_of(&vs.metadata);
            for (host_index, host) in vs.spec.hosts.iter().enumerate() {
                let host = hosts::fully_qualify(host, namespace, self.registry.domain());
                if let Some(&winner) = owners.get(&host) {
                    if winner != index {
                        diagnostics.push(CompileDiagnostic::new(
                            DiagnosticCode::HostConflict,
                            Severity::Warning,
                            &object_ref(vs),
                            &FieldPath::spec().field("hosts").index(host_index),
                            format!(
                                "host {host} is also claimed by {}, which is older and wins; these routes are \
                                 not used for {host}. Merge the routes into one VirtualService",
                                object_ref(self.virtual_services[winner])
                            ),
                        ));
                    }
                    continue;
                }
                owners.insert(host.clone(), index);
                if !self.host_has_service(&host) {
                    diagnostics.push(CompileDiagnostic::new(
                        DiagnosticCode::HostWithoutService,
                        Severity::Warning,
                        &object_ref(vs),
                        &FieldPath::spec().field("hosts").index(host_index),
                        format!(
                            "host {host} matches no service visible to proxies in namespace {}; add a Service or \
                             ServiceEntry for it, or check exportTo",
                            self.proxy.namespace
                        ),
                    ));
                }
                if host.starts_with('*') {
                    self.wildcard_claims.push((host, index));
                } else {
                    self.exact_claims.insert(host, index);
                }
            }
        }
        // The most specific (longest) wildcard wins, as Istio picks the closest host match.
        self.wildcard_claims.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
    }

    /// Whether some visible service has `host`, is covered by it (a wildcard), or covers it.
    fn host_has_service(&self, host: &str) -> bool {
        if !host.starts_with('*') && self.registry.service(host).is_some_and(|service| self.sees_service(service)) {
            return true;
        }
        self.services
            .iter()
            .filter(|service| host.starts_with('*') || service.hostname.starts_with('*'))
            .any(|service| hosts::overlaps(host, &service.hostname))
    }

    /// The VirtualService that routes `host`: the one naming it exactly, else the one with the
    /// most specific wildcard covering it.
    pub fn virtual_service_for(&self, host: &str) -> Option<&'a VirtualService> {
        let index = self.exact_claims.get(host).copied().or_else(|| {
            self.wildcard_claims
                .iter()
                .find(|(pattern, _)| hosts::wildcard_matches(pattern, host))
                .map(|(_, index)| *index)
        })?;
        Some(self.virtual_services[index])
    }

    /// The outbound traffic policy: the Sidecar's, or ALLOW_ANY.
    pub fn outbound_policy(&self) -> OutboundPolicy {
        let mode = self
            .sidecar
            .and_then(|sidecar| sidecar.spec.outbound_traffic_policy.as_ref())
            .and_then(|policy| policy.mode)
            .map(|mode| match mode {
                OutboundTrafficMode::RegistryOnly => OutboundMode::RegistryOnly,
                OutboundTrafficMode::AllowAny => OutboundMode::AllowAny,
            })
            .unwrap_or_default();
        OutboundPolicy {
            mode,
            sidecar: self.sidecar.map(|sidecar| {
                ObjectRef::new(
                    "Sidecar",
                    namespace_of(&sidecar.metadata),
                    sidecar.metadata.name.clone().unwrap_or_default(),
                )
            }),
        }
    }
}

/// A resource's namespace, `default` when unset.
pub(super) fn namespace_of(meta: &kube::api::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// Names a VirtualService for diagnostics and route origins.
pub(super) fn object_ref(vs: &VirtualService) -> ObjectRef {
    ObjectRef::new("VirtualService", namespace_of(&vs.metadata), vs.metadata.name.clone().unwrap_or_default())
}
