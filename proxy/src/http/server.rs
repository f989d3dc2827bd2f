//! The downstream side: one accepted connection served as HTTP/1.1 or HTTP/2.

use super::ProxyBody;
use super::attempts::{self, Answer};
use super::client::HttpClient;
use crate::drain::{Drain, DrainWatch};
use crate::route::{ConnContext, HttpRoute, HttpRouter};
use crate::stats::Stats;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::io::{AsyncRead, AsyncWrite};

/// What every HTTP connection of one listener shares: built once, cloned by reference.
pub struct HttpShared {
    pub builder: auto::Builder<TokioExecutor>,
    pub client: HttpClient,
    pub drain: Drain,
    pub stats: Arc<Stats>,
}

impl HttpShared {
    pub fn new(client: HttpClient, drain: Drain, stats: Arc<Stats>) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // No time limit on reading a request head: Envoy sets none by default, nor does Istio.
        // hyper's default of 30 s arms a timer for every request, which cost a twentieth of
        // a request's instructions.
        builder.http1().timer(TokioTimer::new()).header_read_timeout(None);
        builder.http2().timer(TokioTimer::new());
        HttpShared { builder, client, drain, stats }
    }
}

/// Serves `io` until the client closes it, or until draining asks it to finish: then HTTP/1.1
/// closes after the response in flight, idle keep-alive connections close at once, and HTTP/2
/// sends GOAWAY and lets open streams complete.
pub async fn serve<IO>(
    io: IO,
    ctx: ConnContext,
    router: Arc<dyn HttpRouter>,
    shared: Arc<HttpShared>,
    mut drain: DrainWatch,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_shared = shared.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let router = router.clone();
        let shared = svc_shared.clone();
        async move { Ok::<_, Infallible>(handle(req, ctx, &*router, &shared).await) }
    });
    let conn = shared.builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        res = conn.as_mut() => res,
        _ = drain.signaled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(peer = %ctx.peer, dst = %ctx.original_dst, %error, "http connection ended with an error");
    }
}

async fn handle(
    req: Request<Incoming>,
    ctx: ConnContext,
    router: &dyn HttpRouter,
    shared: &HttpShared,
) -> Response<ProxyBody> {
    let counters = shared.stats.of(ctx.direction);
    counters.rq_total.fetch_add(1, Relaxed);
    let (mut head, body) = req.into_parts();
    let route = router.route_request(&ctx, &mut head);
    let req = Request::from_parts(head, body);
    match route {
        HttpRoute::Respond(reply) => {
            if let Some((reason, _)) = &reply.reason {
                shared.stats.reasons.count(*reason);
            }
            attempts::reply(reply)
        }
        HttpRoute::Forward { target, protocol, response_headers, resilience } => {
            target.cluster.rq_total.fetch_add(1, Relaxed);
            // Boxed: the forwarding future is a few KB, and hyper moves the service's future
            // more than once per request; moving a pointer instead of copying the state
            // machine costs one allocation and saves more instructions than it adds.
            match Box::pin(attempts::forward(shared, &ctx, req, &target, protocol, resilience)).await {
                Answer::Upstream(mut resp) => {
                    if let Some(ops) = response_headers {
                        ops.apply(resp.headers_mut());
                    }
                    resp
                }
                Answer::Local(resp) => resp,
            }
        }
    }
}
