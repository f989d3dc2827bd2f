//! The service registry: every service the mesh knows, its ports and its endpoints.
//!
//! Services come from Kubernetes (`Service` + `Endpoints`/`EndpointSlice` + `Pod`) and from
//! Istio (`ServiceEntry`, `WorkloadEntry`); [`RegistryBuilder`] merges them into one
//! [`Registry`] keyed by fully qualified hostname. The registry is immutable once built and
//! shares its services and endpoint lists behind `Arc`, so the controller's copy and every
//! compile of a proxy's tables can hold it without copying.

mod builder;
mod kubernetes;
mod protocol;
mod service_entry;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use builder::RegistryBuilder;
pub use protocol::Protocol;

/// Labels of a workload or service.
pub type Labels = BTreeMap<String, String>;

/// Where a service was declared.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ServiceOrigin {
    /// A Kubernetes `Service` (namespace and name are the service's).
    Kubernetes,
    /// A `ServiceEntry`, by namespace and name; one entry yields a service per host.
    ServiceEntry {
        /// The entry's namespace.
        namespace: String,
        /// The entry's name.
        name: String,
    },
}

/// The label the injector puts on pods that run a sidecar (Istio's name and value `istio`):
/// auto mTLS speaks mutual TLS to endpoints that carry it.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// Whether a service's endpoints run in the mesh (they have proxies and speak mesh mTLS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MeshLocation {
    /// Inside the mesh: every Kubernetes service, and ServiceEntries with MESH_INTERNAL.
    #[default]
    MeshInternal,
    /// Outside the mesh: ServiceEntries with MESH_EXTERNAL (the default for entries).
    MeshExternal,
}

/// How a proxy finds where to connect for a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// The registry lists the endpoint IPs (Kubernetes services, STATIC entries).
    #[default]
    Static,
    /// Endpoints are DNS names the proxy resolves; every address is used.
    Dns,
    /// Endpoints are DNS names; only the first address is used for new connections.
    DnsRoundRobin,
    /// No endpoints: the connection goes on to the address the application dialled
    /// (ServiceEntries with resolution NONE, headless services).
    Passthrough,
}

/// The port on the endpoint that a service port forwards to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetPort {
    /// A port number.
    Number(u16),
    /// The name of a container port, resolved per pod (pods of one service may differ).
    Name(String),
}

/// One port of a service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServicePort {
    /// The port's name (`http`, `grpc-api`); empty for a lone unnamed Kubernetes port.
    pub name: String,
    /// The port callers connect to.
    pub port: u16,
    /// Where the endpoints listen.
    pub target_port: TargetPort,
    /// What the port speaks, from `appProtocol` or the name's prefix.
    pub protocol: Protocol,
}

/// Which namespaces' proxies may see a resource (Istio's `exportTo`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExportTo(pub Vec<String>);

impl ExportTo {
    /// Reads the `networking.istio.io/exportTo` annotation of a Service (comma-separated).
    pub fn from_annotation(value: &str) -> Self {
        Self(value.split(',').map(str::trim).filter(|entry| !entry.is_empty()).map(str::to_string).collect())
    }

    /// Whether a proxy in `proxy_namespace` sees something exported this way from
    /// `owner_namespace`. Empty means everywhere (Istio's default); `*` everywhere; `.` the
    /// owner's namespace; `~` nowhere; any other entry names a namespace.
    pub fn is_visible(&self, owner_namespace: &str, proxy_namespace: &str) -> bool {
        self.0.is_empty()
            || self.0.iter().any(|entry| match entry.as_str() {
                "*" => true,
                "." => owner_namespace == proxy_namespace,
                "~" => false,
                namespace => namespace == proxy_namespace,
            })
    }
}

