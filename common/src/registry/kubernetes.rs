//! Kubernetes objects into registry entries: Services with their Endpoints or EndpointSlices,
//! and Pods (and WorkloadEntries) as workloads.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service as KubeService};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::builder::{RegistryBuilder, selected_endpoints};
use super::{
    Endpoint, EndpointAddress, ExportTo, MeshLocation, Protocol, Resolution, Service, ServiceOrigin, ServicePort,
    TargetPort, Workload, WorkloadKind, WorkloadRef,
};

/// The annotation that limits which namespaces see a Kubernetes Service.
pub const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";
/// The pod label Istio reads a workload's locality from (`region.zone.subzone`).
pub const LOCALITY_LABEL: &str = "istio-locality";
/// The EndpointSlice label naming its service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

impl RegistryBuilder {
    /// Every pod and WorkloadEntry as a workload, pods first.
    pub(super) fn workloads(&self) -> Vec<Workload> {
        let pods = self.pods.iter().filter_map(pod_workload);
        let entries = self.workload_entries.iter().map(|entry| {
            let spec = &entry.spec;
            let ip = spec.address.parse::<IpAddr>().ok();
            Workload {
                reference: WorkloadRef {
                    kind: WorkloadKind::WorkloadEntry,
                    namespace: entry.metadata.namespace.clone().unwrap_or_else(|| "default".to_string()),
                    name: entry.metadata.name.clone().unwrap_or_default(),
                },
                labels: spec.labels.clone(),
                ips: ip.into_iter().collect(),
                hostname: if ip.is_none() && !spec.address.is_empty() {
                    Some(spec.address.to_ascii_lowercase())
                } else {
                    None
                },
                service_account: spec.service_account.clone(),
                named_ports: spec
                    .ports
                    .iter()
                    .filter_map(|(name, port)| Some((name.clone(), to_port(*port)?)))
                    .collect(),
                ready: true,
                locality: spec.locality.clone(),
                weight: spec.weight.filter(|weight| *weight > 0).unwrap_or(1),
            }
        });
        pods.chain(entries).collect()
    }

    /// A Kubernetes Service and its endpoints: from its EndpointSlices if any, else from its
    /// Endpoints, else (a selector and no endpoint objects at all) from the pods it selects.
    /// WorkloadEntries its selector picks are added in every case, as Istio does.
    pub(super) fn kubernetes_service(
        &self,
        kube: &KubeService,
        workloads: &[Workload],
    ) -> Option<(Service, Vec<Endpoint>)> {
        let meta = &kube.metadata;
        let name = meta.name.clone()?;
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".to_string());
        let spec = kube.spec.clone().unwrap_or_default();
        let mut addresses: Vec<IpAddr> = spec.cluster_ips.iter().flatten().filter_map(|ip| ip.parse().ok()).collect();
        if let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok())
            && !addresses.contains(&ip)
        {
            addresses.insert(0, ip);
        }
        let headless = spec.cluster_ip.as_deref() == Some("None");
        let external_name = spec.type_.as_deref() == Some("ExternalName");
        let ports: Vec<ServicePort> = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|port| {
                let number = to_port(u32::try_from(port.port).ok()?)?;
                let port_name = port.name.clone().unwrap_or_default();
                Some(ServicePort {
                    protocol: Protocol::for_service_port(
                        &port_name,
                        port.app_protocol.as_deref(),
                        port.protocol.as_deref(),
                    ),
                    name: port_name,
                    port: number,
                    target_port: match &port.target_port {
                        Some(IntOrString::Int(target)) => TargetPort::Number(to_port(u32::try_from(*target).ok()?)?),
                        Some(IntOrString::String(target)) => TargetPort::Name(target.clone()),
                        None => TargetPort::Number(number),
                    },
                })
            })
            .collect();
        let service = Service {
            hostname: format!("{name}.{namespace}.svc.{}", self.domain).to_ascii_lowercase(),
            export_to: meta
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(EXPORT_TO_ANNOTATION))
                .map(|value| ExportTo::from_annotation(value))
                .unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            selector: spec.selector.clone().filter(|selector| !selector.is_empty()),
            origin: ServiceOrigin::Kubernetes,
            location: MeshLocation::MeshInternal,
            resolution: if external_name {
                Resolution::Dns
            } else if headless {
                Resolution::Passthrough
            } else {
                Resolution::Static
            },
            namespace,
            name,
            addresses,
            ports,
        };
        let mut endpoints = self.endpoints_from_objects(&service, workloads);
        if let Some(selector) = &service.selector {
            let pods_selected = endpoints.is_empty();
            endpoints.extend(
                selected_endpoints(workloads, &service.namespace, selector, |workload| {
                    resolve_ports(&service, workload)
                })
                .into_iter()
                .filter(|endpoint| {
                    pods_selected || endpoint.workload.as_ref().is_some_and(|w| w.kind == WorkloadKind::WorkloadEntry)
                }),
            );
        }
        if external_name && let Some(target) = &spec.external_name {
            let ports = service.ports.iter().map(|port| (port.port, port.port)).collect();
            endpoints.push(plain_endpoint(EndpointAddress::Hostname(target.to_ascii_lowercase()), ports, true));
        }
        Some((service, endpoints))
    }

    /// Endpoints listed by the service's EndpointSlices, or else its Endpoints object.
    fn endpoints_from_objects(&self, service: &Service, workloads: &[Workload]) -> Vec<Endpoint> {
        let owned = |namespace: &Option<String>| namespace.as_deref().unwrap_or("default") == service.namespace;
        let slices: Vec<_> = self
            .slices
            .iter()
            .filter(|slice| {
                owned(&slice.metadata.namespace)
                    && slice.metadata.labels.as_ref().and_then(|labels| labels.get(SERVICE_NAME_LABEL))
                        == Some(&service.name)
            })
            .collect();
        let mut endpoints = Vec::new();
        if !slices.is_empty() {
            for slice in slices {
                let ports = port_map(service, slice.ports.iter().flatten().map(|p| (p.name.as_deref(), p.port)));
                for item in &slice.endpoints {
                    let ready = item.conditions.as_ref().and_then(|conditions| conditions.ready).unwrap_or(true);
                    for address in item.addresses.iter().take(1) {
                        endpoints.push(described(address, &ports, ready, item.target_ref.as_ref(), workloads));
                    }
                }
            }
            return endpoints;
        }
        let objects = self.endpoints.iter().filter(|object| {
            owned(&object.metadata.namespace) && object.metadata.name.as_deref() == Some(service.name.as_str())
        });
        for subset in objects.flat_map(|object| object.subsets.iter().flatten()) {
            let ports = port_map(service, subset.ports.iter().flatten().map(|p| (p.name.as_deref(), Some(p.port))));
            for (addresses, ready) in [(&subset.addresses, true), (&subset.not_ready_addresses, false)] {
                for address in addresses.iter().flatten() {
                    endpoints.push(described(&address.ip, &ports, ready, address.target_ref.as_ref(), workloads));
                }
            }
        }
        endpoints
    }
}

