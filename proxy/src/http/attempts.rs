//! Sending one routed request under its route's policy: injected faults first, then mirrors,
//! then attempts until one gives a response that is not retried, all within the route's
//! `timeout`.
//!
//! The time limits end when the response headers arrive: a response body (a long gRPC stream,
//! a large download) is never cut by `timeout` or `perTryTimeout`. Envoy's route timeout also
//! covers the body and ends streams users meant to keep open; here it bounds only the wait for
//! an answer.

use super::client::ForwardError;
use super::mirror::{self, MirrorBody, MirrorContext};
use super::replay::{Replayable, RequestBody};
use super::server::HttpShared;
use super::{ProxyBody, headers};
use crate::breaker::{self, Breaker, Overflow};
use crate::policy::RoutePolicy;
use crate::policy::fault::abort_response;
use crate::policy::retry::Failure;
use crate::reason::{REASON_HEADER, Reason};
use crate::route::{ConnContext, Dial, LocalReply, Resilience, Target, UpstreamProtocol};
use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::{Body, Incoming};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// The answer to one request: the upstream's response, or the proxy's own.
pub enum Answer {
    Upstream(Response<ProxyBody>),
    Local(Response<ProxyBody>),
}

/// Forwards `req` to `target`, applying the route's faults, mirrors, retries and timeouts.
pub async fn forward(
    shared: &HttpShared,
    ctx: &ConnContext,
    req: Request<Incoming>,
    target: &Target,
    protocol: UpstreamProtocol,
    resilience: Option<Resilience>,
) -> Answer {
    let Some(resilience) = resilience else {
        let exchange = Exchange { shared, ctx, target, protocol, resilience: None };
        return exchange.attempt(req.map(RequestBody::Stream), &target.upstream, None).await.answer(&exchange);
    };
    let exchange = Exchange { shared, ctx, target, protocol, resilience: Some(&resilience) };
    let policy = &*resilience.policy;
    let breaker = target.cluster.breaker.load_full();
    if let Some(answer) = exchange.inject_fault(policy).await {
        return answer;
    }
    let mirrors = draw_mirrors(policy);
    let upgrade = req.version() != Version::HTTP_2 && headers::is_upgrade(req.headers());
    let run = async {
        if upgrade || (policy.retry.retries == 0 && mirrors == 0) {
            let per_try = policy.retry.per_try_timeout;
            let mut req = req.map(RequestBody::Stream);
            breaker::attach(&mut req, breaker.as_ref());
            return exchange.attempt(req, &target.upstream, per_try).await.answer(&exchange);
        }
        let (head, body) = req.into_parts();
        let mut body = if body.is_end_stream() { Recorded::Empty } else { Recorded::Replay(Replayable::new(body)) };
        exchange.mirror(policy, mirrors, &head, &body);
        exchange.attempts(policy, &resilience, breaker.as_ref(), &head, &mut body).await
    };
    match policy.timeout {
        None => run.await,
        Some(limit) => match tokio::time::timeout(limit, run).await {
            Ok(answer) => answer,
            Err(_) => exchange.timed_out("timeout", limit),
        },
    }
}

/// Which of the route's mirrors get a copy of this request, as bits (up to 64 mirrors).
fn draw_mirrors(policy: &RoutePolicy) -> u64 {
    policy
        .mirrors
        .iter()
        .take(64)
        .enumerate()
        .fold(0, |drawn, (i, m)| if m.share.draw() { drawn | 1 << i } else { drawn })
}

/// The client's body as the attempts send it.
enum Recorded {
    Empty,
    Replay(Replayable),
}

impl Recorded {
    /// The body of the next attempt; `None` when it can no longer be sent whole.
    fn attempt(&self) -> Option<RequestBody> {
        match self {
            Recorded::Empty => Some(RequestBody::empty()),
            Recorded::Replay(replay) => replay.attempt(),
        }
    }

    fn replayable(&self) -> bool {
        match self {
            Recorded::Empty => true,
            Recorded::Replay(replay) => replay.replayable(),
        }
    }

    fn for_mirror(&self) -> MirrorBody {
        match self {
            Recorded::Empty => MirrorBody::Empty,
            Recorded::Replay(replay) => MirrorBody::Recorded(replay.clone()),
        }
    }
}

/// How one attempt ended.
enum Outcome {
    Response(Response<ProxyBody>),
    Failed(ForwardError),
    PerTryTimeout(Duration),
}

impl Outcome {
    fn answer(self, exchange: &Exchange<'_>) -> Answer {
        match self {
            Outcome::Response(resp) => Answer::Upstream(resp),
            Outcome::Failed(error) => exchange.upstream_failure(error),
            Outcome::PerTryTimeout(limit) => exchange.timed_out("per-try timeout", limit),
        }
    }
}

