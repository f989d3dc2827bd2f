//! The world: every resource the controller can send, as it goes on the wire, with who may see it.
//!
//! A world is built once per (debounced) change from the Istio resources and the registry, and
//! shared by every stream behind an `Arc`. Entries are themselves `Arc`s, so two successive
//! worlds share whatever did not change and the diff between them is cheap to hold.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::api::networking::sidecar::Sidecar;
use common::api::networking::virtual_service::MESH_GATEWAY;
use common::hosts;
use common::registry::{EndpointAddress, ExportTo, Registry, Workload};
use common::resource::{Kind, Resource};

/// What kind of thing a key names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyType {
    /// An Istio resource.
    Istio(Kind),
    /// A registry service (`mesh/Service`), named by hostname.
    Service,
    /// A registry service's endpoints (`mesh/Endpoints`), named by hostname.
    Endpoints,
}

/// Names one entry of the world, as `ResourceKey` names it on the stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// What kind of thing.
    pub kind: KeyType,
    /// The namespace of an Istio resource; empty for registry entries.
    pub namespace: String,
    /// The resource's name, or the service's hostname.
    pub name: String,
}

impl Key {
    /// The key of an Istio resource.
    pub fn istio(kind: Kind, namespace: &str, name: &str) -> Self {
        Self { kind: KeyType::Istio(kind), namespace: namespace.to_string(), name: name.to_string() }
    }

    /// The key of a registry service.
    pub fn service(hostname: &str) -> Self {
        Self { kind: KeyType::Service, namespace: String::new(), name: hostname.to_string() }
    }

    /// The key of a registry service's endpoints.
    pub fn endpoints(hostname: &str) -> Self {
        Self { kind: KeyType::Endpoints, namespace: String::new(), name: hostname.to_string() }
    }

    /// The `type` field on the stream.
    pub fn type_name(&self) -> String {
        match self.kind {
            KeyType::Istio(kind) => proto::istio_type(kind.group(), kind.name()),
            KeyType::Service => proto::SERVICE_TYPE.to_string(),
            KeyType::Endpoints => proto::ENDPOINTS_TYPE.to_string(),
        }
    }

    /// The key as the stream carries it.
    pub fn to_proto(&self) -> proto::config::ResourceKey {
        proto::config::ResourceKey {
            r#type: self.type_name(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.type_name(), self.name)
        } else {
            write!(f, "{} {}/{}", self.type_name(), self.namespace, self.name)
        }
    }
}

/// Which proxies may see an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Audience {
    /// Shared across namespaces by `exportTo` and narrowed by a Sidecar's egress hosts:
    /// VirtualServices, DestinationRules, ServiceEntries and registry services.
    Exported {
        /// The namespace that declared it.
        namespace: String,
        /// Istio's `exportTo` (empty: everywhere).
        export_to: ExportTo,
        /// Fully qualified hosts a Sidecar's egress is matched against; at least one must be
        /// admitted.
        hosts: Vec<String>,
        /// Whether sidecars see it (a VirtualService bound only to gateways is not for them).
        sidecars: bool,
        /// Workload IPs that serve it: a proxy at one of them always sees it (its inbound side
        /// needs the service even when its Sidecar does not list it as egress).
        served_by: Vec<IpAddr>,
    },
    /// Workload policy of one namespace: proxies of that namespace, and every proxy when it
    /// is the root namespace (Sidecar, PeerAuthentication, AuthorizationPolicy,
    /// RequestAuthentication).
    Local {
        /// The resource's namespace.
        namespace: String,
        /// Only sidecars read it (the Sidecar kind).
        sidecars_only: bool,
    },
    /// Gateway proxies only, from any namespace (Gateways select their proxies by labels).
    Gateways,
}

/// One entry: the bytes sent for it and who may see it.
///
/// Two entries are equal when their bytes and audience are: the resourceVersion alone
/// changing (a status write, say) is not a change worth sending.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The JSON the proxy receives.
    pub json: Bytes,
    /// Kubernetes' resourceVersion for Istio resources; empty for registry entries.
    pub resource_version: String,
    /// Who may see it.
    pub audience: Audience,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json && self.audience == other.audience
    }
}

impl Eq for Entry {}

