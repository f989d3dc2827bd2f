//! Routes: first match wins, defaults, weights, host resolution, wildcards, gateways,
//! conflicts, and what a route carries.

use super::*;

#[test]
fn without_a_virtual_service_a_host_routes_to_itself_over_ready_endpoints() {
    let compiled = compile_for_productpage(&[]);
    let tables = &compiled.tables;
    let route = route_of(tables, 9080, "reviews:9080", &TestRequest::get("/"));
    assert_eq!(forwards(route), vec![(cluster_name("reviews", "", 9080), 100)]);
    assert_eq!(route.origin.resource, None, "a default route comes from no resource");
    let reviews = cluster(tables, REVIEWS, "", 9080);
    assert_eq!(endpoint_ips(reviews), ["10.1.0.21", "10.1.0.22", "10.1.0.23"], "the starting v2 pod is not ready");
    assert!(compiled.diagnostics.is_empty(), "{:?}", compiled.diagnostics);
}

#[test]
fn first_matching_route_wins_in_the_order_written() {
    let compiled = compile_for_productpage(&[fixture!("reviews-subsets.yaml"), fixture!("reviews-jason-v2.yaml")]);
    let tables = &compiled.tables;
    let jason = TestRequest::get("/reviews/0").header("end-user", "jason");
    assert_eq!(
        forwards(route_of(tables, 9080, "reviews:9080", &jason)),
        vec![(cluster_name("reviews", "v2", 9080), 100)]
    );
    let anyone = TestRequest::get("/reviews/0").header("end-user", "kim");
    assert_eq!(
        forwards(route_of(tables, 9080, "reviews:9080", &anyone)),
        vec![(cluster_name("reviews", "v1", 9080), 100)]
    );

    let reversed =
        compile_for_productpage(&[fixture!("reviews-subsets.yaml"), fixture!("reviews-catch-all-first.yaml")]);
    let route = route_of(&reversed.tables, 9080, "reviews:9080", &jason);
    assert_eq!(forwards(route), vec![(cluster_name("reviews", "v1", 9080), 100)], "the earlier catch-all wins");
    assert_eq!(route.origin.field, "spec.http[0]");
}

#[test]
fn a_route_remembers_the_resource_and_index_it_came_from() {
    let compiled = compile_for_productpage(&[fixture!("reviews-subsets.yaml"), fixture!("reviews-jason-v2.yaml")]);
    let route = route_of(&compiled.tables, 9080, "reviews", &TestRequest::get("/"));
    assert_eq!(
        route.origin.resource.as_ref().map(ToString::to_string).as_deref(),
        Some("VirtualService default/reviews")
    );
    assert_eq!((route.origin.index, route.origin.field.as_str()), (Some(1), "spec.http[1]"));
    let host = virtual_host(&compiled.tables, 9080, "reviews");
    assert_eq!(host.virtual_service.as_ref().map(|vs| vs.name.as_str()), Some("reviews"));
}

#[test]
fn weights_are_kept_for_a_cumulative_pick() {
    let compiled = compile_for_productpage(&[fixture!("reviews-subsets.yaml"), fixture!("reviews-80-20.yaml")]);
    let route = route_of(&compiled.tables, 9080, "reviews", &TestRequest::get("/"));
    assert_eq!(
        forwards(route),
        vec![(cluster_name("reviews", "v1", 9080), 80), (cluster_name("reviews", "v2", 9080), 20)]
    );
    let HttpAction::Forward(destinations) = &route.action else { unreachable!() };
    assert_eq!(destinations.total_weight, 100);
    let subset_at = |roll| destinations.pick(roll).map(|c| c.cluster.subset.as_str());
    assert_eq!(
        (subset_at(0), subset_at(79), subset_at(80), subset_at(99)),
        (Some("v1"), Some("v1"), Some("v2"), Some("v2"))
    );
    assert_eq!(subset_at(100), None);
}

