//! Collects the objects the registry is made of, in any order, and merges them at `build`.
//!
//! Building at the end, not object by object, is what lets an `Endpoints` arrive before its
//! pods, or a ServiceEntry before the WorkloadEntries it selects, and still come out the same.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{Endpoint, EndpointAddress, Registry, Service, Workload};
use crate::api::networking::service_entry::ServiceEntry;
use crate::api::networking::workload_entry::WorkloadEntry;
use crate::resource::Resource;
use crate::validate::{Diagnostics, FieldPath, ObjectRef, Validate, ValidationContext};

/// Gathers Kubernetes and Istio objects and turns them into a [`Registry`].
#[derive(Clone, Debug, Default)]
pub struct RegistryBuilder {
    pub(super) domain: String,
    pub(super) kube_services: Vec<KubeService>,
    pub(super) endpoints: Vec<Endpoints>,
    pub(super) slices: Vec<EndpointSlice>,
    pub(super) pods: Vec<Pod>,
    pub(super) service_entries: Vec<ServiceEntry>,
    pub(super) workload_entries: Vec<WorkloadEntry>,
}

impl RegistryBuilder {
    /// An empty builder for a cluster whose DNS suffix is `domain`.
    pub fn new(domain: &str) -> Self {
        Self { domain: domain.to_ascii_lowercase(), ..Self::default() }
    }

    /// Adds a Kubernetes Service.
    pub fn service(mut self, service: KubeService) -> Self {
        self.kube_services.push(service);
        self
    }

    /// Adds a Kubernetes Endpoints object (used for its service unless EndpointSlices exist).
    pub fn endpoints(mut self, endpoints: Endpoints) -> Self {
        self.endpoints.push(endpoints);
        self
    }

    /// Adds an EndpointSlice (discovery/v1); slices win over Endpoints for the same service.
    pub fn endpoint_slice(mut self, slice: EndpointSlice) -> Self {
        self.slices.push(slice);
        self
    }

    /// Adds a pod: its labels, service account and container ports describe the endpoints at
    /// its IP, and services with a selector but no Endpoints select it directly.
    pub fn pod(mut self, pod: Pod) -> Self {
        self.pods.push(pod);
        self
    }

    /// Adds a ServiceEntry (one service per host).
    pub fn service_entry(mut self, entry: ServiceEntry) -> Self {
        self.service_entries.push(entry);
        self
    }

    /// Adds a WorkloadEntry, selectable by ServiceEntries and Kubernetes services of its
    /// namespace.
    pub fn workload_entry(mut self, entry: WorkloadEntry) -> Self {
        self.workload_entries.push(entry);
        self
    }

    /// Adds the ServiceEntries and WorkloadEntries among `resources`; other kinds are ignored.
    pub fn istio_resources<'r>(mut self, resources: impl IntoIterator<Item = &'r Resource>) -> Self {
        for resource in resources {
            match resource {
                Resource::ServiceEntry(entry) => self.service_entries.push(entry.clone()),
                Resource::WorkloadEntry(entry) => self.workload_entries.push(entry.clone()),
                _ => {}
            }
        }
        self
    }

    /// Merges everything into a registry. Kubernetes services are added first; a ServiceEntry
    /// host that a Kubernetes service already has is skipped (the Kubernetes service keeps its
    /// endpoints), as is a host a previous ServiceEntry declared; entries are taken oldest
    /// first so the outcome does not depend on arrival order.
    pub fn build(mut self) -> Registry {
        self.drop_invalid_entries();
        let workloads = self.workloads();
        let mut registry = Registry { domain: self.domain.clone(), ..Registry::default() };
        for service in &self.kube_services {
            if let Some((service, endpoints)) = self.kubernetes_service(service, &workloads) {
                insert(&mut registry, service, endpoints);
            }
        }
        let mut entries: Vec<&ServiceEntry> = self.service_entries.iter().collect();
        entries.sort_by_key(|entry| crate::compile::age_key(&entry.metadata));
        for entry in entries {
            for (service, endpoints) in self.entry_services(entry, &workloads) {
                if !registry.services.contains_key(&service.hostname) {
                    insert(&mut registry, service, endpoints);
                }
            }
        }
        for workload in workloads {
            let key = format!("{}/{}", workload.reference.namespace, workload.reference.name);
            registry.workloads.insert(key, Arc::new(workload));
        }
        registry
    }
}

impl RegistryBuilder {
    /// Leaves out ServiceEntries and WorkloadEntries that fail validation, so that one bad
    /// entry never adds a wrong service or endpoint (validation reports them where they enter).
    fn drop_invalid_entries(&mut self) {
        let context = ValidationContext { domain: self.domain.clone(), ..ValidationContext::standalone() };
        let valid = |object: ObjectRef, spec: &dyn Validate| {
            let mut diagnostics = Diagnostics::new(object);
            spec.validate(&FieldPath::spec(), &context, &mut diagnostics);
            !diagnostics.has_errors()
        };
        let name = |kind: &str, meta: &kube::api::ObjectMeta| {
            ObjectRef::new(kind, meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
        };
        self.service_entries.retain(|entry| valid(name("ServiceEntry", &entry.metadata), &entry.spec));
        self.workload_entries.retain(|entry| valid(name("WorkloadEntry", &entry.metadata), &entry.spec));
    }
}

fn insert(registry: &mut Registry, service: Service, endpoints: Vec<Endpoint>) {
    for address in &service.addresses {
        for port in &service.ports {
            registry.by_address.entry((*address, port.port)).or_insert_with(|| service.hostname.clone());
        }
    }
    registry.endpoints.insert(service.hostname.clone(), endpoints.into());
    registry.services.insert(service.hostname.clone(), Arc::new(service));
}

/// Endpoints of `workloads` selected by `selector` in `namespace`, with each service port
/// resolved to the workload's port by `resolve_port`.
pub(super) fn selected_endpoints(
    workloads: &[Workload],
    namespace: &str,
    selector: &BTreeMap<String, String>,
    mut resolve_port: impl FnMut(&Workload) -> BTreeMap<u16, u16>,
) -> Vec<Endpoint> {
    let mut endpoints = Vec::new();
    for workload in workloads {
        let selected = workload.reference.namespace == namespace
            && selector.iter().all(|(key, value)| workload.labels.get(key) == Some(value));
        if !selected {
            continue;
        }
        let ports = resolve_port(workload);
        let addresses: Vec<EndpointAddress> = if workload.ips.is_empty() {
            workload.hostname.iter().map(|name| EndpointAddress::Hostname(name.clone())).collect()
        } else {
            workload.ips.iter().take(1).map(|ip| EndpointAddress::Ip(*ip)).collect()
        };
        for address in addresses {
            endpoints.push(Endpoint {
                address,
                ports: ports.clone(),
                labels: workload.labels.clone(),
                service_account: workload.service_account.clone(),
                ready: workload.ready,
                locality: workload.locality.clone(),
                weight: workload.weight,
                workload: Some(workload.reference.clone()),
            });
        }
    }
    endpoints
}
