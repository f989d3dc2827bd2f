//! Registry building from Kubernetes and Istio objects, checked against Istio's documented
//! behaviour.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::*;
use crate::api::networking::service_entry::ServiceEntry;
use crate::api::networking::workload_entry::WorkloadEntry;

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("test object parses")
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn kube_service(name: &str, namespace: &str, cluster_ip: &str, ports: serde_json::Value) -> KubeService {
    from_json(json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterIP": cluster_ip, "ports": ports, "selector": {"app": name}}
    }))
}

fn pod(name: &str, namespace: &str, app: &str, version: &str, pod_ip: &str, ready: bool) -> Pod {
    from_json(json!({
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app, "version": version}},
        "spec": {
            "serviceAccountName": format!("bookinfo-{app}"),
            "containers": [{"name": "app", "ports": [{"name": "web", "containerPort": 9080}]}]
        },
        "status": {"podIP": pod_ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    }))
}

const REVIEWS: &str = "reviews.default.svc.cluster.local";

#[test]
fn port_protocol_follows_name_prefix_and_app_protocol_wins() {
    let cases = [
        ("http", None, Protocol::Http),
        ("http-web", None, Protocol::Http),
        ("http2", None, Protocol::Http2),
        ("grpc-api", None, Protocol::Grpc),
        ("grpc-web", None, Protocol::GrpcWeb),
        ("tcp-db", None, Protocol::Tcp),
        ("tls", None, Protocol::Tls),
        ("https-admin", None, Protocol::Https),
        ("mongo", None, Protocol::Mongo),
        ("web", None, Protocol::Unknown),
        ("httpx", None, Protocol::Unknown),
        ("", None, Protocol::Unknown),
        ("tcp", Some("http"), Protocol::Http),
        ("web", Some("kubernetes.io/h2c"), Protocol::Http2),
        ("http", Some("example.com/custom"), Protocol::Http),
    ];
    for (name, app_protocol, expected) in cases {
        assert_eq!(Protocol::for_service_port(name, app_protocol, None), expected, "{name} {app_protocol:?}");
    }
    assert_eq!(Protocol::for_service_port("http", None, Some("UDP")), Protocol::Udp);
}

#[test]
fn export_to_follows_istio_visibility() {
    let everywhere = ExportTo::default();
    assert!(everywhere.is_visible("default", "other"));
    let own = ExportTo::from_annotation(".");
    assert!(own.is_visible("default", "default"));
    assert!(!own.is_visible("default", "other"));
    assert!(!ExportTo::from_annotation("~").is_visible("default", "default"));
    let listed = ExportTo::from_annotation("prod, .");
    assert!(listed.is_visible("default", "prod") && listed.is_visible("default", "default"));
    assert!(!listed.is_visible("default", "dev"));
    assert!(ExportTo::from_annotation("*").is_visible("a", "b"));
}

#[test]
fn kubernetes_service_gets_fqdn_cluster_ip_ports_and_annotation_export() {
    let mut service = kube_service(
        "reviews",
        "default",
        "10.0.0.3",
        json!([{"name": "http", "port": 9080, "targetPort": 9080}, {"name": "grpc-x", "port": 7070, "targetPort": "grpc"}]),
    );
    service.metadata.annotations = Some([(kubernetes::EXPORT_TO_ANNOTATION.to_string(), ".".to_string())].into());
    let registry = Registry::builder("cluster.local").service(service).build();
    let reviews = registry.service(REVIEWS).expect("service registered by FQDN");
    assert_eq!(reviews.addresses, vec![ip("10.0.0.3")]);
    assert_eq!(reviews.ports[0].protocol, Protocol::Http);
    assert_eq!(reviews.ports[1].target_port, TargetPort::Name("grpc".into()));
    assert_eq!(reviews.export_to, ExportTo(vec![".".into()]));
    assert_eq!(registry.service_at(ip("10.0.0.3"), 9080).map(|s| s.hostname.as_str()), Some(REVIEWS));
    assert!(registry.service_at(ip("10.0.0.3"), 1234).is_none());
    assert!(registry.service("REVIEWS.default.svc.cluster.local").is_some(), "lookups ignore case");
}

