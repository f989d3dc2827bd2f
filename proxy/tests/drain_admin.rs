//! Loopback: admin endpoints, readiness and graceful drain.

mod support;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::binary::RunningBinary;
use support::{bounded, h1_client, serve, start_proxy};
use tokio::sync::{Notify, mpsc};

async fn get(addr: SocketAddr, method: &str, path: &str) -> (StatusCode, String) {
    let mut client = h1_client::<Empty<Bytes>>(addr).await;
    let req = Request::builder().method(method).uri(path).header("host", "admin").body(Empty::new()).unwrap();
    let resp = bounded(path, client.send_request(req)).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn admin_reports_state_and_readiness() {
    let upstream = serve(|_r: Request<Incoming>| async { Response::new(Full::new(Bytes::from_static(b"ok"))) }).await;
    let proxy = start_proxy(upstream.addr, false, Duration::from_secs(5));
    let a = proxy.addresses();
    assert_eq!(get(a.admin, "GET", "/ready").await, (StatusCode::OK, "LIVE\n".into()));
    assert_eq!(get(a.readiness, "GET", "/healthz/ready").await.0, StatusCode::OK);

    // One connection through the outbound passthrough shows up in /clusters.
    let (status, _) = get(a.outbound, "GET", "/").await;
    assert_eq!(status, StatusCode::OK);
    let (status, clusters) = get(a.admin, "GET", "/clusters").await;
    assert_eq!(status, StatusCode::OK);
    let clusters: serde_json::Value = serde_json::from_str(&clusters).unwrap();
    assert_eq!(clusters["clusters"][0]["name"], "PassthroughCluster");
    assert_eq!(clusters["clusters"][0]["stats"]["cx_total"], 1);

    let (_, dump) = get(a.admin, "GET", "/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["listeners"][0]["address"], a.outbound.to_string());
    assert_eq!(dump["routing"]["kind"], "passthrough");
    assert_eq!(dump["draining"], false);

    assert_eq!(get(a.admin, "GET", "/quitquitquit").await.0, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get(a.admin, "POST", "/quitquitquit").await.0, StatusCode::OK);
    assert_eq!(get(a.admin, "GET", "/ready").await, (StatusCode::SERVICE_UNAVAILABLE, "DRAINING\n".into()));
    assert_eq!(get(a.readiness, "GET", "/healthz/ready").await.0, StatusCode::SERVICE_UNAVAILABLE);
    bounded("drain", proxy.wait()).await;
}

#[tokio::test]
async fn in_flight_request_finishes_after_quitquitquit_while_new_connections_are_refused() {
    // The upstream holds each request until the test releases it.
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<()>();
    let release = Arc::new(Notify::new());
    let gate = release.clone();
    let upstream = serve(move |_r: Request<Incoming>| {
        let (arrived_tx, gate) = (arrived_tx.clone(), gate.clone());
        async move {
            let _ = arrived_tx.send(());
            gate.notified().await;
            Response::new(Full::new(Bytes::from_static(b"slow but complete")))
        }
    })
    .await;
    // A long drain period: finishing early proves the proxy waited for the work, not the clock.
    let proxy = start_proxy(upstream.addr, true, Duration::from_secs(60));
    let a = proxy.addresses();

    let mut client = h1_client::<Empty<Bytes>>(a.outbound).await;
    let req = Request::get("/slow").header("host", "slow").body(Empty::new()).unwrap();
    let in_flight = tokio::spawn(async move {
        let resp = client.send_request(req).await.unwrap();
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    });
    bounded("request reaches upstream", arrived.recv()).await.unwrap();

    assert_eq!(get(a.admin, "POST", "/quitquitquit").await.0, StatusCode::OK);
    let wait = tokio::spawn(proxy.wait());

    // New connections are refused once the listener has closed.
    bounded("listener closed", async {
        while tokio::net::TcpStream::connect(a.outbound).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(!wait.is_finished(), "drain must wait for the in-flight request");

    release.notify_one();
    let (status, body) = bounded("in-flight response", in_flight).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "slow but complete");
    bounded("drain completes once work is done", wait).await.unwrap();
}

#[tokio::test]
async fn drain_gives_up_after_the_drain_period() {
    // A TCP connection that never ends: the drain period bounds the wait.
    let listener = tokio::net::TcpListener::bind(support::loopback()).await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let proxy = start_proxy(upstream, false, Duration::from_millis(200));
    let _client = tokio::net::TcpStream::connect(proxy.addresses().outbound).await.unwrap();
    let _held = bounded("accept", listener.accept()).await.unwrap();
    proxy.drain().start();
    bounded("drain period", proxy.wait()).await;
}

#[test]
fn binary_exits_zero_on_sigterm() {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-proxy"));
    command.args(["run", "--concurrency", "1", "--drain-period", "2s"]);
    let mut proxy = RunningBinary::start(command);
    let ready = |addr: SocketAddr| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).ok()?;
        s.write_all(b"GET /healthz/ready HTTP/1.0\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.starts_with("HTTP/1.0 200").then_some(())
    };
    assert!(ready(proxy.ports.readiness).is_some(), "ready once it says so; its log:\n{}", proxy.logs());
    let killed = std::process::Command::new("kill").args(["-TERM", &proxy.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = proxy.wait_for_exit("SIGTERM");
    let logs = proxy.logs();
    assert!(status.success(), "exit status {status}; logs:\n{logs}");
    assert!(logs.contains("\"message\":\"SIGTERM received\""), "{logs}");
}

#[tokio::test]
async fn drain_closes_idle_keep_alive_connections_h1_and_h2() {
    let upstream = serve(|_r: Request<Incoming>| async { Response::new(Full::new(Bytes::from_static(b"ok"))) }).await;
    let proxy = start_proxy(upstream.addr, true, Duration::from_secs(60));
    let a = proxy.addresses();

    let stream = tokio::net::TcpStream::connect(a.outbound).await.unwrap();
    let (mut h1, h1_conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    let h1_conn = tokio::spawn(h1_conn);
    let stream = tokio::net::TcpStream::connect(a.outbound).await.unwrap();
    let (mut h2, h2_conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let h2_conn = tokio::spawn(h2_conn);
    let req = Request::get("/").header("host", "svc").body(Empty::<Bytes>::new()).unwrap();
    assert_eq!(bounded("h1", h1.send_request(req)).await.unwrap().status(), StatusCode::OK);
    let req = Request::get("http://svc/").body(Empty::<Bytes>::new()).unwrap();
    assert_eq!(bounded("h2", h2.send_request(req)).await.unwrap().status(), StatusCode::OK);

    // Both connections are now idle keep-alive connections; a drain closes them (GOAWAY on h2)
    // long before the 60 s drain period.
    proxy.drain().start();
    bounded("h1 connection closed by the proxy", h1_conn).await.unwrap().unwrap();
    bounded("h2 connection closed by the proxy", h2_conn).await.unwrap().unwrap();
    bounded("drain completes", proxy.wait()).await;
}
