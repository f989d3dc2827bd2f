//! Circuit breaking (DestinationRule `connectionPool`) on loopback: real upstreams that count
//! the connections and requests they hold at once, and Istio's circuit-breaking task replayed
//! with its YAML.

mod support;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};
use support::mesh::{Mesh, pod, service, start_mesh};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ISTIO_TASK: &str = include_str!("fixtures/istio-circuit-breaking.yaml");

/// Counts what an upstream holds at once, and the most it ever held.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Gauge {
    fn enter(self: &Arc<Self>) -> GaugeGuard {
        let n = self.now.fetch_add(1, SeqCst) + 1;
        self.max.fetch_max(n, SeqCst);
        GaugeGuard(self.clone())
    }
    fn max(&self) -> usize {
        self.max.load(SeqCst)
    }
}

struct GaugeGuard(Arc<Gauge>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, SeqCst);
    }
}

/// An HTTP upstream (HTTP/1.1 and h2c) answering `status` after `delay`.
#[derive(Default)]
struct Slow {
    connections: Arc<Gauge>,
    requests: Arc<Gauge>,
    accepted: AtomicUsize,
    hits: AtomicUsize,
    delay_ms: AtomicU64,
    status: AtomicU16,
}

async fn slow_upstream(ip: &str, delay: Duration, status: u16) -> (Arc<Slow>, SocketAddr) {
    let listener = TcpListener::bind(format!("{ip}:0")).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let slow = Arc::new(Slow { status: AtomicU16::new(status), ..Default::default() });
    slow.delay_ms.store(delay.as_millis() as u64, SeqCst);
    let state = slow.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            state.accepted.fetch_add(1, SeqCst);
            let conn_guard = state.connections.enter();
            let state = state.clone();
            tokio::spawn(async move {
                let _conn = conn_guard;
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let state = state.clone();
                    async move {
                        let _req = state.requests.enter();
                        state.hits.fetch_add(1, SeqCst);
                        tokio::time::sleep(Duration::from_millis(state.delay_ms.load(SeqCst))).await;
                        let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                        *resp.status_mut() = StatusCode::from_u16(state.status.load(SeqCst)).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (slow, addr)
}

fn rule(pool: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: httpbin, namespace: default}}\n\
         spec:\n  host: httpbin\n  trafficPolicy:\n    connectionPool:\n{pool}---\n"
    )
}

fn httpbin(addr: SocketAddr, port_name: &str, rules: &str) -> Mesh {
    let pods = [pod("httpbin-v1", &[("app", "httpbin"), ("version", "v1")], addr)];
    let config = service("httpbin", "10.96.7.1", port_name, 8000, &pods) + rules;
    start_mesh(&config, &[("app", "fortio")], None)
}

/// One request on a connection of its own: status, `x-mesh-reason`, time taken.
async fn timed(at: SocketAddr) -> (StatusCode, String, Duration) {
    let started = Instant::now();
    let mut client = support::h1_client::<Empty<Bytes>>(at).await;
    let req = Request::get("/get").header("host", "httpbin:8000").body(Empty::new()).unwrap();
    let resp = support::bounded("response", client.send_request(req)).await.unwrap();
    let reason = resp.headers().get("x-mesh-reason").map_or(String::new(), |v| v.to_str().unwrap().to_string());
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    (status, reason, started.elapsed())
}

async fn concurrently(at: SocketAddr, n: usize) -> Vec<(StatusCode, String, Duration)> {
    let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(timed(at))).collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

fn overflow_counter(mesh: &Mesh, which: fn(&mesh_proxy::breaker::OverflowCounters) -> &AtomicU64) -> u64 {
    let snapshot = mesh.store.load();
    let upstream = snapshot.routing.upstreams.values().find(|u| u.key.host.starts_with("httpbin")).unwrap();
    which(&upstream.stats.overflow).load(SeqCst)
}

