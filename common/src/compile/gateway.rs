//! Listeners of a gateway proxy (an ingress or egress gateway): the servers of the Gateways
//! that select it, each routed by the VirtualServices bound to that Gateway.
//!
//! As Istio does at gateways: a VirtualService binds when its `gateways` names the Gateway
//! (`name` in its own namespace, or `namespace/name`) and one of its hosts falls under a
//! server host whose namespace part admits the VirtualService's namespace. The routes of every
//! VirtualService bound to the same host are kept, oldest VirtualService first. A host no
//! VirtualService routes has no virtual host: the gateway answers 404.

use std::collections::BTreeMap;

use super::CompileDiagnostic;
use super::age_key;
use super::clusters::ClusterBuilder;
use super::routes::{RouteCompiler, gateway_reference};
use super::scope::{Scope, namespace_of, object_ref};
use super::tables::{GatewayServer, OutboundListener, VirtualHost};
use crate::api::networking::gateway::{Gateway, Server, ServerTlsMode};
use crate::hosts;
use crate::registry::Protocol;
use crate::resource::Resource;
use crate::validate::ObjectRef;

/// The hosts and servers gathered for one port.
#[derive(Default)]
struct PortServers {
    hosts: Vec<VirtualHost>,
    servers: Vec<GatewayServer>,
    protocol: Option<Protocol>,
}

/// Builds the listeners of a gateway proxy from the Gateways whose selector matches it.
pub(super) fn build_listeners<'a>(
    resources: &[&'a Resource],
    scope: &Scope<'a>,
    clusters: &mut ClusterBuilder<'a, '_>,
    diagnostics: &mut Vec<CompileDiagnostic>,
) -> BTreeMap<u16, OutboundListener> {
    let mut gateways: Vec<&Gateway> = resources
        .iter()
        .filter_map(|resource| match resource {
            Resource::Gateway(gateway) => Some(gateway),
            _ => None,
        })
        .filter(|gateway| {
            let selector = &gateway.spec.selector;
            !selector.is_empty() && selector.iter().all(|(key, value)| scope.proxy.labels.get(key) == Some(value))
        })
        .collect();
    gateways.sort_by_key(|gateway| age_key(&gateway.metadata));
    let mut by_port: BTreeMap<u16, PortServers> = BTreeMap::new();
    for gateway in gateways {
        let namespace = namespace_of(&gateway.metadata);
        let name = gateway.metadata.name.clone().unwrap_or_default();
        let reference = format!("{namespace}/{name}");
        let object = ObjectRef::new("Gateway", namespace, name);
        for (index, server) in gateway.spec.servers.iter().enumerate() {
            let Some(port) = u16::try_from(server.port.number).ok().filter(|port| *port > 0) else { continue };
            let routing = routing_protocol(server);
            let entry = by_port.entry(port).or_default();
            entry.protocol.get_or_insert(routing);
            entry.servers.push(GatewayServer {
                gateway: Some(object.clone()),
                index,
                name: server.name.clone(),
                protocol: Protocol::from_name(&server.port.protocol).unwrap_or_default(),
                hosts: server.hosts.clone(),
                tls: server.tls.clone(),
            });
            let mut compiler = RouteCompiler {
                scope,
                port,
                gateway: Some(&reference),
                clusters: &mut *clusters,
                diagnostics: &mut *diagnostics,
            };
            for vs in &scope.virtual_services {
                let vs_namespace = namespace_of(&vs.metadata);
                if !vs.spec.gateways.iter().any(|gateway| gateway_reference(gateway, vs_namespace) == reference) {
                    continue;
                }
                let vs_object = object_ref(vs);
                for host in &vs.spec.hosts {
                    let host = hosts::fully_qualify(host, vs_namespace, scope.registry.domain());
                    let Some(domain) = bound_domain(server, namespace, vs_namespace, &host) else { continue };
                    let position = match entry.hosts.iter().position(|existing| existing.host == domain) {
                        Some(position) => position,
                        None => {
                            entry.hosts.push(VirtualHost {
                                name: format!("{domain}:{port}"),
                                host: domain.clone(),
                                port,
                                protocol: routing,
                                domains: vec![domain.clone(), format!("{domain}:{port}")],
                                http_routes: Vec::new(),
                                tls_routes: Vec::new(),
                                tcp_routes: Vec::new(),
                                virtual_service: Some(vs_object.clone()),
                            });
                            entry.hosts.len() - 1
                        }
                    };
                    let virtual_host = &mut entry.hosts[position];
                    if routing.is_http() {
                        virtual_host.http_routes.extend(compiler.http_routes(vs, &vs_object));
                    } else {
                        if routing.is_tls() {
                            virtual_host.tls_routes.extend(compiler.tls_routes(vs, &vs_object));
                        }
                        virtual_host.tcp_routes.extend(compiler.tcp_routes(vs, &vs_object));
                    }
                }
            }
        }
    }
    by_port
        .into_iter()
        .map(|(port, entry)| {
            let mut listener = OutboundListener::new(port, entry.hosts, Vec::new());
            listener.protocol = entry.protocol.unwrap_or_default();
            listener.servers = entry.servers;
            (port, listener)
        })
        .collect()
}

/// How traffic on a server is routed once it arrives: HTTP for HTTP servers and for HTTPS
/// servers that terminate TLS; by SNI for pass-through TLS; as TCP otherwise (including TLS
/// servers that terminate, whose plain stream is then opaque).
fn routing_protocol(server: &Server) -> Protocol {
    let protocol = Protocol::from_name(&server.port.protocol).unwrap_or_default();
    let passthrough = server
        .tls
        .as_ref()
        .is_some_and(|tls| matches!(tls.effective_mode(), ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough));
    match protocol {
        _ if protocol.is_http() => Protocol::Http,
        Protocol::Https | Protocol::Tls if passthrough => Protocol::Tls,
        Protocol::Https => Protocol::Http,
        _ => Protocol::Tcp,
    }
}

/// The name a VirtualService host is served under on `server`, if the server admits it: the
/// more specific of the two when one is a wildcard covering the other.
fn bound_domain(server: &Server, gateway_namespace: &str, vs_namespace: &str, host: &str) -> Option<String> {
    server.namespaced_hosts().find_map(|(namespace, pattern)| {
        let namespace_fits = match namespace {
            "*" => true,
            "." => vs_namespace == gateway_namespace,
            name => name == vs_namespace,
        };
        let pattern = pattern.to_ascii_lowercase();
        if !namespace_fits {
            return None;
        }
        if pattern == "*" || pattern == host || hosts::wildcard_matches(&pattern, host) {
            Some(host.to_string())
        } else if host == "*" || hosts::wildcard_matches(host, &pattern) {
            Some(pattern)
        } else {
            None
        }
    })
}
