//! Routing one HTTP request by the tables: virtual host by authority (or by the address the
//! client dialled), first matching route, weighted destination, endpoint; then the route's
//! rewrite and header operations; or the proxy's own answer (redirect, direct response, or a
//! failure with its reason).

use super::table::{Action, Picked, Upstream};
use crate::balance::PickContext;
use crate::config::Snapshot;
use crate::http::header_ops::HeaderOps;
use crate::reason::Reason;
use crate::route::{
    ConnContext, Dial, HttpRoute, LocalReply, Resilience, Target, UpstreamProtocol, passthrough_cluster,
};
use bytes::Bytes;
use common::api::HeaderOperations;
use common::api::networking::virtual_service::{HttpRedirect, HttpRewrite, RedirectPortSelection};
use common::compile::{HttpRequestMatch, OutboundMode, RequestAttributes, ValueMatch, VirtualHost};
use http::header::{HOST, SET_COOKIE};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderValue, StatusCode, Uri};
use std::sync::Arc;

/// A request head as matching sees it; every answer is borrowed.
struct Attributes<'a>(&'a Parts);

impl RequestAttributes for Attributes<'_> {
    fn method(&self) -> &str {
        self.0.method.as_str()
    }
    fn scheme(&self) -> &str {
        self.0.uri.scheme_str().unwrap_or("http")
    }
    fn authority(&self) -> &str {
        authority_of(self.0).unwrap_or_default()
    }
    fn path(&self) -> &str {
        self.0.uri.path()
    }
    fn query(&self) -> Option<&str> {
        self.0.uri.query()
    }
    fn header(&self, lowercase_name: &str) -> Option<&str> {
        self.0.headers.get(lowercase_name).and_then(|v| v.to_str().ok())
    }
}

/// `:authority` (HTTP/2, absolute-form HTTP/1.1) or else `Host`.
fn authority_of(head: &Parts) -> Option<&str> {
    match head.uri.authority() {
        Some(authority) => Some(authority.as_str()),
        None => head.headers.get(HOST).and_then(|h| h.to_str().ok()),
    }
}

/// The port in `host:port`, if any.
fn port_of(authority: &str) -> Option<u16> {
    let (host, port) = authority.rsplit_once(':')?;
    if host.ends_with(']') || !host.contains(':') { port.parse().ok() } else { None }
}

