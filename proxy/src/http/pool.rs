//! Upstream connection pools, one per worker thread, or one per cluster with limits.
//!
//! Each runtime worker keeps its own idle HTTP/1.1 connections and its own HTTP/2 connection per
//! upstream address, in thread-local maps: a request takes a connection from the thread it runs
//! on without any lock shared with other connections (Envoy's per-worker pools, for the same
//! reason). The cost is up to one HTTP/2 connection per worker per upstream, which is what a
//! sidecar with 2 workers can afford.
//!
//! A cluster with a `connectionPool` (a [`Breaker`]) keeps its connections in [`SharedConns`]
//! instead, one short lock per take and return: with `maxConnections` small, a request on one
//! worker must be able to use the connection another worker returned, or it would wait for a
//! slot that idle connection holds. Each new connection takes a slot from the breaker and gives
//! it back when it closes.
//!
//! A connection is keyed by (client, upstream address, mutual TLS or not): the outbound and
//! inbound clients, which connect from different source addresses, never share connections,
//! and a plaintext connection never carries a request meant for mutual TLS.

use super::client::ClientConfig;
use super::h1;
use super::replay::RequestBody;
use crate::breaker::{Breaker, ConnSlot, Overflow};
use crate::route::Dial;
use crate::tls::MeshTls;
use crate::tls::connect::UpstreamIo;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// Idle HTTP/1.1 connections kept per upstream and worker; more are closed when returned. Bounds
/// memory when a burst opened many connections to one upstream.
const MAX_IDLE_PER_UPSTREAM: usize = 32;

type Key = (u64, SocketAddr, bool);
/// Maps keyed by [`Key`], looked up on every request: hashed with foldhash, not SipHash.
type KeyMap<V> = HashMap<Key, V, foldhash::fast::RandomState>;
type H2Cell = Arc<OnceCell<H2Conn>>;

struct Idle {
    conn: Box<h1::Conn>,
    since: Instant,
}

/// An HTTP/2 connection and the requests it has carried (for `maxRequestsPerConnection`).
#[derive(Clone)]
struct H2Conn {
    tx: http2::SendRequest<RequestBody>,
    served: Arc<AtomicU32>,
}

/// When a map of pooled connections was last swept of those unused too long: a sweep walks
/// the whole map, so it runs at most once per idle timeout, not on every request.
#[derive(Default)]
struct SweepClock(Option<Instant>);

impl SweepClock {
    /// Whether a sweep is due at `now` (none yet, or the last `every` or longer ago); when it
    /// is, `now` becomes the last sweep.
    fn due(&mut self, now: Instant, every: Duration) -> bool {
        if self.0.is_some_and(|last| now.duration_since(last) < every) {
            return false;
        }
        self.0 = Some(now);
        true
    }
}

/// The most recently returned connection of `list` idle for less than `idle_timeout` (the one
/// least likely to have been closed by the server); older ones on the way are closed.
fn take_fresh(list: &mut Vec<Idle>, now: Instant, idle_timeout: Duration) -> Option<Idle> {
    while let Some(idle) = list.pop() {
        if now.duration_since(idle.since) < idle_timeout {
            return Some(idle);
        }
    }
    None
}

/// A worker's idle HTTP/1.1 connections.
#[derive(Default)]
struct IdleH1 {
    conns: KeyMap<Vec<Idle>>,
    swept: SweepClock,
}

impl IdleH1 {
    /// Every so often (once per `idle_timeout`, the releasing client's, applied to every
    /// client's connections on this worker: they share one map), closes the connections idle
    /// for `idle_timeout` or longer and forgets addresses with none left. Idle connections
    /// are not watched: without this, one the server closed would stay open on this side until
    /// taken, and so would every connection to an endpoint no longer in any config.
    fn sweep(&mut self, now: Instant, idle_timeout: Duration) {
        if !self.swept.due(now, idle_timeout) {
            return;
        }
        for list in self.conns.values_mut() {
            list.retain(|idle| now.duration_since(idle.since) < idle_timeout);
        }
        self.conns.retain(|_, list| !list.is_empty());
    }
}

/// HTTP/2 connections by upstream, with when each was last handed a request.
#[derive(Default)]
struct H2Conns {
    conns: KeyMap<(H2Cell, Instant)>,
    swept: SweepClock,
}

