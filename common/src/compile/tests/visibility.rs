//! What a proxy sees: exportTo on every kind, the Sidecar resource, invalid resources.

use super::*;

const HTTPBIN: &str = "httpbin.prod.svc.cluster.local";
const SECRET: &str = "secret.prod.svc.cluster.local";

fn hosts_on(tables: &ProxyTables, port: u16) -> Vec<&str> {
    tables.listener(port).map(|l| l.virtual_hosts.iter().map(|h| h.host.as_str()).collect()).unwrap_or_default()
}

#[test]
fn a_service_exported_to_its_own_namespace_is_hidden_from_others() {
    let from_default = compile_for_productpage(&[]);
    assert!(from_default.tables.listener(8080).is_none(), "secret (exportTo .) is invisible from default");
    assert_eq!(hosts_on(&from_default.tables, 8000), [HTTPBIN], "httpbin is exported everywhere");
    let from_prod = compile_for("prod", "httpbin-v1", &[]);
    assert_eq!(hosts_on(&from_prod.tables, 8080), [SECRET]);
}

#[test]
fn a_route_to_a_service_the_proxy_cannot_see_is_an_unknown_destination() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\n\
                spec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: secret.prod.svc.cluster.local, port: {number: 8080}}";
    let compiled = compile_for_productpage(&[yaml]);
    let secret = cluster(&compiled.tables, SECRET, "", 8080);
    assert_eq!(secret.status, ClusterStatus::UnknownHost);
    assert_eq!(secret.unavailable_reason().as_deref(), Some("no_healthy_upstream"));
    let unknown = diagnostics_of(&compiled, DiagnosticCode::UnknownDestination);
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0].diagnostic.field.as_str(), "spec.http[0].route[0].destination.host");
}

#[test]
fn virtual_service_export_to_limits_which_namespaces_use_it() {
    let private = fixture!("reviews-80-20.yaml").replace("  hosts: [reviews]", "  exportTo: [.]\n  hosts: [reviews]");
    let texts = [fixture!("reviews-subsets.yaml"), private.as_str()];
    let in_default = compile_for_productpage(&texts);
    assert_eq!(forwards(route_of(&in_default.tables, 9080, "reviews", &TestRequest::get("/"))).len(), 2);
    let in_prod = compile_for("prod", "httpbin-v1", &texts);
    let route = route_of(&in_prod.tables, 9080, "reviews.default", &TestRequest::get("/"));
    assert_eq!(forwards(route), vec![(cluster_name("reviews", "", 9080), 100)], "prod does not see the VS");

    let nowhere =
        fixture!("reviews-80-20.yaml").replace("  hosts: [reviews]", "  exportTo: [\"~\"]\n  hosts: [reviews]");
    let compiled = compile_for_productpage(&[fixture!("reviews-subsets.yaml"), &nowhere]);
    assert_eq!(route_of(&compiled.tables, 9080, "reviews", &TestRequest::get("/")).origin.resource, None);
}

#[test]
fn destination_rule_export_to_hides_its_subsets() {
    let private = fixture!("reviews-subsets.yaml").replace("  host: reviews", "  host: reviews\n  exportTo: [.]");
    let route = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: prod}\n\
                 spec:\n  hosts: [reviews.default.svc.cluster.local]\n  http:\n  - route:\n    - destination: {host: reviews.default.svc.cluster.local, subset: v1}";
    let from_prod = compile_for("prod", "httpbin-v1", &[&private, route]);
    let v1 = cluster(&from_prod.tables, REVIEWS, "v1", 9080);
    assert_eq!(v1.status, ClusterStatus::SubsetNotFound, "the rule is private to default");
    let from_default = compile_for_productpage(&[&private, route]);
    assert_eq!(cluster(&from_default.tables, REVIEWS, "v1", 9080).status, ClusterStatus::Known);
}

#[test]
fn service_entry_export_to_applies() {
    let private = fixture!("service-entry.yaml").replace("  resolution: DNS", "  resolution: DNS\n  exportTo: [.]");
    let from_default = compile_for_productpage(&[&private]);
    assert!(hosts_on(&from_default.tables, 443).contains(&"api.example.com"));
    let from_prod = compile_for("prod", "httpbin-v1", &[&private]);
    assert!(!hosts_on(&from_prod.tables, 443).contains(&"api.example.com"));
}

#[test]
fn a_namespace_sidecar_narrows_egress_to_the_hosts_it_lists() {
    let compiled = compile_for_productpage(&[fixture!("sidecars.yaml")]);
    assert!(compiled.tables.listener(8000).is_none(), "prod is not in ./* or istio-system/*");
    assert!(hosts_on(&compiled.tables, 9080).contains(&REVIEWS));
    let policy = &compiled.tables.outbound_policy;
    assert_eq!(policy.mode, OutboundMode::AllowAny);
    assert_eq!(policy.sidecar.as_ref().map(|s| s.name.as_str()), Some("default"));
}