#[test]
fn short_hosts_resolve_in_the_virtual_service_namespace() {
    // In prod, `reviews` means reviews.prod.svc.cluster.local, which does not exist: the VS
    // does not touch default's reviews and says so.
    let in_prod = fixture!("reviews-80-20.yaml").replace("namespace: default", "namespace: prod");
    let compiled = compile_for_productpage(&[fixture!("reviews-subsets.yaml"), &in_prod]);
    let route = route_of(&compiled.tables, 9080, "reviews", &TestRequest::get("/"));
    assert_eq!(forwards(route), vec![(cluster_name("reviews", "", 9080), 100)]);
    let warnings = diagnostics_of(&compiled, DiagnosticCode::HostWithoutService);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].diagnostic.message.contains("reviews.prod.svc.cluster.local"));

    // A destination's short host resolves in the VS namespace too.
    let cross = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: to-httpbin, namespace: prod}\n\
                 spec:\n  hosts: [reviews.default.svc.cluster.local]\n  http:\n  - route:\n    - destination: {host: httpbin, port: {number: 8000}}";
    let compiled = compile_for_productpage(&[cross]);
    let route = route_of(&compiled.tables, 9080, "reviews", &TestRequest::get("/"));
    assert_eq!(forwards(route), vec![("outbound|8000||httpbin.prod.svc.cluster.local".to_string(), 100)]);
}

#[test]
fn wildcard_hosts_cover_services_and_an_exact_host_beats_them() {
    let compiled = compile_for_productpage(&[fixture!("wildcard-host.yaml")]);
    let tables = &compiled.tables;
    let reviews = route_of(tables, 9080, "reviews", &TestRequest::get("/"));
    assert_eq!(forwards(reviews), vec![(cluster_name("details", "", 9080), 100)], "the wildcard VS routes reviews");
    assert_eq!(reviews.timeout, Some(crate::api::Duration::from_millis(3000)));
    let ratings = route_of(tables, 9080, "ratings", &TestRequest::get("/"));
    assert_eq!(ratings.origin.resource.as_ref().unwrap().name, "ratings", "the exact host wins");
    assert!(ratings.timeout.is_none());
    let httpbin = route_of(tables, 8000, "httpbin.prod.svc.cluster.local", &TestRequest::get("/"));
    assert_eq!(httpbin.origin.resource, None, "services outside the wildcard keep their default route");
}

#[test]
fn a_virtual_service_bound_only_to_gateways_does_not_apply_to_sidecars() {
    let compiled = compile_for_productpage(&[fixture!("reviews-subsets.yaml"), fixture!("reviews-gateway-only.yaml")]);
    let route = route_of(&compiled.tables, 9080, "reviews", &TestRequest::get("/"));
    assert_eq!(forwards(route), vec![(cluster_name("reviews", "", 9080), 100)]);

    let with_mesh = fixture!("reviews-gateway-only.yaml").replace("[bookinfo-gateway]", "[bookinfo-gateway, mesh]");
    let compiled = compile_for_productpage(&[fixture!("reviews-subsets.yaml"), &with_mesh]);
    let route = route_of(&compiled.tables, 9080, "reviews", &TestRequest::get("/"));
    assert_eq!(forwards(route), vec![(cluster_name("reviews", "v3", 9080), 100)]);
}

#[test]
fn the_oldest_virtual_service_wins_a_host_and_the_other_is_reported() {
    let compiled = compile_for_productpage(&[fixture!("reviews-subsets.yaml"), fixture!("reviews-conflict.yaml")]);
    let route = route_of(&compiled.tables, 9080, "reviews", &TestRequest::get("/"));
    assert_eq!(forwards(route), vec![(cluster_name("reviews", "v1", 9080), 100)]);
    let conflicts = diagnostics_of(&compiled, DiagnosticCode::HostConflict);
    assert_eq!(conflicts.len(), 1);
    let warning = &conflicts[0].diagnostic;
    assert_eq!(warning.severity, crate::validate::Severity::Warning);
    assert_eq!(warning.object.name, "reviews-newer");
    assert!(warning.message.contains("VirtualService default/reviews-older"), "{}", warning.message);
}

