//! Clusters: a destination (host, subset, port) with its endpoints and the DestinationRule
//! policy that applies, built once per key however many routes name it.

use std::collections::{BTreeMap, BTreeSet};

use super::scope::{Scope, namespace_of};
use super::tables::{Cluster, ClusterEndpoint, ClusterKey, ClusterStatus};
use super::{CompileDiagnostic, DiagnosticCode};
use crate::api::networking::destination_rule::{DestinationRule, TlsMode, TrafficPolicy};
use crate::hosts;
use crate::registry::{Endpoint, MeshLocation, Protocol, Registry, Resolution, Service, TLS_MODE_LABEL};
use crate::validate::{FieldPath, ObjectRef, Severity};

/// Where a route names a destination, for diagnostics.
pub(super) struct Referrer<'r> {
    pub object: &'r ObjectRef,
    pub field: FieldPath,
}

/// Builds clusters on demand and remembers them.
pub(super) struct ClusterBuilder<'a, 's> {
    registry: &'a Registry,
    scope: &'s Scope<'a>,
    /// Visible DestinationRules with their hosts fully qualified, oldest first.
    rules: Vec<(&'a DestinationRule, String)>,
    /// Indexes into `rules` by exact host, so a lookup does not scan every rule.
    rules_by_host: BTreeMap<String, Vec<usize>>,
    /// Indexes into `rules` of the rules with wildcard hosts.
    wildcard_rules: Vec<usize>,
    clusters: BTreeMap<ClusterKey, Cluster>,
    diagnostics: Vec<CompileDiagnostic>,
    reported: BTreeSet<(ObjectRef, String)>,
}

impl<'a, 's> ClusterBuilder<'a, 's> {
    pub fn new(registry: &'a Registry, scope: &'s Scope<'a>) -> Self {
        let rules = scope
            .destination_rules
            .iter()
            .filter(|rule| {
                // A rule with a workloadSelector applies only to the selected clients of its own
                // namespace.
                rule.spec.workload_selector.as_ref().is_none_or(|selector| {
                    namespace_of(&rule.metadata) == scope.proxy.namespace && selector.matches(&scope.proxy.labels)
                })
            })
            .map(|rule| (*rule, hosts::fully_qualify(&rule.spec.host, namespace_of(&rule.metadata), registry.domain())))
            .collect::<Vec<(&DestinationRule, String)>>();
        let mut rules_by_host: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut wildcard_rules = Vec::new();
        for (index, (_, host)) in rules.iter().enumerate() {
            if host.starts_with('*') {
                wildcard_rules.push(index);
            } else {
                rules_by_host.entry(host.clone()).or_default().push(index);
            }
        }
        Self {
            registry,
            scope,
            rules,
            rules_by_host,
            wildcard_rules,
            clusters: BTreeMap::new(),
            diagnostics: Vec::new(),
            reported: BTreeSet::new(),
        }
    }

    /// The DestinationRule for `host`, searched as Istio does: the proxy's namespace, then the
    /// service's namespace, then the root namespace, then any other namespace that exports one.
    /// Within a namespace an exact host beats a wildcard, a longer wildcard a shorter one, a
    /// rule with a workloadSelector one without, and then the oldest wins.
    pub fn destination_rule(&self, host: &str, service_namespace: Option<&str>) -> Option<&'a DestinationRule> {
        let mut indexes: Vec<usize> = self.rules_by_host.get(host).cloned().unwrap_or_default();
        indexes.extend(self.wildcard_rules.iter().filter(|index| {
            let pattern = &self.rules[**index].1;
            pattern == host || hosts::wildcard_matches(pattern, host)
        }));
        // Oldest first, so ties below go to the oldest rule.
        indexes.sort_unstable();
        let candidates: Vec<&(&DestinationRule, String)> = indexes.iter().map(|index| &self.rules[*index]).collect();
        let best_in = |namespace: &str| {
            candidates
                .iter()
                .filter(|(rule, _)| namespace_of(&rule.metadata) == namespace)
                .min_by_key(|(rule, pattern)| {
                    (pattern != host, usize::MAX - pattern.len(), rule.spec.workload_selector.is_none())
                })
                .map(|(rule, _)| *rule)
        };
        let proxy = &self.scope.proxy;
        best_in(&proxy.namespace)
            .or_else(|| service_namespace.and_then(best_in))
            .or_else(|| best_in(&proxy.root_namespace))
            .or_else(|| {
                candidates
                    .iter()
                    .min_by_key(|(_, pattern)| (pattern != host, usize::MAX - pattern.len()))
                    .map(|(rule, _)| *rule)
            })
    }

    /// The key of the cluster for `host` (fully qualified), `subset` (may be empty) and
    /// `port`, building the cluster the first time. `referrer` names the route, for the
    /// diagnostics a missing host or subset gives.
    pub fn request(&mut self, host: &str, subset: &str, port: u16, referrer: Option<Referrer<'_>>) -> ClusterKey {
        let key = ClusterKey::new(host, subset, port);
        if !self.clusters.contains_key(&key) {
            let cluster = self.build(&key);
            self.clusters.insert(key.clone(), cluster);
        }
        if let Some(referrer) = referrer {
            let message = self.problem(&self.clusters[&key], &referrer.field);
            if let Some((code, field, message)) = message
                && self.reported.insert((referrer.object.clone(), field.to_string()))
            {
                self.diagnostics.push(CompileDiagnostic::new(
                    code,
                    Severity::Warning,
                    referrer.object,
                    &field,
                    message,
                ));
            }
        }
        key
    }