impl Entry {
    /// The entry as the stream carries it.
    pub fn to_proto(&self, key: &Key) -> proto::config::Resource {
        proto::config::Resource {
            key: Some(key.to_proto()),
            resource_version: self.resource_version.clone(),
            json: self.json.to_vec(),
        }
    }
}

/// Everything the controller can send, at one moment.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// The cluster's DNS suffix, which short hosts are qualified with.
    pub domain: String,
    /// Every entry.
    pub entries: BTreeMap<Key, Arc<Entry>>,
    /// The Sidecar resources, oldest first: they decide each proxy's egress.
    pub sidecars: Vec<Arc<Sidecar>>,
    /// Pods and WorkloadEntries by `namespace/name`, to complete what a proxy says about
    /// itself.
    pub workloads: BTreeMap<String, Arc<Workload>>,
}

impl World {
    /// Builds the world from valid Istio resources and the registry made of them and the
    /// cluster's objects. WorkloadEntries are not sent: the registry's endpoints carry them.
    pub fn build(resources: &[Resource], registry: &Registry) -> Self {
        Self::from_parts(resources, &RegistryEntries::new(registry))
    }

    /// Builds the world from valid Istio resources and the entries of a registry, which the
    /// caller may keep across rebuilds in which no registry input changed.
    pub fn from_parts(resources: &[Resource], registry: &RegistryEntries) -> Self {
        let domain = registry.domain.clone();
        let mut entries = registry.entries.clone();
        let mut sidecars: Vec<&Sidecar> = Vec::new();
        for resource in resources {
            if let Resource::Sidecar(sidecar) = resource {
                sidecars.push(sidecar);
            }
            let Some(audience) = resource_audience(resource, &domain) else { continue };
            let key = Key::istio(resource.kind(), resource.namespace(), resource.name());
            let entry = Entry {
                json: Bytes::from(wire_json(resource).to_string()),
                resource_version: resource.metadata().resource_version.clone().unwrap_or_default(),
                audience,
            };
            entries.insert(key, Arc::new(entry));
        }
        sidecars.sort_by_key(|sidecar| common::compile::age_key(&sidecar.metadata));
        let sidecars = sidecars.into_iter().cloned().map(Arc::new).collect();
        World { domain, entries, sidecars, workloads: registry.workloads.clone() }
    }

    /// Entries that differ between `self` (older) and `newer`, by key.
    pub fn changes_to(&self, newer: &World) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut old = self.entries.iter().peekable();
        let mut new = newer.entries.iter().peekable();
        loop {
            let change = match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some((key, entry)), None) => {
                    let change = Change { key: (*key).clone(), old: Some((*entry).clone()), new: None };
                    old.next();
                    change
                }
                (None, Some((key, entry))) => {
                    let change = Change { key: (*key).clone(), old: None, new: Some((*entry).clone()) };
                    new.next();
                    change
                }
                (Some((old_key, old_entry)), Some((new_key, new_entry))) => match old_key.cmp(new_key) {
                    std::cmp::Ordering::Less => {
                        let change = Change { key: (*old_key).clone(), old: Some((*old_entry).clone()), new: None };
                        old.next();
                        change
                    }
                    std::cmp::Ordering::Greater => {
                        let change = Change { key: (*new_key).clone(), old: None, new: Some((*new_entry).clone()) };
                        new.next();
                        change
                    }
                    std::cmp::Ordering::Equal => {
                        let same = Arc::ptr_eq(old_entry, new_entry) || old_entry == new_entry;
                        let change = Change {
                            key: (*old_key).clone(),
                            old: Some((*old_entry).clone()),
                            new: Some((*new_entry).clone()),
                        };
                        old.next();
                        new.next();
                        if same {
                            continue;
                        }
                        change
                    }
                },
            };
            changes.push(change);
        }
        changes
    }

    /// Reuses `older`'s `Arc` for every entry that did not change, so that successive worlds
    /// share memory and pointer equality short-cuts the next diff.
    pub fn share_unchanged(&mut self, older: &World) {
        for (key, entry) in self.entries.iter_mut() {
            if let Some(previous) = older.entries.get(key)
                && previous == entry
            {
                *entry = previous.clone();
            }
        }
    }
}