const CLUSTER: &str = "outbound|8000||httpbin.default.svc.cluster.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_and_one_pending_request_turn_a_burst_into_fast_overflows() {
    let (slow, addr) = slow_upstream("127.0.7.1", Duration::from_millis(600), 200).await;
    let pool = "      tcp: {maxConnections: 1}\n      http: {http1MaxPendingRequests: 1}\n";
    let mesh = httpbin(addr, "http", &rule(pool));
    let results = concurrently(mesh.outbound(), 20).await;
    let ok = results.iter().filter(|r| r.0 == StatusCode::OK).count();
    let overflowed: Vec<_> = results.iter().filter(|r| r.0 != StatusCode::OK).collect();
    for (status, reason, took) in &overflowed {
        assert_eq!(
            (*status, reason.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, format!("overflow {CLUSTER}").as_str())
        );
        assert!(
            *took < Duration::from_millis(300),
            "an overflow is answered at once, not after the upstream: {took:?}"
        );
    }
    assert!((1..=3).contains(&ok), "one in flight and one pending get through (a third if it came late): {ok}");
    assert!(overflowed.len() >= 17, "{}", overflowed.len());
    // The proxy closes a finished connection before it opens the next one for the pending
    // request (its slot goes to the waiter), so it never holds two. The upstream may still
    // count both for a moment when it accepts the new one before it has read the old one's
    // close: what it sees is one request at a time, on at most one new connection per request.
    assert_eq!(slow.requests.max(), 1, "the upstream never served two requests at once");
    assert!(slow.accepted.load(SeqCst) <= ok, "{} connections for {ok} requests", slow.accepted.load(SeqCst));
    assert_eq!(overflow_counter(&mesh, |o| &o.rq_pending), overflowed.len() as u64);
    // /clusters shows the limits, the cluster's occupancy (nothing left in flight) and the count.
    let (_, _, body) = support::mesh::get(mesh.proxy.addresses().admin, "admin", "/clusters", &[]).await;
    let all: serde_json::Value = serde_json::from_str(&body).unwrap();
    let cluster = all["clusters"].as_array().unwrap().iter().find(|c| c["name"] == CLUSTER).unwrap();
    let pool = &cluster["connection_pool"];
    assert_eq!(pool["breaker"]["limits"]["max_connections"], 1, "{pool}");
    assert_eq!(pool["breaker"]["limits"]["max_pending_requests"], 1, "{pool}");
    assert_eq!(pool["breaker"]["pending_requests"], 0, "{pool}");
    assert_eq!(pool["overflow"]["upstream_rq_pending_overflow"], overflowed.len() as u64, "{pool}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_max_requests_caps_the_requests_in_flight() {
    let (slow, addr) = slow_upstream("127.0.7.2", Duration::from_millis(400), 200).await;
    let mesh = httpbin(addr, "http2", &rule("      http: {http2MaxRequests: 2}\n"));
    let results = concurrently(mesh.outbound(), 8).await;
    let ok = results.iter().filter(|r| r.0 == StatusCode::OK).count();
    assert_eq!(ok, 2, "{results:?}");
    assert!(results.iter().all(|r| r.0 == StatusCode::OK || r.1.starts_with("overflow ")));
    assert_eq!(slow.requests.max(), 2);
    assert_eq!(overflow_counter(&mesh, |o| &o.rq), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_retries_caps_the_retries_in_flight_and_returns_the_failure_as_is() {
    let (slow, addr) = slow_upstream("127.0.7.3", Duration::from_millis(200), 503).await;
    let retries = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: httpbin, namespace: default}\n\
                   spec:\n  hosts: [httpbin]\n  http:\n  - route: [{destination: {host: httpbin}}]\n    \
                   retries: {attempts: 3, retryOn: 5xx}\n---\n";
    let mesh = httpbin(addr, "http", &(rule("      http: {maxRetries: 1}\n") + retries));
    let results = concurrently(mesh.outbound(), 4).await;
    assert!(results.iter().all(|r| r.0 == StatusCode::SERVICE_UNAVAILABLE && r.1.is_empty()), "{results:?}");
    // Unlimited, 4 requests would each be sent 4 times (16). With one retry in flight at a
    // time, the first to fail retries and the others answer with their first failure.
    let hits = slow.hits.load(SeqCst);
    assert!(hits <= 8, "{hits} attempts reached the upstream");
    assert!(overflow_counter(&mesh, |o| &o.rq_retry) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_one_opens_a_connection_per_request() {
    let (slow, addr) = slow_upstream("127.0.7.4", Duration::ZERO, 200).await;
    let mesh = httpbin(addr, "http", &rule("      http: {maxRequestsPerConnection: 1}\n"));
    for _ in 0..5 {
        assert_eq!(timed(mesh.outbound()).await.0, StatusCode::OK);
    }
    assert_eq!(slow.accepted.load(SeqCst), 5);

    let (kept, addr) = slow_upstream("127.0.7.5", Duration::ZERO, 200).await;
    let mesh = httpbin(addr, "http", &rule("      http: {http1MaxPendingRequests: 10}\n"));
    for _ in 0..5 {
        assert_eq!(timed(mesh.outbound()).await.0, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(kept.accepted.load(SeqCst), 1, "without the limit one pooled connection serves every worker");
}

/// `idleTimeout` applies to HTTP/2 upstream connections too: one no request used for that long
/// is forgotten by the pool and closes, and the next request opens another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connection_unused_for_the_idle_timeout_closes_and_the_next_request_opens_another() {
    let (slow, addr) = slow_upstream("127.0.7.9", Duration::ZERO, 200).await;
    let mesh = httpbin(addr, "http2", &rule("      http: {idleTimeout: 300ms}\n"));
    for _ in 0..3 {
        assert_eq!(timed(mesh.outbound()).await.0, StatusCode::OK);
    }
    assert_eq!(slow.accepted.load(SeqCst), 1, "requests within the idle timeout share one connection");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(timed(mesh.outbound()).await.0, StatusCode::OK);
    assert_eq!(slow.accepted.load(SeqCst), 2, "the request after the idle timeout opened a new connection");
    let deadline = Instant::now() + Duration::from_secs(5);
    while slow.connections.now.load(SeqCst) > 1 {
        assert!(Instant::now() < deadline, "the idle connection stayed open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_to_an_upstream_that_never_answers_fails_in_that_time() {
    // A listener whose backlog is full: further SYNs are dropped, so a connect hangs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.7.6:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await
        {
            fillers.push(s);
        }
    }
    let no_retries = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: httpbin, namespace: default}\n\
                      spec:\n  hosts: [httpbin]\n  http:\n  - route: [{destination: {host: httpbin}}]\n    \
                      retries: {attempts: 0}\n---\n";
    let mesh = httpbin(addr, "http", &(rule("      tcp: {connectTimeout: 300ms}\n") + no_retries));
    let (status, reason, took) = timed(mesh.outbound()).await;
    assert_eq!(
        (status, reason.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, format!("connect_failure {CLUSTER}").as_str())
    );
    assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(1000), "{took:?}");
    drop((listener, fillers));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_over_max_connections_are_refused() {
    let listener = TcpListener::bind("127.0.7.7:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    let _ = stream.write_all(&buf[..n]).await;
                }
            });
        }
    });
    let pods = [pod("db", &[("app", "db")], addr)];
    let config = service("db", "10.96.7.7", "tcp", 5432, &pods)
        + "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: db, namespace: default}\n\
           spec: {host: db, trafficPolicy: {connectionPool: {tcp: {maxConnections: 1}}}}\n---\n";
    let mesh = start_mesh(&config, &[("app", "client")], Some("10.96.7.7:5432".parse().unwrap()));
    let echo = |mut s: tokio::net::TcpStream| async move {
        s.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf)).await.ok()?.ok()?;
        Some((s, buf))
    };
    let first = echo(tokio::net::TcpStream::connect(mesh.outbound()).await.unwrap()).await;
    let (first, buf) = first.expect("the first connection is carried");
    assert_eq!(&buf, b"ping");
    let second = echo(tokio::net::TcpStream::connect(mesh.outbound()).await.unwrap()).await;
    assert!(second.is_none(), "the second connection is closed: maxConnections 1");
    assert_eq!(accepted.load(SeqCst), 1);
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = echo(tokio::net::TcpStream::connect(mesh.outbound()).await.unwrap()).await;
    assert!(third.is_some(), "the slot is free again once the first closed");
}

