//! Loopback: HTTP routing by VirtualServices and DestinationRules replayed with
//! `--config-file`, asserting on what each upstream saw. Connections are made straight to
//! the outbound listener and routed by Host, or (with a fixed original destination) as if the
//! app had dialled the service's ClusterIP.

mod support;

use support::mesh::{get, pod, request, service, start_mesh, upstream};

const REQUEST_ROUTING: &str = include_str!("fixtures/istio-request-routing.yaml");

#[tokio::test]
async fn istio_request_routing_task_sends_jason_to_v2_and_everyone_else_to_v1() {
    let (v1, v2, v3) =
        (upstream("v1", "127.0.0.11").await, upstream("v2", "127.0.0.12").await, upstream("v3", "127.0.0.13").await);
    let pods = [
        pod("reviews-v1", &[("app", "reviews"), ("version", "v1")], v1.addr()),
        pod("reviews-v2", &[("app", "reviews"), ("version", "v2")], v2.addr()),
        pod("reviews-v3", &[("app", "reviews"), ("version", "v3")], v3.addr()),
    ];
    let config = service("reviews", "10.96.0.20", "http", 9080, &pods) + REQUEST_ROUTING;
    let mesh = start_mesh(&config, &[("app", "productpage")], None);
    for _ in 0..5 {
        let (status, headers, body) =
            get(mesh.outbound(), "reviews:9080", "/reviews/0", &[("end-user", "jason")]).await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "v2"), "{headers:?}");
        let (_, _, body) = get(mesh.outbound(), "reviews:9080", "/reviews/0", &[("end-user", "someone")]).await;
        assert_eq!(body, "v1");
        let (_, _, body) = get(mesh.outbound(), "reviews.default.svc.cluster.local:9080", "/reviews/0", &[]).await;
        assert_eq!(body, "v1");
    }
    assert_eq!((v1.count(), v2.count(), v3.count()), (10, 5, 0));
    // The name the app used reaches the upstream.
    assert_eq!(v2.last().headers["host"], "reviews:9080");
}

#[tokio::test]
async fn captured_connection_to_the_cluster_ip_is_routed_whatever_the_host_header() {
    let (v1, v2) = (upstream("v1", "127.0.0.21").await, upstream("v2", "127.0.0.22").await);
    let pods = [
        pod("reviews-v1", &[("app", "reviews"), ("version", "v1")], v1.addr()),
        pod("reviews-v2", &[("app", "reviews"), ("version", "v2")], v2.addr()),
    ];
    let config = service("reviews", "10.96.0.21", "http", 9080, &pods) + REQUEST_ROUTING;
    let mesh = start_mesh(&config, &[], Some("10.96.0.21:9080".parse().unwrap()));
    let (_, _, body) = get(mesh.outbound(), "10.96.0.21:9080", "/", &[("end-user", "jason")]).await;
    assert_eq!(body, "v2");
    let (_, _, body) = get(mesh.outbound(), "some-alias", "/", &[]).await;
    assert_eq!(body, "v1", "an unknown Host on a known ClusterIP goes to that service");
}

#[tokio::test]
async fn eighty_twenty_split_holds_over_ten_thousand_requests() {
    let (v1, v2) = (upstream("v1", "127.0.0.31").await, upstream("v2", "127.0.0.32").await);
    let pods = [
        pod("reviews-v1", &[("app", "reviews"), ("version", "v1")], v1.addr()),
        pod("reviews-v2", &[("app", "reviews"), ("version", "v2")], v2.addr()),
    ];
    let config = service("reviews", "10.96.0.31", "http", 9080, &pods)
        + r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 20}
