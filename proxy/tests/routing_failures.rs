//! Loopback: the proxy's own answers explain themselves (`x-mesh-reason`, a counter per
//! reason), the outbound traffic policy, and config reloads that swap atomically or are refused.

mod support;

use http::StatusCode;
use std::time::Duration;
use support::mesh::{get, pod, service, start_mesh, upstream, wait_for_version, write_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn stats(mesh: &support::mesh::Mesh) -> serde_json::Value {
    let (_, _, body) = get(mesh.proxy.addresses().admin, "admin", "/stats", &[]).await;
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn local_replies_carry_their_reason_and_are_counted() {
    let v1 = upstream("v1", "127.0.0.81").await;
    let dead = tokio::net::TcpListener::bind("127.0.0.82:0").await.unwrap().local_addr().unwrap();
    let config = service("reviews", "10.96.0.81", "http", 9080, &[pod("reviews-v1", &[("version", "v1")], v1.addr())])
        + &service("ratings", "10.96.0.82", "http", 9080, &[pod("ratings-v1", &[("version", "v1")], dead)])
        + &service("details", "10.96.0.83", "http", 9080, &[])
        + r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - match: [{uri: {prefix: /reviews}}]
    route: [{destination: {host: reviews, subset: v1}}]
"#;
    let mesh = start_mesh(&config, &[], None);
    let at = mesh.outbound();
    let reason = |h: &http::HeaderMap| h.get("x-mesh-reason").map(|v| v.to_str().unwrap().to_string());

    let (status, h, _) = get(at, "reviews:9080", "/reviews/1", &[("end-user", "jason")]).await;
    assert_eq!((status, reason(&h).as_deref()), (StatusCode::SERVICE_UNAVAILABLE, Some("subset_not_found reviews/v3")));
    let (status, h, _) = get(at, "reviews:9080", "/other", &[]).await;
    assert_eq!((status, reason(&h).as_deref()), (StatusCode::NOT_FOUND, Some("no_route")));
    let (status, h, _) = get(at, "nowhere:9080", "/", &[]).await;
    assert_eq!((status, reason(&h).as_deref()), (StatusCode::NOT_FOUND, Some("no_route")));
    let (status, h, _) = get(at, "details:9080", "/", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reason(&h).as_deref(), Some("no_healthy_upstream"));
    let (status, h, _) = get(at, "ratings:9080", "/", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reason(&h).as_deref(), Some("connect_failure outbound|9080||ratings.default.svc.cluster.local"));
    // A forwarded response has no reason header.
    let (status, h, body) = get(at, "reviews:9080", "/reviews/1", &[]).await;
    assert_eq!((status, body.as_str(), reason(&h)), (StatusCode::OK, "v1", None));

    let counted = stats(&mesh).await["local_replies"].clone();
    assert_eq!(counted["subset_not_found"], 1, "{counted}");
    assert_eq!(counted["no_route"], 2, "{counted}");
    assert_eq!(counted["no_healthy_upstream"], 1, "{counted}");
    assert_eq!(counted["connect_failure"], 1, "{counted}");

    // /clusters lists the compiled clusters with endpoints and their counters.
    let (_, _, body) = get(mesh.proxy.addresses().admin, "admin", "/clusters", &[]).await;
    let clusters: serde_json::Value = serde_json::from_str(&body).unwrap();
    let v1_cluster = clusters["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "outbound|9080|v1|reviews.default.svc.cluster.local")
        .expect("v1 cluster listed")
        .clone();
    assert_eq!(v1_cluster["endpoints"][0]["address"], v1.addr().to_string());
    assert_eq!(v1_cluster["stats"]["rq_total"], 1);
}

const SIDECAR_REGISTRY_ONLY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"#;

#[tokio::test]
async fn unknown_destinations_pass_through_with_allow_any_and_are_refused_with_registry_only() {
    let outside = upstream("outside", "127.0.0.91").await;
    let svc = upstream("svc", "127.0.0.92").await;
    let known = service("known", "10.96.0.91", "http", 80, &[pod("known-1", &[("app", "known")], svc.addr())]);
    // The app dials an address the registry does not know.
    let allow = start_mesh(&known, &[], Some(outside.addr()));
    let (status, _, body) = get(allow.outbound(), "outside", "/", &[]).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "outside"));

    let strict = start_mesh(&(known.clone() + SIDECAR_REGISTRY_ONLY), &[], Some(outside.addr()));
    let mut s = tokio::net::TcpStream::connect(strict.outbound()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: outside\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let n = support::bounded("refused connection closes", s.read_to_end(&mut buf)).await.unwrap_or(0);
    assert_eq!(n, 0, "REGISTRY_ONLY closes a connection to an unknown address");
    assert_eq!(outside.count(), 1);
    assert_eq!(stats(&strict).await["local_replies"]["registry_only"], 1);
}

#[tokio::test]
async fn a_new_config_is_swapped_in_and_a_broken_one_is_refused() {
    let (v1, v2) = (upstream("v1", "127.0.0.101").await, upstream("v2", "127.0.0.102").await);
    let pods = [pod("reviews-v1", &[("version", "v1")], v1.addr()), pod("reviews-v2", &[("version", "v2")], v2.addr())];
    let base = service("reviews", "10.96.0.101", "http", 9080, &pods)
        + "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\n\
           spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]}\n---\n";
    let to = |subset: &str| {
        format!(
            "{base}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\n\
             spec: {{hosts: [reviews], http: [{{route: [{{destination: {{host: reviews, subset: {subset}}}}}]}}]}}\n"
        )
    };
    let mesh = start_mesh(&to("v1"), &[], None);
    let watcher = tokio::spawn(mesh_proxy::config::watch::run(mesh.store.clone(), Duration::from_millis(50)));
    assert_eq!(get(mesh.outbound(), "reviews:9080", "/", &[]).await.2, "v1");
    let first = mesh.store.load().version;

    write_config(&mesh.file, &to("v2"));
    wait_for_version(&mesh.store, first + 1).await;
    assert_eq!(get(mesh.outbound(), "reviews:9080", "/", &[]).await.2, "v2");

    // An unknown field: the file is refused, the previous config keeps routing.
    write_config(&mesh.file, &to("v1").replace("hosts: [reviews]", "hosts: [reviews], hots: [x]"));
    support::bounded("refusal recorded", async {
        while mesh.store.last_error().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(mesh.store.last_error().unwrap().contains("hots"), "{:?}", mesh.store.last_error());
    assert_eq!(mesh.store.load().version, first + 1);
    assert_eq!(get(mesh.outbound(), "reviews:9080", "/", &[]).await.2, "v2");
    let (_, _, dump) = get(mesh.proxy.addresses().admin, "admin", "/config_dump", &[]).await;
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["routing"]["version"], first + 1);
    assert!(dump["routing"]["last_error"].as_str().unwrap().contains("hots"));
    assert_eq!(dump["routing"]["resources"].as_array().unwrap().len(), 2);
    assert!(dump["routing"]["tables"]["clusters"].is_object());
    // Counters of a cluster survive the reload.
    let (_, _, clusters) = get(mesh.proxy.addresses().admin, "admin", "/clusters", &[]).await;
    assert!(clusters.contains("outbound|9080|v2|reviews.default.svc.cluster.local"));
    watcher.abort();
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_config_it_started_with() {
    use std::sync::Arc;
    use tokio::sync::Notify;
    let release = Arc::new(Notify::new());
    let gate = release.clone();
    let slow =
        support::serve_on("127.0.0.111:0".parse().unwrap(), move |_req: http::Request<hyper::body::Incoming>| {
            let gate = gate.clone();
            async move {
                gate.notified().await;
                http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(b"old")))
            }
        })
        .await;
    let fresh = upstream("new", "127.0.0.112").await;
    let old_config = service("svc", "10.96.0.111", "http", 80, &[pod("svc-old", &[("v", "old")], slow.addr)]);
    let new_config = service("svc", "10.96.0.111", "http", 80, &[pod("svc-new", &[("v", "new")], fresh.addr())]);
    let mesh = start_mesh(&old_config, &[], None);
    let at = mesh.outbound();
    let pending = tokio::spawn(async move { get(at, "svc", "/", &[]).await });
    support::bounded("request reaches the old endpoint", async {
        while slow.connections() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    write_config(&mesh.file, &new_config);
    mesh.store.reload().unwrap();
    assert_eq!(get(at, "svc", "/", &[]).await.2, "new");
    release.notify_one();
    let (status, _, body) = support::bounded("old request", pending).await.unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "old"));
}
