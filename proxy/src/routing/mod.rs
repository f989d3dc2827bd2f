//! Routing by the compiled tables: which connections are HTTP, TLS or TCP, and where each
//! connection or request goes.
//!
//! Outbound, a connection's original destination finds its service by ClusterIP and port; the
//! service port's protocol decides how it is carried. HTTP requests are routed one by one
//! (`http`); TLS connections by SNI and TCP connections by destination subnet, through the
//! VirtualService `tls`/`tcp` routes or the service itself. Destinations the registry does not
//! know follow the outbound traffic policy. Inbound, a connection goes to the app on its
//! original port, as HTTP when the workload's port is HTTP, else as TCP.

mod cluster_view;
pub mod endpoint;
pub mod http;
pub mod table;
pub mod upstream;

use crate::balance::PickContext;
use crate::config::{ConfigStore, Snapshot};
use crate::reason::Reason;
use crate::route::{
    ConnContext, ConnRoute, ConnectionRouter, Dial, Direction, HttpPassthrough, HttpRouter, Refusal, SniRouter, Target,
    passthrough_cluster,
};
use common::compile::{OutboundMode, VirtualHost};
use std::sync::Arc;

/// The router of a proxy with configuration.
pub struct MeshRouter {
    store: Arc<ConfigStore>,
    http: Arc<OutboundHttp>,
    tls: Arc<OutboundTls>,
    inbound_http: Arc<HttpPassthrough>,
}

impl MeshRouter {
    pub fn new(store: Arc<ConfigStore>) -> Self {
        MeshRouter {
            http: Arc::new(OutboundHttp { store: store.clone() }),
            tls: Arc::new(OutboundTls { store: store.clone() }),
            inbound_http: Arc::new(HttpPassthrough),
            store,
        }
    }

    pub fn store(&self) -> &Arc<ConfigStore> {
        &self.store
    }

    fn outbound(&self, snapshot: &Snapshot, ctx: &ConnContext) -> ConnRoute {
        if ctx.direct {
            return ConnRoute::Http(self.http.clone());
        }
        let (ip, port) = (ctx.original_dst.ip(), ctx.original_dst.port());
        let tables = &snapshot.compiled.tables;
        if let Some(host) = tables.virtual_host_at(ip, port) {
            return match host.protocol {
                p if p.is_http() => ConnRoute::Http(self.http.clone()),
                p if p.is_tls() => ConnRoute::Tls(self.tls.clone()),
                _ => tcp_route(snapshot, host, ctx, None),
            };
        }
        // An address no service has, on a port some service uses: HTTP is still routed by
        // Host and TLS by SNI, as the listener of that port would in Istio.
        match tables.listener(port).map(|l| l.protocol) {
            Some(p) if p.is_http() => ConnRoute::Http(self.http.clone()),
            Some(p) if p.is_tls() => ConnRoute::Tls(self.tls.clone()),
            _ => unknown_destination(snapshot, ctx),
        }
    }

    fn inbound(&self, snapshot: &Snapshot, ctx: &ConnContext) -> ConnRoute {
        let port = ctx.original_dst.port();
        let inbound = &snapshot.compiled.tables.inbound;
        match inbound.ports.iter().find(|p| p.port == port) {
            Some(p) if p.protocol.is_http() => ConnRoute::Http(self.inbound_http.clone()),
            _ => ConnRoute::Tcp(Target {
                upstream: Dial::plain(ctx.original_dst),
                cluster: passthrough_cluster(Direction::Inbound),
            }),
        }
    }
}

impl ConnectionRouter for MeshRouter {
    fn route_connection(&self, ctx: &ConnContext) -> ConnRoute {
        let snapshot = self.store.load();
        match ctx.direction {
            Direction::Outbound => self.outbound(&snapshot, ctx),
            Direction::Inbound => self.inbound(&snapshot, ctx),
        }
    }

    fn describe(&self) -> serde_json::Value {
        let snapshot = self.store.load();
        let mut dump = snapshot.to_json();
        dump["kind"] = "tables".into();
        dump["source"] = self.store.source().map(|s| s.path.display().to_string()).into();
        dump["last_error"] = self.store.last_error().into();
        dump
    }

