//! Clusters: subsets, missing subsets and hosts, DestinationRule lookup and policy merging.

use super::*;
use crate::api::networking::destination_rule::SimpleLb;

fn load_balancer(cluster: &Cluster) -> Option<SimpleLb> {
    cluster.policy.load_balancer.as_ref().and_then(|lb| lb.simple)
}

#[test]
fn subsets_select_ready_endpoints_by_label() {
    let compiled = compile_for_productpage(&[fixture!("reviews-subsets.yaml"), fixture!("reviews-80-20.yaml")]);
    let tables = &compiled.tables;
    assert_eq!(endpoint_ips(cluster(tables, REVIEWS, "v1", 9080)), ["10.1.0.21"]);
    assert_eq!(
        endpoint_ips(cluster(tables, REVIEWS, "v2", 9080)),
        ["10.1.0.22"],
        "the v2 pod still starting is left out"
    );
    let v1 = cluster(tables, REVIEWS, "v1", 9080);
    assert_eq!(v1.status, ClusterStatus::Known);
    assert_eq!(v1.endpoints[0].port, 9080);
    assert_eq!(v1.endpoints[0].service_account, "bookinfo-reviews");
    assert_eq!(
        v1.destination_rule.as_ref().map(ToString::to_string).as_deref(),
        Some("DestinationRule default/reviews")
    );
    assert_eq!(v1.unavailable_reason(), None);
}

#[test]
fn a_subset_no_rule_defines_gives_an_empty_cluster_and_a_diagnostic() {
    let only_v1_v2 = fixture!("reviews-subsets.yaml").replace("  - name: v3\n    labels: {version: v3}\n", "");
    let to_v3 = fixture!("reviews-80-20.yaml").replace("subset: v2", "subset: v3");
    let compiled = compile_for_productpage(&[&only_v1_v2, &to_v3]);
    let v3 = cluster(&compiled.tables, REVIEWS, "v3", 9080);
    assert_eq!(v3.status, ClusterStatus::SubsetNotFound);
    assert!(v3.endpoints.is_empty());
    assert_eq!(v3.unavailable_reason().as_deref(), Some("subset_not_found reviews/v3"));
    let missing = diagnostics_of(&compiled, DiagnosticCode::SubsetNotFound);
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert_eq!(missing[0].diagnostic.field.as_str(), "spec.http[0].route[1].destination.subset");
    assert!(missing[0].diagnostic.message.starts_with("subset_not_found reviews/v3"));
}

#[test]
fn a_destination_outside_the_registry_is_kept_with_a_diagnostic() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings, namespace: default}\n\
                spec:\n  hosts: [ratings]\n  http:\n  - route:\n    - destination: {host: nowhere.example.com}";
    let compiled = compile_for_productpage(&[yaml]);
    let nowhere = cluster(&compiled.tables, "nowhere.example.com", "", 9080);
    assert_eq!(nowhere.status, ClusterStatus::UnknownHost);
    assert_eq!(diagnostics_of(&compiled, DiagnosticCode::UnknownDestination).len(), 1);
}

#[test]
fn destination_rules_are_looked_up_in_client_then_service_then_root_namespace() {
    let rules = fixture!("destination-rule-lookup.yaml");
    let from_prod = compile_for("prod", "httpbin-v1", &[rules]);
    assert_eq!(
        load_balancer(cluster(&from_prod.tables, REVIEWS, "", 9080)),
        Some(SimpleLb::Random),
        "client namespace"
    );
    let from_default = compile_for_productpage(&[rules]);
    assert_eq!(
        load_balancer(cluster(&from_default.tables, REVIEWS, "", 9080)),
        Some(SimpleLb::LeastRequest),
        "service namespace"
    );
    assert_eq!(
        load_balancer(cluster(&from_default.tables, RATINGS, "", 9080)),
        Some(SimpleLb::RoundRobin),
        "the root namespace's wildcard rule covers the rest"
    );
    assert_eq!(
        cluster(&from_prod.tables, RATINGS, "", 9080).destination_rule.as_ref().map(|r| r.namespace.as_str()),
        Some("istio-system")
    );
}