#[test]
fn match_conditions_on_the_client_are_decided_for_each_proxy() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\nspec:\n  hosts: [reviews]\n  http:\n  \
                - match: [{sourceLabels: {app: productpage}}]\n    route: [{destination: {host: reviews, subset: v2}}]\n  \
                - match: [{port: 9999}]\n    route: [{destination: {host: reviews, subset: v3}}]\n  \
                - route: [{destination: {host: reviews, subset: v1}}]";
    let for_productpage = compile_for_productpage(&[fixture!("reviews-subsets.yaml"), yaml]);
    let host = virtual_host(&for_productpage.tables, 9080, "reviews");
    assert_eq!(host.http_routes.len(), 2, "the port-9999 route cannot apply on port 9080");
    assert_eq!(forwards(&host.http_routes[0]), vec![(cluster_name("reviews", "v2", 9080), 100)]);
    assert!(host.http_routes[0].matches.is_empty(), "a condition decided at compile time matches every request");

    let for_ratings = compile_for("default", "ratings-v1", &[fixture!("reviews-subsets.yaml"), yaml]);
    let host = virtual_host(&for_ratings.tables, 9080, "reviews");
    assert_eq!(host.http_routes.len(), 1);
    assert_eq!(forwards(&host.http_routes[0]), vec![(cluster_name("reviews", "v1", 9080), 100)]);
}

#[test]
fn uri_matches_are_compiled_once_with_istio_semantics() {
    let compiled = compile_for_productpage(&[fixture!("route-features.yaml")]);
    let name_of = |path: &str| route_of(&compiled.tables, 9080, "ratings", &TestRequest::get(path)).name.clone();
    assert_eq!(name_of("/v1/ratings"), "old-api");
    assert_eq!(name_of("/api/v12"), "versioned");
    assert_eq!(name_of("/api/v12/extra"), "main", "a regex must match the whole path");
    assert_eq!(name_of("/LEGACY/thing"), "versioned", "ignoreUriCase");
    assert_eq!(name_of("/healthz"), "health");
    let mut post = TestRequest::get("/healthz");
    post.method = "POST".into();
    assert_eq!(route_of(&compiled.tables, 9080, "ratings", &post).name, "main", "every condition of a match must hold");
}

#[test]
fn route_actions_keep_istio_values_for_the_proxy() {
    let compiled = compile_for_productpage(&[fixture!("route-features.yaml")]);
    let routes = &virtual_host(&compiled.tables, 9080, "ratings").http_routes;
    let HttpAction::Redirect(redirect) = &routes[0].action else { panic!("redirect expected") };
    assert_eq!((redirect.uri.as_str(), redirect.redirect_code), ("/v2/", Some(308)));
    let HttpAction::DirectResponse(response) = &routes[1].action else { panic!("direct response expected") };
    assert_eq!(response.status, 200);
    assert_eq!(routes[2].rewrite.as_ref().map(|r| r.uri.as_str()), Some("/"));
    assert!(routes[2].headers.is_some());
    let main = &routes[3];
    assert_eq!(main.timeout, Some(crate::api::Duration::from_millis(2000)));
    assert_eq!(main.retries.as_ref().map(|r| r.attempts), Some(3));
    assert!(main.fault.as_ref().and_then(|f| f.delay.as_ref()).is_some());
    assert_eq!(main.mirrors.len(), 1);
    assert_eq!(main.mirrors[0].cluster.to_string(), "outbound|8000||httpbin.prod.svc.cluster.local");
    assert_eq!(main.mirrors[0].percentage, 25.0);
    assert!(compiled.tables.clusters.contains_key(&main.mirrors[0].cluster), "mirror clusters are built too");
}

#[test]
fn domains_follow_istio_names_and_addresses_lead_to_their_host() {
    let compiled = compile_for_productpage(&[]);
    let listener = compiled.tables.listener(9080).unwrap();
    for authority in [
        "reviews",
        "reviews:9080",
        "reviews.default",
        "reviews.default.svc:9080",
        REVIEWS,
        "10.96.0.12:9080",
        "Reviews.Default",
    ] {
        let host = listener.virtual_host_for_authority(authority);
        assert_eq!(host.map(|h| h.host.as_str()), Some(REVIEWS), "{authority}");
    }
    assert_eq!(
        listener.virtual_host_for_address("10.96.0.12".parse().unwrap()).map(|h| h.host.as_str()),
        Some(REVIEWS)
    );
    assert!(listener.virtual_host_for_authority("unknown.example.com").is_none());

    let from_prod = compile_for("prod", "httpbin-v1", &[]);
    let listener = from_prod.tables.listener(9080).unwrap();
    assert!(listener.virtual_host_for_authority("reviews").is_none(), "short names only within the namespace");
    assert!(listener.virtual_host_for_authority("reviews.default").is_some());
}

