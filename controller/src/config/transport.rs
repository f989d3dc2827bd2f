//! HTTP/2 for the config ports (15010, 15012), served with hyper directly rather than through
//! tonic's `Server`, so that what one connection may hold is set here ([`Http2Settings`]).
//!
//! Why: with one connection per proxy the controller's memory is mostly per connection. Under
//! tonic's `Server` each connection's task held 39 KB (the connection future of hyper's
//! HTTP/1-or-2 auto builder and tonic's select loop, kept inline in the task): with 2000
//! proxies the live heap was 184 MB, served this way (and with boxed queue items) 104 MB
//! (`benches/scale.rs`). The send-buffer bound below keeps a stream being sent a snapshot
//! from queueing more than a few parts.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tonic::service::Routes;

/// How long a client may take to complete the TLS handshake on 15012.
pub const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// What one HTTP/2 connection to the controller may hold.
#[derive(Clone, Debug)]
pub struct Http2Settings {
    /// Bytes h2 may queue per stream beyond what the socket took. The config stream produces
    /// parts of at most 1.5 KB only as they are asked for, so a small bound keeps a stream
    /// being sent a 733 KB snapshot from queueing it whole (hyper's default is 400 KB per
    /// stream). h2 keeps room for the most frames a connection ever had queued, and with
    /// small parts that follows this bound: 32 KB held 20 KB of frame slots per connection
    /// for good, 4 KB holds 2.5 KB.
    pub max_send_buffer: usize,
    /// What a client may send on one stream before the controller reads it. Proxies send a
    /// Hello and ACKs, a few dozen bytes each; 64 KB is HTTP/2's own default.
    pub stream_window: u32,
    /// What a client may send on all its streams together before the controller reads it.
    pub connection_window: u32,
    /// Streams one connection may open at once: a proxy opens one config stream and now and
    /// then a certificate request; `mesh-controller probe` opens 100.
    pub max_concurrent_streams: u32,
    /// The HPACK table the client may fill with headers it repeats (HTTP/2's default).
    pub header_table_size: u32,
    /// How often an idle connection is pinged, to find proxies that went away silently.
    pub keep_alive: Duration,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Self {
            max_send_buffer: 4 * 1024,
            stream_window: 64 * 1024,
            connection_window: 256 * 1024,
            max_concurrent_streams: 256,
            header_table_size: 4096,
            keep_alive: Duration::from_secs(30),
        }
    }
}

impl Http2Settings {
    fn builder(&self) -> hyper::server::conn::http2::Builder<TokioExecutor> {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_send_buf_size(self.max_send_buffer)
            .initial_stream_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .max_concurrent_streams(self.max_concurrent_streams)
            .header_table_size(self.header_table_size)
            .keep_alive_interval(self.keep_alive);
        builder
    }
}

/// Serves `routes` over HTTP/2 on `listener`, in TLS with `tls` when given (which must offer
/// ALPN `h2`), until `shutdown` completes; then stops accepting, asks every connection to
/// finish (GOAWAY) and returns once they have closed.
///
/// Each TLS handshake runs in its own task, bounded by [`TLS_HANDSHAKE`], so a client that
/// connects and stalls delays no one else. Fails only when the listener itself fails.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    routes: Routes,
    settings: &Http2Settings,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let builder = Arc::new(settings.builder());
    let tls = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted?,
            () = &mut shutdown => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "config port: cannot set TCP_NODELAY");
        }
        let connection = Connection { builder: builder.clone(), routes: routes.clone(), watcher: graceful.watcher() };
        match &tls {
            None => drop(tokio::spawn(connection.serve(stream, peer))),
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => connection.serve(stream, peer).await,
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// What serving one accepted connection needs.
struct Connection {
    builder: Arc<hyper::server::conn::http2::Builder<TokioExecutor>>,
    routes: Routes,
    watcher: Watcher,
}

impl Connection {
    async fn serve(self, io: impl AsyncRead + AsyncWrite + Send + Unpin + 'static, peer: std::net::SocketAddr) {
        let connection = self.builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(self.routes));
        if let Err(error) = self.watcher.watch(connection).await {
            tracing::debug!(%peer, %error, "config connection ended with an error");
        }
    }
}

/// The next connection; errors that concern one connection or a passing shortage (of file
/// descriptors, memory) are logged and waited out, any other means the listener is broken.
async fn accept(listener: &TcpListener) -> io::Result<(TcpStream, std::net::SocketAddr)> {
    loop {
        match listener.accept().await {
            Ok(accepted) => return Ok(accepted),
            Err(error) if per_connection(&error) => tracing::debug!(%error, "config port: accept failed"),
            Err(error) if passing(&error) => {
                tracing::warn!(%error, "config port: accept failed, retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

fn per_connection(error: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(error.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | TimedOut)
}

fn passing(error: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the process or the system is short for a moment.
    matches!(error.raw_os_error(), Some(24 | 23 | 105 | 12)) || error.kind() == io::ErrorKind::OutOfMemory
}
