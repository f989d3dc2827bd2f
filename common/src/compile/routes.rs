//! Listeners, virtual hosts and routes: each visible service port becomes a virtual host on
//! the listener of that port, routed by the VirtualService that owns the host, or by a default
//! route to the service itself.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::clusters::{ClusterBuilder, Referrer};
use super::matching::HttpRequestMatch;
use super::scope::{Scope, namespace_of, object_ref};
use super::tables::{
    HttpAction, HttpRoute, Mirror, OutboundListener, RouteOrigin, TcpRoute, TlsMatch, TlsRoute, VirtualHost,
    WeightedCluster, WeightedClusters,
};
use super::{CompileDiagnostic, DiagnosticCode};
use crate::api::networking::virtual_service::{self as vs_api, Destination, MESH_GATEWAY, VirtualService};
use crate::hosts;
use crate::registry::{Protocol, Service, ServiceOrigin, ServicePort};
use crate::validate::{FieldPath, ObjectRef, Severity};

/// The virtual hosts of one port, and the addresses that lead to each (by index).
type PortHosts = (Vec<VirtualHost>, Vec<(IpAddr, usize)>);

/// A destination as the route writes it, with its weight and its own header changes.
type WrittenDestination<'d> = (&'d Destination, Option<i32>, Option<crate::api::Headers>);

/// Builds every outbound listener of the proxy.
pub(super) fn build_listeners<'a>(
    scope: &Scope<'a>,
    clusters: &mut ClusterBuilder<'a, '_>,
    diagnostics: &mut Vec<CompileDiagnostic>,
) -> BTreeMap<u16, OutboundListener> {
    let mut by_port: BTreeMap<u16, PortHosts> = BTreeMap::new();
    for service in &scope.services {
        for port in &service.ports {
            if port.protocol == Protocol::Udp || !scope.egress_admits(service, Some(port.port)) {
                continue;
            }
            let virtual_service = scope.virtual_service_for(&service.hostname);
            let mut compiler = RouteCompiler {
                scope,
                port: port.port,
                gateway: None,
                clusters: &mut *clusters,
                diagnostics: &mut *diagnostics,
            };
            let host = compiler.virtual_host(service, port, virtual_service);
            let (hosts, addresses) = by_port.entry(port.port).or_default();
            addresses.extend(service.addresses.iter().map(|address| (*address, hosts.len())));
            hosts.push(host);
        }
    }
    by_port
        .into_iter()
        .map(|(port, (hosts, addresses))| (port, OutboundListener::new(port, hosts, addresses)))
        .collect()
}

/// Compiles the routes of one port: a service port of a sidecar, or a gateway server's port.
pub(super) struct RouteCompiler<'c, 'a, 's> {
    pub scope: &'c Scope<'a>,
    /// The port the routes are for; `match.port` conditions are decided against it.
    pub port: u16,
    /// `namespace/name` of the Gateway when compiling for a gateway; `None` for a sidecar,
    /// whose routes are those bound to `mesh`.
    pub gateway: Option<&'c str>,
    pub clusters: &'c mut ClusterBuilder<'a, 's>,
    pub diagnostics: &'c mut Vec<CompileDiagnostic>,
}