impl H2Conns {
    /// The cell for `key` (empty if its connection closed), marked as used `now`. Once per
    /// `idle_timeout` (the asking client's, as for [`IdleH1::sweep`]), first forgets the
    /// connections no request took for that long: dropping the pool's handle closes a
    /// connection once its open streams end (a long gRPC stream finishes on it; new requests
    /// open another), so connections to endpoints gone from the config, or to upstreams no
    /// longer called, do not stay open for the sidecar's life.
    fn cell(&mut self, key: Key, now: Instant, idle_timeout: Duration) -> H2Cell {
        if self.swept.due(now, idle_timeout) {
            self.conns.retain(|_, (_, used)| now.duration_since(*used) < idle_timeout);
        }
        let (cell, used) = self.conns.entry(key).or_insert_with(|| (H2Cell::default(), now));
        *used = now;
        fresh_h2_cell(cell).clone()
    }

    /// Forgets `cell` (if still the one for `key`): the next request opens a new connection.
    fn retire(&mut self, key: Key, cell: &H2Cell) {
        if self.conns.get(&key).is_some_and(|(c, _)| Arc::ptr_eq(c, cell)) {
            self.conns.remove(&key);
        }
    }
}

thread_local! {
    static IDLE_H1: RefCell<IdleH1> = RefCell::new(IdleH1::default());
    static H2: RefCell<H2Conns> = RefCell::new(H2Conns::default());
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
    #[error(transparent)]
    Overflow(Overflow),
}

/// The pooled connections of one cluster with limits, shared by every worker.
#[derive(Default)]
pub struct SharedConns {
    idle: Mutex<KeyMap<Vec<Idle>>>,
    h2: Mutex<H2Conns>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something did, the maps are still whole.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SharedConns {
    /// Closes every idle connection and forgets the HTTP/2 ones (busy streams finish).
    pub fn clear(&self) {
        let idle = std::mem::take(&mut *locked(&self.idle));
        let h2 = std::mem::take(&mut *locked(&self.h2));
        drop((idle, h2));
    }

    /// Closes the idle HTTP/1.1 connections, so their slots go to requests waiting for one.
    fn evict_idle(&self) {
        let idle = std::mem::take(&mut *locked(&self.idle));
        drop(idle);
    }

    fn take_idle(&self, key: Key, idle_timeout: Duration) -> Option<Idle> {
        take_fresh(locked(&self.idle).get_mut(&key)?, Instant::now(), idle_timeout)
    }

    fn put_idle(&self, key: Key, idle: Idle) {
        locked(&self.idle).entry(key).or_default().push(idle);
    }

    /// Closes the connections to `key` idle for `idle_timeout` or longer.
    fn expire(&self, key: Key, idle_timeout: Duration) {
        let now = Instant::now();
        let expired: Vec<Idle> = match locked(&self.idle).get_mut(&key) {
            Some(list) => {
                let (old, fresh) =
                    std::mem::take(list).into_iter().partition(|i| now.duration_since(i.since) >= idle_timeout);
                *list = fresh;
                old
            }
            None => Vec::new(),
        };
        drop(expired);
    }

    fn h2_cell(&self, key: Key, idle_timeout: Duration) -> H2Cell {
        locked(&self.h2).cell(key, Instant::now(), idle_timeout)
    }

    /// Forgets `cell` (if still the one for `key`): the next request opens a new connection.
    fn retire_h2(&self, key: Key, cell: &H2Cell) {
        locked(&self.h2).retire(key, cell);
    }
}

/// `cell`, replaced by an empty one if its connection has closed.
fn fresh_h2_cell(cell: &mut H2Cell) -> &mut H2Cell {
    if cell.get().is_some_and(|c| c.tx.is_closed()) {
        *cell = H2Cell::default();
    }
    cell
}

/// Settings shared by one client's connections.
#[derive(Debug)]
pub struct Pool {
    id: u64,
    source_v4: Option<IpAddr>,
    idle_timeout: Duration,
    connect_timeout: Duration,
    tls: Arc<MeshTls>,
}

/// An HTTP/1.1 connection taken from the pool, and whether it had served requests before
/// (a reused connection may have been closed by the server meanwhile: worth one retry).
pub struct H1Conn {
    pub conn: Box<h1::Conn>,
    pub reused: bool,
}

impl H1Conn {
    /// Whether the request about to be sent is the last this connection may carry
    /// (`maxRequestsPerConnection`): sent with `Connection: close`, so the upstream closes it
    /// right after answering and its slot is free as soon as possible.
    pub fn carries_its_last(&self, breaker: Option<&Arc<Breaker>>) -> bool {
        breaker.is_some_and(|b| b.limits.retires_after(self.conn.served + 1))
    }
}

/// Where an HTTP/1.1 connection goes back to once its response has been read to the end: the
/// worker's idle list, or its cluster's when the cluster has limits.
pub struct Home {
    pool: Arc<Pool>,
    key: Key,
    breaker: Option<Arc<Breaker>>,
}

impl Home {
    pub fn release(self, conn: Box<h1::Conn>) {
        let idle = Idle { conn, since: Instant::now() };
        match self.breaker {
            Some(breaker) => self.pool.release_shared(&breaker, self.key, idle),
            None => IDLE_H1.with_borrow_mut(|pool| {
                pool.sweep(idle.since, self.pool.idle_timeout);
                let list = pool.conns.entry(self.key).or_default();
                if list.len() < MAX_IDLE_PER_UPSTREAM {
                    list.push(idle);
                }
            }),
        }
    }
}

impl Pool {
    pub fn new(cfg: &ClientConfig) -> Self {
        Pool {
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            source_v4: cfg.source_v4,
            idle_timeout: cfg.idle_timeout,
            connect_timeout: cfg.connect_timeout,
            tls: cfg.tls.clone(),
        }
    }

