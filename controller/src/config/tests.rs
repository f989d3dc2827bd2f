//! Who gets what after which change: scoping and delta computation on small worlds.

use std::collections::BTreeMap;

use common::compile::ProxyKind;
use common::registry::Registry;
use common::resource::Resource;
use k8s_openapi::api::core::v1::{Endpoints, Service as KubeService};
use serde_json::json;

use super::delta::{self, Delta};
use super::visibility::{ProxyInfo, ProxyView};
use super::world::World;

const ROOT: &str = "istio-system";

/// A cluster: Services `(namespace, name, clusterIP, pod IPs)` and Istio YAML.
fn world(services: &[(&str, &str, &str, &[&str])], yaml: &str) -> World {
    let (resources, errors) = Resource::parse_yaml_documents(yaml);
    assert!(errors.is_empty(), "test YAML parses: {errors:?}");
    let mut builder = Registry::builder("cluster.local");
    for (namespace, name, cluster_ip, pod_ips) in services {
        let service: KubeService = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": cluster_ip, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .unwrap();
        let addresses: Vec<_> = pod_ips.iter().map(|ip| json!({"ip": ip})).collect();
        let endpoints: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace},
            "subsets": [{"addresses": addresses, "ports": [{"name": "http", "port": 8080}]}]
        }))
        .unwrap();
        builder = builder.service(service).endpoints(endpoints);
    }
    let registry = builder.istio_resources(&resources).build();
    World::build(&resources, &registry)
}

fn proxy(kind: ProxyKind, namespace: &str, ip: Option<&str>) -> ProxyInfo {
    ProxyInfo {
        kind,
        namespace: namespace.to_string(),
        pod_name: "pod-0".to_string(),
        service_account: "default".to_string(),
        labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
        ips: ip.into_iter().map(|ip| ip.parse().unwrap()).collect(),
    }
}

fn sidecar_in(world: &World, namespace: &str) -> ProxyView {
    ProxyView::new(&proxy(ProxyKind::Sidecar, namespace, None), world, ROOT)
}

/// The entries a proxy is sent, as `type ns/name` strings.
fn seen(world: &World, view: &ProxyView) -> Vec<String> {
    names(&delta::snapshot(world, view))
}

fn names(delta: &Delta) -> Vec<String> {
    delta.upserts.iter().map(|(key, _)| key.to_string()).collect()
}

fn removed(delta: &Delta) -> Vec<String> {
    delta.removals.iter().map(|key| key.to_string()).collect()
}

const VS_LOCAL: &str = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: a}
spec:
  hosts: [reviews]
  exportTo: [.]
  http: [{route: [{destination: {host: reviews}}]}]
";

#[test]
fn export_to_dot_keeps_a_virtual_service_in_its_namespace() {
    let world = world(&[("a", "reviews", "10.0.0.1", &["10.1.0.1"])], VS_LOCAL);
    assert!(seen(&world, &sidecar_in(&world, "a")).contains(&"networking.istio.io/VirtualService a/reviews".into()));
    assert!(!seen(&world, &sidecar_in(&world, "b")).iter().any(|name| name.contains("VirtualService")));
    // The Service itself is exported everywhere.
    assert!(seen(&world, &sidecar_in(&world, "b")).contains(&"mesh/Service reviews.a.svc.cluster.local".into()));
}

#[test]
fn destination_rule_exported_to_one_namespace_reaches_only_it() {
    let yaml = "
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews, namespace: a}
spec: {host: reviews, exportTo: [b]}
";
    let world = world(&[], yaml);
    let dr = "networking.istio.io/DestinationRule a/reviews".to_string();
    assert!(seen(&world, &sidecar_in(&world, "b")).contains(&dr));
    assert!(!seen(&world, &sidecar_in(&world, "a")).contains(&dr));
    assert!(!seen(&world, &sidecar_in(&world, "c")).contains(&dr));
}