/// A service: one hostname, its ports and how it is reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// The fully qualified, lowercase hostname (`reviews.default.svc.cluster.local`,
    /// `api.example.com`, or a wildcard `*.example.com` from a ServiceEntry).
    pub hostname: String,
    /// The namespace that declared the service.
    pub namespace: String,
    /// The short name: the Kubernetes Service's name, or the ServiceEntry's.
    pub name: String,
    /// Virtual IPs callers dial: ClusterIPs, or a ServiceEntry's addresses.
    pub addresses: Vec<IpAddr>,
    /// The service's ports, in the order declared.
    pub ports: Vec<ServicePort>,
    /// Which namespaces see the service.
    pub export_to: ExportTo,
    /// The service's own labels.
    pub labels: Labels,
    /// The labels that pick its workloads (Kubernetes `selector`, ServiceEntry
    /// `workloadSelector`); `None` when endpoints are listed rather than selected.
    pub selector: Option<Labels>,
    /// Where it was declared.
    pub origin: ServiceOrigin,
    /// Whether its endpoints run in the mesh.
    pub location: MeshLocation,
    /// How endpoints are found.
    pub resolution: Resolution,
}

impl Service {
    /// The port numbered `port`, if the service has it.
    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|candidate| candidate.port == port)
    }

    /// The port named `name`, if the service has it.
    pub fn port_named(&self, name: &str) -> Option<&ServicePort> {
        self.ports.iter().find(|candidate| candidate.name == name)
    }
}

/// Where an endpoint is reached.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EndpointAddress {
    /// An IP address (pods, STATIC entries, WorkloadEntries with an IP).
    Ip(IpAddr),
    /// A DNS name the proxy resolves (DNS entries, WorkloadEntries with a name).
    Hostname(String),
}

impl EndpointAddress {
    /// Reads an address: an IP when it parses as one, a hostname otherwise.
    pub fn parse(text: &str) -> Self {
        text.parse().map(EndpointAddress::Ip).unwrap_or_else(|_| EndpointAddress::Hostname(text.to_ascii_lowercase()))
    }
}

/// The kind of workload behind an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WorkloadKind {
    /// A Kubernetes pod.
    Pod,
    /// An Istio `WorkloadEntry` (a VM, say).
    WorkloadEntry,
}

/// Names the workload an endpoint belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkloadRef {
    /// Pod or WorkloadEntry.
    pub kind: WorkloadKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// One instance of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Where to connect.
    pub address: EndpointAddress,
    /// Service port number to the port this endpoint listens on for it.
    pub ports: BTreeMap<u16, u16>,
    /// The workload's labels, which DestinationRule subsets select by.
    pub labels: Labels,
    /// The workload's service account (its mTLS identity); empty when unknown.
    pub service_account: String,
    /// Whether the endpoint may receive traffic now (Kubernetes readiness).
    pub ready: bool,
    /// `region/zone/subzone`, for locality-aware balancing; empty when unknown.
    pub locality: String,
    /// Relative share of traffic among the service's endpoints (1 unless a WorkloadEntry says
    /// otherwise).
    pub weight: u32,
    /// The pod or WorkloadEntry, when known.
    pub workload: Option<WorkloadRef>,
}

impl Endpoint {
    /// The port to connect to on this endpoint for service port `service_port`.
    pub fn port_for(&self, service_port: u16) -> Option<u16> {
        self.ports.get(&service_port).copied()
    }
}

/// A pod or WorkloadEntry, as services select it and as a proxy learns who it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// Which workload.
    pub reference: WorkloadRef,
    /// Its labels.
    pub labels: Labels,
    /// Its IP addresses (or, for a WorkloadEntry with a DNS address, none).
    pub ips: Vec<IpAddr>,
    /// Its address as a WorkloadEntry writes it, when that is a DNS name.
    pub hostname: Option<String>,
    /// Its service account.
    pub service_account: String,
    /// Container port names to numbers (pods), or a WorkloadEntry's `ports`; named
    /// `targetPort`s and ServiceEntry port names resolve through it.
    pub named_ports: BTreeMap<String, u16>,
    /// Whether it is ready to receive traffic.
    pub ready: bool,
    /// `region/zone/subzone`, empty when unknown.
    pub locality: String,
    /// Relative share of traffic (WorkloadEntry `weight`), 1 by default.
    pub weight: u32,
}