#[test]
fn tcp_routes_split_by_weight_on_their_port_and_default_elsewhere() {
    let compiled = compile_for_productpage(&[fixture!("tcp-echo-split.yaml")]);
    let tables = &compiled.tables;
    let listener = tables.listener(9000).unwrap();
    assert_eq!(listener.protocol, crate::registry::Protocol::Tcp);
    let host = listener.virtual_host_for_address("10.96.0.14".parse().unwrap()).unwrap();
    assert_eq!(host.tcp_routes.len(), 1);
    let weights: Vec<_> =
        host.tcp_routes[0].destinations.clusters.iter().map(|c| (c.cluster.subset.as_str(), c.weight)).collect();
    assert_eq!(weights, [("v1", 80), ("v2", 20)]);
    assert_eq!(endpoint_ips(cluster(tables, "tcp-echo.default.svc.cluster.local", "v2", 9000)), ["10.1.0.42"]);
    let chosen = tables
        .virtual_host_at("10.96.0.14".parse().unwrap(), 9000)
        .unwrap()
        .route_connection("10.96.0.14".parse().unwrap(), None);
    assert_eq!(chosen.map(|d| d.total_weight), Some(100));
    let other = tables.listener(9001).unwrap().virtual_host_for_address("10.96.0.14".parse().unwrap()).unwrap();
    assert_eq!(other.tcp_routes[0].origin.resource, None, "port 9001 keeps the default route");
    assert_eq!(
        other.tcp_routes[0].destinations.clusters[0].cluster.to_string(),
        "outbound|9001||tcp-echo.default.svc.cluster.local"
    );
}

#[test]
fn tls_routes_choose_by_sni_on_service_entry_hosts() {
    let compiled = compile_for_productpage(&[fixture!("service-entry.yaml")]);
    let listener = compiled.tables.listener(443).unwrap();
    assert!(compiled.diagnostics.is_empty(), "{:?}", compiled.diagnostics);
    let wiki = listener.virtual_host_for_authority("de.wikipedia.org").expect("the wildcard entry host");
    assert_eq!(wiki.host, "*.wikipedia.org");
    assert_eq!(wiki.tls_routes.len(), 1, "the wildcard VirtualService covers the wildcard host");
    assert_eq!(wiki.tls_routes[0].destinations.clusters[0].cluster.to_string(), "outbound|443||en.wikipedia.org");
    let destination = "10.0.0.1".parse().unwrap();
    assert!(wiki.tls_routes[0].matches[0].matches("en.wikipedia.org", destination));
    assert!(!wiki.tls_routes[0].matches[0].matches("de.wikipedia.org", destination));
    let chosen = |sni| wiki.route_connection(destination, Some(sni)).map(|d| d.clusters[0].cluster.host.clone());
    assert_eq!(chosen("en.wikipedia.org").as_deref(), Some("en.wikipedia.org"));
    assert_eq!(chosen("de.wikipedia.org").as_deref(), Some("*.wikipedia.org"), "no TLS route fits: the host itself");
    let api = listener.virtual_host_for_authority("api.example.com:443").unwrap();
    assert_eq!(api.protocol, crate::registry::Protocol::Https);
    assert_eq!(api.tcp_routes.len(), 1, "no VirtualService: a default route to the entry");
}

#[test]
fn tables_dump_as_json_with_regexes_as_written() {
    let compiled = compile_for_productpage(&[fixture!("route-features.yaml"), fixture!("reviews-subsets.yaml")]);
    let dump = serde_json::to_value(&compiled.tables).expect("tables serialize");
    let ratings_hosts = dump["outbound"]["9080"]["virtual_hosts"].as_array().unwrap();
    let ratings = ratings_hosts.iter().find(|h| h["host"] == RATINGS).unwrap();
    assert_eq!(ratings["http_routes"][2]["matches"][0]["uri"]["regex"], "/api/v[0-9]+");
    assert_eq!(ratings["virtual_service"], "VirtualService default/ratings");
    assert!(dump["clusters"]["outbound|9080||ratings.default.svc.cluster.local"].is_object());
}

