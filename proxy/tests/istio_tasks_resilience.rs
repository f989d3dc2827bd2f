//! Istio's fault-injection, request-timeouts and mirroring tasks, replayed with their YAML as
//! a `--config-file` on loopback: the outcomes the tasks describe, observed on real upstreams.

mod support;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use support::mesh::{get, pod, service, start_mesh, write_config};
use support::scripted::scripted;

const DELAY: &str = include_str!("fixtures/istio-fault-injection-delay.yaml");
const ABORT: &str = include_str!("fixtures/istio-fault-injection-abort.yaml");
const TIMEOUTS: &str = include_str!("fixtures/istio-request-timeouts.yaml");
const MIRRORING: &str = include_str!("fixtures/istio-mirroring.yaml");

/// The reviews sidecar's view: ratings v1 behind the ratings service.
async fn ratings(ip: &str, cluster_ip: &str, rules: &str) -> (support::scripted::Scripted, support::mesh::Mesh) {
    let v1 = scripted("ratings-v1", ip, 200).await;
    let pods = [pod("ratings-v1", &[("app", "ratings"), ("version", "v1")], v1.addr())];
    let config = service("ratings", cluster_ip, "http", 9080, &pods) + rules;
    let mesh = start_mesh(&config, &[("app", "reviews"), ("version", "v2")], None);
    (v1, mesh)
}

async fn timed_get(at: SocketAddr, host: &str, headers: &[(&str, &str)]) -> (StatusCode, http::HeaderMap, Duration) {
    let started = Instant::now();
    let (status, headers, _) = get(at, host, "/ratings/0", headers).await;
    (status, headers, started.elapsed())
}

fn reason(headers: &http::HeaderMap) -> &str {
    headers.get("x-mesh-reason").map_or("", |v| v.to_str().unwrap())
}

fn host_of(headers: &http::HeaderMap) -> &str {
    headers["host"].to_str().unwrap()
}

#[tokio::test]
async fn fault_injection_task_delays_jason_by_seven_seconds_and_no_one_else() {
    let (v1, mesh) = ratings("127.0.3.1", "10.96.3.1", DELAY).await;
    let (status, _, took) = timed_get(mesh.outbound(), "ratings:9080", &[("end-user", "jason")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(took >= Duration::from_secs(7) && took < Duration::from_secs(8), "{took:?}");
    let (status, _, took) = timed_get(mesh.outbound(), "ratings:9080", &[("end-user", "someone")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(v1.count(), 2, "a delayed request still reaches ratings");
}

#[tokio::test]
async fn fault_injection_task_aborts_jason_with_500_and_no_one_else() {
    let (v1, mesh) = ratings("127.0.3.11", "10.96.3.11", ABORT).await;
    for _ in 0..5 {
        let (status, headers, _) = timed_get(mesh.outbound(), "ratings:9080", &[("end-user", "jason")]).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(headers["x-mesh-reason"], "fault_abort");
        let (status, _, _) = timed_get(mesh.outbound(), "ratings:9080", &[]).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert!(v1.hits().iter().all(|h| !h.headers.contains_key("end-user")), "jason's requests never reach ratings");
    assert_eq!(v1.count(), 5);
}

/// reviews v2 as in Bookinfo: it asks ratings (through this same proxy) before answering.
async fn reviews_calling_ratings(ip: &str, proxy: Arc<OnceLock<SocketAddr>>) -> support::TestServer {
    let addr: SocketAddr = format!("{ip}:0").parse().unwrap();
    support::serve_on(addr, move |_req: Request<Incoming>| {
        let proxy = proxy.clone();
        async move {
            let at = *proxy.get().expect("proxy started");
            let (status, _, _) = get(at, "ratings:9080", "/ratings/0", &[]).await;
            Response::new(Full::new(Bytes::from(format!("reviews-v2 (ratings {status})"))))
        }
    })
    .await
}

#[tokio::test]
async fn request_timeouts_task_cuts_the_two_second_reviews_call_at_half_a_second() {
    let proxy = Arc::new(OnceLock::new());
    let reviews_v2 = reviews_calling_ratings("127.0.3.21", proxy.clone()).await;
    let ratings_v1 = scripted("ratings-v1", "127.0.3.22", 200).await;
    let config = service(
        "reviews",
        "10.96.3.21",
        "http",
        9080,
        &[pod("reviews-v2", &[("app", "reviews"), ("version", "v2")], reviews_v2.addr)],
    ) + &service(
        "ratings",
        "10.96.3.22",
        "http",
        9080,
        &[pod("ratings-v1", &[("version", "v1")], ratings_v1.addr())],
    );
    // Before the timeout is set, reviews answers once ratings did: 2 s late.
    let without_timeout = config.clone() + &TIMEOUTS.replace("    timeout: 0.5s\n", "");
    let mesh = start_mesh(&without_timeout, &[("app", "productpage")], None);
    proxy.set(mesh.outbound()).unwrap();
    let started = Instant::now();
    let (status, _, body) = get(mesh.outbound(), "reviews:9080", "/reviews/0", &[]).await;
    let took = started.elapsed();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "reviews-v2 (ratings 200 OK)"));
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(3), "{took:?}");

    write_config(&mesh.file, &(config + TIMEOUTS));
    mesh.store.reload().unwrap();
    let started = Instant::now();
    let (status, headers, _) = get(mesh.outbound(), "reviews:9080", "/reviews/0", &[]).await;
    let took = started.elapsed();
    assert_eq!((status, reason(&headers)), (StatusCode::GATEWAY_TIMEOUT, "timeout"));
    assert!(took >= Duration::from_millis(500) && took < Duration::from_millis(900), "{took:?}");
}

#[tokio::test]
async fn mirroring_task_copies_every_request_to_v2_with_the_shadow_host() {
    let (v1, v2) = (scripted("httpbin-v1", "127.0.3.31", 200).await, scripted("httpbin-v2", "127.0.3.32", 200).await);
    let pods = [
        pod("httpbin-v1", &[("app", "httpbin"), ("version", "v1")], v1.addr()),
        pod("httpbin-v2", &[("app", "httpbin"), ("version", "v2")], v2.addr()),
    ];
    let config = service("httpbin", "10.96.3.31", "http", 8000, &pods) + MIRRORING;
    let mesh = start_mesh(&config, &[("app", "curl")], None);
    for _ in 0..3 {
        let (status, headers, _) = get(mesh.outbound(), "httpbin:8000", "/headers", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-upstream"], "httpbin-v1", "answers come from v1");
    }
    let deadline = Instant::now() + support::WAIT;
    while v2.count() < 3 {
        assert!(Instant::now() < deadline, "v2 never saw the mirrored requests");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(v1.count(), 3);
    for hit in v2.hits() {
        assert_eq!((hit.path.as_str(), host_of(&hit.headers)), ("/headers", "httpbin-shadow:8000"));
    }
}
