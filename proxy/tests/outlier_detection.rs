//! Loopback: DestinationRule `outlierDetection` against upstreams that fail on command: an
//! endpoint failing in a row is ejected for `baseEjectionTime` and returns; the limits
//! (`maxEjectionPercent`, `minHealthPercent`); gateway errors against 5xx; local-origin
//! failures counted apart; and what `/clusters` shows of it.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::mesh::{get, pod, service, start_mesh};
use support::scripted::{Scripted, scripted};

/// A Service `name` over `pods` (one endpoint each) with a DestinationRule of this
/// `trafficPolicy` and a VirtualService without retries, so each request is one attempt.
fn config(name: &str, ip: &str, endpoints: &[(&'static str, SocketAddr)], policy: &str) -> String {
    let specs: Vec<_> = endpoints.iter().map(|(n, a)| pod(n, &[], *a)).collect();
    service(name, ip, "http", 8080, &specs)
        + &format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: default}}\n\
             spec: {{host: {name}, trafficPolicy: {policy}}}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\n\
             spec: {{hosts: [{name}], http: [{{route: [{{destination: {{host: {name}}}}}], retries: {{attempts: 0}}}}]}}\n"
        )
}

fn endpoints(pods: &[Scripted]) -> Vec<(&'static str, SocketAddr)> {
    pods.iter().map(|p| (p.name, p.addr())).collect()
}

async fn clusters(admin: SocketAddr, name: &str) -> serde_json::Value {
    let (_, _, body) = get(admin, "admin", "/clusters", &[]).await;
    let all: serde_json::Value = serde_json::from_str(&body).unwrap();
    let wanted = format!("outbound|8080||{name}.default.svc.cluster.local");
    all["clusters"].as_array().unwrap().iter().find(|c| c["name"] == wanted.as_str()).cloned().unwrap()
}

fn endpoint_json(cluster: &serde_json::Value, addr: SocketAddr) -> &serde_json::Value {
    cluster["endpoints"].as_array().unwrap().iter().find(|e| e["address"] == addr.to_string().as_str()).unwrap()
}

async fn send(at: SocketAddr, host: &str, n: usize) {
    for _ in 0..n {
        get(at, host, "/", &[]).await;
    }
}

#[tokio::test]
async fn an_endpoint_failing_five_times_in_a_row_is_ejected_for_the_base_ejection_time_then_returns() {
    let pods = [scripted("bad", "127.0.11.1", 500).await, scripted("good", "127.0.11.2", 200).await];
    let policy = "{loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {consecutive5xxErrors: 5, interval: 100ms, \
                  baseEjectionTime: 1s, maxEjectionPercent: 100}}";
    let mesh = start_mesh(&config("reviews", "10.96.11.1", &endpoints(&pods), policy), &[], None);
    let (at, admin) = (mesh.outbound(), mesh.proxy.addresses().admin);
    send(at, "reviews:8080", 8).await;
    let cluster = clusters(admin, "reviews").await;
    assert_eq!(cluster["lb_policy"], "ROUND_ROBIN");
    let bad = endpoint_json(&cluster, pods[0].addr());
    assert_eq!((bad["health"].as_str(), bad["consecutive_5xx"].as_u64()), (Some("HEALTHY"), Some(4)), "{bad}");

    send(at, "reviews:8080", 2).await;
    let ejected_at = Instant::now();
    assert_eq!(pods[0].count(), 5);
    let cluster = clusters(admin, "reviews").await;
    let bad = endpoint_json(&cluster, pods[0].addr());
    assert_eq!(bad["health"], "EJECTED", "{cluster}");
    assert!(bad["ejected_until"].is_string() && bad["ejections"] == 1, "{bad}");
    assert_eq!(bad["active_requests"], 0);
    assert_eq!(endpoint_json(&cluster, pods[1].addr())["ejected_until"], serde_json::Value::Null);
    assert_eq!(cluster["stats"]["outlier_detection"]["ejections_enforced_consecutive_5xx"], 1);
    assert_eq!(cluster["outlier_detection"]["base_ejection_time_ms"], 1000);

    // Ejected: for the next second every request goes to the good endpoint.
    pods[0].answer(200);
    while ejected_at.elapsed() < Duration::from_millis(800) {
        let (_, headers, _) = get(at, "reviews:8080", "/", &[]).await;
        assert_eq!(headers["x-upstream"], "good");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pods[0].count(), 5, "no request reached the ejected endpoint");
    tokio::time::sleep(Duration::from_millis(1100).saturating_sub(ejected_at.elapsed())).await;
    send(at, "reviews:8080", 4).await;
    assert_eq!(pods[0].count(), 5 + 2, "back after baseEjectionTime, in its turn");
    let cluster = clusters(admin, "reviews").await;
    assert_eq!(endpoint_json(&cluster, pods[0].addr())["health"], "HEALTHY");
}