/// One request on its way: what every step needs.
struct Exchange<'a> {
    shared: &'a HttpShared,
    ctx: &'a ConnContext,
    target: &'a Target,
    protocol: UpstreamProtocol,
    resilience: Option<&'a Resilience>,
}

impl Exchange<'_> {
    /// Delays and aborts drawn for this request; `Some` is the answer of an aborted one.
    async fn inject_fault(&self, policy: &RoutePolicy) -> Option<Answer> {
        let fault = policy.fault.as_ref()?;
        if let Some(delay) = fault.draw_delay() {
            self.shared.stats.of(self.ctx.direction).fault_delayed.fetch_add(1, Relaxed);
            tokio::time::sleep(delay).await;
        }
        let abort = fault.draw_abort()?;
        self.shared.stats.reasons.count(Reason::FaultAbort);
        tracing::debug!(route = %policy.route, ?abort, "fault injected: request aborted");
        Some(Answer::Local(abort_response(abort)))
    }

    fn mirror(&self, policy: &RoutePolicy, drawn: u64, head: &Parts, body: &Recorded) {
        if drawn == 0 {
            return;
        }
        let cx = MirrorContext {
            client: &self.shared.client,
            drain: &self.shared.drain,
            stats: &self.shared.stats,
            time_limit: policy.timeout,
            route: &policy.route,
        };
        for (i, m) in policy.mirrors.iter().enumerate().take(64) {
            if drawn & (1 << i) != 0 {
                mirror::spawn(&cx, m, head, body.for_mirror());
            }
        }
    }

    /// Sends `req` to `upstream` once, within `per_try` if given.
    /// The endpoint counts the attempt as active and learns how it ended (outlier detection).
    async fn attempt(&self, req: Request<RequestBody>, upstream: &Dial, per_try: Option<Duration>) -> Outcome {
        let watch = self.resilience.and_then(|r| r.cluster.watch(upstream.address));
        let send = self.shared.client.forward(req, upstream, self.protocol, &self.shared.drain);
        let result = match per_try {
            Some(limit) => match tokio::time::timeout(limit, send).await {
                Ok(result) => result,
                Err(_) => {
                    if let Some(watch) = watch {
                        watch.timed_out();
                    }
                    return Outcome::PerTryTimeout(limit);
                }
            },
            None => send.await,
        };
        match result {
            Ok(mut resp) => {
                if let Some(watch) = watch {
                    watch.responded(&mut resp);
                }
                Outcome::Response(resp)
            }
            Err(error) => {
                if let Some(watch) = watch {
                    watch.failed(&error);
                }
                Outcome::Failed(error)
            }
        }
    }

    /// Attempts until one gives an answer that is not retried, or retries run out, or the
    /// cluster's `maxRetries` are in flight already (then the last answer is returned as is).
    async fn attempts(
        &self,
        policy: &RoutePolicy,
        resilience: &Resilience,
        breaker: Option<&Arc<Breaker>>,
        head: &Parts,
        body: &mut Recorded,
    ) -> Answer {
        let retry = &policy.retry;
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut upstream = self.target.upstream.clone();
        let mut retries = 0;
        // This request's retry in flight, counted against `maxRetries` until its outcome.
        let mut _retrying = None;
        loop {
            let Some(attempt_body) = body.attempt() else {
                tracing::warn!(route = %policy.route, "request body can no longer be replayed");
                return self.local_failure(Reason::UpstreamReset, StatusCode::SERVICE_UNAVAILABLE);
            };
            let mut req = copy_request(head, attempt_body);
            breaker::attach(&mut req, breaker);
            let outcome = self.attempt(req, &upstream, retry.per_try_timeout).await;
            let again = retries < retry.retries
                && match &outcome {
                    Outcome::Response(resp) => retry.retries_response(resp.status(), resp.headers(), &head.method),
                    Outcome::Failed(error) => failure_of(error).is_some_and(|f| retry.retries_failure(f, &head.method)),
                    Outcome::PerTryTimeout(_) => retry.retries_failure(Failure::PerTryTimeout, &head.method),
                };
            if !again {
                return outcome.answer(self);
            }
            if !body.replayable() {
                tracing::debug!(route = %policy.route, "not retried: request body over the replay limit");
                return outcome.answer(self);
            }
            _retrying = None;
            if let Some(breaker) = breaker {
                match breaker.retry() {
                    Ok(slot) => _retrying = Some(slot),
                    Err(overflow) => {
                        self.overflowed(&overflow, "retry not attempted");
                        return outcome.answer(self);
                    }
                }
            }
            drop(outcome);
            retries += 1;
            self.shared.stats.of(self.ctx.direction).upstream_rq_retry.fetch_add(1, Relaxed);
            self.target.cluster.upstream_rq_retry.fetch_add(1, Relaxed);
            tokio::time::sleep(retry.backoff(retries)).await;
            if retry.avoid_tried {
                tried.push(upstream.address);
            }
            let previous = upstream.address;
            if let Some(next) = resilience.cluster.pick_avoiding(resilience.original_dst, &tried) {
                upstream = next;
            }
            tracing::debug!(route = %policy.route, retry = retries, %previous, %upstream, "retrying request");
        }
    }

    fn upstream_failure(&self, error: ForwardError) -> Answer {
        if let ForwardError::Overflow { source, .. } = &error {
            self.overflowed(source, "request refused");
            return self.local_failure(Reason::Overflow, StatusCode::SERVICE_UNAVAILABLE);
        }
        let reason = error.reason();
        tracing::warn!(
            direction = self.ctx.direction.as_str(), reason = reason.as_str(), cluster = %self.target.cluster.name,
            %error, "upstream request failed"
        );
        self.local_failure(reason, error.status())
    }

    /// Counts and logs a limit of the cluster's `connectionPool` that was reached.
    fn overflowed(&self, overflow: &Overflow, what: &str) {
        self.target.cluster.overflow.count(overflow.limit);
        tracing::warn!(
            direction = self.ctx.direction.as_str(), reason = Reason::Overflow.as_str(),
            cluster = %self.target.cluster.name, %overflow, "{what}"
        );
    }

    fn local_failure(&self, reason: Reason, status: StatusCode) -> Answer {
        self.shared.stats.of(self.ctx.direction).upstream_fail.fetch_add(1, Relaxed);
        self.target.cluster.upstream_fail.fetch_add(1, Relaxed);
        self.shared.stats.reasons.count(reason);
        let detail = format!("{} {}", reason.as_str(), self.target.cluster.name);
        let detail = HeaderValue::from_str(&detail).unwrap_or(HeaderValue::from_static(reason.as_str()));
        Answer::Local(reply(LocalReply::failure(status, reason, detail)))
    }

    /// 504 with `x-mesh-reason: timeout`, logged with the route.
    fn timed_out(&self, which: &str, limit: Duration) -> Answer {
        self.shared.stats.of(self.ctx.direction).upstream_rq_timeout.fetch_add(1, Relaxed);
        self.shared.stats.reasons.count(Reason::Timeout);
        let route = self.resilience.map_or("", |r| r.policy.route.as_str());
        tracing::warn!(
            direction = self.ctx.direction.as_str(), reason = Reason::Timeout.as_str(), route,
            cluster = %self.target.cluster.name, ?limit, "{which} passed before the upstream answered"
        );
        let value = HeaderValue::from_static(Reason::Timeout.as_str());
        Answer::Local(reply(LocalReply::failure(StatusCode::GATEWAY_TIMEOUT, Reason::Timeout, value)))
    }
}

