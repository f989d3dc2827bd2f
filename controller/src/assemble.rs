//! From the reflectors' stores to a world: parse and validate the Istio objects, build the
//! registry, and report what is invalid once per object version.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use common::hosts;
use common::registry::Registry;
use common::resource::Resource;
use common::validate::ValidationContext;
use kube::api::{DynamicObject, TypeMeta};

use crate::config::world::{RegistryEntries, World};
use crate::metrics::Metrics;
use crate::watch::{EndpointStore, Stores};

/// Builds worlds from the stores and remembers which problems were already logged.
pub struct Assembler {
    domain: String,
    /// `kind/namespace/name@resourceVersion` of objects already reported as invalid.
    reported: HashSet<String>,
    /// The registry's entries as of the last rebuild that changed them, with the Istio
    /// objects they were built from.
    registry: Option<(Arc<RegistryEntries>, Vec<Resource>)>,
}

/// The kinds a registry is built from; a batch of changes to other kinds reuses it.
const REGISTRY_KINDS: &[&str] = &["Service", "Endpoints", "EndpointSlice", "Pod", "ServiceEntry", "WorkloadEntry"];

impl Assembler {
    /// An assembler for a cluster with DNS suffix `domain`.
    pub fn new(domain: &str) -> Self {
        Self { domain: domain.to_string(), reported: HashSet::new(), registry: None }
    }

    /// The world as the stores have it now. `changed` names the kinds changed since the last
    /// call (`None`: unknown); when none of them feeds the registry, the registry's entries of
    /// the last call are reused, so a VirtualService change costs no registry rebuild.
    pub fn world(&mut self, stores: &Stores, metrics: &Metrics, changed: Option<&BTreeSet<&'static str>>) -> World {
        let resources = self.valid_resources(stores, metrics);
        let registry_inputs: Vec<Resource> = resources
            .iter()
            .filter(|resource| matches!(resource, Resource::ServiceEntry(_) | Resource::WorkloadEntry(_)))
            .cloned()
            .collect();
        let reusable = match (&self.registry, changed) {
            (Some((entries, inputs)), Some(kinds))
                if *inputs == registry_inputs && !kinds.iter().any(|kind| REGISTRY_KINDS.contains(kind)) =>
            {
                Some(entries.clone())
            }
            _ => None,
        };
        let entries = reusable.unwrap_or_else(|| {
            let entries = Arc::new(RegistryEntries::new(&self.registry(stores, &registry_inputs)));
            self.registry = Some((entries.clone(), registry_inputs));
            entries
        });
        World::from_parts(&resources, &entries)
    }

    /// Every Istio object that parses and passes validation; the others are logged (once per
    /// version) and left out, so one bad object never changes anyone's config.
    fn valid_resources(&mut self, stores: &Stores, metrics: &Metrics) -> Vec<Resource> {
        let mut parsed = Vec::new();
        let mut still_reported = HashSet::new();
        for istio in &stores.istio {
            let mut invalid = 0;
            for object in istio.store.state() {
                let mut object = DynamicObject::clone(&object);
                // List items may come without their type; the store knows it.
                object.types =
                    Some(TypeMeta { api_version: istio.api.api_version.clone(), kind: istio.api.kind.clone() });
                let id = object_id(&object, istio.kind.name());
                let document = serde_json::to_value(&object).expect("objects always serialize");
                match Resource::from_document(document) {
                    Ok(Some(resource)) => parsed.push((id, resource)),
                    Ok(None) => {}
                    Err(error) => {
                        invalid += 1;
                        if !self.reported.contains(&id) {
                            tracing::warn!(object = %error.object, field = %error.field, error = %error.message,
                                "resource cannot be read; not sent to proxies");
                        }
                        still_reported.insert(id);
                    }
                }
            }
            metrics.invalid_resources.with_label_values(&[istio.kind.name()]).set(invalid);
        }
        let context = self.context(parsed.iter().map(|(_, resource)| resource));
        let mut valid = Vec::new();
        for (id, resource) in parsed {
            let diagnostics = resource.validate(&context);
            if diagnostics.has_errors() {
                metrics.invalid_resources.with_label_values(&[resource.kind().name()]).inc();
                if !self.reported.contains(&id) {
                    tracing::warn!(object = %resource.object_ref(), problems = %diagnostics,
                        "resource fails validation; not sent to proxies");
                }
                still_reported.insert(id);
            } else {
                valid.push(resource);
            }
        }
        // Forget objects that were fixed or deleted, so that breaking them again is logged.
        self.reported = still_reported;
        valid
    }

    /// What validation may know about other resources: the subsets DestinationRules define.
    fn context<'r>(&self, resources: impl Iterator<Item = &'r Resource>) -> ValidationContext {
        let mut subsets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for resource in resources {
            if let Resource::DestinationRule(rule) = resource {
                let host = hosts::fully_qualify(&rule.spec.host, resource.namespace(), &self.domain);
                subsets.entry(host).or_default().extend(rule.spec.subsets.iter().map(|subset| subset.name.clone()));
            }
        }
        ValidationContext { subsets_by_host: Some(subsets), domain: self.domain.clone(), namespace: String::new() }
    }

    fn registry(&self, stores: &Stores, resources: &[Resource]) -> Registry {
        let mut builder = Registry::builder(&self.domain);
        for service in stores.services.state() {
            builder = builder.service((*service).clone());
        }
        match &stores.endpoints {
            EndpointStore::Slices(store) => {
                for slice in store.state() {
                    builder = builder.endpoint_slice((*slice).clone());
                }
            }
            EndpointStore::Endpoints(store) => {
                for endpoints in store.state() {
                    builder = builder.endpoints((*endpoints).clone());
                }
            }
        }
        for pod in stores.pods.state() {
            builder = builder.pod((*pod).clone());
        }
        builder.istio_resources(resources).build()
    }
}

fn object_id(object: &DynamicObject, kind: &str) -> String {
    let meta = &object.metadata;
    format!(
        "{kind}/{}/{}@{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
        meta.resource_version.as_deref().unwrap_or_default()
    )
}

/// Validation errors and warnings of one resource against the current resources, for
/// admission: the same context the controller validates with.
pub fn validation_context(domain: &str, resources: &[Resource]) -> ValidationContext {
    Assembler::new(domain).context(resources.iter())
}
