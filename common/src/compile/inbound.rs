//! The inbound side of a sidecar: the workload's own ports, the mutual TLS mode its
//! PeerAuthentications give, and the AuthorizationPolicies that apply to it. Enforcement is the
//! proxy's; this only selects and orders the policies as Istio does.

use std::collections::BTreeMap;

use kube::api::ObjectMeta;
use serde::Serialize;

use super::tables::display_option;
use super::{ProxyIdentity, age_key};
use crate::api::WorkloadSelector;
use crate::api::security::authorization_policy::{Action, AuthorizationPolicySpec};
use crate::api::security::peer_authentication::{MtlsMode, PeerAuthentication};
use crate::api::security::request_authentication::RequestAuthenticationSpec;
use crate::registry::{Protocol, Registry};
use crate::resource::Resource;
use crate::validate::ObjectRef;

/// What the proxy accepts for its workload.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct InboundTables {
    /// The workload's ports (the target ports of the services it serves), sorted by port.
    pub ports: Vec<InboundPort>,
    /// The mode on ports without a port-level setting: never `Unset` (PERMISSIVE by default).
    pub mtls: MtlsMode,
    /// Port-level modes from the workload's own PeerAuthentication, by container port.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub port_mtls: BTreeMap<u16, MtlsMode>,
    /// The PeerAuthentications in force, most specific first (workload, namespace, mesh).
    #[serde(serialize_with = "display_list")]
    pub peer_authentications: Vec<ObjectRef>,
    /// The AuthorizationPolicies that apply, by action.
    pub authorization: AuthorizationTables,
    /// The RequestAuthentications that apply (which JWTs are accepted), oldest first; chosen
    /// like AuthorizationPolicies.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_authentications: Vec<AppliedRequestAuthentication>,
}

/// A RequestAuthentication selected for the workload.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AppliedRequestAuthentication {
    /// The resource.
    #[serde(serialize_with = "display_option")]
    pub origin: Option<ObjectRef>,
    /// Its spec as written; JWTs are checked by the proxy.
    pub spec: RequestAuthenticationSpec,
}

impl InboundTables {
    /// The mutual TLS mode on container port `port`.
    pub fn mtls_for(&self, port: u16) -> MtlsMode {
        self.port_mtls.get(&port).copied().unwrap_or(self.mtls)
    }
}

/// One port the workload serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InboundPort {
    /// The container port traffic arrives on.
    pub port: u16,
    /// What it speaks, from the service port that targets it (the first, if several do).
    pub protocol: Protocol,
    /// The services that send traffic to this port (`host:port`).
    pub services: Vec<String>,
}

/// The AuthorizationPolicies that apply to the workload, in Istio's evaluation order: CUSTOM,
/// then DENY, then ALLOW (AUDIT only marks requests). Within each list, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AuthorizationTables {
    /// Checked first, by an external authorizer.
    pub custom: Vec<AppliedAuthorizationPolicy>,
    /// Any match denies.
    pub deny: Vec<AppliedAuthorizationPolicy>,
    /// If any apply, a request must match one.
    pub allow: Vec<AppliedAuthorizationPolicy>,
    /// Matches are logged for audit.
    pub audit: Vec<AppliedAuthorizationPolicy>,
}

/// An AuthorizationPolicy selected for the workload.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AppliedAuthorizationPolicy {
    /// The policy.
    #[serde(serialize_with = "display_option")]
    pub origin: Option<ObjectRef>,
    /// Its spec as written; rules are evaluated by the proxy.
    pub spec: AuthorizationPolicySpec,
}

pub(super) fn build(resources: &[&Resource], registry: &Registry, proxy: &ProxyIdentity) -> InboundTables {
    let mut tables = InboundTables { ports: ports(registry, proxy), ..InboundTables::default() };
    peer_authentication(resources, proxy, &mut tables);
    tables.authorization = authorization(resources, proxy);
    tables.request_authentications = request_authentications(resources, proxy);
    tables
}

fn ports(registry: &Registry, proxy: &ProxyIdentity) -> Vec<InboundPort> {
    let mut ports: BTreeMap<u16, InboundPort> = BTreeMap::new();
    for (service, endpoint) in registry.services_of(&proxy.ips) {
        for service_port in &service.ports {
            let Some(target) = endpoint.port_for(service_port.port) else { continue };
            let entry = ports.entry(target).or_insert_with(|| InboundPort {
                port: target,
                protocol: service_port.protocol,
                services: Vec::new(),
            });
            entry.services.push(format!("{}:{}", service.hostname, service_port.port));
        }
    }
    ports.into_values().collect()
}

