//! The data path's side of the compiled tables: for every route, its destinations resolved to
//! upstreams (endpoints, balancer, outlier detection, counters; see `upstream`) and its header
//! operations parsed, so a request is routed with lookups and comparisons only.
//!
//! `common::compile` gives the tables (what matches, where it goes, by cluster key); this adds
//! what only a running proxy has: socket addresses, balancing state and counters. It mirrors
//! the tables' shape (virtual host by name, routes by index), built once per config.

pub use super::upstream::{Picked, Upstream};
use crate::http::header_ops::HeaderOps;
use crate::policy::RoutePolicy;
use crate::stats::ClusterStats;
use bytes::Bytes;
use common::api::Headers;
use common::api::networking::virtual_service::{HttpDirectResponse, HttpRedirect};
use common::compile::{ClusterKey, HttpAction, HttpRoute, ProxyTables, RouteOrigin, VirtualHost, WeightedClusters};
use http::StatusCode;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One weighted destination with the header changes that go with it.
pub struct Dest {
    pub upstream: Arc<Upstream>,
    pub weight: u32,
    /// The route's request operations, then the destination's.
    pub request_ops: HeaderOps,
    /// The route's response operations, then the destination's; `None` when there are none.
    pub response_ops: Option<Arc<HeaderOps>>,
}

/// Destinations chosen by weight.
pub struct Destinations {
    list: Vec<Dest>,
    total: u32,
}

impl Destinations {
    /// A destination drawn by weight (thread-local random numbers: no shared state).
    pub fn pick(&self) -> Option<&Dest> {
        match self.list.len() {
            0 => None,
            1 => self.list.first(),
            _ if self.total == 0 => None,
            _ => {
                let mut roll = fastrand::u32(0..self.total);
                self.list.iter().find(|d| {
                    if roll < d.weight {
                        return true;
                    }
                    roll -= d.weight;
                    false
                })
            }
        }
    }
}

/// What an HTTP route does, ready to run.
pub enum Action {
    Forward { destinations: Destinations, policy: Arc<RoutePolicy> },
    Redirect { redirect: HttpRedirect, status: StatusCode, response_ops: Option<Arc<HeaderOps>> },
    Direct { status: StatusCode, body: Bytes, response_ops: Option<Arc<HeaderOps>> },
}

/// The runtime part of one virtual host: its routes' actions by index, as in the tables.
#[derive(Default)]
pub struct HostRoutes {
    pub http: Vec<Action>,
    pub tls: Vec<Destinations>,
    pub tcp: Vec<Destinations>,
}

/// Everything the data path adds to one config's tables.
#[derive(Default)]
pub struct Routing {
    /// By virtual host name (`host:port`).
    pub hosts: HashMap<String, HostRoutes, foldhash::fast::RandomState>,
    pub upstreams: BTreeMap<ClusterKey, Arc<Upstream>>,
}

/// A route the proxy cannot run, named by resource and field.
#[derive(Debug, thiserror::Error)]
#[error("{resource} {field}: {message}")]
pub struct BuildError {
    pub resource: String,
    pub field: String,
    pub message: String,
}

impl BuildError {
    fn at(origin: &RouteOrigin, message: String) -> Self {
        BuildError {
            resource: origin.resource.as_ref().map_or("default route".into(), |r| r.to_string()),
            field: origin.field.clone(),
            message,
        }
    }
}

impl Routing {
    /// Builds the runtime tables. Counters of clusters `previous` already had are kept, and
    /// so is the state of their endpoints (requests in flight, failures, ejections).
    pub fn build(tables: &ProxyTables, previous: Option<&Routing>) -> Result<Routing, BuildError> {
        let upstreams: BTreeMap<ClusterKey, Arc<Upstream>> = tables
            .clusters
            .iter()
            .map(|(key, cluster)| {
                let before = previous.and_then(|p| p.upstreams.get(key));
                let stats =
                    before.map(|u| u.stats.clone()).unwrap_or_else(|| Arc::new(ClusterStats::new(key.to_string())));
                (key.clone(), Arc::new(Upstream::new(cluster, stats, before.map(|u| &**u))))
            })
            .collect();
        let mut routing = Routing { hosts: HashMap::default(), upstreams };
        for listener in tables.outbound.values() {
            for host in &listener.virtual_hosts {
                let mut runtime = HostRoutes::default();
                for route in &host.http_routes {
                    let name = route_name(host, route);
                    let action = routing.action(route, name);
                    runtime.http.push(action.map_err(|m| BuildError::at(&route.origin, m))?);
                }
                for route in &host.tls_routes {
                    let destinations = routing.destinations(&route.destinations, None);
                    runtime.tls.push(destinations.map_err(|m| BuildError::at(&route.origin, m))?);
                }
                for route in &host.tcp_routes {
                    let destinations = routing.destinations(&route.destinations, None);
                    runtime.tcp.push(destinations.map_err(|m| BuildError::at(&route.origin, m))?);
                }
                routing.hosts.insert(host.name.clone(), runtime);
            }
        }
        Ok(routing)
    }

