//! Mirroring (`mirror`, `mirrors`): fire-and-forget copies of requests to another cluster.
//!
//! A copy goes out from its own task with its own time limit, carries the authority suffixed
//! `-shadow` (`reviews:9080` becomes `reviews-shadow:9080`, as Istio does) and its response is
//! read and dropped. The primary request never waits for a mirror: a copy whose body is not
//! complete yet waits for the primary to finish reading it, and one whose body outgrows the
//! replay limit is skipped. At most [`MAX_IN_FLIGHT`] copies are in flight per proxy; more
//! are skipped and counted, so a stalled mirror costs bounded memory.

use super::client::HttpClient;
use super::replay::{Replayable, RequestBody};
use crate::drain::Drain;
use crate::policy::Mirror;
use crate::stats::Stats;
use http::header::HOST;
use http::request::Parts;
use http::{HeaderValue, Request, Uri};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// Mirror requests allowed in flight at once, per proxy.
pub const MAX_IN_FLIGHT: usize = 64;
/// How long a copy may take when the route sets no `timeout`.
const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(10);

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// One slot of [`MAX_IN_FLIGHT`], given back when dropped.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        let taken = IN_FLIGHT.fetch_add(1, Relaxed);
        if taken >= MAX_IN_FLIGHT {
            IN_FLIGHT.fetch_sub(1, Relaxed);
            return None;
        }
        Some(Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Relaxed);
    }
}

/// Where a copy's body comes from.
#[derive(Clone)]
pub enum MirrorBody {
    Empty,
    Recorded(Replayable),
}

/// What a copy needs besides the request.
pub struct MirrorContext<'a> {
    pub client: &'a HttpClient,
    pub drain: &'a Drain,
    pub stats: &'a Arc<Stats>,
    pub time_limit: Option<Duration>,
    pub route: &'a str,
}

/// Sends a copy of the request `head` describes to `mirror`'s cluster, in the background.
pub fn spawn(cx: &MirrorContext<'_>, mirror: &Mirror, head: &Parts, body: MirrorBody) {
    let counters = &cx.stats.outbound;
    let (Some(upstream), Some(slot)) = (mirror.upstream.pick(None), Slot::take()) else {
        counters.mirror_skipped.fetch_add(1, Relaxed);
        tracing::debug!(route = cx.route, cluster = %mirror.upstream.key, "mirror skipped: no endpoint or too many in flight");
        return;
    };
    let Some(mut req) = shadow_request(head) else {
        counters.mirror_skipped.fetch_add(1, Relaxed);
        return;
    };
    counters.mirror_sent.fetch_add(1, Relaxed);
    mirror.upstream.stats.rq_total.fetch_add(1, Relaxed);
    let (client, drain, stats) = (cx.client.clone(), cx.drain.clone(), cx.stats.clone());
    let (protocol, cluster) = (mirror.upstream.protocol, mirror.upstream.key.to_string());
    let limit = cx.time_limit.unwrap_or(DEFAULT_TIME_LIMIT);
    tokio::spawn(async move {
        let _slot = slot;
        let send = async {
            *req.body_mut() = match body {
                MirrorBody::Empty => RequestBody::empty(),
                MirrorBody::Recorded(recorded) => match recorded.finished_copy().await {
                    Some(body) => body,
                    None => {
                        stats.outbound.mirror_skipped.fetch_add(1, Relaxed);
                        tracing::debug!(%cluster, "mirror skipped: request body over the replay limit");
                        return;
                    }
                },
            };
            match client.forward(req, &upstream, protocol, &drain).await {
                Ok(resp) => {
                    let mut body = resp.into_body();
                    while let Some(Ok(_)) = body.frame().await {}
                }
                Err(error) => tracing::debug!(%cluster, %upstream, %error, "mirror request failed"),
            }
        };
        if tokio::time::timeout(limit, send).await.is_err() {
            tracing::debug!(%cluster, %upstream, ?limit, "mirror request timed out");
        }
    });
}

/// A copy of `head` (no body yet) with its authority suffixed `-shadow`.
fn shadow_request(head: &Parts) -> Option<Request<RequestBody>> {
    let mut req =
        Request::builder().method(head.method.clone()).version(head.version).body(RequestBody::empty()).ok()?;
    *req.headers_mut() = head.headers.clone();
    let mut uri = head.uri.clone().into_parts();
    if let Some(authority) = &uri.authority {
        uri.authority = shadow_authority(authority.as_str()).parse().ok();
    }
    *req.uri_mut() = Uri::from_parts(uri).ok()?;
    if let Some(host) = head.headers.get(HOST).and_then(|h| h.to_str().ok()) {
        req.headers_mut().insert(HOST, HeaderValue::from_str(&shadow_authority(host)).ok()?);
    }
    Some(req)
}

/// `reviews` → `reviews-shadow`, `reviews:9080` → `reviews-shadow:9080`.
pub fn shadow_authority(authority: &str) -> String {
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':') => {
            format!("{host}-shadow:{port}")
        }
        _ => format!("{authority}-shadow"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shadow_authority_keeps_the_port() {
        assert_eq!(shadow_authority("reviews"), "reviews-shadow");
        assert_eq!(shadow_authority("httpbin:8000"), "httpbin-shadow:8000");
        assert_eq!(shadow_authority("a.b.svc.cluster.local:80"), "a.b.svc.cluster.local-shadow:80");
    }

    #[test]
    fn copies_carry_the_shadow_host() {
        let head = Request::get("/headers").header("host", "httpbin:8000").body(()).unwrap().into_parts().0;
        let copy = shadow_request(&head).unwrap();
        assert_eq!(copy.headers()["host"], "httpbin-shadow:8000");
        assert_eq!(copy.uri(), "/headers");
    }
}