/// Every service and endpoint the mesh knows, with the lookups a proxy needs.
///
/// Serialized without its by-address index, which is derived: a registry read back (as a proxy
/// does from the controller's stream) rebuilds it, so [`Registry::service_at`] works there too.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "StoredRegistry")]
pub struct Registry {
    /// The DNS suffix of cluster services (`cluster.local`).
    domain: String,
    services: BTreeMap<String, Arc<Service>>,
    endpoints: BTreeMap<String, Arc<[Endpoint]>>,
    #[serde(skip)]
    by_address: BTreeMap<(IpAddr, u16), String>,
    /// By `namespace/name`.
    workloads: BTreeMap<String, Arc<Workload>>,
}

/// A registry as serialized: everything but the derived index.
#[derive(Deserialize)]
struct StoredRegistry {
    domain: String,
    services: BTreeMap<String, Arc<Service>>,
    endpoints: BTreeMap<String, Arc<[Endpoint]>>,
    #[serde(default)]
    workloads: BTreeMap<String, Arc<Workload>>,
}

impl From<StoredRegistry> for Registry {
    fn from(stored: StoredRegistry) -> Self {
        let mut by_address = BTreeMap::new();
        // Hostname order: when two services claim one address and port (only ServiceEntries
        // can), the same one wins on every proxy.
        for service in stored.services.values() {
            for address in &service.addresses {
                for port in &service.ports {
                    by_address.entry((*address, port.port)).or_insert_with(|| service.hostname.clone());
                }
            }
        }
        Registry {
            domain: stored.domain,
            services: stored.services,
            endpoints: stored.endpoints,
            by_address,
            workloads: stored.workloads,
        }
    }
}

impl Registry {
    /// A builder that merges Kubernetes and Istio objects; `domain` is the cluster's DNS
    /// suffix, `cluster.local` unless configured otherwise.
    pub fn builder(domain: &str) -> RegistryBuilder {
        RegistryBuilder::new(domain)
    }

    /// The cluster's DNS suffix.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The service with this hostname (fully qualified, any case).
    pub fn service(&self, hostname: &str) -> Option<&Arc<Service>> {
        self.services.get(hostname).or_else(|| self.services.get(&hostname.to_ascii_lowercase()))
    }

    /// Every service, by hostname.
    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.values()
    }

    /// The service a connection to `address:port` is for (a ClusterIP or entry address).
    pub fn service_at(&self, address: IpAddr, port: u16) -> Option<&Arc<Service>> {
        self.by_address.get(&(address, port)).and_then(|hostname| self.services.get(hostname))
    }

    /// Every endpoint of the service, ready or not; empty for an unknown service.
    pub fn endpoints(&self, hostname: &str) -> &[Endpoint] {
        self.endpoints.get(hostname).map(|endpoints| &endpoints[..]).unwrap_or_default()
    }

    /// The endpoints of a service that are ready and listen on `port` of it.
    pub fn ready_endpoints(&self, hostname: &str, port: u16) -> impl Iterator<Item = &Endpoint> {
        self.endpoints(hostname).iter().filter(move |endpoint| endpoint.ready && endpoint.ports.contains_key(&port))
    }

    /// The pod or WorkloadEntry called `name` in `namespace`.
    pub fn workload(&self, namespace: &str, name: &str) -> Option<&Arc<Workload>> {
        self.workloads.get(&format!("{namespace}/{name}"))
    }

    /// Every workload.
    pub fn workloads(&self) -> impl Iterator<Item = &Arc<Workload>> {
        self.workloads.values()
    }

    /// The services with an endpoint at one of `ips` (the services a workload serves).
    pub fn services_of(&self, ips: &[IpAddr]) -> impl Iterator<Item = (&Arc<Service>, &Endpoint)> {
        self.services.values().flat_map(move |service| {
            self.endpoints(&service.hostname)
                .iter()
                .filter(|endpoint| matches!(endpoint.address, EndpointAddress::Ip(ip) if ips.contains(&ip)))
                .map(move |endpoint| (service, endpoint))
        })
    }
}