    /// What is wrong with routing to `cluster`, for a route at `field`: a missing subset, host
    /// or port, with the field to blame and what would fix it.
    fn problem(&self, cluster: &Cluster, field: &FieldPath) -> Option<(DiagnosticCode, FieldPath, String)> {
        let ClusterKey { host, subset, port } = &cluster.key;
        match cluster.status {
            ClusterStatus::SubsetNotFound => Some((
                DiagnosticCode::SubsetNotFound,
                field.field("subset"),
                format!(
                    "subset_not_found {}/{subset}: no DestinationRule visible to namespace {} defines subset \
                     {subset:?} for {host}; requests routed here get 503 until one does",
                    cluster.service_name, self.scope.proxy.namespace
                ),
            )),
            ClusterStatus::UnknownHost => Some((
                DiagnosticCode::UnknownDestination,
                field.field("host"),
                format!(
                    "destination {host} is not a service visible to namespace {}; requests routed here get 503 \
                     (no_healthy_upstream). Check the host name, the service's exportTo, or add a ServiceEntry",
                    self.scope.proxy.namespace
                ),
            )),
            ClusterStatus::Known => {
                self.registry.service(host).filter(|service| service.port(*port).is_none()).map(|service| {
                    let ports: Vec<String> = service.ports.iter().map(|p| p.port.to_string()).collect();
                    (
                        DiagnosticCode::UnknownDestination,
                        field.field("port"),
                        format!(
                            "{host} has no port {port}; requests routed here get 503 (no_healthy_upstream). \
                             Give destination.port.number, one of: {}",
                            ports.join(", ")
                        ),
                    )
                })
            }
        }
    }

    fn build(&self, key: &ClusterKey) -> Cluster {
        let service = self
            .registry
            .service(&key.host)
            .filter(|service| self.scope.sees_service(service) && self.scope.egress_admits(service, Some(key.port)));
        let rule = self.destination_rule(&key.host, service.map(|service| service.namespace.as_str()));
        let subset = if key.subset.is_empty() { None } else { rule.and_then(|rule| rule.spec.subset(&key.subset)) };
        let subset_missing = !key.subset.is_empty() && subset.is_none();
        let policy = rule.map(|rule| rule.spec.policy_for(subset.map(|s| s.name.as_str()), Some(key.port.into())));
        let Some(service) = service else {
            return Cluster {
                key: key.clone(),
                status: ClusterStatus::UnknownHost,
                protocol: Protocol::Unknown,
                location: MeshLocation::MeshExternal,
                resolution: Resolution::Passthrough,
                endpoints: Vec::new(),
                policy: policy.unwrap_or_default(),
                destination_rule: rule.map(rule_ref),
                service_name: key.host.clone(),
            };
        };
        let endpoints = if subset_missing {
            Vec::new()
        } else {
            self.registry
                .ready_endpoints(&service.hostname, key.port)
                .filter(|endpoint| subset.is_none_or(|subset| subset.matches(&endpoint.labels)))
                .filter_map(|endpoint| {
                    Some(ClusterEndpoint {
                        address: endpoint.address.clone(),
                        port: endpoint.port_for(key.port)?,
                        weight: endpoint.weight,
                        locality: endpoint.locality.clone(),
                        service_account: endpoint.service_account.clone(),
                        mtls_identity: mtls_identity(&policy, service, endpoint, &self.scope.proxy.trust_domain),
                    })
                })
                .collect()
        };
        Cluster {
            key: key.clone(),
            status: if subset_missing { ClusterStatus::SubsetNotFound } else { ClusterStatus::Known },
            protocol: service.port(key.port).map(|port| port.protocol).unwrap_or(Protocol::Unknown),
            location: service.location,
            resolution: service.resolution,
            endpoints,
            policy: policy.unwrap_or_default(),
            destination_rule: rule.map(rule_ref),
            service_name: service.name.clone(),
        }
    }

    /// The clusters built, and the diagnostics found building them.
    pub fn finish(self) -> (BTreeMap<ClusterKey, Cluster>, Vec<CompileDiagnostic>) {
        (self.clusters, self.diagnostics)
    }
}

/// Whether the proxy speaks mesh mTLS to `endpoint`, and the identity to expect: Istio's
/// rules. `tls.mode` of the DestinationRule decides when set (`ISTIO_MUTUAL` yes, anything
/// else no: `SIMPLE` and `MUTUAL` originate TLS with the user's own certificates, which is
/// not mesh mTLS); otherwise auto mTLS, for endpoints with a sidecar in a mesh-internal service.
fn mtls_identity(
    policy: &Option<TrafficPolicy>,
    service: &Service,
    endpoint: &Endpoint,
    trust_domain: &str,
) -> Option<String> {
    let mode = policy.as_ref().and_then(|p| p.tls.as_ref()).and_then(|tls| tls.mode);
    let mutual = match mode {
        Some(mode) => mode == TlsMode::IstioMutual,
        None => {
            service.location == MeshLocation::MeshInternal
                && endpoint.labels.get(TLS_MODE_LABEL).is_some_and(|mode| mode == "istio")
        }
    };
    if !mutual {
        return None;
    }
    let namespace = endpoint.workload.as_ref().map_or(service.namespace.as_str(), |w| w.namespace.as_str());
    Some(match endpoint.service_account.as_str() {
        "" => String::new(),
        account => format!("spiffe://{trust_domain}/ns/{namespace}/sa/{account}"),
    })
}

fn rule_ref(rule: &DestinationRule) -> ObjectRef {
    ObjectRef::new("DestinationRule", namespace_of(&rule.metadata), rule.metadata.name.clone().unwrap_or_default())
}