#[tokio::test]
async fn max_ejection_percent_keeps_the_rest_of_the_pool() {
    let pods = [
        scripted("a", "127.0.12.1", 500).await,
        scripted("b", "127.0.12.2", 500).await,
        scripted("c", "127.0.12.3", 500).await,
    ];
    // 34% of 3 endpoints: one may be ejected.
    let policy = "{outlierDetection: {consecutive5xxErrors: 3, baseEjectionTime: 30s, maxEjectionPercent: 34}}";
    let mesh = start_mesh(&config("ratings", "10.96.12.1", &endpoints(&pods), policy), &[], None);
    send(mesh.outbound(), "ratings:8080", 30).await;
    let cluster = clusters(mesh.proxy.addresses().admin, "ratings").await;
    let ejected: Vec<_> = pods.iter().filter(|p| endpoint_json(&cluster, p.addr())["health"] == "EJECTED").collect();
    assert_eq!(ejected.len(), 1, "{cluster}");
    let counts: Vec<usize> = pods.iter().map(Scripted::count).collect();
    assert_eq!(counts.iter().sum::<usize>(), 30);
    assert!(counts.iter().filter(|c| **c > 5).count() == 2, "the other two kept taking traffic: {counts:?}");
    assert!(cluster["stats"]["outlier_detection"]["ejections_overflow"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn below_min_health_percent_the_ejected_endpoint_takes_traffic_again() {
    let pods = [scripted("bad", "127.0.13.1", 500).await, scripted("good", "127.0.13.2", 200).await];
    // After the ejection 1 of 2 (50%) is healthy, below 60%: outlier detection steps aside.
    let policy = "{loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {consecutive5xxErrors: 2, \
                  baseEjectionTime: 30s, maxEjectionPercent: 100, minHealthPercent: 60}}";
    let mesh = start_mesh(&config("details", "10.96.13.1", &endpoints(&pods), policy), &[], None);
    send(mesh.outbound(), "details:8080", 4).await;
    let cluster = clusters(mesh.proxy.addresses().admin, "details").await;
    assert_eq!(endpoint_json(&cluster, pods[0].addr())["health"], "EJECTED");
    send(mesh.outbound(), "details:8080", 10).await;
    assert_eq!(pods[0].count(), 2 + 5, "the ejected endpoint keeps its share");
}

#[tokio::test]
async fn gateway_errors_are_502_503_504_and_do_not_include_a_500() {
    let pods = [scripted("bad", "127.0.14.1", 500).await, scripted("good", "127.0.14.2", 200).await];
    let policy = "{loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {consecutiveGatewayErrors: 3, \
                  consecutive5xxErrors: 0, baseEjectionTime: 30s, maxEjectionPercent: 100}}";
    let mesh = start_mesh(&config("gw", "10.96.14.1", &endpoints(&pods), policy), &[], None);
    send(mesh.outbound(), "gw:8080", 20).await;
    assert_eq!(pods[0].count(), 10, "ten 500s in a row eject nothing");
    pods[0].answer(502);
    send(mesh.outbound(), "gw:8080", 20).await;
    assert_eq!(pods[0].count(), 10 + 3, "the third 502 in a row ejects");
    let cluster = clusters(mesh.proxy.addresses().admin, "gw").await;
    assert_eq!(cluster["stats"]["outlier_detection"]["ejections_enforced_consecutive_gateway_failure"], 1);
}

#[tokio::test]
async fn connect_failures_count_as_gateway_errors_unless_split_from_responses() {
    let dead = tokio::net::TcpListener::bind("127.0.15.1:0").await.unwrap().local_addr().unwrap();
    let good = scripted("good", "127.0.15.2", 200).await;
    let both = [("dead", dead), ("good", good.addr())];
    let joined = "{loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {consecutive5xxErrors: 2, \
                  baseEjectionTime: 30s, maxEjectionPercent: 100}}";
    let split = "{loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {splitExternalLocalOriginErrors: true, \
                 consecutiveLocalOriginFailures: 3, consecutive5xxErrors: 2, baseEjectionTime: 30s, maxEjectionPercent: 100}}";
    let yaml = config("joined", "10.96.15.1", &both, joined) + &config("split", "10.96.15.2", &both, split);
    let mesh = start_mesh(&yaml, &[], None);
    let admin = mesh.proxy.addresses().admin;

    send(mesh.outbound(), "joined:8080", 4).await;
    let cluster = clusters(admin, "joined").await;
    assert_eq!(endpoint_json(&cluster, dead)["health"], "EJECTED", "two connect failures are two 503s: {cluster}");
    assert_eq!(cluster["stats"]["outlier_detection"]["ejections_enforced_consecutive_5xx"], 1);

    send(mesh.outbound(), "split:8080", 4).await;
    let cluster = clusters(admin, "split").await;
    let state = endpoint_json(&cluster, dead);
    assert_eq!(
        (state["health"].as_str(), state["consecutive_local_origin_failures"].as_u64()),
        (Some("HEALTHY"), Some(2))
    );
    assert_eq!(state["consecutive_5xx"], 0, "local failures are not counted as 5xx responses");
    send(mesh.outbound(), "split:8080", 2).await;
    let cluster = clusters(admin, "split").await;
    assert_eq!(endpoint_json(&cluster, dead)["health"], "EJECTED", "{cluster}");
    assert_eq!(cluster["stats"]["outlier_detection"]["ejections_enforced_consecutive_local_origin_failure"], 1);
}
