//! Loopback: retries (`retries`, and Istio's default when a route sets none) and timeouts
//! (`timeout`, `retries.perTryTimeout`), asserted on what real upstream servers saw.

mod support;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};
use support::mesh::{get, pod, service, start_mesh};
use support::scripted::{scripted, send};

async fn stats(admin: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let (_, _, body) = get(admin, "admin", path, &[]).await;
    serde_json::from_str(&body).unwrap()
}

fn reason(headers: &http::HeaderMap) -> Option<String> {
    headers.get("x-mesh-reason").map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn a_retry_goes_to_an_endpoint_not_tried_yet() {
    let pods = [
        scripted("a", "127.0.1.1", 503).await,
        scripted("b", "127.0.1.2", 503).await,
        scripted("c", "127.0.1.3", 503).await,
    ];
    let specs: Vec<_> = pods.iter().map(|p| pod(p.name, &[("app", "reviews")], p.addr())).collect();
    let config = service("reviews", "10.96.1.1", "http", 9080, &specs);
    let mesh = start_mesh(&config, &[], None);

    // Istio's default: two retries on 503. Three attempts, one per endpoint.
    let (status, _, _) = get(mesh.outbound(), "reviews:9080", "/", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "the last attempt's answer is returned");
    assert_eq!(pods.iter().map(|p| p.count()).collect::<Vec<_>>(), [1, 1, 1]);

    // With one endpoint healthy, every request succeeds; each failed attempt is one retry.
    pods[1].answer(200);
    for _ in 0..9 {
        let (status, headers, _) = get(mesh.outbound(), "reviews:9080", "/", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-upstream"], "b");
    }
    assert_eq!(pods[1].count(), 1 + 9);
    let failed = pods[0].count() + pods[2].count() - 2;
    let admin = mesh.proxy.addresses().admin;
    let clusters = stats(admin, "/clusters").await;
    let cluster = clusters["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "outbound|9080||reviews.default.svc.cluster.local")
        .unwrap()
        .clone();
    assert_eq!(cluster["stats"]["upstream_rq_retry"], 2 + failed as u64, "{cluster}");
    assert_eq!(stats(admin, "/stats").await["outbound"]["upstream_rq_retry"], 2 + failed as u64);
}

#[tokio::test]
async fn a_retry_avoids_the_failed_endpoint_even_where_round_robin_would_pick_it_again() {
    let pods = [scripted("a", "127.0.1.4", 200).await, scripted("b", "127.0.1.5", 200).await];
    let specs: Vec<_> = pods.iter().map(|p| pod(p.name, &[], p.addr())).collect();
    let mesh = start_mesh(&service("ratings", "10.96.1.4", "http", 9080, &specs), &[], None);
    let at = mesh.outbound();
    // Learn which endpoint round robin takes first; the cursor then stands at the other one.
    let (_, headers, _) = get(at, "ratings:9080", "/", &[]).await;
    let (bad, good) = if headers["x-upstream"] == "a" { (&pods[0], &pods[1]) } else { (&pods[1], &pods[0]) };
    get(at, "ratings:9080", "/", &[]).await;
    bad.answer(503).delay(Duration::from_millis(300));
    let before = bad.count();
    // X goes to the bad endpoint; while it waits, Y moves the cursor back onto the bad one.
    let x = tokio::spawn(async move { get(at, "ratings:9080", "/x", &[]).await });
    support::bounded("X reaches the bad endpoint", async {
        while bad.count() == before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let (status, headers, _) = get(at, "ratings:9080", "/y", &[]).await;
    assert_eq!((status, &headers["x-upstream"]), (StatusCode::OK, &http::HeaderValue::from_static(good.name)));
    let (status, headers, _) = x.await.unwrap();
    assert_eq!((status, &headers["x-upstream"]), (StatusCode::OK, &http::HeaderValue::from_static(good.name)));
    assert_eq!(bad.hits().iter().filter(|h| h.path == "/x").count(), 1, "the retry went to the other endpoint");
}

#[tokio::test]
async fn a_post_is_not_retried_by_default_but_is_when_retry_on_asks() {
    let bad = scripted("bad", "127.0.1.11", 503).await;
    let config = service("orders", "10.96.1.11", "http", 8080, &[pod("orders-1", &[], bad.addr())])
        + &service("payments", "10.96.1.12", "http", 8080, &[pod("payments-1", &[], bad.addr())])
        + r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payments}
spec:
  hosts: [payments]
  http:
  - route: [{destination: {host: payments}}]
    retries: {attempts: 2, retryOn: "5xx"}
"#;
    let mesh = start_mesh(&config, &[], None);
    let (status, _, _) = send(mesh.outbound(), "POST", "orders:8080", "/", &[], "order=1").await;
    assert_eq!((status, bad.count()), (StatusCode::SERVICE_UNAVAILABLE, 1), "a POST is sent once");
    let (_, _, _) = send(mesh.outbound(), "PUT", "orders:8080", "/", &[], "order=1").await;
    assert_eq!(bad.count(), 1 + 3, "a PUT is idempotent: two retries");

    let (status, _, _) = send(mesh.outbound(), "POST", "payments:8080", "/pay", &[], "amount=5").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let hits = bad.hits();
    let replays: Vec<_> = hits.iter().filter(|h| h.path == "/pay").collect();
    assert_eq!(replays.len(), 3, "retryOn written by the user replays a POST");
    assert!(replays.iter().all(|h| h.body == "amount=5" && h.method == "POST"), "{replays:?}");

    // A body over the 64 KiB replay limit reaches the upstream whole, once.
    let big: &'static str = Box::leak("y".repeat(100 * 1024).into_boxed_str());
    let (status, _, _) = send(mesh.outbound(), "POST", "payments:8080", "/big", &[], big).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let bigs: Vec<_> = bad.hits().into_iter().filter(|h| h.path == "/big").collect();
    assert_eq!(bigs.len(), 1, "not retried");
    assert_eq!(bigs[0].body.len(), big.len());
}

#[tokio::test]
async fn a_post_whose_connection_failed_is_retried_elsewhere() {
    let dead = tokio::net::TcpListener::bind("127.0.1.21:0").await.unwrap().local_addr().unwrap();
    let ok = scripted("ok", "127.0.1.22", 200).await;
    let config = service("orders", "10.96.1.21", "http", 8080, &[pod("o-1", &[], dead), pod("o-2", &[], ok.addr())]);
    let mesh = start_mesh(&config, &[], None);
    for _ in 0..4 {
        let (status, _, body) = send(mesh.outbound(), "POST", "orders:8080", "/", &[], "x").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"), "nothing was sent to the dead endpoint");
    }
    assert!(ok.hits().iter().all(|h| h.body == "x"));
}

#[tokio::test]
async fn grpc_unavailable_is_retried_when_retry_on_names_it() {
    let (a, b) = (scripted("a", "127.0.1.31", 200).await, scripted("b", "127.0.1.32", 200).await);
    a.grpc_status(14);
    b.grpc_status(0);
    let config =
        service("greeter", "10.96.1.31", "grpc", 50051, &[pod("g-1", &[], a.addr()), pod("g-2", &[], b.addr())])
            + r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
  - route: [{destination: {host: greeter}}]
    retries: {attempts: 1, retryOn: "unavailable"}
"#;
    let mesh = start_mesh(&config, &[], None);
    for _ in 0..4 {
        let (status, headers, _) = send(mesh.outbound(), "POST", "greeter:50051", "/Greet", &[], "hi").await;
        assert_eq!((status, &headers["grpc-status"]), (StatusCode::OK, &"0".parse::<http::HeaderValue>().unwrap()));
    }
    assert_eq!(b.count(), 4);
    assert!((1..=4).contains(&a.count()));
    // The upstream port is grpc: the retries went out over HTTP/2 with the body replayed.
    assert!(a.hits().iter().chain(b.hits().iter()).all(|h| h.body == "hi" && h.version == http::Version::HTTP_2));
}

#[tokio::test]
async fn a_half_second_timeout_answers_504_in_half_a_second() {
    let slow = scripted("slow", "127.0.1.41", 200).await;
    slow.delay(Duration::from_secs(3));
    let config = service("reviews", "10.96.1.41", "http", 9080, &[pod("r-1", &[], slow.addr())])
        + r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    timeout: 0.5s
"#;
    let mesh = start_mesh(&config, &[], None);
    let started = Instant::now();
    let (status, headers, _) = get(mesh.outbound(), "reviews:9080", "/", &[]).await;
    let took = started.elapsed();
    assert_eq!((status, reason(&headers).as_deref()), (StatusCode::GATEWAY_TIMEOUT, Some("timeout")));
    // 0.5 s, with 0.4 s allowed for a loaded machine (the upstream would take 3 s).
    assert!(took >= Duration::from_millis(500) && took < Duration::from_millis(900), "{took:?}");
    let counted = stats(mesh.proxy.addresses().admin, "/stats").await;
    assert_eq!(counted["local_replies"]["timeout"], 1);
    assert_eq!(counted["outbound"]["upstream_rq_timeout"], 1);
}

#[tokio::test]
async fn retries_stop_at_the_overall_timeout() {
    let slow = scripted("slow", "127.0.1.51", 200).await;
    slow.delay(Duration::from_secs(5));
    let config = service("reviews", "10.96.1.51", "http", 9080, &[pod("r-1", &[], slow.addr())])
        + r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    timeout: 1s
    retries: {attempts: 50, perTryTimeout: 0.2s, retryOn: "5xx"}
"#;
    let mesh = start_mesh(&config, &[], None);
    let started = Instant::now();
    let (status, headers, _) = get(mesh.outbound(), "reviews:9080", "/", &[]).await;
    let took = started.elapsed();
    assert_eq!((status, reason(&headers).as_deref()), (StatusCode::GATEWAY_TIMEOUT, Some("timeout")));
    assert!(took >= Duration::from_secs(1) && took < Duration::from_millis(1600), "{took:?}");
    // Each attempt takes 0.2 s plus a backoff of 0-25 ms, 0-75 ms, 0-175 ms, ...: 4 to 6
    // attempts start within 1 s (3 on a machine too loaded to keep time).
    assert!((3..=6).contains(&slow.count()), "{} attempts", slow.count());

    // Without an overall timeout, the per-try timeout of the last attempt answers.
    let config = config.replace("    timeout: 1s\n", "").replace("attempts: 50", "attempts: 1");
    let mesh = start_mesh(&config, &[], None);
    let before = slow.count();
    let (status, headers, _) = get(mesh.outbound(), "reviews:9080", "/", &[]).await;
    assert_eq!((status, reason(&headers).as_deref()), (StatusCode::GATEWAY_TIMEOUT, Some("timeout")));
    assert_eq!(slow.count() - before, 2);
}

#[tokio::test]
async fn attempts_zero_disables_retries() {
    let bad = scripted("bad", "127.0.1.61", 503).await;
    let config = service("reviews", "10.96.1.61", "http", 9080, &[pod("r-1", &[], bad.addr())])
        + r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    retries: {attempts: 0}
"#;
    let mesh = start_mesh(&config, &[], None);
    let (status, _, _) = get(mesh.outbound(), "reviews:9080", "/", &[]).await;
    assert_eq!((status, bad.count()), (StatusCode::SERVICE_UNAVAILABLE, 1));
}

#[tokio::test]
async fn a_retry_replays_what_was_sent_and_carries_on_with_the_rest_of_a_streaming_body() {
    // The first request is refused at once, before its body is read; later ones echo it.
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let echo = support::serve_on("127.0.1.71:0".parse().unwrap(), move |req: Request<Incoming>| {
        let n = count.fetch_add(1, SeqCst);
        async move {
            if n == 0 {
                let mut resp = Response::new(Full::new(Bytes::from_static(b"busy")));
                *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                return resp;
            }
            Response::new(Full::new(req.into_body().collect().await.unwrap().to_bytes()))
        }
    })
    .await;
    let config = service("upload", "10.96.1.71", "http", 8080, &[pod("u-1", &[], echo.addr)])
        + r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: upload}
spec:
  hosts: [upload]
  http:
  - route: [{destination: {host: upload}}]
    retries: {attempts: 1, retryOn: "5xx"}
"#;
    let mesh = start_mesh(&config, &[], None);
    let (mut tx, body) = Channel::<Bytes>::new(1);
    let mut client = support::h1_client::<Channel<Bytes>>(mesh.outbound()).await;
    let req = Request::post("/").header("host", "upload:8080").body(body).unwrap();
    let pending = tokio::spawn(async move { client.send_request(req).await });
    tx.send_data(Bytes::from_static(b"hello ")).await.unwrap();
    // The rest comes only after the first attempt was refused.
    support::bounded("first attempt", async {
        while seen.load(SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    tx.send_data(Bytes::from_static(b"world")).await.unwrap();
    drop(tx);
    let resp = support::bounded("response", pending).await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "hello world");
    assert_eq!(seen.load(SeqCst), 2);
}
