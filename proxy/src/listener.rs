//! The capture listeners (outbound 15001, inbound 15006): accept, learn where the connection
//! was going, ask the router how to carry it, carry it.

use crate::drain::Drain;
use crate::http::server::{self, HttpShared};
use crate::reason::Reason;
use crate::route::{ConnContext, ConnRoute, ConnectionRouter, Direction, Refusal, Target};
use crate::sni;
use crate::stats::Stats;
use crate::tls::accept::DownstreamIo;
use crate::tls::{MeshTls, Rewind};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::either::Either;

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
    /// The proxy's credentials: the inbound side terminates peer sidecars' mutual TLS with
    /// them, the outbound side originates it to endpoints routing marks.
    pub tls: Arc<MeshTls>,
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
    let Some((original_dst, direct)) = resolve_original_dst(&stream, shared.original_dst, direction) else {
        counters.original_dst_fail.fetch_add(1, Relaxed);
        return;
    };
    let ctx = ConnContext { direction, peer, original_dst, direct };
    let route = shared.router.route_connection(&ctx);
    if let ConnRoute::Reject(refusal) = route {
        return refuse(&ctx, refusal, shared);
    }
    let io = match (direction, shared.tls.current()) {
        (Direction::Inbound, credentials) if credentials.is_some() || shared.tls.expected() => {
            let wait = if matches!(route, ConnRoute::Tcp(_)) { SILENT_CLIENT_WAIT } else { SNI_TIMEOUT };
            match crate::tls::accept::accept(stream, wait, credentials.as_ref()).await {
                Ok(accepted) => {
                    if let Some(identity) = &accepted.peer_identity {
                        counters.mtls_accepted.fetch_add(1, Relaxed);
                        tracing::debug!(peer = %ctx.peer, dst = %ctx.original_dst, %identity, "mutual TLS accepted");
                    }
                    accepted.io
                }
                Err(error) => {
                    counters.mtls_fail.fetch_add(1, Relaxed);
                    tracing::warn!(peer = %ctx.peer, dst = %ctx.original_dst, %error, "mutual TLS handshake failed: connection closed");
                    return;
                }
            }
        }
        _ => Either::Left(Rewind::new(stream, Vec::new())),
    };
    carry(io, route, ctx, shared).await;
}

/// Carries a connection as `route` says, over what the client speaks (plaintext, or the inside
/// of a peer's mutual TLS).
async fn carry(mut stream: DownstreamIo, route: ConnRoute, ctx: ConnContext, shared: &ListenerShared) {
    match route {
        ConnRoute::Tls(router) => {
            let hello = sni::read_client_hello(&mut stream, SNI_TIMEOUT).await;
            match router.route_sni(&ctx, hello.server_name.as_deref()) {
                ConnRoute::Tcp(target) => forward_tcp(stream, &ctx, target, &hello.buffered, shared).await,
                ConnRoute::Reject(refusal) => refuse(&ctx, refusal, shared),
                ConnRoute::Http(_) | ConnRoute::Tls(_) => refuse(
                    &ctx,
                    Refusal { reason: Reason::NoRoute, detail: "TLS router gave no TCP target".into() },
                    shared,
                ),
            }
        }
        ConnRoute::Tcp(target) => forward_tcp(stream, &ctx, target, &[], shared).await,
        ConnRoute::Http(router) => {
            server::serve(stream, ctx, router, shared.http.clone(), shared.drain.watch()).await;
        }
        ConnRoute::Reject(refusal) => refuse(&ctx, refusal, shared),
    }
}

/// How long a TLS client may take to send its ClientHello.
const SNI_TIMEOUT: Duration = Duration::from_secs(10);

/// On an inbound TCP port, how long the proxy waits for a client's first bytes to tell a peer
/// sidecar's mutual TLS from plaintext. A peer sidecar sends its ClientHello at once; a client
/// of a server-first protocol (a database greeting) sends nothing until the server speaks, and
/// is served as plaintext after this wait rather than stalled.
const SILENT_CLIENT_WAIT: Duration = Duration::from_secs(1);