    fn action(&self, route: &HttpRoute, name: String) -> Result<Action, String> {
        let headers = route.headers.as_ref();
        let response_ops = |headers: Option<&Headers>| -> Result<Option<Arc<HeaderOps>>, String> {
            let mut ops = HeaderOps::default();
            if let Some(response) = headers.and_then(|h| h.response.as_ref()) {
                ops.extend(response).map_err(|e| format!("headers.response: {e}"))?;
            }
            Ok((!ops.is_empty()).then(|| Arc::new(ops)))
        };
        Ok(match &route.action {
            HttpAction::Forward(weighted) => Action::Forward {
                destinations: self.destinations(weighted, headers)?,
                policy: Arc::new(RoutePolicy::build(route, name, &self.upstreams)?),
            },
            HttpAction::Redirect(redirect) => {
                let code = redirect.redirect_code.unwrap_or(301);
                let status = u16::try_from(code)
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .ok_or(format!("redirect.redirectCode {code} is not a status code"))?;
                Action::Redirect { redirect: redirect.clone(), status, response_ops: response_ops(headers)? }
            }
            HttpAction::DirectResponse(direct) => direct_response(direct, response_ops(headers)?)?,
        })
    }

    fn destinations(&self, weighted: &WeightedClusters, headers: Option<&Headers>) -> Result<Destinations, String> {
        let mut list = Vec::new();
        for (index, wc) in weighted.clusters.iter().enumerate() {
            let upstream = self.upstreams.get(&wc.cluster).cloned().ok_or(format!("cluster {} missing", wc.cluster))?;
            let mut request_ops = HeaderOps::default();
            let mut response_ops = HeaderOps::default();
            for (h, field) in
                [(headers, "headers".to_string()), (wc.headers.as_ref(), format!("route[{index}].headers"))]
            {
                if let Some(request) = h.and_then(|h| h.request.as_ref()) {
                    request_ops.extend(request).map_err(|e| format!("{field}.request: {e}"))?;
                }
                if let Some(response) = h.and_then(|h| h.response.as_ref()) {
                    response_ops.extend(response).map_err(|e| format!("{field}.response: {e}"))?;
                }
            }
            let response_ops = (!response_ops.is_empty()).then(|| Arc::new(response_ops));
            list.push(Dest { upstream, weight: wc.weight, request_ops, response_ops });
        }
        Ok(Destinations { list, total: weighted.total_weight })
    }
}

/// How log lines name a route: `VirtualService default/reviews spec.http[0] (name)`.
fn route_name(host: &VirtualHost, route: &HttpRoute) -> String {
    let resource = match &route.origin.resource {
        Some(resource) => format!("{resource} {}", route.origin.field),
        None => format!("default route of {}", host.name),
    };
    if route.name.is_empty() || route.origin.resource.is_none() {
        resource
    } else {
        format!("{resource} ({})", route.name)
    }
}

fn direct_response(direct: &HttpDirectResponse, response_ops: Option<Arc<HeaderOps>>) -> Result<Action, String> {
    let status = u16::try_from(direct.status)
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(format!("directResponse.status {} is not a status code", direct.status))?;
    let body = match &direct.body {
        Some(body) if body.bytes.is_some() => {
            return Err("directResponse.body.bytes is not supported yet; use body.string".into());
        }
        Some(body) => Bytes::from(body.string.clone().unwrap_or_default()),
        None => Bytes::new(),
    };
    Ok(Action::Direct { status, body, response_ops })
}
