//! Upstream connection pools, one per worker thread.
//!
//! Each runtime worker keeps its own idle HTTP/1.1 connections and its own HTTP/2 connection per
//! upstream address, in thread-local maps: a request takes a connection from the thread it runs
//! on without any lock shared with other connections (Envoy's per-worker pools, for the same
//! reason). The cost is up to one HTTP/2 connection per worker per upstream, which is what a
//! sidecar with 2 workers can afford.
//!
//! A connection is keyed by (client, upstream address): the outbound and inbound clients, which
//! connect from different source addresses, never share connections.

use super::replay::RequestBody;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// Idle HTTP/1.1 connections kept per upstream and worker; more are closed when returned. Bounds
/// memory when a burst opened many connections to one upstream.
const MAX_IDLE_PER_UPSTREAM: usize = 32;

type Key = (u64, SocketAddr);
type H2Cell = Arc<OnceCell<http2::SendRequest<RequestBody>>>;

struct Idle {
    tx: http1::SendRequest<RequestBody>,
    since: Instant,
}

thread_local! {
    static IDLE_H1: RefCell<HashMap<Key, Vec<Idle>>> = RefCell::new(HashMap::new());
    static H2: RefCell<HashMap<Key, H2Cell>> = RefCell::new(HashMap::new());
}

static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("connect: timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("handshake: {0}")]
    Handshake(#[source] hyper::Error),
}

/// Settings shared by one client's connections.
#[derive(Debug)]
pub struct Pool {
    id: u64,
    source_v4: Option<IpAddr>,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

/// An HTTP/1.1 connection taken from the pool, and whether it had served requests before
/// (a reused connection may have been closed by the server meanwhile: worth one retry).
pub struct H1Conn {
    pub tx: http1::SendRequest<RequestBody>,
    pub reused: bool,
}

impl Pool {
    pub fn new(source_v4: Option<IpAddr>, idle_timeout: Duration, connect_timeout: Duration) -> Self {
        Pool { id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed), source_v4, idle_timeout, connect_timeout }
    }

    async fn connect(&self, upstream: SocketAddr) -> Result<TokioIo<tokio::net::TcpStream>, PoolError> {
        match tokio::time::timeout(self.connect_timeout, crate::tcp::connect(upstream, self.source_v4)).await {
            Ok(Ok(stream)) => Ok(TokioIo::new(stream)),
            Ok(Err(e)) => Err(PoolError::Connect(e)),
            Err(_) => Err(PoolError::ConnectTimeout(self.connect_timeout)),
        }
    }

    /// An idle HTTP/1.1 connection to `upstream` from this worker, or a new one.
    pub async fn h1(&self, upstream: SocketAddr) -> Result<H1Conn, PoolError> {
        if let Some(tx) = self.take_idle(upstream) {
            return Ok(H1Conn { tx, reused: true });
        }
        self.new_h1(upstream).await.map(|tx| H1Conn { tx, reused: false })
    }

    pub async fn new_h1(&self, upstream: SocketAddr) -> Result<http1::SendRequest<RequestBody>, PoolError> {
        let io = self.connect(upstream).await?;
        let (tx, conn) = http1::Builder::new().handshake(io).await.map_err(PoolError::Handshake)?;
        tokio::spawn(async move {
            // Upgrades keep the connection for the spliced byte stream after a 101.
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(%upstream, %error, "upstream http/1.1 connection ended");
            }
        });
        Ok(tx)
    }

    fn take_idle(&self, upstream: SocketAddr) -> Option<http1::SendRequest<RequestBody>> {
        let now = Instant::now();
        IDLE_H1.with_borrow_mut(|map| {
            let list = map.get_mut(&(self.id, upstream))?;
            // Most recently returned first: the one least likely to have been closed by the server.
            while let Some(idle) = list.pop() {
                if idle.tx.is_ready() && now.duration_since(idle.since) < self.idle_timeout {
                    return Some(idle.tx);
                }
            }
            None
        })
    }

    /// Returns `tx` to this worker's pool once its response has been read to the end. A
    /// connection that closes or is upgraded instead never becomes ready and is dropped.
    pub fn release_when_ready(self: &Arc<Self>, upstream: SocketAddr, mut tx: http1::SendRequest<RequestBody>) {
        let pool = self.clone();
        tokio::spawn(async move {
            if tx.ready().await.is_err() {
                return;
            }
            IDLE_H1.with_borrow_mut(|map| {
                let list = map.entry((pool.id, upstream)).or_default();
                list.retain(|idle| !idle.tx.is_closed());
                if list.len() < MAX_IDLE_PER_UPSTREAM {
                    list.push(Idle { tx, since: Instant::now() });
                }
            });
        });
    }

    /// This worker's HTTP/2 connection to `upstream`, made on first use. Concurrent first
    /// requests wait for one handshake instead of each opening a connection.
    pub async fn h2(&self, upstream: SocketAddr) -> Result<http2::SendRequest<RequestBody>, PoolError> {
        let key = (self.id, upstream);
        let cell: H2Cell = H2.with_borrow_mut(|map| {
            let cell = map.entry(key).or_default();
            if cell.get().is_some_and(|tx| tx.is_closed()) {
                *cell = H2Cell::default();
            }
            cell.clone()
        });
        let tx = cell
            .get_or_try_init(|| async {
                let io = self.connect(upstream).await?;
                let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .handshake(io)
                    .await
                    .map_err(PoolError::Handshake)?;
                tokio::spawn(async move {
                    if let Err(error) = conn.await {
                        tracing::debug!(%upstream, %error, "upstream http/2 connection ended");
                    }
                });
                Ok::<_, PoolError>(tx)
            })
            .await?;
        Ok(tx.clone())
    }
}