/// Routes `head` with `snapshot`; may rewrite it.
pub fn route(snapshot: &Snapshot, ctx: &ConnContext, head: &mut Parts) -> HttpRoute {
    let Some(authority) = authority_of(head) else {
        return fail(StatusCode::BAD_REQUEST, Reason::MissingHost, "missing_host", ctx, "request has no Host");
    };
    let port = if ctx.direct { port_of(authority).unwrap_or(80) } else { ctx.original_dst.port() };
    let tables = &snapshot.compiled.tables;
    let by_name = tables.listener(port).and_then(|l| l.virtual_host_for_authority(authority));
    let host = by_name.or_else(|| if ctx.direct { None } else { tables.virtual_host_at(ctx.original_dst.ip(), port) });
    let Some(host) = host else { return unknown_destination(snapshot, ctx, authority, port) };
    let Some((index, matched)) = select(host, &Attributes(head)) else {
        let detail = format!("no route of {} matches {} {}", resource_of(host), head.method, head.uri.path());
        return fail(StatusCode::NOT_FOUND, Reason::NoRoute, "no_route", ctx, &detail);
    };
    let route = &host.http_routes[index];
    let Some(action) = snapshot.routing.hosts.get(&host.name).and_then(|h| h.http.get(index)) else {
        return fail(StatusCode::NOT_FOUND, Reason::NoRoute, "no_route", ctx, "route without runtime state");
    };
    match action {
        Action::Redirect { redirect, status, response_ops } => LocalReply {
            status: *status,
            reason: None,
            location: HeaderValue::from_str(&location(redirect, head, ctx)).ok(),
            body: Bytes::new(),
            headers: response_ops.clone(),
        }
        .into(),
        Action::Direct { status, body, response_ops } => LocalReply {
            status: *status,
            reason: None,
            location: None,
            body: body.clone(),
            headers: response_ops.clone(),
        }
        .into(),
        Action::Forward { destinations, policy } => {
            let origin = || format!("{} {}", resource_of(host), route.origin.field);
            let Some(dest) = destinations.pick() else {
                return fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Reason::NoHealthyUpstream,
                    "no_healthy_upstream",
                    ctx,
                    &origin(),
                );
            };
            let Some(picked) = endpoint(&dest.upstream, ctx, head, &origin) else {
                let (reason, value) = dest
                    .upstream
                    .unavailable
                    .clone()
                    .unwrap_or((Reason::NoHealthyUpstream, HeaderValue::from_static("no_healthy_upstream")));
                return HttpRoute::Respond(LocalReply::failure(StatusCode::SERVICE_UNAVAILABLE, reason, value));
            };
            if let Some(rewrite) = &route.rewrite {
                apply_rewrite(head, rewrite, matched.and_then(|m| m.uri.as_ref()));
            }
            dest.request_ops.apply(&mut head.headers);
            let response_headers = match picked.set_cookie {
                Some(cookie) => Some(with_cookie(dest.response_ops.as_deref(), cookie)),
                None => dest.response_ops.clone(),
            };
            HttpRoute::Forward {
                target: Target { upstream: picked.dial, cluster: dest.upstream.stats.clone() },
                protocol: dest.upstream.protocol,
                response_headers,
                resilience: Some(Resilience {
                    policy: policy.clone(),
                    cluster: dest.upstream.clone(),
                    original_dst: (!ctx.direct).then_some(ctx.original_dst),
                }),
            }
        }
    }
}

impl From<LocalReply> for HttpRoute {
    fn from(reply: LocalReply) -> Self {
        HttpRoute::Respond(reply)
    }
}

/// The first route that takes the request, and the condition that matched (`None` for a
/// route without conditions): Istio's first-match rule, keeping which `match` entry applied
/// because a prefix rewrite replaces exactly that entry's prefix.
fn select<'t>(host: &'t VirtualHost, request: &Attributes<'_>) -> Option<(usize, Option<&'t HttpRequestMatch>)> {
    host.http_routes.iter().enumerate().find_map(|(index, route)| {
        if route.matches.is_empty() {
            return Some((index, None));
        }
        route.matches.iter().find(|m| m.matches(request)).map(|m| (index, Some(m)))
    })
}

/// An endpoint of `upstream` for this request, or `None` after logging why there is none.
fn endpoint(upstream: &Upstream, ctx: &ConnContext, head: &Parts, origin: &dyn Fn() -> String) -> Option<Picked> {
    let why =
        upstream.unavailable.as_ref().map(|(reason, value)| (*reason, value.to_str().unwrap_or_default().to_string()));
    let pick = PickContext {
        original_dst: (!ctx.direct).then_some(ctx.original_dst),
        source: Some(ctx.peer.ip()),
        request: Some(head),
        tried: &[],
    };
    let picked = if why.is_none() { upstream.choose(&pick) } else { None };
    if picked.is_none() {
        let (reason, detail) = why.unwrap_or((Reason::NoHealthyUpstream, "no endpoint".into()));
        tracing::warn!(
            direction = ctx.direction.as_str(), peer = %ctx.peer, reason = reason.as_str(), %detail,
            cluster = %upstream.key, route = %origin(), "local reply"
        );
    }
    picked
}