    fn key(&self, dial: &Dial) -> Key {
        (self.id, dial.address, dial.mtls.is_some())
    }

    fn idle_timeout(&self, breaker: &Breaker) -> Duration {
        breaker.limits.idle_timeout.unwrap_or(self.idle_timeout)
    }

    /// Connects (and makes the mutual TLS handshake, if any) within the cluster's
    /// `connectTimeout` (else the client's), with the cluster's TCP keepalive.
    async fn connect(&self, dial: &Dial, breaker: Option<&Breaker>) -> Result<UpstreamIo, PoolError> {
        let limit = breaker.and_then(|b| b.limits.connect_timeout).unwrap_or(self.connect_timeout);
        let keepalive = breaker.and_then(|b| b.limits.keepalive.as_ref());
        let connect = crate::tls::connect::connect(dial, self.source_v4, keepalive, &self.tls);
        match tokio::time::timeout(limit, connect).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(PoolError::Connect(e)),
            Err(_) => Err(PoolError::ConnectTimeout(limit)),
        }
    }

    /// An idle HTTP/1.1 connection to `upstream` (from this worker, or from the cluster's
    /// shared pool when it has limits), or a new one. With `check`, an idle connection is
    /// first asked whether the server closed it meanwhile (for a request that could not be
    /// sent again if it were lost on such a connection).
    pub async fn h1(&self, dial: &Dial, breaker: Option<&Arc<Breaker>>, check: bool) -> Result<H1Conn, PoolError> {
        loop {
            let idle = match breaker {
                Some(b) => b.conns.take_idle(self.key(dial), self.idle_timeout(b)),
                None => self.take_idle(self.key(dial)),
            };
            match idle {
                Some(idle) if check && idle.conn.closed_while_idle() => continue,
                Some(idle) => return Ok(H1Conn { conn: idle.conn, reused: true }),
                None => return self.new_h1(dial, breaker).await,
            }
        }
    }

    /// A new HTTP/1.1 connection; with limits, once a connection slot is free (waiting as a
    /// pending request, or failing with [`PoolError::Overflow`]).
    pub async fn new_h1(&self, dial: &Dial, breaker: Option<&Arc<Breaker>>) -> Result<H1Conn, PoolError> {
        let slot = match breaker {
            Some(b) => Some(b.connection(|| b.conns.evict_idle()).await.map_err(PoolError::Overflow)?),
            None => None,
        };
        let io = self.connect(dial, breaker.map(|b| &**b)).await?;
        Ok(H1Conn { conn: h1::Conn::new(io, slot), reused: false })
    }

    fn take_idle(&self, key: Key) -> Option<Idle> {
        let now = Instant::now();
        IDLE_H1.with_borrow_mut(|pool| take_fresh(pool.conns.get_mut(&key)?, now, self.idle_timeout))
    }

    /// Where a connection to `dial` taken for a request goes back to.
    pub fn home(self: &Arc<Self>, dial: &Dial, breaker: Option<Arc<Breaker>>) -> Home {
        Home { pool: self.clone(), key: self.key(dial), breaker }
    }

