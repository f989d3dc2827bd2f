//! The capture listeners (outbound 15001, inbound 15006): accept, learn where the connection
//! was going, ask the router how to carry it, carry it.

use crate::drain::Drain;
use crate::http::server::{self, HttpShared};
use crate::route::{ConnContext, ConnRoute, ConnectionRouter, Direction};
use crate::stats::Stats;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Where a connection's destination comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginalDst {
    /// From conntrack (`SO_ORIGINAL_DST`): the connection was redirected by the capture rules.
    Kernel,
    /// Every connection goes to this address: for tests on loopback and for running the proxy
    /// in front of one fixed upstream without capture rules.
    Fixed(SocketAddr),
}

/// Everything a listener's connections share, built once.
pub struct ListenerShared {
    pub direction: Direction,
    pub router: Arc<dyn ConnectionRouter>,
    pub http: Arc<HttpShared>,
    pub stats: Arc<Stats>,
    pub drain: Drain,
    pub original_dst: OriginalDst,
    /// Source address for IPv4 upstream TCP connections (127.0.0.6 inbound).
    pub source_v4: Option<IpAddr>,
}

/// Accepts until draining starts, then returns, which closes the socket: from then on new
/// connections are refused while the ones already accepted finish.
pub async fn accept_loop(listener: TcpListener, shared: Arc<ListenerShared>) {
    let mut drain = shared.drain.watch();
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = drain.signaled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let shared = shared.clone();
                shared.drain.clone().spawn(async move { handle(stream, peer, &shared).await });
            }
            Err(error) => {
                // Usually EMFILE: back off briefly instead of spinning on the error.
                tracing::warn!(direction = shared.direction.as_str(), %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    tracing::info!(direction = shared.direction.as_str(), listener = ?local, "listener closed for drain");
}

async fn handle(stream: TcpStream, peer: SocketAddr, shared: &ListenerShared) {
    let direction = shared.direction;
    let _active = shared.stats.open(direction);
    let counters = shared.stats.of(direction);
    let _ = stream.set_nodelay(true);
    let Some(original_dst) = resolve_original_dst(&stream, shared.original_dst) else {
        counters.original_dst_fail.fetch_add(1, Relaxed);
        return;
    };
    let ctx = ConnContext { direction, peer, original_dst };
    match shared.router.route_connection(&ctx) {
        ConnRoute::Tcp { upstream, cluster } => forward_tcp(stream, &ctx, upstream, cluster, shared).await,
        ConnRoute::Http(router) => {
            server::serve(stream, ctx, router, shared.http.clone(), shared.drain.watch()).await;
        }
        ConnRoute::Reject => {
            tracing::debug!(direction = direction.as_str(), %peer, %original_dst, "connection rejected")
        }
    }
}

/// The connection's original destination, or `None` (logged) if it is unknown or is this very
/// listener, which would make the proxy connect to itself forever.
fn resolve_original_dst(stream: &TcpStream, mode: OriginalDst) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let dst = match mode {
        OriginalDst::Fixed(addr) => return Some(addr),
        OriginalDst::Kernel => crate::sys::original_dst(stream, local.is_ipv6()),
    };
    match dst {
        Ok(dst) if dst == local => {
            tracing::warn!(%local, "connection made directly to the capture port, not redirected: closing");
            None
        }
        Ok(dst) => Some(normalize(dst)),
        Err(error) => {
            tracing::warn!(%local, %error, "original destination unknown (no capture rule?): closing");
            None
        }
    }
}

/// IPv4-mapped IPv6 addresses become plain IPv4, so routing sees one form.
fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

async fn forward_tcp(
    mut downstream: TcpStream,
    ctx: &ConnContext,
    upstream: SocketAddr,
    cluster: &'static str,
    shared: &ListenerShared,
) {
    let mut up = match crate::tcp::connect(upstream, shared.source_v4).await {
        Ok(up) => up,
        Err(error) => {
            shared.stats.of(ctx.direction).upstream_fail.fetch_add(1, Relaxed);
            tracing::warn!(direction = ctx.direction.as_str(), cluster, %upstream, %error, "upstream connect failed");
            return;
        }
    };
    match crate::tcp::copy_bidirectional(&mut downstream, &mut up).await {
        Ok((sent, received)) => {
            tracing::debug!(direction = ctx.direction.as_str(), cluster, %upstream, sent, received, "tcp closed");
        }
        Err(error) => tracing::debug!(direction = ctx.direction.as_str(), cluster, %upstream, %error, "tcp ended"),
    }
}