/// Service port to endpoint port, matching endpoint ports to service ports by name (an
/// unnamed endpoint port belongs to a lone unnamed service port).
fn port_map<'a>(service: &Service, ports: impl Iterator<Item = (Option<&'a str>, Option<i32>)>) -> BTreeMap<u16, u16> {
    let mut map = BTreeMap::new();
    for (name, number) in ports {
        let Some(number) = number.and_then(|n| u32::try_from(n).ok()).and_then(to_port) else { continue };
        if let Some(service_port) = service.port_named(name.unwrap_or_default()) {
            map.insert(service_port.port, number);
        }
    }
    map
}

/// An endpoint at `address`, described by its pod when the target reference names one.
fn described(
    address: &str,
    ports: &BTreeMap<u16, u16>,
    ready: bool,
    target: Option<&ObjectReference>,
    workloads: &[Workload],
) -> Endpoint {
    let mut endpoint = plain_endpoint(EndpointAddress::parse(address), ports.clone(), ready);
    let pod = target.filter(|target| target.kind.as_deref() == Some("Pod")).and_then(|target| {
        workloads.iter().find(|workload| {
            workload.reference.kind == WorkloadKind::Pod
                && Some(&workload.reference.name) == target.name.as_ref()
                && target.namespace.as_ref().is_none_or(|namespace| *namespace == workload.reference.namespace)
        })
    });
    let pod = pod.or_else(|| {
        let ip = address.parse::<IpAddr>().ok()?;
        workloads.iter().find(|workload| workload.reference.kind == WorkloadKind::Pod && workload.ips.contains(&ip))
    });
    if let Some(pod) = pod {
        endpoint.labels = pod.labels.clone();
        endpoint.service_account = pod.service_account.clone();
        endpoint.locality = pod.locality.clone();
        endpoint.workload = Some(pod.reference.clone());
    }
    endpoint
}

pub(super) fn plain_endpoint(address: EndpointAddress, ports: BTreeMap<u16, u16>, ready: bool) -> Endpoint {
    Endpoint {
        address,
        ports,
        labels: BTreeMap::new(),
        service_account: String::new(),
        ready,
        locality: String::new(),
        weight: 1,
        workload: None,
    }
}

/// Each service port to the port `workload` listens on: a numeric target port as is, a named
/// one through the workload's container ports (ports whose name it lacks are left out, as
/// Kubernetes leaves such pods out of the port's endpoints).
pub(super) fn resolve_ports(service: &Service, workload: &Workload) -> BTreeMap<u16, u16> {
    service
        .ports
        .iter()
        .filter_map(|port| {
            let target = match &port.target_port {
                TargetPort::Number(number) => *number,
                TargetPort::Name(name) => *workload.named_ports.get(name)?,
            };
            Some((port.port, target))
        })
        .collect()
}

fn pod_workload(pod: &Pod) -> Option<Workload> {
    let name = pod.metadata.name.clone()?;
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".to_string());
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let mut ips: Vec<IpAddr> = status.pod_ips.iter().flatten().filter_map(|ip| ip.ip.parse().ok()).collect();
    if let Some(ip) = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok())
        && !ips.contains(&ip)
    {
        ips.insert(0, ip);
    }
    let ready =
        status.conditions.iter().flatten().any(|condition| condition.type_ == "Ready" && condition.status == "True");
    let named_ports = spec
        .containers
        .iter()
        .flat_map(|container| container.ports.iter().flatten())
        .filter_map(|port| {
            let number = to_port(u32::try_from(port.container_port).ok()?)?;
            Some((port.name.clone()?, number))
        })
        .collect();
    Some(Workload {
        reference: WorkloadRef { kind: WorkloadKind::Pod, namespace, name },
        locality: labels.get(LOCALITY_LABEL).map(|value| value.replace('.', "/")).unwrap_or_default(),
        labels,
        ips,
        hostname: None,
        service_account: spec.service_account_name.unwrap_or_else(|| "default".to_string()),
        named_ports,
        ready,
        weight: 1,
    })
}

/// A port number, if it is one (1-65535).
pub(super) fn to_port(value: u32) -> Option<u16> {
    u16::try_from(value).ok().filter(|port| *port > 0)
}