"#;
    let mesh = start_mesh(&config, &[], None);
    const N: usize = 10_000;
    // Four keep-alive connections in parallel, as a real client pool would.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let addr = mesh.outbound();
        tasks.push(tokio::spawn(async move {
            let mut client = support::h1_client::<http_body_util::Empty<bytes::Bytes>>(addr).await;
            for _ in 0..N / 4 {
                let req = http::Request::get("/").header("host", "reviews:9080").body(Default::default()).unwrap();
                let resp = client.send_request(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                http_body_util::BodyExt::collect(resp.into_body()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        support::bounded("10 000 requests", t).await.unwrap();
    }
    assert_eq!(v1.count() + v2.count(), N);
    // Binomial(10 000, 0.8): standard deviation 40; ±200 is five of them (a false failure
    // about once in 1.7 million runs).
    let v1_share = v1.count();
    assert!((7_800..=8_200).contains(&v1_share), "v1 got {v1_share} of {N}, expected 8000 ± 200");
}

/// Method, Host, path, headers, and the upstream that should get the request.
type Case = (&'static str, &'static str, &'static str, &'static [(&'static str, &'static str)], &'static str);

#[tokio::test]
async fn match_conditions_are_anded_within_a_block_and_ored_across_blocks() {
    let ups = [
        upstream("regex", "127.0.0.41").await,
        upstream("headers", "127.0.0.42").await,
        upstream("query", "127.0.0.43").await,
        upstream("method", "127.0.0.44").await,
        upstream("nocase", "127.0.0.45").await,
        upstream("fallback", "127.0.0.46").await,
    ];
    let labels: Vec<[(&str, &str); 2]> = ups.iter().map(|u| [("app", "shop"), ("version", u.name)]).collect();
    let names: Vec<String> = ups.iter().map(|u| format!("shop-{}", u.name)).collect();
    let pods: Vec<_> = ups.iter().enumerate().map(|(i, u)| pod(&names[i], &labels[i], u.addr())).collect();
    let subsets: Vec<String> = ups.iter().map(|u| format!("{{name: {0}, labels: {{version: {0}}}}}", u.name)).collect();
    let config = service("shop", "10.96.0.41", "http-web", 8080, &pods)
        + &format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: shop}}\n\
             spec: {{host: shop, subsets: [{}]}}\n---\n",
            subsets.join(", ")
        )
        + r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop]
  http:
  - name: regex
    match: [{uri: {regex: "/items/[0-9]+"}}]
    route: [{destination: {host: shop, subset: regex}}]
  - name: headers
    match:
    - headers: {x-canary: {prefix: "yes"}, x-build: {regex: "b[0-9]+"}}
      withoutHeaders: {x-debug: {}}
    - authority: {exact: "shop.default:8080"}
    route: [{destination: {host: shop, subset: headers}}]
  - name: query
    match: [{queryParams: {version: {exact: v2}}}]
    route: [{destination: {host: shop, subset: query}}]
  - name: method
    match: [{method: {exact: DELETE}, uri: {prefix: /admin}}]
    route: [{destination: {host: shop, subset: method}}]
  - name: nocase
    match: [{uri: {prefix: /Static}, ignoreUriCase: true}]
    route: [{destination: {host: shop, subset: nocase}}]
  - name: fallback
    route: [{destination: {host: shop, subset: fallback}}]
"#;
    let mesh = start_mesh(&config, &[], None);
    let at = mesh.outbound();
    let cases: &[Case] = &[
        ("GET", "shop:8080", "/items/42", &[], "regex"),
        ("GET", "shop:8080", "/items/42x", &[], "fallback"),
        ("GET", "shop:8080", "/", &[("x-canary", "yes-please"), ("x-build", "b17")], "headers"),
        ("GET", "shop:8080", "/", &[("x-canary", "yes"), ("x-build", "b17"), ("x-debug", "1")], "fallback"),
        ("GET", "shop:8080", "/", &[("x-canary", "yes")], "fallback"),
        ("GET", "shop.default:8080", "/", &[], "headers"),
        ("GET", "shop.default.svc:8080", "/", &[], "fallback"),
        ("GET", "shop:8080", "/?a=1&version=v2", &[], "query"),
        ("GET", "shop:8080", "/?version=v22", &[], "fallback"),
        ("DELETE", "shop:8080", "/admin/users", &[], "method"),
        ("GET", "shop:8080", "/admin/users", &[], "fallback"),
        ("GET", "shop:8080", "/STATIC/app.js", &[], "nocase"),
    ];
    for (method, host, path, headers, expected) in cases {
        let (status, _, body) = request(at, method, host, path, headers).await;
        assert_eq!((status.as_u16(), body.as_str()), (200, *expected), "{method} {host}{path} {headers:?}");
    }
}

#[tokio::test]
async fn authority_match_applies_to_the_host_as_sent() {
    let (a, b) = (upstream("by-authority", "127.0.0.47").await, upstream("other", "127.0.0.48").await);
    let pods = [pod("web-a", &[("v", "a")], a.addr()), pod("web-b", &[("v", "b")], b.addr())];
    let config = service("web", "10.96.0.47", "http", 80, &pods)
        + r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec: {host: web, subsets: [{name: a, labels: {v: a}}, {name: b, labels: {v: b}}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - match: [{authority: {prefix: "web.default"}}]
    route: [{destination: {host: web, subset: a}}]
  - route: [{destination: {host: web, subset: b}}]
"#;
    let mesh = start_mesh(&config, &[], None);
    assert_eq!(get(mesh.outbound(), "web.default.svc.cluster.local", "/", &[]).await.2, "by-authority");
    assert_eq!(get(mesh.outbound(), "web", "/", &[]).await.2, "other");
}

#[tokio::test]
async fn source_labels_and_port_decide_which_routes_a_proxy_has() {
    let (canary, stable) = (upstream("canary", "127.0.0.51").await, upstream("stable", "127.0.0.52").await);
    let pods = [
        pod("api-canary", &[("app", "api"), ("track", "canary")], canary.addr()),
        pod("api-stable", &[("app", "api"), ("track", "stable")], stable.addr()),
    ];
    let config = service("api", "10.96.0.51", "http", 8000, &pods)
        + r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api}
spec: {host: api, subsets: [{name: canary, labels: {track: canary}}, {name: stable, labels: {track: stable}}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api]
  http:
  - match: [{sourceLabels: {app: tester}, port: 8000}]
    route: [{destination: {host: api, subset: canary}}]
  - match: [{sourceNamespace: elsewhere}]
    route: [{destination: {host: api, subset: canary}}]
  - route: [{destination: {host: api, subset: stable}}]
"#;
    let tester = start_mesh(&config, &[("app", "tester")], None);
    let other = start_mesh(&config, &[("app", "web")], None);
    assert_eq!(get(tester.outbound(), "api:8000", "/", &[]).await.2, "canary");
    assert_eq!(get(other.outbound(), "api:8000", "/", &[]).await.2, "stable");
}

#[tokio::test]
async fn rewrite_and_header_operations_are_seen_by_upstream_and_client() {
    let app = upstream("app", "127.0.0.61").await;
    let config = service("legacy", "10.96.0.61", "http", 80, &[pod("legacy-1", &[("app", "legacy")], app.addr())])
        + r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: legacy}
spec:
  hosts: [legacy]
  http:
  - match: [{uri: {prefix: /api/v1/}}]
    rewrite: {uri: /v2/, authority: legacy.internal}
    headers:
      request: {set: {x-route: rewritten}, add: {x-trace: added}, remove: [x-secret]}
      response: {set: {x-served-by: mesh}, remove: [x-app-header]}
    route:
    - destination: {host: legacy}
      headers: {request: {set: {x-dest: legacy}}, response: {add: {x-dest: legacy}}}
  - match: [{uri: {exact: /old}}]
    rewrite: {uri: /new}
    route: [{destination: {host: legacy}}]
"#;
    let mesh = start_mesh(&config, &[], None);
    let (status, headers, _) =
        get(mesh.outbound(), "legacy", "/api/v1/items?id=7", &[("x-secret", "s"), ("x-trace", "client")]).await;
    assert_eq!(status, 200);
    let seen = app.last();
    assert_eq!(seen.path, "/v2/items?id=7");
    assert_eq!(seen.headers["host"], "legacy.internal");
    assert_eq!(seen.headers["x-route"], "rewritten");
    assert_eq!(seen.headers["x-dest"], "legacy");
    assert!(seen.headers.get("x-secret").is_none());
    assert_eq!(seen.headers.get_all("x-trace").iter().collect::<Vec<_>>(), ["client", "added"]);
    assert_eq!(headers["x-served-by"], "mesh");
    assert_eq!(headers["x-dest"], "legacy");
    assert!(headers.get("x-app-header").is_none());
    get(mesh.outbound(), "legacy", "/old?q=1", &[]).await;
    assert_eq!(app.last().path, "/new?q=1");
}

#[tokio::test]
async fn redirect_answers_with_status_and_location() {
    let app = upstream("app", "127.0.0.62").await;
    let config = service("www", "10.96.0.62", "http", 80, &[pod("www-1", &[("app", "www")], app.addr())])
        + r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: www}
spec:
  hosts: [www]
  http:
  - match: [{uri: {exact: /moved}}]
    redirect: {uri: /new-home, authority: www.example.com, redirectCode: 308}
  - match: [{uri: {prefix: /secure}}]
    redirect: {scheme: https}
  - route: [{destination: {host: www}}]
"#;
    let mesh = start_mesh(&config, &[], None);
    let (status, headers, _) = get(mesh.outbound(), "www", "/moved?x=1", &[]).await;
    assert_eq!(status, 308);
    assert_eq!(headers["location"], "http://www.example.com/new-home?x=1");
    let (status, headers, _) = get(mesh.outbound(), "www:80", "/secure/login", &[]).await;
    assert_eq!(status, 301);
    assert_eq!(headers["location"], "https://www/secure/login");
    assert_eq!(app.count(), 0, "redirects never reach the app");
}

#[tokio::test]
async fn without_a_virtual_service_the_service_is_balanced_round_robin_over_ready_endpoints() {
    let (a, b, c) =
        (upstream("a", "127.0.0.71").await, upstream("b", "127.0.0.72").await, upstream("c", "127.0.0.73").await);
    let mut not_ready = pod("ratings-c", &[("app", "ratings")], c.addr());
    not_ready.ready = false;
    let pods = [
        pod("ratings-a", &[("app", "ratings")], a.addr()),
        pod("ratings-b", &[("app", "ratings")], b.addr()),
        not_ready,
    ];
    let mesh = start_mesh(&service("ratings", "10.96.0.71", "http", 9080, &pods), &[], None);
    for _ in 0..10 {
        assert_eq!(get(mesh.outbound(), "ratings:9080", "/", &[]).await.0, 200);
    }
    assert_eq!((a.count(), b.count(), c.count()), (5, 5, 0));
}