impl RouteCompiler<'_, '_, '_> {
    fn virtual_host(
        &mut self,
        service: &Service,
        port: &ServicePort,
        virtual_service: Option<&VirtualService>,
    ) -> VirtualHost {
        let protocol = port.protocol;
        let mut host = VirtualHost {
            name: format!("{}:{}", service.hostname, port.port),
            host: service.hostname.clone(),
            port: port.port,
            protocol,
            domains: self.domains(service, port),
            http_routes: Vec::new(),
            tls_routes: Vec::new(),
            tcp_routes: Vec::new(),
            virtual_service: None,
        };
        if let Some(vs) = virtual_service {
            let object = object_ref(vs);
            if protocol.is_http() {
                host.http_routes = self.http_routes(vs, &object);
            } else {
                if protocol.is_tls() {
                    host.tls_routes = self.tls_routes(vs, &object);
                }
                host.tcp_routes = self.tcp_routes(vs, &object);
            }
            if !(host.http_routes.is_empty() && host.tls_routes.is_empty() && host.tcp_routes.is_empty()) {
                host.virtual_service = Some(object);
            }
        }
        // Without routes, the service routes to itself. On a TCP or TLS port the service is
        // also the fallback for connections no route takes (an SNI no TLS route names), as the
        // connection was addressed to it.
        let catch_all = host.tcp_routes.iter().any(|route| route.destination_subnets.is_empty());
        if host.virtual_service.is_none() || (!protocol.is_http() && !catch_all) {
            let cluster = self.clusters.request(&service.hostname, "", port.port, None);
            let destinations = WeightedClusters::new(vec![WeightedCluster { cluster, weight: 100, headers: None }]);
            if protocol.is_http() {
                host.http_routes = vec![default_http_route(destinations)];
            } else {
                host.tcp_routes.push(TcpRoute {
                    destination_subnets: Vec::new(),
                    destinations,
                    origin: RouteOrigin::default(),
                });
            }
        }
        host
    }

    /// The names a request may use for the service: Istio's list for a Kubernetes service
    /// (FQDN, `name.namespace.svc`, `name.namespace`, and the bare name from the same
    /// namespace), the host of a ServiceEntry, and every address; each with and without port.
    fn domains(&self, service: &Service, port: &ServicePort) -> Vec<String> {
        let mut names = vec![service.hostname.clone()];
        if service.origin == ServiceOrigin::Kubernetes {
            let name = &service.name;
            let namespace = &service.namespace;
            names.push(format!("{name}.{namespace}.svc"));
            names.push(format!("{name}.{namespace}"));
            if *namespace == self.scope.proxy.namespace {
                names.push(name.clone());
            }
        }
        names.extend(service.addresses.iter().map(|address| match address {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        }));
        let port = port.port;
        let with_ports: Vec<String> = names.iter().map(|name| format!("{name}:{port}")).collect();
        names.extend(with_ports);
        names.iter_mut().for_each(|name| name.make_ascii_lowercase());
        names
    }

    /// Whether a match condition can apply to this proxy on this port; the parts of a match
    /// that depend only on the client (port, source labels, source namespace, gateways) are
    /// decided here, once, instead of on every request.
    fn applies(
        &self,
        vs: &VirtualService,
        port: Option<u32>,
        labels: &BTreeMap<String, String>,
        source_namespace: &str,
        gateways: &[String],
    ) -> bool {
        let proxy = self.scope.proxy;
        let gateway_fits = match self.gateway {
            None => gateways.is_empty() || gateways.iter().any(|gateway| gateway == MESH_GATEWAY),
            Some(this) => {
                gateways.is_empty()
                    || gateways.iter().any(|gateway| gateway_reference(gateway, namespace_of(&vs.metadata)) == this)
            }
        };
        gateway_fits
            && port.is_none_or(|port| port == u32::from(self.port))
            && labels.iter().all(|(key, value)| proxy.labels.get(key) == Some(value))
            && (source_namespace.is_empty() || source_namespace == proxy.namespace)
    }

    pub fn http_routes(&mut self, vs: &VirtualService, object: &ObjectRef) -> Vec<HttpRoute> {
        let mut routes = Vec::new();
        for (index, route) in vs.spec.http.iter().enumerate() {
            let field = FieldPath::spec().field("http").index(index);
            let conditions: Vec<&vs_api::HttpMatchRequest> = route
                .r#match
                .iter()
                .filter(|m| self.applies(vs, m.port, &m.source_labels, &m.source_namespace, &m.gateways))
                .collect();
            if !route.r#match.is_empty() && conditions.is_empty() {
                continue;
            }
            let Ok(mut matches) = conditions.into_iter().map(HttpRequestMatch::compile).collect::<Result<Vec<_>, _>>()
            else {
                continue; // a regex that does not compile; validation reported it
            };
            // A condition left with nothing to check on the request (only client conditions,
            // already decided) takes every request.
            if matches.iter().any(HttpRequestMatch::is_unconditional) {
                matches.clear();
            }
            let action = if let Some(redirect) = &route.redirect {
                HttpAction::Redirect(redirect.clone())
            } else if let Some(response) = &route.direct_response {
                HttpAction::DirectResponse(response.clone())
            } else if route.delegate.is_some() {
                self.diagnostics.push(CompileDiagnostic::new(
                    DiagnosticCode::Unsupported,
                    Severity::Unsupported,
                    object,
                    &field.field("delegate"),
                    "delegation is not supported yet; this route is left out",
                ));
                continue;
            } else {
                let destinations: Vec<WrittenDestination<'_>> =
                    route.route.iter().map(|d| (&d.destination, d.weight, d.headers.clone())).collect();
                HttpAction::Forward(self.weighted(vs, object, &field.field("route"), destinations))
            };
            let mut mirrors = Vec::new();
            if let Some(mirror) = &route.mirror {
                let percentage = route.mirror_share();
                let cluster = self.destination(vs, object, mirror, field.field("mirror"));
                mirrors.push(Mirror { cluster, percentage });
            }
            for (mirror_index, mirror) in route.mirrors.iter().enumerate() {
                let path = field.field("mirrors").index(mirror_index).field("destination");
                let cluster = self.destination(vs, object, &mirror.destination, path);
                mirrors.push(Mirror { cluster, percentage: mirror.percentage.map(|p| p.value).unwrap_or(100.0) });
            }
            routes.push(HttpRoute {
                name: route.name.clone(),
                matches,
                action,
                rewrite: route.rewrite.clone(),
                headers: route.headers.clone(),
                timeout: route.timeout,
                retries: route.retries.clone(),
                fault: route.fault.clone(),
                mirrors,
                cors: route.cors_policy.clone(),
                origin: origin(object, index, &field),
            });
        }
        routes
    }

    pub fn tls_routes(&mut self, vs: &VirtualService, object: &ObjectRef) -> Vec<TlsRoute> {
        let mut routes = Vec::new();
        for (index, route) in vs.spec.tls.iter().enumerate() {
            let field = FieldPath::spec().field("tls").index(index);
            let matches: Vec<TlsMatch> = route
                .r#match
                .iter()
                .filter(|m| self.applies(vs, m.port, &m.source_labels, &m.source_namespace, &m.gateways))
                .map(|m| TlsMatch {
                    sni_hosts: m
                        .sni_hosts
                        .iter()
                        .map(|sni| hosts::fully_qualify(sni, namespace_of(&vs.metadata), self.scope.registry.domain()))
                        .collect(),
                    destination_subnets: subnets(&m.destination_subnets),
                })
                .collect();
            if matches.is_empty() {
                continue;
            }
            let destinations = route.route.iter().map(|d| (&d.destination, d.weight, None)).collect();
            let destinations = self.weighted(vs, object, &field.field("route"), destinations);
            routes.push(TlsRoute { matches, destinations, origin: origin(object, index, &field) });
        }
        routes
    }

    pub fn tcp_routes(&mut self, vs: &VirtualService, object: &ObjectRef) -> Vec<TcpRoute> {
        let mut routes = Vec::new();
        for (index, route) in vs.spec.tcp.iter().enumerate() {
            let field = FieldPath::spec().field("tcp").index(index);
            let conditions: Vec<_> = route
                .r#match
                .iter()
                .filter(|m| self.applies(vs, m.port, &m.source_labels, &m.source_namespace, &m.gateways))
                .collect();
            if !route.r#match.is_empty() && conditions.is_empty() {
                continue;
            }
            // Conditions are OR-ed: any condition without subnets admits every destination.
            let destination_subnets = if conditions.iter().any(|m| m.destination_subnets.is_empty()) {
                Vec::new()
            } else {
                conditions.iter().flat_map(|m| subnets(&m.destination_subnets)).collect()
            };
            let destinations = route.route.iter().map(|d| (&d.destination, d.weight, None)).collect();
            let destinations = self.weighted(vs, object, &field.field("route"), destinations);
            routes.push(TcpRoute { destination_subnets, destinations, origin: origin(object, index, &field) });
        }
        routes
    }

    /// Weighted destinations; a lone destination takes all traffic whatever its weight says.
    fn weighted(
        &mut self,
        vs: &VirtualService,
        object: &ObjectRef,
        field: &FieldPath,
        destinations: Vec<WrittenDestination<'_>>,
    ) -> WeightedClusters {
        let lone = destinations.len() == 1;
        let clusters = destinations
            .into_iter()
            .enumerate()
            .map(|(index, (destination, weight, headers))| {
                let cluster = self.destination(vs, object, destination, field.index(index).field("destination"));
                let weight = if lone { 100 } else { weight.unwrap_or(0).max(0).unsigned_abs() };
                WeightedCluster { cluster, weight, headers }
            })
            .collect();
        WeightedClusters::new(clusters)
    }

    /// The cluster for a destination: its host resolved in the VirtualService's namespace; its
    /// port as written, else this virtual host's port when the destination is this service or
    /// has that port too, else the destination service's only port.
    fn destination(
        &mut self,
        vs: &VirtualService,
        object: &ObjectRef,
        destination: &Destination,
        field: FieldPath,
    ) -> super::tables::ClusterKey {
        let host = hosts::fully_qualify(&destination.host, namespace_of(&vs.metadata), self.scope.registry.domain());
        let port = destination.port.and_then(|port| u16::try_from(port.number).ok()).unwrap_or_else(|| {
            match self.scope.registry.service(&host) {
                Some(target) if target.port(self.port).is_none() && target.ports.len() == 1 => target.ports[0].port,
                _ => self.port,
            }
        });
        self.clusters.request(&host, &destination.subset, port, Some(Referrer { object, field }))
    }
}