const SIDECAR_B: &str = "
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: b}
spec:
  egress: [{hosts: [./*, istio-system/*]}]
";

#[test]
fn sidecar_egress_hosts_narrow_what_its_namespace_sees() {
    let services: &[(&str, &str, &str, &[&str])] =
        &[("a", "reviews", "10.0.0.1", &["10.1.0.1"]), ("b", "ratings", "10.0.0.2", &["10.1.0.2"])];
    let world = world(services, SIDECAR_B);
    let in_b = seen(&world, &sidecar_in(&world, "b"));
    assert!(in_b.contains(&"mesh/Service ratings.b.svc.cluster.local".into()));
    assert!(!in_b.iter().any(|name| name.contains("reviews.a")), "a is not in the egress hosts: {in_b:?}");
    assert!(in_b.contains(&"networking.istio.io/Sidecar b/default".into()));
    let in_c = seen(&world, &sidecar_in(&world, "c"));
    assert!(in_c.iter().any(|name| name.contains("reviews.a")) && in_c.iter().any(|name| name.contains("ratings.b")));
    assert!(!in_c.iter().any(|name| name.contains("Sidecar")), "b's Sidecar is b's alone");
}

#[test]
fn a_proxy_always_sees_the_services_it_serves() {
    let sidecar = SIDECAR_B.replace("./*, istio-system/*", "istio-system/*");
    let world = world(&[("b", "ratings", "10.0.0.2", &["10.1.0.2"])], &sidecar);
    let serving = ProxyView::new(&proxy(ProxyKind::Sidecar, "b", Some("10.1.0.2")), &world, ROOT);
    assert!(seen(&world, &serving).contains(&"mesh/Service ratings.b.svc.cluster.local".into()));
    assert!(!seen(&world, &sidecar_in(&world, "b")).iter().any(|name| name.contains("ratings")));
}

#[test]
fn workload_policy_reaches_its_namespace_and_root_policy_everyone() {
    let yaml = "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: a}
spec: {}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
";
    let world = world(&[], yaml);
    assert_eq!(
        seen(&world, &sidecar_in(&world, "a")),
        [
            "security.istio.io/PeerAuthentication istio-system/default",
            "security.istio.io/AuthorizationPolicy a/deny-all"
        ]
    );
    assert_eq!(seen(&world, &sidecar_in(&world, "b")), ["security.istio.io/PeerAuthentication istio-system/default"]);
}

#[test]
fn gateways_get_gateways_and_their_routes_sidecars_do_not() {
    let yaml = "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: a}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: front, namespace: a}
spec:
  hosts: ['*']
  gateways: [ingress]
  http: [{route: [{destination: {host: productpage}}]}]
";
    let world = world(&[], yaml);
    let gateway = ProxyView::new(&proxy(ProxyKind::Gateway, "istio-ingress", None), &world, ROOT);
    assert_eq!(
        seen(&world, &gateway),
        ["networking.istio.io/VirtualService a/front", "networking.istio.io/Gateway a/ingress"]
    );
    assert!(seen(&world, &sidecar_in(&world, "a")).is_empty());
}

#[test]
fn a_change_reaches_only_the_proxies_that_see_it() {
    let before = world(&[("a", "reviews", "10.0.0.1", &["10.1.0.1"])], VS_LOCAL);
    let mut after = world(
        &[("a", "reviews", "10.0.0.1", &["10.1.0.1"])],
        &VS_LOCAL.replace("destination: {host: reviews}", "destination: {host: reviews}, weight: 100"),
    );
    after.share_unchanged(&before);
    let changes = before.changes_to(&after);
    assert_eq!(changes.len(), 1, "only the VirtualService changed");
    let in_a = delta::incremental(&sidecar_in(&after, "a"), &changes);
    assert_eq!(names(&in_a), ["networking.istio.io/VirtualService a/reviews"]);
    assert!(delta::incremental(&sidecar_in(&after, "b"), &changes).is_empty());
}

#[test]
fn deleting_or_narrowing_export_removes_from_those_who_saw_it() {
    let shared = VS_LOCAL.replace("exportTo: [.]", "exportTo: ['*']");
    let before = world(&[], &shared);
    let narrowed = world(&[], VS_LOCAL);
    let changes = before.changes_to(&narrowed);
    assert_eq!(
        removed(&delta::incremental(&sidecar_in(&narrowed, "b"), &changes)),
        ["networking.istio.io/VirtualService a/reviews"]
    );
    let in_a = delta::incremental(&sidecar_in(&narrowed, "a"), &changes);
    assert_eq!((names(&in_a).len(), in_a.removals.len()), (1, 0), "a keeps it, with the new exportTo");

    let deleted = world(&[], "");
    let changes = before.changes_to(&deleted);
    assert_eq!(removed(&delta::incremental(&sidecar_in(&deleted, "b"), &changes)).len(), 1);
    assert!(delta::incremental(&sidecar_in(&deleted, "b"), &before.changes_to(&before)).is_empty());
}

#[test]
fn new_endpoints_resend_the_endpoints_not_the_service() {
    let before = world(&[("a", "reviews", "10.0.0.1", &["10.1.0.1"])], "");
    let mut after = world(&[("a", "reviews", "10.0.0.1", &["10.1.0.1", "10.1.0.2"])], "");
    after.share_unchanged(&before);
    let changes = before.changes_to(&after);
    let delta = delta::incremental(&sidecar_in(&after, "c"), &changes);
    assert_eq!(names(&delta), ["mesh/Endpoints reviews.a.svc.cluster.local"]);
}

#[test]
fn a_new_sidecar_changes_the_view_and_between_sends_the_difference() {
    let services: &[(&str, &str, &str, &[&str])] =
        &[("a", "reviews", "10.0.0.1", &["10.1.0.1"]), ("b", "ratings", "10.0.0.2", &["10.1.0.2"])];
    let before = world(services, "");
    let after = world(services, SIDECAR_B);
    let (old_view, new_view) = (sidecar_in(&before, "b"), sidecar_in(&after, "b"));
    assert_ne!(old_view, new_view);
    let delta = delta::between(&before, &old_view, &after, &new_view);
    assert_eq!(names(&delta), ["networking.istio.io/Sidecar b/default"]);
    assert_eq!(
        removed(&delta),
        ["mesh/Service reviews.a.svc.cluster.local", "mesh/Endpoints reviews.a.svc.cluster.local"]
    );
    // Back again: what the Sidecar hid comes back, and the Sidecar goes.
    let back = delta::between(&after, &new_view, &before, &old_view);
    assert_eq!(names(&back).len(), 2);
    assert_eq!(removed(&back), ["networking.istio.io/Sidecar b/default"]);
}

#[test]
fn between_equal_worlds_is_empty_and_snapshot_equals_between_from_nothing() {
    let world = world(&[("a", "reviews", "10.0.0.1", &["10.1.0.1"])], VS_LOCAL);
    let view = sidecar_in(&world, "a");
    assert!(delta::between(&world, &view, &world, &view).is_empty());
    let empty = World { domain: "cluster.local".into(), ..World::default() };
    assert_eq!(delta::between(&empty, &sidecar_in(&empty, "a"), &world, &view), delta::snapshot(&world, &view));
}