/// The destination's response operations plus the `Set-Cookie` of a cookie hash: made per
/// request, but only for the first request of a client, which had no cookie.
fn with_cookie(ops: Option<&HeaderOps>, cookie: HeaderValue) -> Arc<HeaderOps> {
    let mut ops = ops.cloned().unwrap_or_default();
    let add = HeaderOperations {
        add: [(SET_COOKIE.to_string(), cookie.to_str().unwrap_or_default().to_string())].into(),
        ..Default::default()
    };
    if let Err(error) = ops.extend(&add) {
        tracing::debug!(%error, "generated cookie not set");
    }
    Arc::new(ops)
}

fn resource_of(host: &VirtualHost) -> String {
    match &host.virtual_service {
        Some(vs) => vs.to_string(),
        None => format!("default route of {}", host.name),
    }
}

/// No service has this name or address: pass through or refuse, as the outbound policy says.
fn unknown_destination(snapshot: &Snapshot, ctx: &ConnContext, authority: &str, port: u16) -> HttpRoute {
    let policy = &snapshot.compiled.tables.outbound_policy;
    if ctx.direct {
        let detail = format!("no service named {authority} on port {port}");
        return fail(StatusCode::NOT_FOUND, Reason::NoRoute, "no_route", ctx, &detail);
    }
    match policy.mode {
        OutboundMode::AllowAny => HttpRoute::Forward {
            target: Target { upstream: Dial::plain(ctx.original_dst), cluster: passthrough_cluster(ctx.direction) },
            protocol: UpstreamProtocol::SameAsDownstream,
            response_headers: None,
            resilience: None,
        },
        OutboundMode::RegistryOnly => {
            let by = policy.sidecar.as_ref().map_or("mesh config".to_string(), |s| s.to_string());
            let detail =
                format!("{authority} ({}) is not in the registry; REGISTRY_ONLY set by {by}", ctx.original_dst);
            fail(StatusCode::BAD_GATEWAY, Reason::RegistryOnly, "registry_only", ctx, &detail)
        }
    }
}

/// A failure answered by the proxy, logged with what led to it.
fn fail(status: StatusCode, reason: Reason, header: &'static str, ctx: &ConnContext, detail: &str) -> HttpRoute {
    tracing::warn!(
        direction = ctx.direction.as_str(), peer = %ctx.peer, dst = %ctx.original_dst,
        reason = reason.as_str(), %detail, "local reply"
    );
    HttpRoute::Respond(LocalReply::failure(status, reason, HeaderValue::from_static(header)))
}

/// Istio's `rewrite`: `uri` replaces the prefix that matched (the whole path for exact and
/// regex matches; for a route without a uri condition, the leading `/`, as Envoy does);
/// `authority` replaces the Host/`:authority`. The query string is kept.
fn apply_rewrite(head: &mut Parts, rewrite: &HttpRewrite, matched: Option<&ValueMatch>) {
    if !rewrite.uri.is_empty() {
        let path = head.uri.path();
        let new_path = match matched {
            Some(ValueMatch::Prefix(p) | ValueMatch::PrefixIgnoreCase(p)) => {
                format!("{}{}", rewrite.uri, path.get(p.len()..).unwrap_or_default())
            }
            Some(_) => rewrite.uri.clone(),
            None => format!("{}{}", rewrite.uri, path.get(1..).unwrap_or_default()),
        };
        let with_query = match head.uri.query() {
            Some(query) => format!("{new_path}?{query}"),
            None => new_path,
        };
        if let Ok(path_and_query) = PathAndQuery::try_from(with_query) {
            let mut parts = head.uri.clone().into_parts();
            parts.path_and_query = Some(path_and_query);
            if let Ok(uri) = Uri::from_parts(parts) {
                head.uri = uri;
            }
        }
    }
    if !rewrite.authority.is_empty()
        && let Ok(value) = HeaderValue::from_str(&rewrite.authority)
    {
        head.headers.insert(HOST, value);
        if head.uri.authority().is_some() {
            let mut parts = head.uri.clone().into_parts();
            parts.authority = rewrite.authority.parse().ok();
            if let Ok(uri) = Uri::from_parts(parts) {
                head.uri = uri;
            }
        }
    }
}