/// fortio's `-c clients -n requests`: each client on one keep-alive connection, sending its
/// share of the requests one after another; returns (200s, 503 overflows, anything else).
async fn fortio(at: SocketAddr, clients: usize, requests: usize) -> (usize, usize, usize) {
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = support::h1_client::<Empty<Bytes>>(at).await;
                let mut codes = Vec::new();
                for _ in 0..requests / clients {
                    let req = Request::get("/get").header("host", "httpbin:8000").body(Empty::new()).unwrap();
                    let resp = support::bounded("response", client.send_request(req)).await.unwrap();
                    let overflow =
                        resp.headers().get("x-mesh-reason").is_some_and(|v| v.as_bytes().starts_with(b"overflow "));
                    codes.push((resp.status(), overflow));
                    let _ = resp.into_body().collect().await;
                }
                codes
            })
        })
        .collect();
    let mut tally = (0, 0, 0);
    for task in tasks {
        for (status, overflow) in task.await.unwrap() {
            match (status, overflow) {
                (StatusCode::OK, _) => tally.0 += 1,
                (StatusCode::SERVICE_UNAVAILABLE, true) => tally.1 += 1,
                _ => tally.2 += 1,
            }
        }
    }
    tally
}

/// The task's outcome: "almost all requests made it through" with 2 connections, and a
/// large share answered 503 by the circuit breaker with 3 (the task shows 63%). httpbin here
/// takes 20 ms per request, about what the in-cluster hop costs. Tolerance: with 2 clients at
/// least 18 of 20 succeed; with 3 at least 6 of 30 are overflows; nothing else ever fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaking_task_trips_with_three_connections_not_with_two() {
    let (slow, addr) = slow_upstream("127.0.7.8", Duration::from_millis(20), 200).await;
    let mesh = httpbin(addr, "http", ISTIO_TASK);
    let (ok, overflow, other) = fortio(mesh.outbound(), 2, 20).await;
    assert_eq!(other, 0);
    assert!(ok >= 18, "2 connections: {ok} ok, {overflow} overflow");
    let (ok3, overflow3, other3) = fortio(mesh.outbound(), 3, 30).await;
    assert_eq!(other3, 0);
    assert!(overflow3 >= 6, "3 connections: {ok3} ok, {overflow3} overflow");
    assert_eq!(slow.connections.max(), 1);
    assert_eq!(slow.accepted.load(SeqCst), ok + ok3, "maxRequestsPerConnection 1: a connection per request");
    println!("2 connections: {ok} ok / {overflow} overflow; 3 connections: {ok3} ok / {overflow3} overflow");
}