#[test]
fn endpoints_object_gives_ready_and_not_ready_endpoints_described_by_their_pods() {
    let endpoints: Endpoints = from_json(json!({
        "metadata": {"name": "reviews", "namespace": "default"},
        "subsets": [{
            "addresses": [{"ip": "10.1.0.1", "targetRef": {"kind": "Pod", "name": "reviews-v1", "namespace": "default"}}],
            "notReadyAddresses": [{"ip": "10.1.0.2", "targetRef": {"kind": "Pod", "name": "reviews-v2", "namespace": "default"}}],
            "ports": [{"name": "http", "port": 9080}]
        }]
    }));
    let registry = Registry::builder("cluster.local")
        .endpoints(endpoints)
        .pod(pod("reviews-v1", "default", "reviews", "v1", "10.1.0.1", true))
        .pod(pod("reviews-v2", "default", "reviews", "v2", "10.1.0.2", false))
        .service(kube_service("reviews", "default", "10.0.0.3", json!([{"name": "http", "port": 9080}])))
        .build();
    let all = registry.endpoints(REVIEWS);
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].labels.get("version").map(String::as_str), Some("v1"));
    assert_eq!(all[0].service_account, "bookinfo-reviews");
    assert_eq!(all[0].port_for(9080), Some(9080));
    assert_eq!(all[0].workload.as_ref().map(|w| w.name.as_str()), Some("reviews-v1"));
    assert!(!all[1].ready);
    let ready: Vec<_> = registry.ready_endpoints(REVIEWS, 9080).collect();
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].address, EndpointAddress::Ip(ip("10.1.0.1")));
}

#[test]
fn endpoint_slices_win_over_endpoints_and_carry_readiness() {
    let slice: EndpointSlice = from_json(json!({
        "metadata": {"name": "reviews-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "reviews"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.1.0.7"], "conditions": {"ready": true}},
            {"addresses": ["10.1.0.8"], "conditions": {"ready": false}}
        ],
        "ports": [{"name": "http", "port": 8080}]
    }));
    let stale: Endpoints = from_json(json!({
        "metadata": {"name": "reviews", "namespace": "default"},
        "subsets": [{"addresses": [{"ip": "10.9.9.9"}], "ports": [{"name": "http", "port": 9080}]}]
    }));
    let registry = Registry::builder("cluster.local")
        .service(kube_service(
            "reviews",
            "default",
            "10.0.0.3",
            json!([{"name": "http", "port": 9080, "targetPort": 8080}]),
        ))
        .endpoints(stale)
        .endpoint_slice(slice)
        .build();
    let addresses: Vec<_> = registry.endpoints(REVIEWS).iter().map(|e| (e.address.clone(), e.ready)).collect();
    assert_eq!(
        addresses,
        vec![(EndpointAddress::Ip(ip("10.1.0.7")), true), (EndpointAddress::Ip(ip("10.1.0.8")), false)]
    );
    assert_eq!(registry.endpoints(REVIEWS)[0].port_for(9080), Some(8080));
}

#[test]
fn selector_without_endpoint_objects_selects_pods_and_resolves_named_target_ports() {
    let registry = Registry::builder("cluster.local")
        .service(kube_service(
            "reviews",
            "default",
            "10.0.0.3",
            json!([{"name": "http", "port": 80, "targetPort": "web"}]),
        ))
        .pod(pod("reviews-v1", "default", "reviews", "v1", "10.1.0.1", true))
        .pod(pod("reviews-v9", "other", "reviews", "v9", "10.1.0.9", true))
        .pod(pod("ratings-v1", "default", "ratings", "v1", "10.1.0.5", true))
        .build();
    let endpoints = registry.endpoints(REVIEWS);
    assert_eq!(endpoints.len(), 1, "only pods of the service's namespace with its labels");
    assert_eq!(endpoints[0].port_for(80), Some(9080), "named targetPort resolves through the container port");
    let workload = registry.workload("default", "reviews-v1").expect("pods are workloads");
    assert_eq!(workload.ips, vec![ip("10.1.0.1")]);
    let served: Vec<_> = registry.services_of(&[ip("10.1.0.1")]).map(|(s, _)| s.hostname.clone()).collect();
    assert_eq!(served, vec![REVIEWS.to_string()]);
}

