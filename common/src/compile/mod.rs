//! The compiler: resources + registry + the proxy's identity → the tables the proxy routes by.
//!
//! [`compile`] is a pure function. The controller forwards resources and registry; every proxy
//! compiles its own view here, so the rules of Istio that decide what a proxy does live in one
//! place:
//!
//! - `scope`: what this proxy may see (exportTo, the Sidecar resource's egress hosts) and which
//!   VirtualService owns each host (the oldest, on conflict);
//! - `routes`: VirtualService routes (first match wins, in the order written), default routes,
//!   virtual hosts and listeners;
//! - `clusters`: destinations as (host, subset, port) with endpoints and DestinationRule policy;
//! - `inbound`: the proxy's own ports, PeerAuthentication mode and AuthorizationPolicies.
//!
//! Invalid resources are skipped with their validation errors and never affect the others.
//!
//! How the data path reads the result ([`ProxyTables`]): a captured outbound connection to
//! `ip:port` finds its listener with [`ProxyTables::listener`] (none: apply
//! [`ProxyTables::outbound_policy`]) and its host with
//! [`OutboundListener::virtual_host_for_address`]. HTTP requests pick the host by authority
//! ([`OutboundListener::virtual_host_for_authority`]) and the route with
//! [`VirtualHost::route_request`]; TLS and TCP connections with
//! [`VirtualHost::route_connection`]. A forward picks a destination by cumulative weight
//! ([`WeightedClusters::pick`]) and looks the [`Cluster`] up by key; a cluster that cannot take
//! traffic says why ([`Cluster::unavailable_reason`]). Inbound, [`InboundTables`] gives the
//! mTLS mode per port and the authorization policies in evaluation order.

mod clusters;
pub mod egress;
mod gateway;
mod inbound;
pub mod matching;
mod routes;
mod scope;
pub mod tables;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

pub use inbound::{
    AppliedAuthorizationPolicy, AppliedRequestAuthentication, AuthorizationTables, InboundPort, InboundTables,
};
pub use matching::{HttpRequestMatch, NamedMatch, RequestAttributes, ValueMatch};
pub use tables::*;

use crate::registry::Registry;
use crate::resource::Resource;
use crate::validate::{Diagnostic, FieldPath, ObjectRef, Severity, ValidationContext};

/// Istio's root namespace: mesh-wide Sidecars, PeerAuthentications, AuthorizationPolicies and
/// DestinationRules live here.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// What kind of proxy is compiled for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    /// A sidecar: outbound listeners for every visible service, routed by VirtualServices bound
    /// to `mesh`; Sidecar resources narrow its view.
    #[default]
    Sidecar,
    /// A gateway (ingress or egress): listeners for the servers of the Gateways that select it,
    /// routed by the VirtualServices bound to those Gateways.
    Gateway,
}

/// Who the proxy is: the workload it serves and the mesh settings it compiles under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyIdentity {
    /// Sidecar or gateway.
    pub kind: ProxyKind,
    /// The pod's namespace; resources' exportTo and Sidecars are judged against it.
    pub namespace: String,
    /// The pod's name.
    pub pod_name: String,
    /// The pod's service account, its mTLS identity.
    pub service_account: String,
    /// The pod's labels; selectors (Sidecar, PeerAuthentication, AuthorizationPolicy,
    /// DestinationRule) and `sourceLabels` matches are judged against them.
    pub labels: BTreeMap<String, String>,
    /// The pod's IPs; the services with an endpoint there are the workload's inbound services.
    pub ips: Vec<IpAddr>,
    /// The SPIFFE trust domain (`cluster.local`).
    pub trust_domain: String,
    /// The cluster's DNS suffix (`cluster.local`).
    pub dns_domain: String,
    /// The mesh's root namespace (`istio-system`).
    pub root_namespace: String,
}

impl ProxyIdentity {
    /// A sidecar of pod `pod_name` in `namespace` with Istio's default mesh settings; fill in
    /// labels, IPs and service account as known.
    pub fn sidecar(namespace: &str, pod_name: &str) -> Self {
        Self {
            kind: ProxyKind::Sidecar,
            namespace: namespace.to_string(),
            pod_name: pod_name.to_string(),
            service_account: "default".to_string(),
            labels: BTreeMap::new(),
            ips: Vec::new(),
            trust_domain: crate::hosts::DEFAULT_DOMAIN.to_string(),
            dns_domain: crate::hosts::DEFAULT_DOMAIN.to_string(),
            root_namespace: DEFAULT_ROOT_NAMESPACE.to_string(),
        }
    }

