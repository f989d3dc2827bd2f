//! Helpers for the loopback tests: an in-process proxy pointed at a test upstream, and small
//! hyper servers and clients. Every wait is bounded by [`WAIT`] so a broken proxy fails the
//! test instead of hanging it.
#![allow(dead_code)]

pub mod binary;
pub mod certs;
pub mod mesh;
pub mod netns;
pub mod scripted;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_proxy::listener::OriginalDst;
use mesh_proxy::proxy::{Listeners, Proxy, ProxyConfig};
use mesh_proxy::route::{ConnectionRouter, HttpOnAllPorts, Passthrough};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;

/// Upper bound for any single wait in a test; generous so a loaded CI machine never flakes.
pub const WAIT: Duration = Duration::from_secs(20);

pub async fn bounded<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(WAIT, fut).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A process started by a test, killed and reaped when dropped (also when the test panics).
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP server that reads until the client half-closes, then answers `got N bytes` and
/// closes: it only answers if the proxy carries the half-close through and keeps the other
/// direction open.
pub async fn half_close_server() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await.unwrap();
                s.write_all(format!("got {} bytes", buf.len()).as_bytes()).await.unwrap();
                s.shutdown().await.unwrap();
            });
        }
    });
    addr
}

/// A server pod's sidecar with the workload certificate in `tls`: its inbound listener hands
/// everything to `app`, parsed as HTTP or passed through as TCP.
pub fn start_peer(app: SocketAddr, http: bool, tls: Arc<mesh_proxy::tls::MeshTls>) -> Proxy {
    start_fixed(app, http, ProxyConfig { tls, ..ProxyConfig::default() })
}

/// A proxy on loopback ports whose capture listeners send everything to `upstream`.
pub fn start_proxy(upstream: SocketAddr, http: bool, drain_period: Duration) -> Proxy {
    start_fixed(upstream, http, ProxyConfig { drain_period, ..ProxyConfig::default() })
}

/// `cfg` on loopback ports, every connection sent to `upstream` as HTTP or as TCP.
fn start_fixed(upstream: SocketAddr, http: bool, cfg: ProxyConfig) -> Proxy {
    let cfg = ProxyConfig {
        outbound: loopback(),
        inbound: loopback(),
        admin: loopback(),
        readiness: loopback(),
        original_dst: OriginalDst::Fixed(upstream),
        ..cfg
    };
    let router: Arc<dyn ConnectionRouter> = if http { Arc::new(HttpOnAllPorts) } else { Arc::new(Passthrough) };
    Proxy::start(&cfg, Listeners::bind(&cfg).unwrap(), router).unwrap()
}

/// A test HTTP server (HTTP/1.1 and h2c, with upgrades) that counts accepted connections.
pub struct TestServer {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
}

impl TestServer {
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

pub async fn serve<F, Fut, B>(handler: F) -> TestServer
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_on(loopback(), handler).await
}

/// As [`serve`], on `addr` (another loopback address, say, to tell pods apart).
pub async fn serve_on<F, Fut, B>(addr: SocketAddr, handler: F) -> TestServer
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    TestServer { addr, connections }
}

/// An HTTP/1.1 client connection to `addr`.
pub async fn h1_client<B>(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn.with_upgrades());
    send
}

/// An HTTP/2 (prior knowledge) client connection to `addr`.
pub async fn h2_client<B>(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    send
}
