//! The compiler's tests, one file per concern, over the Bookinfo registry in
//! `tests/fixtures/compile/registry.yaml` and resources written from Istio's documented
//! semantics. The helpers here keep each test to the rule it checks.

mod clusters;
mod gateway;
mod inbound;
mod istio_tasks;
mod routing;
mod visibility;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service as KubeService};

use super::*;
use crate::registry::Registry;
use crate::resource::Resource;

/// Reads a fixture of `tests/fixtures/compile`.
macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/compile/", $name))
    };
}
pub(crate) use fixture;

pub const REVIEWS: &str = "reviews.default.svc.cluster.local";
pub const RATINGS: &str = "ratings.default.svc.cluster.local";

/// The Bookinfo registry, with `extra` Istio resources (ServiceEntries) merged in.
pub fn registry_with(extra: &[Resource]) -> Registry {
    registry_from(fixture!("registry.yaml"), extra)
}

/// The registry of the Services and Pods in `yaml`, with `extra` merged in.
pub fn registry_from(yaml: &str, extra: &[Resource]) -> Registry {
    let mut builder = Registry::builder("cluster.local");
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value: serde_json::Value = serde::Deserialize::deserialize(document).expect("registry fixture is YAML");
        match value["kind"].as_str() {
            Some("Service") => builder = builder.service(serde_json::from_value::<KubeService>(value).unwrap()),
            Some("Pod") => builder = builder.pod(serde_json::from_value::<Pod>(value).unwrap()),
            other => panic!("unexpected kind {other:?} in the registry fixture"),
        }
    }
    for resource in extra {
        match resource {
            Resource::ServiceEntry(entry) => builder = builder.service_entry(entry.clone()),
            Resource::WorkloadEntry(entry) => builder = builder.workload_entry(entry.clone()),
            _ => {}
        }
    }
    builder.build()
}

/// Parses Istio resources from one or more YAML texts; every document must parse.
pub fn resources(texts: &[&str]) -> Vec<Resource> {
    texts
        .iter()
        .flat_map(|text| {
            let (resources, errors) = Resource::parse_yaml_documents(text);
            assert!(errors.is_empty(), "fixture does not parse: {errors:?}");
            resources
        })
        .collect()
}

/// The sidecar of a Bookinfo pod, described by the registry.
pub fn proxy(registry: &Registry, namespace: &str, pod: &str) -> ProxyIdentity {
    ProxyIdentity::for_workload(registry.workload(namespace, pod).expect("pod in the registry fixture"))
}

/// Compiles `texts` for the pod `namespace/pod` over the Bookinfo registry (plus any
/// ServiceEntries among the resources).
pub fn compile_for(namespace: &str, pod: &str, texts: &[&str]) -> Compiled {
    let resources = resources(texts);
    let registry = registry_with(&resources);
    let proxy = proxy(&registry, namespace, pod);
    compile(&resources, &registry, &proxy)
}

/// Compiles for the productpage sidecar, the usual client in Istio's tasks.
pub fn compile_for_productpage(texts: &[&str]) -> Compiled {
    compile_for("default", "productpage-v1", texts)
}

/// The virtual host for `authority` on `port`.
pub fn virtual_host<'t>(tables: &'t ProxyTables, port: u16, authority: &str) -> &'t VirtualHost {
    tables
        .listener(port)
        .unwrap_or_else(|| panic!("no listener on port {port}"))
        .virtual_host_for_authority(authority)
        .unwrap_or_else(|| panic!("no virtual host for {authority} on port {port}"))
}

/// A request for tests.
#[derive(Clone, Debug, Default)]
pub struct TestRequest {
    pub method: String,
    pub authority: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: BTreeMap<String, String>,
}

impl TestRequest {
    pub fn get(path: &str) -> Self {
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path.to_string(), Some(query.to_string())),
            None => (path.to_string(), None),
        };
        Self { method: "GET".into(), authority: "reviews:9080".into(), path, query, headers: BTreeMap::new() }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.insert(name.to_string(), value.to_string());
        self
    }
}

impl RequestAttributes for TestRequest {
    fn method(&self) -> &str {
        &self.method
    }
    fn scheme(&self) -> &str {
        "http"
    }
    fn authority(&self) -> &str {
        &self.authority
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }
    fn header(&self, lowercase_name: &str) -> Option<&str> {
        self.headers.get(lowercase_name).map(String::as_str)
    }
}

/// The route a request takes on `authority`/`port`.
pub fn route_of<'t>(tables: &'t ProxyTables, port: u16, authority: &str, request: &TestRequest) -> &'t HttpRoute {
    virtual_host(tables, port, authority).route_request(request).expect("some route matches")
}

/// `(cluster, weight)` of a forwarding route, clusters written as Istio names them.
pub fn forwards(route: &HttpRoute) -> Vec<(String, u32)> {
    match &route.action {
        HttpAction::Forward(destinations) => {
            destinations.clusters.iter().map(|c| (c.cluster.to_string(), c.weight)).collect()
        }
        other => panic!("route {} does not forward: {other:?}", route.name),
    }
}

/// The cluster name of `host` (short name in `default`), subset and port.
pub fn cluster_name(service: &str, subset: &str, port: u16) -> String {
    ClusterKey::new(format!("{service}.default.svc.cluster.local"), subset, port).to_string()
}

/// The diagnostics of one kind.
pub fn diagnostics_of(compiled: &Compiled, code: DiagnosticCode) -> Vec<&CompileDiagnostic> {
    compiled.diagnostics.iter().filter(|diagnostic| diagnostic.code == code).collect()
}

/// The cluster with `key`, which must exist.
pub fn cluster<'t>(tables: &'t ProxyTables, host: &str, subset: &str, port: u16) -> &'t Cluster {
    tables.cluster(&ClusterKey::new(host, subset, port)).unwrap_or_else(|| {
        panic!(
            "no cluster {}; have {:?}",
            ClusterKey::new(host, subset, port),
            tables.clusters.keys().collect::<Vec<_>>()
        )
    })
}

/// The pod names behind a cluster's endpoints, via their IPs in the registry fixture.
pub fn endpoint_ips(cluster: &Cluster) -> Vec<String> {
    let mut ips: Vec<String> = cluster
        .endpoints
        .iter()
        .map(|endpoint| match &endpoint.address {
            crate::registry::EndpointAddress::Ip(ip) => ip.to_string(),
            crate::registry::EndpointAddress::Hostname(name) => name.clone(),
        })
        .collect();
    ips.sort();
    ips
}