/// The registry's services and endpoints as entries, and its workloads.
#[derive(Clone, Debug, Default)]
pub struct RegistryEntries {
    domain: String,
    entries: BTreeMap<Key, Arc<Entry>>,
    workloads: BTreeMap<String, Arc<Workload>>,
}

impl RegistryEntries {
    /// Serializes every service and its endpoints.
    pub fn new(registry: &Registry) -> Self {
        let mut entries = BTreeMap::new();
        for service in registry.services() {
            let endpoints = registry.endpoints(&service.hostname);
            let served_by: Vec<IpAddr> = endpoints
                .iter()
                .filter_map(|endpoint| match endpoint.address {
                    EndpointAddress::Ip(ip) => Some(ip),
                    EndpointAddress::Hostname(_) => None,
                })
                .collect();
            let audience = Audience::Exported {
                namespace: service.namespace.clone(),
                export_to: service.export_to.clone(),
                hosts: vec![service.hostname.clone()],
                sidecars: true,
                served_by,
            };
            let service_json = serde_json::to_vec(&**service).expect("registry services always serialize");
            let endpoints_json = serde_json::to_vec(endpoints).expect("registry endpoints always serialize");
            let entry = |json: Vec<u8>| {
                Arc::new(Entry { json: Bytes::from(json), resource_version: String::new(), audience: audience.clone() })
            };
            entries.insert(Key::service(&service.hostname), entry(service_json));
            entries.insert(Key::endpoints(&service.hostname), entry(endpoints_json));
        }
        let workloads = registry
            .workloads()
            .map(|workload| (format!("{}/{}", workload.reference.namespace, workload.reference.name), workload.clone()))
            .collect();
        RegistryEntries { domain: registry.domain().to_string(), entries, workloads }
    }
}

/// One entry that was added, changed (in content or audience) or removed.
#[derive(Clone, Debug)]
pub struct Change {
    /// Which entry.
    pub key: Key,
    /// What it was; `None` when it is new.
    pub old: Option<Arc<Entry>>,
    /// What it is; `None` when it was removed.
    pub new: Option<Arc<Entry>>,
}

/// The resource as sent: without its status (the controller's own output) and without the
/// metadata that changes on every write, so that a status write is no change to the proxies.
fn wire_json(resource: &Resource) -> serde_json::Value {
    let mut json = resource.to_json();
    if let Some(object) = json.as_object_mut() {
        object.remove("status");
        if let Some(meta) = object.get_mut("metadata").and_then(|meta| meta.as_object_mut()) {
            meta.remove("resourceVersion");
            meta.remove("managedFields");
        }
    }
    json
}

/// Who may see an Istio resource; `None` for kinds that are not sent.
fn resource_audience(resource: &Resource, domain: &str) -> Option<Audience> {
    let namespace = resource.namespace().to_string();
    let qualify = |hosts: &[String]| -> Vec<String> {
        hosts.iter().map(|host| hosts::fully_qualify(host, &namespace, domain)).collect()
    };
    let exported = |export_to: &[String], hosts: Vec<String>, sidecars: bool| Audience::Exported {
        namespace: namespace.clone(),
        export_to: ExportTo(export_to.to_vec()),
        hosts,
        sidecars,
        served_by: Vec::new(),
    };
    let local = |sidecars_only: bool| Audience::Local { namespace: namespace.clone(), sidecars_only };
    Some(match resource {
        Resource::VirtualService(vs) => {
            exported(&vs.spec.export_to, qualify(&vs.spec.hosts), vs.spec.effective_gateways().contains(&MESH_GATEWAY))
        }
        Resource::DestinationRule(dr) => {
            exported(&dr.spec.export_to, qualify(std::slice::from_ref(&dr.spec.host)), true)
        }
        Resource::ServiceEntry(entry) => exported(&entry.spec.export_to, qualify(&entry.spec.hosts), true),
        Resource::Gateway(_) => Audience::Gateways,
        Resource::Sidecar(_) => local(true),
        Resource::PeerAuthentication(_) | Resource::AuthorizationPolicy(_) | Resource::RequestAuthentication(_) => {
            local(false)
        }
        Resource::WorkloadEntry(_) => return None,
    })
}