    fn clusters(&self) -> Vec<serde_json::Value> {
        let snapshot = self.store.load();
        snapshot.routing.upstreams.values().map(|u| cluster_view::cluster_json(u)).collect()
    }
}

/// Per-request HTTP routing on the outbound side.
pub struct OutboundHttp {
    store: Arc<ConfigStore>,
}

impl HttpRouter for OutboundHttp {
    fn route_request(&self, ctx: &ConnContext, head: &mut ::http::request::Parts) -> crate::route::HttpRoute {
        http::route(&self.store.load(), ctx, head)
    }
}

/// Routing of TLS connections by SNI, once the ClientHello is read.
pub struct OutboundTls {
    store: Arc<ConfigStore>,
}

impl SniRouter for OutboundTls {
    fn route_sni(&self, ctx: &ConnContext, sni: Option<&str>) -> ConnRoute {
        let snapshot = self.store.load();
        let (ip, port) = (ctx.original_dst.ip(), ctx.original_dst.port());
        let tables = &snapshot.compiled.tables;
        let host = tables
            .virtual_host_at(ip, port)
            .or_else(|| sni.and_then(|sni| tables.listener(port)?.virtual_host_for_authority(sni)));
        match host {
            Some(host) => tcp_route(&snapshot, host, ctx, sni),
            None => unknown_destination(&snapshot, ctx),
        }
    }
}

/// A TLS (with SNI) or TCP connection to `host`: the first TLS or TCP route that takes it.
fn tcp_route(snapshot: &Snapshot, host: &VirtualHost, ctx: &ConnContext, sni: Option<&str>) -> ConnRoute {
    let ip = ctx.original_dst.ip();
    let refuse = |reason: Reason, detail: String| ConnRoute::Reject(Refusal { reason, detail });
    let Some(runtime) = snapshot.routing.hosts.get(&host.name) else {
        return refuse(Reason::NoRoute, format!("{} has no runtime routes", host.name));
    };
    let by_sni = sni.and_then(|sni| {
        host.tls_routes.iter().position(|r| r.matches.iter().any(|m| m.matches(sni, ip))).map(|i| &runtime.tls[i])
    });
    let destinations = by_sni.or_else(|| host.tcp_routes.iter().position(|r| r.matches(ip)).map(|i| &runtime.tcp[i]));
    let Some(destinations) = destinations else {
        let by = host.virtual_service.as_ref().map_or("the default route".into(), |v| v.to_string());
        return refuse(Reason::NoRoute, format!("no tls/tcp route of {by} takes {ip} (sni {sni:?})"));
    };
    let Some(dest) = destinations.pick() else {
        return refuse(Reason::NoHealthyUpstream, format!("{}: every destination has weight 0", host.name));
    };
    if let Some((reason, value)) = &dest.upstream.unavailable {
        return refuse(*reason, value.to_str().unwrap_or_default().to_string());
    }
    let pick = PickContext { original_dst: Some(ctx.original_dst), source: Some(ctx.peer.ip()), ..Default::default() };
    match dest.upstream.choose(&pick) {
        Some(picked) => ConnRoute::Tcp(Target { upstream: picked.dial, cluster: dest.upstream.stats.clone() }),
        None => refuse(Reason::NoHealthyUpstream, format!("{} has no endpoint", dest.upstream.key)),
    }
}

fn unknown_destination(snapshot: &Snapshot, ctx: &ConnContext) -> ConnRoute {
    let policy = &snapshot.compiled.tables.outbound_policy;
    match policy.mode {
        OutboundMode::AllowAny => ConnRoute::Tcp(Target {
            upstream: Dial::plain(ctx.original_dst),
            cluster: passthrough_cluster(ctx.direction),
        }),
        OutboundMode::RegistryOnly => ConnRoute::Reject(Refusal {
            reason: Reason::RegistryOnly,
            detail: format!(
                "{} is not in the registry; REGISTRY_ONLY set by {}",
                ctx.original_dst,
                policy.sidecar.as_ref().map_or("mesh config".to_string(), |s| s.to_string())
            ),
        }),
    }
}