#[test]
fn a_sidecar_selecting_the_workload_wins_over_the_namespace_default() {
    let compiled = compile_for("default", "ratings-v1", &[fixture!("sidecars.yaml")]);
    assert_eq!(hosts_on(&compiled.tables, 8000), [HTTPBIN], "ratings' own Sidecar lists httpbin");
    assert_eq!(compiled.tables.outbound_policy.mode, OutboundMode::RegistryOnly);
    assert_eq!(compiled.tables.outbound_policy.sidecar.as_ref().map(|s| s.name.as_str()), Some("ratings"));
}

#[test]
fn a_root_namespace_sidecar_is_the_mesh_default() {
    let mesh =
        fixture!("sidecars.yaml").split("---").next().unwrap().replace("namespace: default", "namespace: istio-system");
    let compiled = compile_for("prod", "httpbin-v1", &[&mesh]);
    assert!(compiled.tables.listener(9080).is_none(), "default is out of view");
    assert_eq!(hosts_on(&compiled.tables, 8000), [HTTPBIN], "./* of the root Sidecar is the workload's namespace");
}

#[test]
fn sidecar_egress_hides_virtual_services_of_hosts_out_of_view() {
    let sidecar = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: prod}\nspec:\n  egress:\n  - hosts: [\"./*\"]";
    let texts = [sidecar, fixture!("reviews-subsets.yaml"), fixture!("reviews-80-20.yaml")];
    let compiled = compile_for("prod", "httpbin-v1", &texts);
    assert!(compiled.tables.listener(9080).is_none());
    assert!(
        diagnostics_of(&compiled, DiagnosticCode::HostWithoutService).is_empty(),
        "a VS out of view is not reported"
    );
}

#[test]
fn invalid_resources_are_skipped_without_breaking_the_others() {
    let invalid = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: broken, namespace: default}\n\
                   spec:\n  hosts: [ratings]\n  http:\n  - route:\n    - destination: {host: ratings}\n      weight: 120\n    - destination: {host: details}\n      weight: 30";
    let compiled =
        compile_for_productpage(&[invalid, fixture!("reviews-subsets.yaml"), fixture!("reviews-80-20.yaml")]);
    let invalid = diagnostics_of(&compiled, DiagnosticCode::InvalidResource);
    assert!(!invalid.is_empty());
    assert!(invalid.iter().all(|d| d.diagnostic.object.name == "broken"));
    assert_eq!(route_of(&compiled.tables, 9080, "ratings", &TestRequest::get("/")).origin.resource, None);
    assert_eq!(forwards(route_of(&compiled.tables, 9080, "reviews", &TestRequest::get("/"))).len(), 2);
}

#[test]
fn sidecar_hosts_in_any_namespace_and_by_exact_name() {
    let sidecar = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: default}\n\
                   spec:\n  egress:\n  - hosts: [\"*/httpbin.prod.svc.cluster.local\", \"default/reviews.default.svc.cluster.local\"]";
    let compiled = compile_for_productpage(&[sidecar]);
    assert_eq!(hosts_on(&compiled.tables, 8000), [HTTPBIN]);
    assert_eq!(hosts_on(&compiled.tables, 9080), [REVIEWS], "only the listed default service");
}

#[test]
fn sidecar_egress_on_a_port_admits_hosts_on_that_port_only() {
    let sidecar = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: default}\n\
                   spec:\n  egress:\n  - port: {number: 9000, protocol: TCP, name: tcp}\n    hosts: [\"./*\"]";
    let compiled = compile_for_productpage(&[sidecar]);
    assert_eq!(hosts_on(&compiled.tables, 9000), ["tcp-echo.default.svc.cluster.local"]);
    assert!(compiled.tables.listener(9001).is_none());
    assert!(compiled.tables.listener(9080).is_none());
}

#[test]
fn export_to_a_namespace_list_admits_exactly_those_namespaces() {
    let listed = fixture!("reviews-80-20.yaml").replace("  hosts: [reviews]", "  exportTo: [prod]\n  hosts: [reviews]");
    let texts = [fixture!("reviews-subsets.yaml"), listed.as_str()];
    let in_prod = compile_for("prod", "httpbin-v1", &texts);
    assert_eq!(forwards(route_of(&in_prod.tables, 9080, "reviews.default", &TestRequest::get("/"))).len(), 2);
    let in_default = compile_for_productpage(&texts);
    let route = route_of(&in_default.tables, 9080, "reviews", &TestRequest::get("/"));
    assert_eq!(route.origin.resource, None, "the VS's own namespace is not listed, so it does not apply there");

    let everywhere =
        fixture!("reviews-80-20.yaml").replace("  hosts: [reviews]", "  exportTo: [\"*\"]\n  hosts: [reviews]");
    let texts = [fixture!("reviews-subsets.yaml"), everywhere.as_str()];
    let in_prod = compile_for("prod", "httpbin-v1", &texts);
    assert_eq!(forwards(route_of(&in_prod.tables, 9080, "reviews.default", &TestRequest::get("/"))).len(), 2);
}
