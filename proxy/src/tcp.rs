//! Opaque TCP forwarding with half-close.
//!
//! A client that sends a request and then shuts down its write side (`shutdown(SHUT_WR)`) still
//! expects the reply: each direction is copied on its own, and when one side reaches EOF only the
//! write side of the other is shut down. The connection closes when both directions are done.

use crate::breaker::Keepalive;
use std::io;
use std::net::{IpAddr, SocketAddr};
use tokio::io::AsyncWrite;
use tokio::net::{TcpSocket, TcpStream};

/// Connects to `upstream`, binding the source address to `source` when given and of the same
/// family (the inbound side uses 127.0.0.6 so the capture rules leave that traffic alone), with
/// the cluster's TCP keepalive if it sets one.
pub async fn connect(
    upstream: SocketAddr,
    source: Option<IpAddr>,
    keepalive: Option<&Keepalive>,
) -> io::Result<TcpStream> {
    let socket = if upstream.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_nodelay(true)?;
    if let Some(keepalive) = keepalive {
        keepalive.apply(socket2::SockRef::from(&socket))?;
    }
    if let Some(ip) = source.filter(|ip| ip.is_ipv4() == upstream.is_ipv4()) {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(upstream).await
}

/// Copies bytes both ways until both directions have finished; returns (sent to upstream,
/// received from upstream).
pub async fn copy_bidirectional<A, B>(downstream: &mut A, upstream: &mut B) -> io::Result<(u64, u64)>
where
    A: tokio::io::AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: tokio::io::AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    // tokio's copy_bidirectional shuts down the write half of one side when the other reaches
    // EOF and keeps copying the opposite direction: exactly TCP half-close semantics.
    tokio::io::copy_bidirectional_with_sizes(downstream, upstream, 16 * 1024, 16 * 1024).await
}