fn refuse(ctx: &ConnContext, refusal: Refusal, shared: &ListenerShared) {
    shared.stats.reasons.count(refusal.reason);
    tracing::warn!(
        direction = ctx.direction.as_str(), peer = %ctx.peer, dst = %ctx.original_dst,
        reason = refusal.reason.as_str(), detail = %refusal.detail, "connection refused"
    );
}

/// The connection's original destination and whether the connection was made straight to
/// the listener (no capture rule redirected it); `None` (logged) when a direct connection
/// cannot be served: on the inbound side, where only redirected traffic makes sense.
fn resolve_original_dst(stream: &TcpStream, mode: OriginalDst, direction: Direction) -> Option<(SocketAddr, bool)> {
    let local = stream.local_addr().ok()?;
    let dst = match mode {
        OriginalDst::Fixed(addr) => return Some((addr, false)),
        OriginalDst::Kernel => crate::sys::original_dst(stream, local.is_ipv6()),
    };
    match dst {
        Ok(dst) if normalize(dst) != normalize(local) => Some((normalize(dst), false)),
        // Conntrack reports the listener itself, or (no NAT entry) nothing: not redirected.
        result if direction == Direction::Outbound => {
            tracing::debug!(%local, error = ?result.err(), "direct connection to the outbound listener");
            Some((normalize(local), true))
        }
        Ok(_) => {
            tracing::warn!(%local, "connection made directly to the inbound capture port, not redirected: closing");
            None
        }
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

/// How long a TCP connection to an upstream may take, unless its cluster's `connectTimeout`
/// says otherwise (Istio's default).
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to the target, sends `prefix` (bytes already read, such as a ClientHello), then
/// copies both ways with half-close. A cluster at its `maxConnections` gets no new connection:
/// the downstream one is closed at once (TCP has no way to queue it that a client would see).
async fn forward_tcp(
    mut downstream: DownstreamIo,
    ctx: &ConnContext,
    target: Target,
    prefix: &[u8],
    shared: &ListenerShared,
) {
    let Target { upstream, cluster, .. } = target;
    cluster.cx_total.fetch_add(1, Relaxed);
    let breaker = cluster.breaker.load_full();
    let _slot = match breaker.as_deref().map(|b| b.try_connection()) {
        Some(Err(overflow)) => {
            cluster.overflow.count(overflow.limit);
            shared.stats.reasons.count(Reason::Overflow);
            tracing::warn!(
                direction = ctx.direction.as_str(), reason = Reason::Overflow.as_str(), cluster = %cluster.name,
                peer = %ctx.peer, %overflow, "connection refused"
            );
            return;
        }
        Some(Ok(slot)) => Some(slot),
        None => None,
    };
    let limits = breaker.as_deref().map(|b| &b.limits);
    let timeout = limits.and_then(|l| l.connect_timeout).unwrap_or(TCP_CONNECT_TIMEOUT);
    let keepalive = limits.and_then(|l| l.keepalive.as_ref());
    let connect = crate::tls::connect::connect(&upstream, shared.source_v4, keepalive, &shared.tls);
    let connected = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(mut up)) => up.write_all(prefix).await.map(|()| up),
        Ok(Err(error)) => Err(error),
        Err(_) => {
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connect timed out after {timeout:?}")))
        }
    };
    let mut up = match connected {
        Ok(up) => up,
        Err(error) => {
            shared.stats.of(ctx.direction).upstream_fail.fetch_add(1, Relaxed);
            cluster.upstream_fail.fetch_add(1, Relaxed);
            shared.stats.reasons.count(Reason::ConnectFailure);
            tracing::warn!(
                direction = ctx.direction.as_str(), reason = Reason::ConnectFailure.as_str(),
                cluster = %cluster.name, %upstream, %error, "upstream connect failed"
            );
            return;
        }
    };
    match crate::tcp::copy_bidirectional(&mut downstream, &mut up).await {
        Ok((sent, received)) => {
            tracing::debug!(direction = ctx.direction.as_str(), cluster = %cluster.name, %upstream, sent, received, "tcp closed");
        }
        Err(error) => {
            tracing::debug!(direction = ctx.direction.as_str(), cluster = %cluster.name, %upstream, %error, "tcp ended")
        }
    }
}