/// The `Location` of a redirect: parts the redirect leaves unset keep the request's.
fn location(redirect: &HttpRedirect, head: &Parts, ctx: &ConnContext) -> String {
    let request_scheme = head.uri.scheme_str().unwrap_or("http");
    let scheme = if redirect.scheme.is_empty() { request_scheme } else { redirect.scheme.as_str() };
    let request_authority = authority_of(head).unwrap_or_default();
    let request_port = port_of(request_authority).or((!ctx.direct).then_some(ctx.original_dst.port()));
    let strip = |a: &str| match port_of(a) {
        Some(_) => a.rsplit_once(':').map_or(a, |(h, _)| h).to_string(),
        None => a.to_string(),
    };
    let authority = if redirect.authority.is_empty() { request_authority } else { redirect.authority.as_str() };
    let host = match (redirect.port, redirect.derive_port) {
        (Some(port), _) => format!("{}:{port}", strip(authority)),
        (None, Some(RedirectPortSelection::FromRequestPort)) => match request_port {
            Some(port) => format!("{}:{port}", strip(authority)),
            None => strip(authority),
        },
        (None, Some(RedirectPortSelection::FromProtocolDefault)) => strip(authority),
        (None, None) if scheme != request_scheme => strip(authority),
        (None, None) => authority.to_string(),
    };
    let path = if redirect.uri.is_empty() { head.uri.path() } else { redirect.uri.as_str() };
    match head.uri.query() {
        Some(query) if !path.contains('?') => format!("{scheme}://{host}{path}?{query}"),
        _ => format!("{scheme}://{host}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(uri: &str, host: &str) -> Parts {
        http::Request::get(uri).header("host", host).body(()).unwrap().into_parts().0
    }

    #[test]
    fn prefix_rewrite_replaces_only_the_matched_prefix() {
        let rewrite = HttpRewrite { uri: "/v2/".into(), ..Default::default() };
        let mut h = head("/api/items?id=3", "shop");
        apply_rewrite(&mut h, &rewrite, Some(&ValueMatch::Prefix("/api/".into())));
        assert_eq!(h.uri, "/v2/items?id=3");
        let mut h = head("/exact", "shop");
        apply_rewrite(
            &mut h,
            &HttpRewrite { uri: "/new".into(), ..Default::default() },
            Some(&ValueMatch::Exact("/exact".into())),
        );
        assert_eq!(h.uri, "/new");
        let mut h = head("/x", "shop");
        apply_rewrite(&mut h, &HttpRewrite { authority: "other.example".into(), ..Default::default() }, None);
        assert_eq!(h.headers["host"], "other.example");
    }

    #[test]
    fn redirect_keeps_what_it_does_not_change() {
        let ctx = ConnContext {
            direction: crate::route::Direction::Outbound,
            peer: "127.0.0.1:1".parse().unwrap(),
            original_dst: "10.96.0.1:9080".parse().unwrap(),
            direct: false,
        };
        let r = HttpRedirect { uri: "/new".into(), ..Default::default() };
        assert_eq!(location(&r, &head("/old?a=1", "shop:9080"), &ctx), "http://shop:9080/new?a=1");
        let r = HttpRedirect { authority: "b.example".into(), scheme: "https".into(), ..Default::default() };
        assert_eq!(location(&r, &head("/p", "shop:9080"), &ctx), "https://b.example/p");
        let r = HttpRedirect {
            authority: "b.example".into(),
            derive_port: Some(RedirectPortSelection::FromRequestPort),
            ..Default::default()
        };
        assert_eq!(location(&r, &head("/p", "shop"), &ctx), "http://b.example:9080/p");
    }

    #[test]
    fn ports_are_read_from_authorities() {
        assert_eq!(port_of("reviews:9080"), Some(9080));
        assert_eq!(port_of("reviews"), None);
        assert_eq!(port_of("[::1]:80"), Some(80));
        assert_eq!(port_of("::1"), None);
    }
}