    /// A gateway proxy of pod `pod_name` in `namespace` with these labels (which Gateways
    /// select it by), with Istio's default mesh settings.
    pub fn gateway(namespace: &str, pod_name: &str, labels: BTreeMap<String, String>) -> Self {
        Self { kind: ProxyKind::Gateway, labels, ..Self::sidecar(namespace, pod_name) }
    }

    /// The sidecar of a workload the registry knows, with its labels, IPs and service account.
    pub fn for_workload(workload: &crate::registry::Workload) -> Self {
        Self {
            labels: workload.labels.clone(),
            ips: workload.ips.clone(),
            service_account: workload.service_account.clone(),
            ..Self::sidecar(&workload.reference.namespace, &workload.reference.name)
        }
    }

    /// The workload's SPIFFE identity: `spiffe://<trust domain>/ns/<namespace>/sa/<account>`.
    pub fn spiffe_id(&self) -> String {
        format!("spiffe://{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

/// What `compile` produces: the tables, and everything worth telling the operator.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The tables the proxy routes by.
    pub tables: ProxyTables,
    /// Problems found: invalid resources skipped, conflicts, missing subsets and hosts.
    pub diagnostics: Vec<CompileDiagnostic>,
}

/// What kind of problem a compile diagnostic reports, for tools and tests to tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DiagnosticCode {
    /// The resource failed validation and was skipped.
    InvalidResource,
    /// Two VirtualServices claim one host; the older wins.
    HostConflict,
    /// A route names a subset no visible DestinationRule defines (`subset_not_found`).
    SubsetNotFound,
    /// A route's destination host is not a service this proxy sees.
    UnknownDestination,
    /// A VirtualService host matches no service this proxy sees; its routes are not installed.
    HostWithoutService,
    /// A field the compiler does not act on yet.
    Unsupported,
}

/// One problem found while compiling, with what kind it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileDiagnostic {
    /// The kind.
    pub code: DiagnosticCode,
    /// The object, field and message.
    pub diagnostic: Diagnostic,
}

impl CompileDiagnostic {
    pub(crate) fn new(
        code: DiagnosticCode,
        severity: Severity,
        object: &ObjectRef,
        field: &FieldPath,
        message: impl Into<String>,
    ) -> Self {
        Self {
            code,
            diagnostic: Diagnostic { severity, object: object.clone(), field: field.clone(), message: message.into() },
        }
    }
}

impl fmt::Display for CompileDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.diagnostic)
    }
}

/// Compiles the tables of `proxy` from `resources` and `registry`. Pure: the same inputs
/// always give the same tables.
pub fn compile(resources: &[Resource], registry: &Registry, proxy: &ProxyIdentity) -> Compiled {
    let mut diagnostics = Vec::new();
    let context = ValidationContext { domain: proxy.dns_domain.clone(), ..ValidationContext::standalone() };
    let valid: Vec<&Resource> = resources
        .iter()
        .filter(|resource| {
            let report = resource.validate(&context);
            if !report.has_errors() {
                return true;
            }
            diagnostics.extend(report.of(Severity::Error).map(|diagnostic| CompileDiagnostic {
                code: DiagnosticCode::InvalidResource,
                diagnostic: diagnostic.clone(),
            }));
            false
        })
        .collect();
    let scope = scope::Scope::new(&valid, registry, proxy, &mut diagnostics);
    let mut clusters = clusters::ClusterBuilder::new(registry, &scope);
    let outbound = match proxy.kind {
        ProxyKind::Sidecar => routes::build_listeners(&scope, &mut clusters, &mut diagnostics),
        ProxyKind::Gateway => gateway::build_listeners(&valid, &scope, &mut clusters, &mut diagnostics),
    };
    let inbound = inbound::build(&valid, registry, proxy);
    let outbound_policy = scope.outbound_policy();
    let (clusters, cluster_diagnostics) = clusters.finish();
    diagnostics.extend(cluster_diagnostics);
    Compiled { tables: ProxyTables { outbound, clusters, inbound, outbound_policy }, diagnostics }
}

/// Orders resources oldest first, as Istio's config store does: creation time, then name, then
/// namespace (timestamps have one-second resolution, so ties are common). Resources without a
/// creation time (read from a file rather than the API server) come last, so a replayed file
/// never outranks what a cluster already holds; among themselves they go by name.
pub fn age_key(meta: &ObjectMeta) -> (bool, Option<Time>, String, String) {
    (
        meta.creation_timestamp.is_none(),
        meta.creation_timestamp.clone(),
        meta.name.clone().unwrap_or_default(),
        meta.namespace.clone().unwrap_or_default(),
    )
}
