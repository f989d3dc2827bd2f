//! The inbound end: tell a peer sidecar's mutual TLS from plaintext or an app's own TLS, and
//! terminate the former (Istio's PERMISSIVE mode: both are served).
//!
//! The decision needs the client's first bytes. HTTP and TLS clients speak first, so the
//! listener waits for them; on an opaque TCP port the app's protocol may be server-first (a
//! database greeting), so the wait is short and a client that stays silent is served as
//! plaintext: its greeting comes that much later, but it never stalls. A peer sidecar sends
//! its ClientHello as soon as it connects.

use super::{Credentials, Rewind, spiffe_id};
use crate::sni;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

/// A connection as the inbound side serves it: the bytes as they came (with what was read to
/// decide put back), or the plaintext inside a peer sidecar's mutual TLS.
pub type DownstreamIo = Either<Rewind<TcpStream>, Box<TlsStream<Rewind<TcpStream>>>>;

/// A TLS record's first byte: a handshake.
const HANDSHAKE_RECORD: u8 = 22;

/// What was accepted.
pub struct Accepted {
    pub io: DownstreamIo,
    /// The peer sidecar's SPIFFE ID, for mutual TLS.
    pub peer_identity: Option<String>,
}

/// Waits up to `first_bytes` for the client to speak, then terminates mutual TLS if that is
/// what it speaks. Fails only when a peer's handshake fails (no, a bad or an untrusted
/// certificate), or when a peer sidecar speaks mutual TLS before this proxy has `credentials`
/// (its sidecar sees a connect failure and retries; the bytes never reach the app).
pub async fn accept(
    mut stream: TcpStream,
    first_bytes: Duration,
    credentials: Option<&Arc<Credentials>>,
) -> io::Result<Accepted> {
    let plain = |stream, buffered| Accepted { io: Either::Left(Rewind::new(stream, buffered)), peer_identity: None };
    let mut first = [0u8; 1];
    match tokio::time::timeout(first_bytes, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == HANDSHAKE_RECORD => {}
        // Plaintext, a silent client, or one that closed or reset at once (serving it as
        // plaintext meets the same end of stream or error on its first read).
        _ => return Ok(plain(stream, Vec::new())),
    }
    let hello = sni::read_client_hello(&mut stream, HELLO_TIMEOUT).await;
    let from_sidecar = hello.is_tls && hello.alpn.iter().any(|p| p.starts_with(super::MESH_ALPN));
    if !from_sidecar {
        return Ok(plain(stream, hello.buffered));
    }
    let Some(credentials) = credentials else {
        return Err(io::Error::other("mutual TLS from a peer before this proxy has its workload certificate"));
    };
    let tls = TlsAcceptor::from(credentials.server.clone())
        .accept(Rewind::new(stream, hello.buffered))
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("mTLS handshake: {e}")))?;
    let peer_identity = tls.get_ref().1.peer_certificates().and_then(|chain| chain.first()).and_then(spiffe_id);
    Ok(Accepted { io: Either::Right(Box::new(tls)), peer_identity })
}

/// How long a client that began a TLS handshake may take to finish its ClientHello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