#[test]
fn compiling_is_deterministic() {
    let texts = [fixture!("reviews-subsets.yaml"), fixture!("reviews-conflict.yaml"), fixture!("route-features.yaml")];
    let first = serde_json::to_string(&compile_for_productpage(&texts).tables).unwrap();
    let second = serde_json::to_string(&compile_for_productpage(&texts).tables).unwrap();
    assert_eq!(first, second);
}

#[test]
fn istio_bookinfo_samples_route_every_service_to_v1() {
    // The samples as Istio publishes them (no namespace: `kubectl apply` puts them in default).
    let all_v1 = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/virtual_service/good/all-v1.yaml"));
    let rules = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/destination_rule/bookinfo-all.yaml"));
    let compiled = compile_for_productpage(&[rules, all_v1]);
    assert!(
        compiled.diagnostics.iter().all(|d| d.code != DiagnosticCode::InvalidResource),
        "{:?}",
        compiled.diagnostics
    );
    for service in ["productpage", "reviews", "ratings", "details"] {
        let route = route_of(&compiled.tables, 9080, service, &TestRequest::get("/"));
        assert_eq!(forwards(route), vec![(cluster_name(service, "v1", 9080), 100)], "{service}");
        let v1 = cluster(&compiled.tables, &format!("{service}.default.svc.cluster.local"), "v1", 9080);
        assert_eq!(v1.endpoints.len(), 1, "{service} has one v1 pod");
    }
}

#[test]
fn tcp_routes_keep_destination_subnets_for_the_connection() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: tcp-echo, namespace: default}\n\
                spec:\n  hosts: [tcp-echo]\n  tcp:\n  - match: [{destinationSubnets: [10.96.0.0/24]}]\n    \
                route: [{destination: {host: tcp-echo, port: {number: 9000}}}]\n  - route: [{destination: {host: ratings, port: {number: 9080}}}]";
    let compiled = compile_for_productpage(&[yaml]);
    let host = compiled.tables.virtual_host_at("10.96.0.14".parse().unwrap(), 9000).unwrap();
    let to = |ip: &str| host.route_connection(ip.parse().unwrap(), None).map(|d| d.clusters[0].cluster.host.clone());
    assert_eq!(to("10.96.0.14").as_deref(), Some("tcp-echo.default.svc.cluster.local"));
    assert_eq!(to("10.97.0.1").as_deref(), Some(RATINGS), "the second route takes the rest");
}

#[test]
fn source_namespace_conditions_are_decided_per_proxy() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\nspec:\n  \
                hosts: [reviews]\n  exportTo: [default, prod]\n  http:\n  - match: [{sourceNamespace: prod}]\n    route: [{destination: {host: reviews, subset: v3}}]\n  \
                - route: [{destination: {host: reviews, subset: v1}}]";
    let texts = [fixture!("reviews-subsets.yaml"), yaml];
    let from_prod = compile_for("prod", "httpbin-v1", &texts);
    let route = route_of(&from_prod.tables, 9080, "reviews.default", &TestRequest::get("/"));
    assert_eq!(forwards(route), vec![(cluster_name("reviews", "v3", 9080), 100)]);
    let from_default = compile_for_productpage(&texts);
    let route = route_of(&from_default.tables, 9080, "reviews", &TestRequest::get("/"));
    assert_eq!(forwards(route), vec![(cluster_name("reviews", "v1", 9080), 100)]);
}

#[test]
fn created_in_the_same_second_the_name_breaks_the_tie() {
    let conflict = fixture!("reviews-conflict.yaml").replace("2024-06-01T00:00:00Z", "2024-01-01T00:00:00Z");
    let compiled = compile_for_productpage(&[fixture!("reviews-subsets.yaml"), &conflict]);
    let route = route_of(&compiled.tables, 9080, "reviews", &TestRequest::get("/"));
    assert_eq!(forwards(route), vec![(cluster_name("reviews", "v2", 9080), 100)], "reviews-newer < reviews-older");
    let conflicts = diagnostics_of(&compiled, DiagnosticCode::HostConflict);
    assert_eq!(conflicts.iter().map(|d| d.diagnostic.object.name.as_str()).collect::<Vec<_>>(), ["reviews-older"]);
}
