//! One cluster as the data path uses it: its endpoints with their shared state, the balancer
//! built for them, and its outlier detection.
//!
//! Picking reads atomics only. Reporting an attempt's outcome is a few relaxed atomics; the
//! one lock, `ejecting`, is taken only when an endpoint crosses a threshold, so that two
//! ejections at once cannot both slip under `maxEjectionPercent`.

use super::endpoint::{ActiveRequest, Endpoint};
use crate::balance::{Balancer, Eligible, PickContext};
use crate::http::ProxyBody;
use crate::http::client::ForwardError;
use crate::outlier::{self, Millis, Outcome, OutlierPolicy, Trip};
use crate::reason::Reason;
use crate::route::{Dial, UpstreamProtocol};
use crate::stats::ClusterStats;
use common::compile::{Cluster, ClusterKey};
use common::registry::{EndpointAddress, Protocol, Resolution};
use http::{HeaderValue, Response};
use http_body_util::Either;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

pub struct Upstream {
    pub key: ClusterKey,
    pub stats: Arc<ClusterStats>,
    pub protocol: UpstreamProtocol,
    /// Ready endpoints, in the order compiled.
    endpoints: Vec<Arc<Endpoint>>,
    by_address: HashMap<SocketAddr, usize, foldhash::fast::RandomState>,
    balancer: Balancer,
    outlier: Option<OutlierPolicy>,
    ejecting: Mutex<()>,
    /// Why the cluster cannot take traffic (and the `x-mesh-reason` value), if it cannot.
    pub unavailable: Option<(Reason, HeaderValue)>,
    /// Endpoints are "the address dialled" (headless services, resolution NONE).
    pub passthrough: bool,
    /// The DestinationRule the policy comes from, for log lines.
    destination_rule: Option<String>,
}

/// The endpoint a pick chose, and the `Set-Cookie` to add to the response when a cookie
/// hash made its key up.
#[derive(Debug)]
pub struct Picked {
    pub dial: Dial,
    pub set_cookie: Option<HeaderValue>,
}

impl Upstream {
    /// The runtime side of `cluster`; endpoint state is taken over from `previous` (the same
    /// cluster in the config before) for every address both have.
    pub fn new(cluster: &Cluster, stats: Arc<ClusterStats>, previous: Option<&Upstream>) -> Self {
        let endpoints: Vec<Arc<Endpoint>> = cluster
            .endpoints
            .iter()
            .filter_map(|e| match e.address {
                EndpointAddress::Ip(ip) => Some((SocketAddr::new(ip, e.port), e)),
                EndpointAddress::Hostname(_) => None,
            })
            .map(|(address, e)| {
                let state = previous.and_then(|p| p.endpoint(address)).map(|e| e.state.clone());
                Arc::new(Endpoint::new(address, e.weight, state).with_mtls(e.mtls_identity.as_deref().map(Arc::from)))
            })
            .collect();
        let by_address = endpoints.iter().enumerate().map(|(i, e)| (e.address, i)).collect();
        let passthrough = cluster.resolution == Resolution::Passthrough;
        let unavailable = match cluster.unavailable_reason() {
            Some(text) => {
                let reason = if text.starts_with("subset_not_found") {
                    Reason::SubsetNotFound
                } else {
                    Reason::NoHealthyUpstream
                };
                Some((reason, header_value(&text, reason)))
            }
            None if endpoints.is_empty() && !passthrough => {
                let text = format!("{} {}", Reason::DnsUnsupported.as_str(), cluster.key);
                Some((Reason::DnsUnsupported, header_value(&text, Reason::DnsUnsupported)))
            }
            None => None,
        };
        let protocol = match cluster.protocol {
            Protocol::Http2 | Protocol::Grpc => UpstreamProtocol::Http2,
            _ => UpstreamProtocol::SameAsDownstream,
        };
        crate::breaker::configure(&stats, cluster);
        Upstream {
            key: cluster.key.clone(),
            stats,
            protocol,
            balancer: Balancer::new(cluster.policy.load_balancer.as_ref(), &endpoints),
            outlier: cluster.policy.outlier_detection.as_ref().map(OutlierPolicy::new),
            ejecting: Mutex::new(()),
            endpoints,
            by_address,
            unavailable,
            passthrough,
            destination_rule: cluster.destination_rule.as_ref().map(|r| r.to_string()),
        }
    }

    /// An endpoint for a request or connection, by the cluster's balancer; for a passthrough
    /// cluster or PASSTHROUGH balancing, the address the client dialled.
    pub fn choose(&self, ctx: &PickContext<'_>) -> Option<Picked> {
        if self.passthrough || self.balancer.algorithm() == crate::balance::Algorithm::Passthrough {
            return ctx.original_dst.map(|address| Picked { dial: Dial::plain(address), set_cookie: None });
        }
        let eligible = Eligible::new(&self.endpoints, ctx.tried, self.outlier.as_ref());
        let choice = self.balancer.pick(ctx, &eligible);
        let endpoint = &self.endpoints[choice.index?];
        if endpoint.state.health.maybe_ejected() {
            self.take_back(endpoint);
        }
        Some(Picked { dial: endpoint.dial(), set_cookie: choice.set_cookie })
    }