/// The retry condition a failed attempt meets; `None` for a request that cannot be sent at
/// all (no host) or was refused by the circuit breaker, which no retry would fix (Envoy does
/// not retry overflows either).
fn failure_of(error: &ForwardError) -> Option<Failure> {
    match error {
        ForwardError::Connect { .. } => Some(Failure::Connect),
        ForwardError::NoHost => None,
        // Nothing was sent, and the limit that refused it is still reached.
        ForwardError::Overflow { .. } => None,
        e if e.is_refused_stream() => Some(Failure::Refused),
        ForwardError::Request { .. } | ForwardError::H1 { .. } => Some(Failure::Reset),
    }
}

/// A request with `head`'s method, URI, version and headers (extensions are not copied: they
/// matter only for upgrades, which are never retried).
fn copy_request(head: &Parts, body: RequestBody) -> Request<RequestBody> {
    let mut req = Request::new(body);
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = head.uri.clone();
    *req.version_mut() = head.version;
    *req.headers_mut() = head.headers.clone();
    req
}

/// The response for a reply the proxy makes itself.
pub fn reply(reply: LocalReply) -> Response<ProxyBody> {
    let mut resp = Response::new(Either::Right(Full::new(reply.body)));
    *resp.status_mut() = reply.status;
    let headers = resp.headers_mut();
    if let Some((_, detail)) = reply.reason {
        headers.insert(REASON_HEADER, detail);
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    if let Some(location) = reply.location {
        headers.insert(http::header::LOCATION, location);
    }
    if let Some(ops) = reply.headers {
        ops.apply(headers);
    }
    resp
}