    /// Pools a connection of a cluster with limits, or closes it (dropping `idle`) when it has
    /// carried `maxRequestsPerConnection` or a request waits for its slot.
    fn release_shared(&self, breaker: &Arc<Breaker>, key: Key, idle: Idle) {
        if breaker.limits.retires_after(idle.conn.served) || breaker.has_waiters() {
            return;
        }
        breaker.conns.put_idle(key, idle);
        // A request may have started waiting after the check above and before the push.
        if breaker.has_waiters() {
            breaker.conns.evict_idle();
            return;
        }
        if let Some(limit) = breaker.limits.idle_timeout {
            let breaker: Weak<Breaker> = Arc::downgrade(breaker);
            tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                if let Some(breaker) = breaker.upgrade() {
                    breaker.conns.expire(key, limit);
                }
            });
        }
    }

    /// The HTTP/2 connection to `upstream` (this worker's, or the cluster's when it has
    /// limits), made on first use. Concurrent first requests wait for one handshake instead of
    /// each opening a connection; with limits they count as pending while they wait.
    pub async fn h2(
        &self,
        dial: &Dial,
        breaker: Option<&Arc<Breaker>>,
    ) -> Result<http2::SendRequest<RequestBody>, PoolError> {
        let key = self.key(dial);
        let Some(breaker) = breaker else {
            let cell = H2.with_borrow_mut(|conns| conns.cell(key, Instant::now(), self.idle_timeout));
            let conn = cell.get_or_try_init(|| self.new_h2(dial, None, None)).await?;
            return Ok(conn.tx.clone());
        };
        let cell = breaker.conns.h2_cell(key, self.idle_timeout(breaker));
        let conn = match cell.get() {
            Some(conn) => conn.clone(),
            None => {
                let _pending = breaker.pending().map_err(PoolError::Overflow)?;
                let init = || async {
                    let slot = match breaker.try_connection() {
                        Ok(slot) => slot,
                        Err(_) => {
                            breaker.conns.evict_idle();
                            breaker.wait_connection().await.map_err(PoolError::Overflow)?
                        }
                    };
                    self.new_h2(dial, Some(breaker), Some(slot)).await
                };
                cell.get_or_try_init(init).await?.clone()
            }
        };
        if breaker.limits.max_requests_per_connection.is_some() {
            let served = conn.served.fetch_add(1, Ordering::Relaxed) + 1;
            if breaker.limits.retires_after(served) {
                breaker.conns.retire_h2(key, &cell);
            }
        }
        Ok(conn.tx)
    }

    async fn new_h2(
        &self,
        dial: &Dial,
        breaker: Option<&Breaker>,
        slot: Option<ConnSlot>,
    ) -> Result<H2Conn, PoolError> {
        let io = self.connect(dial, breaker).await?;
        let upstream = dial.address;
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(PoolError::Handshake)?;
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(error) = conn.await {
                tracing::debug!(%upstream, %error, "upstream http/2 connection ended");
            }
        });
        Ok(H2Conn { tx, served: Arc::new(AtomicU32::new(0)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::either::Either;

    fn key(ip: &str) -> Key {
        (0, SocketAddr::new(ip.parse().unwrap(), 80), false)
    }

    async fn idle_since(listener: &TcpListener, since: Instant) -> Idle {
        let stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        Idle { conn: h1::Conn::new(Either::Left(stream), None), since }
    }

    #[tokio::test]
    async fn a_sweep_closes_connections_idle_too_long_and_forgets_their_addresses() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let timeout = Duration::from_secs(30);
        let now = Instant::now();
        let long_ago = now - 2 * timeout;
        let (gone, kept) = (key("10.0.0.1"), key("10.0.0.2"));
        let mut pool = IdleH1::default();
        pool.conns.insert(gone, vec![idle_since(&listener, long_ago).await]);
        pool.conns.insert(kept, vec![idle_since(&listener, long_ago).await, idle_since(&listener, now).await]);
        pool.sweep(now, timeout);
        assert!(!pool.conns.contains_key(&gone));
        assert_eq!(pool.conns[&kept].len(), 1);
        // Not again before another `timeout` has passed.
        pool.conns.insert(gone, vec![idle_since(&listener, long_ago).await]);
        pool.sweep(now + timeout / 2, timeout);
        assert!(pool.conns.contains_key(&gone));
        pool.sweep(now + timeout, timeout);
        assert!(!pool.conns.contains_key(&gone));
    }

    #[test]
    fn http2_connections_no_request_took_for_the_idle_timeout_are_forgotten() {
        let timeout = Duration::from_secs(30);
        let now = Instant::now();
        let (unused, used) = (key("10.0.0.1"), key("10.0.0.2"));
        let mut conns = H2Conns::default();
        let first = conns.cell(unused, now, timeout);
        conns.cell(used, now + timeout / 2, timeout);
        assert!(conns.conns.contains_key(&unused), "no sweep within the timeout of the last one");
        conns.cell(used, now + timeout, timeout);
        assert!(!conns.conns.contains_key(&unused));
        assert!(conns.conns.contains_key(&used));
        assert!(!Arc::ptr_eq(&first, &conns.cell(unused, now + timeout, timeout)), "a new connection is made");
    }
}