    /// An endpoint without request context (TCP, mirrors).
    pub fn pick(&self, original_dst: Option<SocketAddr>) -> Option<Dial> {
        self.choose(&PickContext { original_dst, ..Default::default() }).map(|p| p.dial)
    }

    /// As [`Upstream::pick`], skipping endpoints in `tried` while another is left: a retry
    /// goes elsewhere when it can (Envoy's previous-hosts predicate), and back to a tried
    /// endpoint only when every endpoint has been tried.
    pub fn pick_avoiding(&self, original_dst: Option<SocketAddr>, tried: &[SocketAddr]) -> Option<Dial> {
        self.choose(&PickContext { original_dst, tried, ..Default::default() }).map(|p| p.dial)
    }

    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    pub fn endpoint(&self, address: SocketAddr) -> Option<&Arc<Endpoint>> {
        self.by_address.get(&address).map(|i| &self.endpoints[*i])
    }

    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    pub fn outlier(&self) -> Option<&OutlierPolicy> {
        self.outlier.as_ref()
    }

    /// Starts an attempt to `address`: counted active until the returned watch (or the
    /// response body it hands its count to) is done. `None` for an address that is not one of
    /// the endpoints (the original destination of a passthrough).
    pub fn watch(&self, address: SocketAddr) -> Option<AttemptWatch<'_>> {
        let endpoint = self.endpoint(address)?;
        Some(AttemptWatch { upstream: self, endpoint, active: endpoint.start_request() })
    }

    /// Counts `outcome` for `endpoint`, and ejects it when that crossed a threshold.
    pub fn report(&self, endpoint: &Endpoint, outcome: Outcome) {
        let Some(policy) = &self.outlier else { return };
        let now = outlier::now();
        if let Some(trip) = policy.record(&endpoint.state.health, outcome, now) {
            self.eject(policy, endpoint, trip, now);
        }
    }

    fn eject(&self, policy: &OutlierPolicy, endpoint: &Endpoint, trip: Trip, now: Millis) {
        let _deciding = self.ejecting.lock().unwrap_or_else(PoisonError::into_inner);
        let health = &endpoint.state.health;
        health.reset(trip.kind);
        let ejected = self.endpoints.iter().filter(|e| e.state.health.is_ejected(now)).count();
        let counters = &self.stats.outlier;
        if ejected >= policy.max_ejected(self.endpoints.len()) {
            counters.overflow.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                cluster = %self.key, endpoint = %endpoint.address, reason = trip.kind.as_str(), consecutive = trip.count,
                ejected, max_ejection_percent = policy.max_ejection_percent,
                "outlier not ejected: maxEjectionPercent reached"
            );
            return;
        }
        let until = health.eject(policy, now);
        counters.count(trip.kind);
        tracing::warn!(
            cluster = %self.key, endpoint = %endpoint.address, reason = trip.kind.as_str(), consecutive = trip.count,
            until = %outlier::rfc3339(until), ejections = health.view(now).ejections,
            destination_rule = self.destination_rule.as_deref().unwrap_or(""), "endpoint ejected"
        );
    }

    /// Clears an ejection whose time is up and logs the return.
    fn take_back(&self, endpoint: &Endpoint) {
        if endpoint.state.health.take_back(outlier::now()) {
            tracing::info!(cluster = %self.key, endpoint = %endpoint.address, "ejected endpoint back in the pool");
        }
    }
}

fn header_value(text: &str, reason: Reason) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static(reason.as_str()))
}

/// One attempt to one endpoint: counted as active while it runs, and its outcome reported to
/// outlier detection when it ends.
pub struct AttemptWatch<'a> {
    upstream: &'a Upstream,
    endpoint: &'a Endpoint,
    active: ActiveRequest,
}

impl AttemptWatch<'_> {
    /// The endpoint answered: its status is counted, and the request stays active until the
    /// response body ends.
    pub fn responded(self, resp: &mut Response<ProxyBody>) {
        self.upstream.report(self.endpoint, Outcome::Response(resp.status().as_u16()));
        if let Either::Left(body) = resp.body_mut() {
            body.hold(self.active);
        }
    }

    /// The attempt failed before a response. Failures that say nothing about the endpoint
    /// (a request without a host, a local limit) are not counted.
    pub fn failed(self, error: &ForwardError) {
        let outcome = match error {
            ForwardError::Connect { .. } => Outcome::ConnectFailure,
            ForwardError::Request { .. } | ForwardError::H1 { .. } => Outcome::Reset,
            _ => return,
        };
        self.upstream.report(self.endpoint, outcome);
    }

    /// The per-try timeout passed before a response.
    pub fn timed_out(self) {
        self.upstream.report(self.endpoint, Outcome::Timeout);
    }
}