/// Workload policy (selector matches) over namespace policy over the mesh policy (root
/// namespace); `UNSET` inherits from the next level; PERMISSIVE when nothing says otherwise.
fn peer_authentication(resources: &[&Resource], proxy: &ProxyIdentity, tables: &mut InboundTables) {
    let mut policies: Vec<&PeerAuthentication> = resources
        .iter()
        .filter_map(|resource| match resource {
            Resource::PeerAuthentication(policy) => Some(policy),
            _ => None,
        })
        .collect();
    policies.sort_by_key(|policy| age_key(&policy.metadata));
    let in_namespace = |namespace: &str, workload_level: bool| {
        policies.iter().copied().find(|policy| {
            policy.metadata.namespace.as_deref().unwrap_or("default") == namespace
                && if workload_level {
                    !policy.spec.is_namespace_wide()
                        && policy.spec.selector.as_ref().is_some_and(|selector| selector.matches(&proxy.labels))
                } else {
                    policy.spec.is_namespace_wide()
                }
        })
    };
    let workload = in_namespace(&proxy.namespace, true);
    let namespace = in_namespace(&proxy.namespace, false);
    let mesh = if proxy.namespace == proxy.root_namespace { None } else { in_namespace(&proxy.root_namespace, false) };
    let levels: Vec<&PeerAuthentication> = [workload, namespace, mesh].into_iter().flatten().collect();
    tables.mtls = levels
        .iter()
        .map(|policy| policy.spec.mtls.as_ref().map(|mtls| mtls.mode).unwrap_or_default())
        .find(|mode| !mode.is_unset())
        .unwrap_or(MtlsMode::Permissive);
    if let Some(workload) = workload {
        for (port, setting) in &workload.spec.port_level_mtls {
            if let Ok(port) = u16::try_from(*port) {
                let mode = if setting.mode.is_unset() { tables.mtls } else { setting.mode };
                tables.port_mtls.insert(port, mode);
            }
        }
    }
    tables.peer_authentications = levels
        .iter()
        .map(|policy| {
            ObjectRef::new(
                "PeerAuthentication",
                policy.metadata.namespace.clone().unwrap_or_default(),
                policy.metadata.name.clone().unwrap_or_default(),
            )
        })
        .collect();
}

/// Policies of the root namespace apply mesh-wide (to the workloads their selector picks, or
/// to all), those of the proxy's namespace to its workloads. Policies attached by `targetRef`
/// are not applied yet (validation reports them as unsupported).
fn authorization(resources: &[&Resource], proxy: &ProxyIdentity) -> AuthorizationTables {
    let policies = applicable(resources, proxy, |resource| match resource {
        Resource::AuthorizationPolicy(policy) => Some(&policy.spec),
        _ => None,
    });
    let mut tables = AuthorizationTables::default();
    for (origin, spec) in policies {
        let applied = AppliedAuthorizationPolicy { origin: Some(origin), spec: spec.clone() };
        match spec.action() {
            Action::Custom => tables.custom.push(applied),
            Action::Deny => tables.deny.push(applied),
            Action::Allow => tables.allow.push(applied),
            Action::Audit => tables.audit.push(applied),
        }
    }
    tables
}

fn request_authentications(resources: &[&Resource], proxy: &ProxyIdentity) -> Vec<AppliedRequestAuthentication> {
    let selected = applicable(resources, proxy, |resource| match resource {
        Resource::RequestAuthentication(policy) => Some(&policy.spec),
        _ => None,
    });
    selected
        .into_iter()
        .map(|(origin, spec)| AppliedRequestAuthentication { origin: Some(origin), spec: spec.clone() })
        .collect()
}

/// How a security policy names the workloads it is for.
trait Attachment {
    fn selector(&self) -> Option<&WorkloadSelector>;
    /// Attached by `targetRef`/`targetRefs` rather than by selector.
    fn targeted(&self) -> bool;
}

impl Attachment for AuthorizationPolicySpec {
    fn selector(&self) -> Option<&WorkloadSelector> {
        self.selector.as_ref()
    }
    fn targeted(&self) -> bool {
        self.target_ref.is_some() || !self.target_refs.is_empty()
    }
}

impl Attachment for RequestAuthenticationSpec {
    fn selector(&self) -> Option<&WorkloadSelector> {
        self.selector.as_ref()
    }
    fn targeted(&self) -> bool {
        self.target_ref.is_some() || !self.target_refs.is_empty()
    }
}

/// The policies of one kind (the specs `pick` finds) that reach the proxy's workload, oldest
/// first as Istio orders them, each with the object it came from.
fn applicable<'a, S: Attachment>(
    resources: &[&'a Resource],
    proxy: &ProxyIdentity,
    pick: impl Fn(&'a Resource) -> Option<&'a S>,
) -> Vec<(ObjectRef, &'a S)> {
    let mut selected: Vec<(&Resource, &S)> = resources
        .iter()
        .filter_map(|resource| pick(resource).map(|spec| (*resource, spec)))
        .filter(|(resource, spec)| applies_to(resource.metadata(), spec.selector(), spec.targeted(), proxy))
        .collect();
    selected.sort_by_key(|(resource, _)| age_key(resource.metadata()));
    selected.into_iter().map(|(resource, spec)| (resource.object_ref(), spec)).collect()
}

/// Whether a security policy reaches the proxy's workload: it lives in the workload's namespace
/// or the root namespace (which makes it mesh-wide), and its selector, if any, matches. Policies
/// attached by `targetRef` are not applied yet (validation reports them as unsupported).
fn applies_to(meta: &ObjectMeta, selector: Option<&WorkloadSelector>, targeted: bool, proxy: &ProxyIdentity) -> bool {
    let namespace = meta.namespace.as_deref().unwrap_or("default");
    (namespace == proxy.namespace || namespace == proxy.root_namespace)
        && !targeted
        && selector.is_none_or(|selector| selector.matches(&proxy.labels))
}

fn display_list<S: serde::Serializer>(values: &[ObjectRef], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(values.iter().map(ToString::to_string))
}
