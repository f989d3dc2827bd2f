//! Loopback: DestinationRule `loadBalancer` (consistent hashing on a header with a ring and
//! with Maglev, cookies, LEAST_REQUEST, RANDOM, PASSTHROUGH), asserted on what real upstream
//! servers saw.

mod support;

use std::collections::HashMap;
use std::time::Duration;
use support::mesh::{get, pod, service, start_mesh, wait_for_version, write_config};
use support::scripted::{Scripted, scripted};

/// A DestinationRule for `host` with this `trafficPolicy` (YAML flow text).
fn rule(host: &str, policy: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {host}, namespace: default}}\n\
         spec: {{host: {host}, trafficPolicy: {policy}}}\n---\n"
    )
}

async fn pods(names: &[&'static str], subnet: &str) -> Vec<Scripted> {
    let mut pods = Vec::new();
    for (i, name) in names.iter().enumerate() {
        pods.push(scripted(name, &format!("{subnet}.{}", i + 1), 200).await);
    }
    pods
}

fn upstream_of(headers: &http::HeaderMap) -> String {
    headers["x-upstream"].to_str().unwrap().to_string()
}

/// Where each of `users` goes, by the `x-user` header.
async fn placement(at: std::net::SocketAddr, users: usize) -> HashMap<usize, String> {
    let mut placed = HashMap::new();
    for user in 0..users {
        let name = format!("user-{user}");
        let (status, headers, _) = get(at, "cart:8080", "/", &[("x-user", &name)]).await;
        assert_eq!(status, 200);
        placed.insert(user, upstream_of(&headers));
    }
    placed
}

async fn consistent_hash_on_a_header(policy: &str, subnet: &str, survivors_may_move: f64) {
    let pods = pods(&["a", "b", "c", "d", "e"], subnet).await;
    let specs: Vec<_> = pods.iter().map(|p| pod(p.name, &[], p.addr())).collect();
    let dr = rule("cart", policy);
    let mesh = start_mesh(&(service("cart", "10.96.5.1", "http", 8080, &specs) + &dr), &[], None);
    // Started now, so it has read the first file long before it changes.
    let watcher = tokio::spawn(mesh_proxy::config::watch::run(mesh.store.clone(), Duration::from_millis(50)));
    let at = mesh.outbound();

    let (_, headers, _) = get(at, "cart:8080", "/", &[("x-user", "alice")]).await;
    let alice = upstream_of(&headers);
    for _ in 0..999 {
        let (_, headers, _) = get(at, "cart:8080", "/", &[("x-user", "alice")]).await;
        assert_eq!(upstream_of(&headers), alice, "alice stays on one endpoint");
    }

    let users = 300;
    let before = placement(at, users).await;
    let used: std::collections::HashSet<_> = before.values().collect();
    assert_eq!(used.len(), 5, "300 users spread over all five endpoints");
    // Endpoint e leaves.
    let version = mesh.store.load().version;
    write_config(&mesh.file, &(service("cart", "10.96.5.1", "http", 8080, &specs[..4]) + &dr));
    wait_for_version(&mesh.store, version + 1).await;
    let after = placement(at, users).await;
    let on_e = before.values().filter(|u| *u == "e").count();
    let moved = (0..users).filter(|u| before[u] != after[u]).count();
    let survivors_moved = (0..users).filter(|u| before[u] != "e" && before[u] != after[u]).count();
    assert!(after.values().all(|u| u != "e"));
    // About 1/5 of the keys move: those of e (binomial over 300 keys plus the table's own
    // unevenness: 10% to 32% allowed), plus, for Maglev only, a few of the others.
    let share = moved as f64 / users as f64;
    assert!((0.10..0.32).contains(&share), "moved {moved} of {users}");
    assert!(survivors_moved as f64 <= survivors_may_move * users as f64, "{survivors_moved} of others moved");
    assert_eq!(moved - survivors_moved, on_e, "every key of e moved");
    watcher.abort();
}

#[tokio::test]
async fn a_ring_hash_keeps_a_header_on_one_endpoint_and_moves_only_the_leaving_endpoints_keys() {
    let policy = "{loadBalancer: {consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 1024}}}}";
    consistent_hash_on_a_header(policy, "127.0.5", 0.0).await;
}

#[tokio::test]
async fn maglev_keeps_a_header_on_one_endpoint_and_moves_about_a_fifth_when_one_of_five_leaves() {
    let policy = "{loadBalancer: {consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}}}";
    consistent_hash_on_a_header(policy, "127.0.6", 0.05).await;
}

#[tokio::test]
async fn a_cookie_is_set_on_the_first_response_and_requests_carrying_it_stick() {
    let pods = pods(&["a", "b", "c"], "127.0.7").await;
    let specs: Vec<_> = pods.iter().map(|p| pod(p.name, &[], p.addr())).collect();
    let dr = rule("shop", "{loadBalancer: {consistentHash: {httpCookie: {name: user, path: /, ttl: 60s}}}}");
    let mesh = start_mesh(&(service("shop", "10.96.7.1", "http", 8080, &specs) + &dr), &[], None);
    let at = mesh.outbound();

    let mut first_answers = std::collections::HashSet::new();
    for _ in 0..20 {
        let (_, headers, _) = get(at, "shop:8080", "/", &[]).await;
        let set = headers["set-cookie"].to_str().unwrap().to_string();
        assert!(set.starts_with("user=\"") && set.ends_with("; Max-Age=60; Path=/; HttpOnly"), "{set}");
        let cookie = set.split(';').next().unwrap().to_string();
        let chosen = upstream_of(&headers);
        first_answers.insert(chosen.clone());
        for _ in 0..10 {
            let (_, headers, _) = get(at, "shop:8080", "/", &[("cookie", &format!("theme=dark; {cookie}"))]).await;
            assert_eq!(upstream_of(&headers), chosen, "a request with the cookie sticks");
            assert!(headers.get("set-cookie").is_none(), "the cookie is set only once");
        }
    }
    assert!(first_answers.len() > 1, "new clients get different endpoints: {first_answers:?}");
}

#[tokio::test]
async fn least_request_sends_new_requests_away_from_an_endpoint_holding_slow_ones() {
    let pods = pods(&["slow", "fast"], "127.0.8").await;
    pods[0].delay(Duration::from_secs(3));
    let specs: Vec<_> = pods.iter().map(|p| pod(p.name, &[], p.addr())).collect();
    // No loadBalancer: Istio's default, LEAST_REQUEST.
    let mesh = start_mesh(&service("orders", "10.96.8.1", "http", 8080, &specs), &[], None);
    let at = mesh.outbound();
    let held: Vec<_> =
        (0..4).map(|i| tokio::spawn(async move { get(at, "orders:8080", &format!("/held-{i}"), &[]).await })).collect();
    support::bounded("a request held by the slow endpoint", async {
        while pods[0].count() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let held_by_slow = pods[0].count();
    for _ in 0..20 {
        let (status, headers, _) = get(at, "orders:8080", "/new", &[]).await;
        assert_eq!((status, upstream_of(&headers).as_str()), (http::StatusCode::OK, "fast"));
    }
    assert_eq!(pods[0].count(), held_by_slow, "no new request went to the endpoint with requests in flight");
    for h in held {
        assert_eq!(h.await.unwrap().0, 200);
    }
}

#[tokio::test]
async fn random_spreads_requests_within_tolerance() {
    let pods = pods(&["a", "b", "c"], "127.0.9").await;
    let specs: Vec<_> = pods.iter().map(|p| pod(p.name, &[], p.addr())).collect();
    let dr = rule("ratings", "{loadBalancer: {simple: RANDOM}}");
    let mesh = start_mesh(&(service("ratings", "10.96.9.1", "http", 8080, &specs) + &dr), &[], None);
    for _ in 0..300 {
        assert_eq!(get(mesh.outbound(), "ratings:8080", "/", &[]).await.0, 200);
    }
    // 100 expected each; a binomial's standard deviation is ~8, so ±40 is five of them.
    let counts: Vec<usize> = pods.iter().map(Scripted::count).collect();
    assert!(counts.iter().all(|c| (60..=140).contains(c)), "{counts:?}");
}

#[tokio::test]
async fn passthrough_sends_requests_to_the_address_the_client_dialled() {
    let dialled = scripted("dialled", "127.0.10.50", 200).await;
    let pods = pods(&["a", "b"], "127.0.10").await;
    let specs: Vec<_> = pods.iter().map(|p| pod(p.name, &[], p.addr())).collect();
    let port = dialled.addr().port();
    // The service's ClusterIP is where `dialled` listens: what kube-proxy would balance.
    let config = service("legacy", "127.0.10.50", "http", port, &specs);
    let with_rule = config.clone() + &rule("legacy", "{loadBalancer: {simple: PASSTHROUGH}}");
    let mesh = start_mesh(&with_rule, &[], Some(dialled.addr()));
    let host = format!("legacy:{port}");
    for _ in 0..5 {
        let (status, headers, _) = get(mesh.outbound(), &host, "/", &[]).await;
        assert_eq!((status, upstream_of(&headers).as_str()), (http::StatusCode::OK, "dialled"));
    }
    assert_eq!(pods.iter().map(Scripted::count).sum::<usize>(), 0, "no endpoint was chosen by the proxy");

    let plain = start_mesh(&config, &[], Some(dialled.addr()));
    let (_, headers, _) = get(plain.outbound(), &host, "/", &[]).await;
    assert_ne!(upstream_of(&headers), "dialled", "without PASSTHROUGH the proxy balances over the endpoints");
}
