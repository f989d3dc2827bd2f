//! Loopback: injected faults (`fault.delay`, `fault.abort` with HTTP and gRPC statuses) and
//! mirrors (`mirror`, `mirrors`), asserted on what real upstream servers saw.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use std::time::{Duration, Instant};
use support::mesh::{get, pod, service, start_mesh};
use support::scripted::{scripted, send};

fn vs(host: &str, route: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {host}}}\n\
         spec:\n  hosts: [{host}]\n  http:\n  - route: [{{destination: {{host: {host}}}}}]\n{route}"
    )
}

#[tokio::test]
async fn a_fixed_delay_for_every_request_holds_each_one_back() {
    let up = scripted("up", "127.0.2.1", 200).await;
    let config = service("ratings", "10.96.2.1", "http", 9080, &[pod("r", &[], up.addr())])
        + &vs("ratings", "    fault: {delay: {fixedDelay: 300ms, percentage: {value: 100}}}\n");
    let mesh = start_mesh(&config, &[], None);
    for _ in 0..3 {
        let started = Instant::now();
        let (status, _, _) = get(mesh.outbound(), "ratings:9080", "/", &[]).await;
        let took = started.elapsed();
        assert_eq!(status, StatusCode::OK);
        assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(900), "{took:?}");
    }
    assert_eq!(up.count(), 3);
}

#[tokio::test]
async fn an_abort_for_half_the_requests_aborts_about_half() {
    let up = scripted("up", "127.0.2.11", 200).await;
    let config = service("ratings", "10.96.2.11", "http", 9080, &[pod("r", &[], up.addr())])
        + &vs("ratings", "    fault: {abort: {httpStatus: 500, percentage: {value: 50}}}\n");
    let mesh = start_mesh(&config, &[], None);
    const N: usize = 400;
    let mut aborted = 0;
    for _ in 0..N {
        let (status, headers, _) = get(mesh.outbound(), "ratings:9080", "/", &[]).await;
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            assert_eq!(headers["x-mesh-reason"], "fault_abort");
            aborted += 1;
        } else {
            assert_eq!(status, StatusCode::OK);
        }
    }
    // Binomial(400, 0.5): σ = 10; 5σ either side cannot fail by chance (p < 1e-6).
    assert!((150..=250).contains(&aborted), "{aborted} of {N} aborted");
    assert_eq!(up.count(), N - aborted, "aborted requests never reach the upstream");
    let (_, _, body) = get(mesh.proxy.addresses().admin, "admin", "/stats", &[]).await;
    let counted: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(counted["local_replies"]["fault_abort"], aborted as u64);
}

#[tokio::test]
async fn a_grpc_abort_answers_200_with_grpc_status_as_trailers_only() {
    let up = scripted("up", "127.0.2.21", 200).await;
    let config = service("greeter", "10.96.2.21", "grpc", 50051, &[pod("g", &[], up.addr())])
        + &vs("greeter", "    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}\n");
    let mesh = start_mesh(&config, &[], None);
    let mut client = support::h2_client::<Empty<Bytes>>(mesh.outbound()).await;
    let req = Request::post("http://greeter:50051/helloworld.Greeter/SayHello")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Empty::new())
        .unwrap();
    let resp = support::bounded("grpc response", client.send_request(req)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["grpc-status"], "14");
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    assert_eq!(resp.headers()["x-mesh-reason"], "fault_abort");
    let body = resp.into_body().collect().await.unwrap();
    assert!(body.trailers().is_none() && body.to_bytes().is_empty(), "trailers-only: no body, no trailers");
    assert_eq!(up.count(), 0);
}

fn mirrored(route_extra: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: httpbin}}
spec: {{host: httpbin, subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin}}
spec:
  hosts: [httpbin]
  http:
  - route: [{{destination: {{host: httpbin, subset: v1}}}}]
{route_extra}"#
    )
}