#[test]
fn an_exact_host_rule_beats_a_wildcard_rule_in_the_same_namespace() {
    let rules = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: all, namespace: default, creationTimestamp: \"2020-01-01T00:00:00Z\"}\n\
                 spec:\n  host: \"*.default.svc.cluster.local\"\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n---\n\
                 apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings, namespace: default}\n\
                 spec:\n  host: ratings\n  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}";
    let compiled = compile_for_productpage(&[rules]);
    assert_eq!(load_balancer(cluster(&compiled.tables, RATINGS, "", 9080)), Some(SimpleLb::LeastRequest));
    assert_eq!(load_balancer(cluster(&compiled.tables, REVIEWS, "", 9080)), Some(SimpleLb::Random));
}

#[test]
fn subset_policy_is_merged_over_the_top_level_as_istio_does() {
    let route = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\n\
                 spec:\n  hosts: [reviews]\n  http:\n  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 34}\n    \
                 - {destination: {host: reviews, subset: v2}, weight: 33}\n    - {destination: {host: reviews, subset: v3}, weight: 33}";
    let compiled = compile_for_productpage(&[fixture!("reviews-policy-layers.yaml"), route]);
    let tables = &compiled.tables;
    let v1 = cluster(tables, REVIEWS, "v1", 9080);
    assert_eq!(load_balancer(v1), Some(SimpleLb::LeastRequest), "v1 inherits the top level");
    assert!(v1.policy.connection_pool.is_some() && v1.policy.outlier_detection.is_some());
    let v2 = cluster(tables, REVIEWS, "v2", 9080);
    assert_eq!(load_balancer(v2), Some(SimpleLb::Random), "the subset's load balancer replaces the top level's");
    assert!(v2.policy.connection_pool.is_some(), "fields the subset leaves out are inherited");
    let v3 = cluster(tables, REVIEWS, "v3", 9080);
    assert_eq!(load_balancer(v3), Some(SimpleLb::RoundRobin), "the subset's port-level entry wins for its port");
    assert!(v3.policy.port_level_settings.is_empty(), "the merged policy is resolved for one port");
}

#[test]
fn service_entry_clusters_are_external_and_resolve_by_dns() {
    let compiled = compile_for_productpage(&[fixture!("service-entry.yaml")]);
    let api = cluster(&compiled.tables, "api.example.com", "", 443);
    assert_eq!(api.location, crate::registry::MeshLocation::MeshExternal);
    assert_eq!(api.resolution, crate::registry::Resolution::Dns);
    assert_eq!(endpoint_ips(api), ["api.example.com"]);
    let wiki = cluster(&compiled.tables, "en.wikipedia.org", "", 443);
    assert_eq!(wiki.resolution, crate::registry::Resolution::Passthrough);
    assert_eq!(wiki.unavailable_reason(), None, "passthrough needs no endpoints");
}

#[test]
fn a_rule_with_a_workload_selector_applies_only_to_the_clients_it_selects() {
    let rules = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: for-productpage, namespace: default}\n\
                 spec:\n  host: ratings\n  workloadSelector: {matchLabels: {app: productpage}}\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n---\n\
                 apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings, namespace: default}\n\
                 spec:\n  host: ratings\n  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}";
    let productpage = compile_for_productpage(&[rules]);
    assert_eq!(load_balancer(cluster(&productpage.tables, RATINGS, "", 9080)), Some(SimpleLb::Random));
    let reviews = compile_for("default", "reviews-v1", &[rules]);
    assert_eq!(load_balancer(cluster(&reviews.tables, RATINGS, "", 9080)), Some(SimpleLb::LeastRequest));
}