fn service_entry(yaml: &str) -> ServiceEntry {
    serde_yaml::from_str(yaml).expect("test ServiceEntry parses")
}

#[test]
fn service_entry_declares_one_external_service_per_host() {
    let entry = service_entry(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: apis, namespace: egress}\n\
         spec:\n  hosts: [api.example.com, Cdn.Example.com]\n  addresses: [240.0.0.1]\n  ports: [{number: 443, name: https, protocol: HTTPS}]\n  resolution: DNS\n  exportTo: [.]",
    );
    let registry = Registry::builder("cluster.local").service_entry(entry).build();
    let api = registry.service("api.example.com").expect("first host");
    assert!(registry.service("cdn.example.com").is_some(), "hosts are lowercased");
    assert_eq!(api.location, MeshLocation::MeshExternal, "MESH_EXTERNAL is the default");
    assert_eq!(api.resolution, Resolution::Dns);
    assert_eq!(api.ports[0].protocol, Protocol::Https);
    assert_eq!(api.origin, ServiceOrigin::ServiceEntry { namespace: "egress".into(), name: "apis".into() });
    assert!(!api.export_to.is_visible("egress", "default"));
    assert_eq!(registry.service_at(ip("240.0.0.1"), 443).map(|s| s.hostname.as_str()), Some("api.example.com"));
    let endpoints = registry.endpoints("api.example.com");
    assert_eq!(endpoints.len(), 1, "DNS without endpoints resolves the host itself");
    assert_eq!(endpoints[0].address, EndpointAddress::Hostname("api.example.com".into()));
}

#[test]
fn service_entry_inline_endpoints_map_port_names() {
    let entry = service_entry(
        "metadata: {name: vms, namespace: default}\nspec:\n  hosts: [vm.internal]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  \
         ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8000}]\n  \
         endpoints: [{address: 10.2.0.1, ports: {http: 8080}, labels: {version: v1}, weight: 3}, {address: 10.2.0.2}]",
    );
    let registry = Registry::builder("cluster.local").service_entry(entry).build();
    let endpoints = registry.endpoints("vm.internal");
    assert_eq!(endpoints[0].port_for(80), Some(8080), "the endpoint's own port for the port name wins");
    assert_eq!(endpoints[1].port_for(80), Some(8000), "else the entry's targetPort");
    assert_eq!(endpoints[0].weight, 3);
    assert_eq!(registry.service("vm.internal").unwrap().location, MeshLocation::MeshInternal);
}

#[test]
fn service_entry_workload_selector_picks_pods_and_workload_entries_of_its_namespace() {
    let entry = service_entry(
        "metadata: {name: details-vm, namespace: default}\nspec:\n  hosts: [details.vm]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  \
         ports: [{number: 9080, name: http, protocol: HTTP}]\n  workloadSelector: {labels: {app: details}}",
    );
    let vm: WorkloadEntry = serde_yaml::from_str(
        "metadata: {name: details-vm-1, namespace: default}\nspec: {address: 10.3.0.1, labels: {app: details}, serviceAccount: details, ports: {http: 9999}}",
    )
    .unwrap();
    let elsewhere: WorkloadEntry = serde_yaml::from_str(
        "metadata: {name: details-vm-2, namespace: other}\nspec: {address: 10.3.0.2, labels: {app: details}}",
    )
    .unwrap();
    let registry = Registry::builder("cluster.local")
        .service_entry(entry)
        .workload_entry(vm)
        .workload_entry(elsewhere)
        .pod(pod("details-v1", "default", "details", "v1", "10.1.0.4", true))
        .build();
    let mut endpoints: Vec<_> =
        registry.endpoints("details.vm").iter().map(|e| (e.address.clone(), e.port_for(9080))).collect();
    endpoints.sort();
    assert_eq!(
        endpoints,
        vec![(EndpointAddress::Ip(ip("10.1.0.4")), Some(9080)), (EndpointAddress::Ip(ip("10.3.0.1")), Some(9999))]
    );
}

