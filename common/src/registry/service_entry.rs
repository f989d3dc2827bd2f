//! ServiceEntries into registry services: one service per host, sharing the entry's ports,
//! addresses and endpoints.

use std::collections::BTreeMap;

use super::builder::{RegistryBuilder, selected_endpoints};
use super::kubernetes::{plain_endpoint, to_port};
use super::{
    Endpoint, EndpointAddress, ExportTo, MeshLocation, Protocol, Resolution, Service, ServiceOrigin, ServicePort,
    TargetPort, Workload,
};
use crate::api::networking::service_entry::{self, Location, ServiceEntry, ServiceEntrySpec};

impl RegistryBuilder {
    /// The services a ServiceEntry declares, with their endpoints: inline `endpoints`, or the
    /// pods and WorkloadEntries of its namespace that `workloadSelector` picks, or (DNS
    /// resolution without endpoints) the host itself, resolved by the proxy.
    pub(super) fn entry_services(&self, entry: &ServiceEntry, workloads: &[Workload]) -> Vec<(Service, Vec<Endpoint>)> {
        let spec = &entry.spec;
        let namespace = entry.metadata.namespace.clone().unwrap_or_else(|| "default".to_string());
        let name = entry.metadata.name.clone().unwrap_or_default();
        let ports: Vec<ServicePort> = spec
            .ports
            .iter()
            .filter_map(|port| {
                let number = to_port(port.number)?;
                Some(ServicePort {
                    name: port.name.clone(),
                    port: number,
                    target_port: TargetPort::Number(port.target_port.and_then(to_port).unwrap_or(number)),
                    protocol: Protocol::from_name(&port.protocol).unwrap_or(Protocol::Unknown),
                })
            })
            .collect();
        let resolution = match spec.resolution() {
            // DYNAMIC_DNS is not resolved per request yet: like NONE, the connection goes on to
            // the address the client resolved (validation reports it as not supported yet).
            service_entry::Resolution::None | service_entry::Resolution::DynamicDns => Resolution::Passthrough,
            service_entry::Resolution::Static => Resolution::Static,
            service_entry::Resolution::Dns => Resolution::Dns,
            service_entry::Resolution::DnsRoundRobin => Resolution::DnsRoundRobin,
        };
        let selector = spec.workload_selector.as_ref().map(|selector| selector.labels.clone());
        let shared_endpoints = match &selector {
            Some(selector) => selected_endpoints(workloads, &namespace, selector, |workload| {
                entry_ports_on_workload(spec, &ports, &workload.named_ports)
            }),
            None => spec
                .endpoints
                .iter()
                .map(|endpoint| {
                    let named: BTreeMap<String, u16> = endpoint
                        .ports
                        .iter()
                        .filter_map(|(name, port)| Some((name.clone(), to_port(*port)?)))
                        .collect();
                    Endpoint {
                        labels: endpoint.labels.clone(),
                        service_account: endpoint.service_account.clone(),
                        locality: endpoint.locality.clone(),
                        weight: endpoint.weight.filter(|weight| *weight > 0).unwrap_or(1),
                        ..plain_endpoint(
                            EndpointAddress::parse(&endpoint.address),
                            entry_ports_on_workload(spec, &ports, &named),
                            true,
                        )
                    }
                })
                .collect(),
        };
        spec.hosts
            .iter()
            .map(|host| {
                let hostname = host.to_ascii_lowercase();
                let mut endpoints = shared_endpoints.clone();
                let resolves_host = matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin)
                    && selector.is_none()
                    && spec.endpoints.is_empty()
                    && !hostname.starts_with('*');
                if resolves_host {
                    let port_map = ports.iter().map(|port| (port.port, target_number(port))).collect();
                    endpoints.push(plain_endpoint(EndpointAddress::Hostname(hostname.clone()), port_map, true));
                }
                let service = Service {
                    hostname,
                    namespace: namespace.clone(),
                    name: name.clone(),
                    addresses: spec.addresses.iter().filter_map(|address| address.parse().ok()).collect(),
                    ports: ports.clone(),
                    export_to: ExportTo(spec.export_to.clone()),
                    labels: entry.metadata.labels.clone().unwrap_or_default(),
                    selector: selector.clone(),
                    origin: ServiceOrigin::ServiceEntry { namespace: namespace.clone(), name: name.clone() },
                    location: match spec.location() {
                        Location::MeshInternal => MeshLocation::MeshInternal,
                        Location::MeshExternal => MeshLocation::MeshExternal,
                    },
                    resolution,
                };
                (service, endpoints)
            })
            .collect()
    }
}

fn target_number(port: &ServicePort) -> u16 {
    match port.target_port {
        TargetPort::Number(number) => number,
        TargetPort::Name(_) => port.port,
    }
}

/// Each entry port to the port a workload listens on for it: the workload's port of the same
/// name if it has one, else the entry's `targetPort`, else the entry port's number.
fn entry_ports_on_workload(
    _spec: &ServiceEntrySpec,
    ports: &[ServicePort],
    named_ports: &BTreeMap<String, u16>,
) -> BTreeMap<u16, u16> {
    ports
        .iter()
        .map(|port| (port.port, named_ports.get(&port.name).copied().unwrap_or_else(|| target_number(port))))
        .collect()
}