#[tokio::test]
async fn mirrors_get_copies_with_the_shadow_authority_and_a_stalled_one_slows_nothing() {
    let (v1, v2, v3) = (
        scripted("v1", "127.0.2.31", 200).await,
        scripted("v2", "127.0.2.32", 200).await,
        scripted("v3", "127.0.2.33", 200).await,
    );
    let pods = [
        pod("httpbin-v1", &[("version", "v1")], v1.addr()),
        pod("httpbin-v2", &[("version", "v2")], v2.addr()),
        pod("httpbin-v3", &[("version", "v3")], v3.addr()),
    ];
    let dr_v3 = "{name: v3, labels: {version: v3}}";
    let config = service("httpbin", "10.96.2.31", "http", 8000, &pods)
        + &mirrored(
            "    mirrors:\n    - {destination: {host: httpbin, subset: v2}}\n    - {destination: {host: httpbin, subset: v3}, percentage: {value: 0}}\n",
        )
        .replace("{name: v2, labels: {version: v2}}]", &format!("{{name: v2, labels: {{version: v2}}}}, {dr_v3}]"));
    let mesh = start_mesh(&config, &[], None);
    for i in 0..5 {
        let (status, headers, _) =
            send(mesh.outbound(), "POST", "httpbin:8000", &format!("/post/{i}"), &[], "payload").await;
        assert_eq!((status, &headers["x-upstream"]), (StatusCode::OK, &"v1".parse::<http::HeaderValue>().unwrap()));
    }
    let deadline = Instant::now() + support::WAIT;
    while v2.count() < 5 {
        assert!(Instant::now() < deadline, "mirror copies never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(v1.count(), 5);
    assert_eq!(v3.count(), 0, "a mirror with percentage 0 gets nothing");
    for hit in v2.hits() {
        assert_eq!(hit.headers["host"], "httpbin-shadow:8000");
        assert_eq!((hit.method.as_str(), hit.body.as_ref()), ("POST", b"payload".as_slice()));
    }
    assert!(v1.hits().iter().all(|h| h.headers["host"] == "httpbin:8000"));

    // The mirror stalls for 8 s: the primary answers at once all the same, and copies beyond
    // the in-flight bound (64) are skipped rather than queued.
    v2.delay(Duration::from_secs(8));
    let stalled = Instant::now();
    for _ in 0..80 {
        let started = Instant::now();
        let (status, _, _) = get(mesh.outbound(), "httpbin:8000", "/headers", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    }
    assert!(stalled.elapsed() < Duration::from_secs(8), "the copies were still stalled throughout");
    let (_, _, body) = get(mesh.proxy.addresses().admin, "admin", "/stats", &[]).await;
    let counted: serde_json::Value = serde_json::from_str(&body).unwrap();
    let skipped = counted["outbound"]["mirror_skipped"].as_u64().unwrap();
    assert!(skipped >= 80 - 64, "{skipped} copies skipped");
    assert!(v2.count() <= 5 + 64, "{} copies arrived", v2.count());
}

#[tokio::test]
async fn a_body_over_the_replay_limit_reaches_the_primary_but_not_the_mirror() {
    let (v1, v2) = (scripted("v1", "127.0.2.41", 200).await, scripted("v2", "127.0.2.42", 200).await);
    let pods = [pod("httpbin-v1", &[("version", "v1")], v1.addr()), pod("httpbin-v2", &[("version", "v2")], v2.addr())];
    let config = service("httpbin", "10.96.2.41", "http", 8000, &pods)
        + &mirrored("    mirror: {host: httpbin, subset: v2}\n    mirrorPercentage: {value: 100}\n");
    let mesh = start_mesh(&config, &[], None);
    let big: &'static str = Box::leak("x".repeat(200 * 1024).into_boxed_str());
    let (status, _, _) = send(mesh.outbound(), "POST", "httpbin:8000", "/big", &[], big).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v1.hits()[0].body.len(), big.len());
    let (status, _, _) = send(mesh.outbound(), "POST", "httpbin:8000", "/small", &[], "small").await;
    assert_eq!(status, StatusCode::OK);
    let deadline = Instant::now() + support::WAIT;
    while v2.count() < 1 {
        assert!(Instant::now() < deadline, "mirror copy never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(v2.hits().iter().map(|h| h.path.as_str()).collect::<Vec<_>>(), ["/small"]);
}