#[test]
fn workload_entries_selected_by_a_service_entry_become_weighted_endpoints() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: vm-ratings, namespace: default}\n\
                spec:\n  hosts: [ratings.vm.internal]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  \
                ports: [{number: 9080, name: http, protocol: HTTP}]\n  workloadSelector: {labels: {app: ratings-vm}}\n---\n\
                apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm-1, namespace: default}\n\
                spec: {address: 10.5.0.1, labels: {app: ratings-vm, version: v1}, weight: 3, serviceAccount: ratings-vm, locality: us-east/zone-a}\n---\n\
                apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm-2, namespace: default}\n\
                spec: {address: 10.5.0.2, labels: {app: ratings-vm, version: v2}, ports: {http: 19080}}";
    let compiled = compile_for_productpage(&[yaml]);
    let vm = cluster(&compiled.tables, "ratings.vm.internal", "", 9080);
    assert_eq!(vm.location, crate::registry::MeshLocation::MeshInternal);
    let endpoints: Vec<_> =
        vm.endpoints.iter().map(|e| (e.port, e.weight, e.locality.as_str(), e.service_account.as_str())).collect();
    assert_eq!(endpoints, [(9080, 3, "us-east/zone-a", "ratings-vm"), (19080, 1, "", "")]);
}

#[test]
fn a_destination_port_the_service_lacks_is_reported() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings, namespace: default}\n\
                spec:\n  hosts: [ratings]\n  http:\n  - route:\n    - destination: {host: tcp-echo}";
    let compiled = compile_for_productpage(&[yaml]);
    let echo = cluster(&compiled.tables, "tcp-echo.default.svc.cluster.local", "", 9080);
    assert!(echo.endpoints.is_empty());
    assert_eq!(echo.unavailable_reason().as_deref(), Some("no_healthy_upstream"));
    let reported = diagnostics_of(&compiled, DiagnosticCode::UnknownDestination);
    assert_eq!(reported.len(), 1);
    assert_eq!(reported[0].diagnostic.field.as_str(), "spec.http[0].route[0].destination.port");
    assert!(reported[0].diagnostic.message.contains("one of: 9000, 9001"), "{}", reported[0].diagnostic.message);
}

#[test]
fn mutual_tls_goes_to_endpoints_with_a_sidecar_unless_the_rule_sets_tls() {
    // reviews-v1 runs a sidecar (the injector's label); reviews-v2 does not.
    let registry = fixture!("registry.yaml").replace(
        "labels: {app: reviews, version: v1}",
        "labels: {app: reviews, version: v1, security.istio.io/tlsMode: istio}",
    );
    let compile_with = |rule: &str| {
        let resources = resources(&[rule, fixture!("reviews-80-20.yaml")]);
        let registry = registry_from(&registry, &resources);
        compile(&resources, &registry, &proxy(&registry, "default", "productpage-v1"))
    };
    let identity = |compiled: &Compiled, subset: &str| {
        cluster(&compiled.tables, REVIEWS, subset, 9080).endpoints[0].mtls_identity.clone()
    };
    let reviews = Some("spiffe://cluster.local/ns/default/sa/bookinfo-reviews".to_string());

    let auto = compile_with(fixture!("reviews-subsets.yaml"));
    assert_eq!(identity(&auto, "v1"), reviews, "auto mTLS: the pod has a sidecar");
    assert_eq!(identity(&auto, "v2"), None, "no sidecar, no mTLS");

    let with_mode = |mode: &str| {
        let rule = fixture!("reviews-subsets.yaml")
            .replace("  subsets:", &format!("  trafficPolicy: {{tls: {{mode: {mode}}}}}\n  subsets:"));
        compile_with(&rule)
    };
    let mutual = with_mode("ISTIO_MUTUAL");
    assert_eq!((identity(&mutual, "v1"), identity(&mutual, "v2")), (reviews.clone(), reviews));
    let disabled = with_mode("DISABLE");
    assert_eq!(identity(&disabled, "v1"), None, "the rule turns mTLS off");
    let simple = with_mode("SIMPLE");
    assert_eq!(identity(&simple, "v1"), None, "TLS with the user's own certificates is not mesh mTLS");
}
