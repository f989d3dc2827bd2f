//! The outbound end: dial an endpoint, in mutual TLS when routing marked it as a sidecar's.

use super::{Credentials, MeshTls, spiffe_id};
use crate::breaker::Keepalive;
use crate::route::Dial;
use std::io;
use std::net::{IpAddr, SocketAddr};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_util::either::Either;

/// A connection to an upstream: plaintext, or mutual TLS with a peer sidecar. One type for
/// both, so the HTTP client and TCP forwarding are compiled once.
pub type UpstreamIo = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// Connects to `dial.address` (from `source`, with `keepalive`), then, when the endpoint
/// expects mutual TLS and the proxy has credentials, makes the handshake and checks the peer's
/// identity. Without credentials the connection stays plaintext, as from a proxy outside the
/// mesh; the peer's inbound side accepts that in PERMISSIVE mode.
pub async fn connect(
    dial: &Dial,
    source: Option<IpAddr>,
    keepalive: Option<&Keepalive>,
    tls: &MeshTls,
) -> io::Result<UpstreamIo> {
    let tcp = crate::tcp::connect(dial.address, source, keepalive).await?;
    match (&dial.mtls, tls.current()) {
        (Some(expected), Some(credentials)) => {
            Ok(Either::Right(Box::new(handshake(tcp, dial.address, expected, &credentials).await?)))
        }
        _ => Ok(Either::Left(tcp)),
    }
}

/// The client handshake over `tcp`, accepted only if the peer proves `expected` (any identity
/// of the mesh when `expected` is empty: the registry did not know the endpoint's account).
async fn handshake(
    tcp: TcpStream,
    address: SocketAddr,
    expected: &str,
    credentials: &Credentials,
) -> io::Result<TlsStream<TcpStream>> {
    // Workload certificates carry no DNS name: the name given here only satisfies the API (an
    // IP address is not sent as SNI); the identity is checked below.
    let name = ServerName::IpAddress(address.ip().into());
    let stream = TlsConnector::from(credentials.client.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("mTLS handshake with {address}: {e}")))?;
    let peer = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()).and_then(spiffe_id);
    match peer {
        Some(peer) if expected.is_empty() || peer == expected => Ok(stream),
        peer => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "mTLS peer {address} is {}, expected {expected}",
                peer.as_deref().unwrap_or("a certificate without a SPIFFE ID")
            ),
        )),
    }
}