/// A gateway reference as a VirtualService writes it (`name`, or `namespace/name`), as
/// `namespace/name`; a bare name is in the VirtualService's namespace.
pub(super) fn gateway_reference(reference: &str, vs_namespace: &str) -> String {
    if reference.contains('/') { reference.to_string() } else { format!("{vs_namespace}/{reference}") }
}

fn default_http_route(destinations: WeightedClusters) -> HttpRoute {
    HttpRoute {
        name: "default".to_string(),
        matches: Vec::new(),
        action: HttpAction::Forward(destinations),
        rewrite: None,
        headers: None,
        timeout: None,
        retries: None,
        fault: None,
        mirrors: Vec::new(),
        cors: None,
        origin: RouteOrigin::default(),
    }
}

fn origin(object: &ObjectRef, index: usize, field: &FieldPath) -> RouteOrigin {
    RouteOrigin { resource: Some(object.clone()), index: Some(index), field: field.to_string() }
}

/// Subnets as written (`10.0.0.0/16`, or a single address); unparsable ones (reported by
/// validation) are left out.
fn subnets(values: &[String]) -> Vec<ipnet::IpNet> {
    values
        .iter()
        .filter_map(|value| value.parse::<ipnet::IpNet>().ok().or_else(|| value.parse::<IpAddr>().ok().map(Into::into)))
        .collect()
}