#[test]
fn kubernetes_service_keeps_its_host_when_a_service_entry_repeats_it() {
    let entry = service_entry(&format!(
        "metadata: {{name: dup, namespace: default}}\nspec:\n  hosts: [{REVIEWS}]\n  resolution: STATIC\n  ports: [{{number: 9080, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 10.9.0.1}}]"
    ));
    let registry = Registry::builder("cluster.local")
        .service_entry(entry)
        .service(kube_service("reviews", "default", "10.0.0.3", json!([{"name": "http", "port": 9080}])))
        .pod(pod("reviews-v1", "default", "reviews", "v1", "10.1.0.1", true))
        .build();
    assert_eq!(registry.service(REVIEWS).unwrap().origin, ServiceOrigin::Kubernetes);
    assert_eq!(registry.endpoints(REVIEWS).len(), 1);
}

#[test]
fn registry_serializes_for_debug_dumps() {
    let registry = Registry::builder("cluster.local")
        .service(kube_service("reviews", "default", "10.0.0.3", json!([{"name": "http", "port": 9080}])))
        .build();
    let dump = serde_json::to_value(&registry).expect("registry dumps as JSON");
    assert_eq!(dump["services"][REVIEWS]["ports"][0]["protocol"], "HTTP");
}

#[test]
fn invalid_service_entries_add_nothing() {
    let (resources, errors) = crate::resource::Resource::parse_yaml_documents(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: bad, namespace: default}\n\
         spec: {hosts: [bad.example.com], resolution: DNS}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: good, namespace: default}\n\
         spec: {hosts: [good.example.com], resolution: DNS, ports: [{number: 80, name: http, protocol: HTTP}]}",
    );
    assert!(errors.is_empty(), "{errors:?}");
    let registry = Registry::builder("cluster.local").istio_resources(&resources).build();
    assert!(registry.service("bad.example.com").is_none(), "DNS resolution without ports is invalid");
    assert!(registry.service("good.example.com").is_some());
}

#[test]
fn headless_and_external_name_services_resolve_as_kubernetes_does() {
    let headless: KubeService = from_json(json!({
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"clusterIP": "None", "ports": [{"name": "tcp", "port": 5432}], "selector": {"app": "db"}}
    }));
    let external: KubeService = from_json(json!({
        "metadata": {"name": "search", "namespace": "default"},
        "spec": {"type": "ExternalName", "externalName": "Search.Example.com", "ports": [{"name": "https", "port": 443}]}
    }));
    let registry = Registry::builder("cluster.local").service(headless).service(external).build();
    let db = registry.service("db.default.svc.cluster.local").unwrap();
    assert_eq!(db.resolution, Resolution::Passthrough);
    assert!(db.addresses.is_empty());
    let search = registry.service("search.default.svc.cluster.local").unwrap();
    assert_eq!(search.resolution, Resolution::Dns);
    let endpoints = registry.endpoints(&search.hostname);
    assert_eq!(endpoints[0].address, EndpointAddress::Hostname("search.example.com".into()));
    assert_eq!(endpoints[0].port_for(443), Some(443));
}

#[test]
fn a_registry_read_back_from_json_finds_services_by_address_again() {
    let service =
        kube_service("reviews", "default", "10.0.0.3", json!([{"name": "http", "port": 9080, "targetPort": 9080}]));
    let built = Registry::builder("cluster.local").service(service).build();
    let read_back: Registry = serde_json::from_value(serde_json::to_value(&built).unwrap()).unwrap();
    assert_eq!(read_back.service_at(ip("10.0.0.3"), 9080).map(|s| s.hostname.as_str()), Some(REVIEWS));
    assert!(read_back.service_at(ip("10.0.0.3"), 9081).is_none());
    assert_eq!(read_back.domain(), "cluster.local");
}
