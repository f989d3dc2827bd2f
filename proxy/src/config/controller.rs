//! The controller from the proxy's end: how it is dialled, and what it has sent: every
//! resource by type and key, updated one `ConfigUpdate` at a time.
//!
//! An `https://` controller address (15012) is dialled over TLS trusting only the mesh root,
//! read from `$MESH_CA_ROOT_CERT` (by default `/var/run/secrets/istio/root-cert.pem`, where the
//! injector mounts the ConfigMap `istio-ca-root-cert`); the controller's certificate must name
//! the address's host (`mesh-controller.istio-system.svc`). `http://` (15010) stays plaintext.
//!
//! An update is applied to a copy, so one that cannot be used leaves the held resources (and
//! the config in force) exactly as they were; the stream then NACKs it naming each resource at
//! fault. Istio kinds arrive as the Kubernetes API serves them; `mesh/Service` and
//! `mesh/Endpoints` as the `common` registry model, keyed by hostname.

use super::Inputs;
use common::registry::{Endpoint, Registry, Service};
use common::resource::Resource;
use proto::config::{ConfigUpdate, ResourceKey};
use proto::{ENDPOINTS_TYPE, SERVICE_TYPE};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// The environment variable naming the mesh root file, for `https://` controller addresses.
pub const ROOT_CERT_ENV: &str = "MESH_CA_ROOT_CERT";
/// Where the injector mounts the mesh root (`root-cert.pem` of ConfigMap `istio-ca-root-cert`).
pub const DEFAULT_ROOT_CERT: &str = "/var/run/secrets/istio/root-cert.pem";

/// Why the controller could not be dialled.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot read the mesh root {} (set {ROOT_CERT_ENV}): {source}", .path.display())]
    Root { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

/// The mesh root's path: `$MESH_CA_ROOT_CERT`, else [`DEFAULT_ROOT_CERT`].
pub fn root_cert_path() -> PathBuf {
    std::env::var_os(ROOT_CERT_ENV).map_or_else(|| PathBuf::from(DEFAULT_ROOT_CERT), PathBuf::from)
}

/// Connects `endpoint`: as it is for `http://`; for `https://`, over TLS trusting only the root
/// in `root_cert`, read on every connect so a reconnect picks up a rotated root.
pub async fn connect(endpoint: tonic::transport::Endpoint, root_cert: &Path) -> Result<Channel, DialError> {
    if endpoint.uri().scheme_str() != Some("https") {
        return Ok(endpoint.connect().await?);
    }
    let root = std::fs::read(root_cert).map_err(|source| DialError::Root { path: root_cert.to_path_buf(), source })?;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(root));
    Ok(endpoint.tls_config(tls)?.connect().await?)
}

/// A resource's identity on the stream: type, namespace, name.
pub type Key = (String, String, String);

fn key_of(key: &ResourceKey) -> Key {
    (key.r#type.clone(), key.namespace.clone(), key.name.clone())
}

/// One resource that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    pub key: Key,
    pub message: String,
}

/// Why an update was refused.
#[derive(Debug, Clone, Default, thiserror::Error)]
#[error("{} resource(s) rejected: {}", .errors.len(), describe(.errors))]
pub struct UpdateError {
    pub errors: Vec<KeyError>,
}

fn describe(errors: &[KeyError]) -> String {
    let each = errors.iter().map(|e| format!("{} {}/{}: {}", e.key.0, e.key.1, e.key.2, e.message));
    each.collect::<Vec<_>>().join("; ")
}

/// The resources as of the last applied update.
#[derive(Debug, Clone, Default)]
pub struct Held {
    istio: BTreeMap<Key, Resource>,
    services: BTreeMap<String, Service>,
    endpoints: BTreeMap<String, Vec<Endpoint>>,
    /// Types this proxy does not model (a newer controller), kept by key for `/config_dump`.
    skipped: BTreeMap<Key, ()>,
}

impl Held {
    /// The held resources after `update`, or every resource of it that cannot be read.
    pub fn apply(&self, update: &ConfigUpdate) -> Result<Held, UpdateError> {
        let mut next = if update.full { Held::default() } else { self.clone() };
        for removal in &update.removals {
            next.remove(&key_of(removal));
        }
        let mut errors = Vec::new();
        for upsert in &update.upserts {
            let Some(key) = upsert.key.as_ref().map(key_of) else {
                errors.push(KeyError { key: Default::default(), message: "resource without a key".into() });
                continue;
            };
            if let Err(message) = next.upsert(&key, &upsert.json) {
                errors.push(KeyError { key, message });
            }
        }
        match errors.is_empty() {
            true => Ok(next),
            false => Err(UpdateError { errors }),
        }
    }

    fn remove(&mut self, key: &Key) {
        match key.0.as_str() {
            SERVICE_TYPE => drop(self.services.remove(&key.2)),
            ENDPOINTS_TYPE => drop(self.endpoints.remove(&key.2)),
            _ => drop(self.istio.remove(key)),
        }
        self.skipped.remove(key);
    }

    fn upsert(&mut self, key: &Key, json: &[u8]) -> Result<(), String> {
        match key.0.as_str() {
            SERVICE_TYPE => {
                let service: Service = serde_json::from_slice(json).map_err(|e| e.to_string())?;
                self.services.insert(key.2.clone(), service);
            }
            ENDPOINTS_TYPE => {
                let endpoints: Vec<Endpoint> = serde_json::from_slice(json).map_err(|e| e.to_string())?;
                self.endpoints.insert(key.2.clone(), endpoints);
            }
            _ => {
                let document: serde_json::Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
                match Resource::from_document(document) {
                    Ok(Some(resource)) => drop(self.istio.insert(key.clone(), resource)),
                    Ok(None) => {
                        tracing::warn!(r#type = %key.0, namespace = %key.1, name = %key.2, "resource type not modelled; skipped");
                        self.skipped.insert(key.clone(), ());
                    }
                    Err(error) => return Err(format!("{}: {}", error.field, error.message)),
                }
            }
        }
        Ok(())
    }

    /// The held resources as one config to compile; `domain` is the cluster's DNS suffix.
    pub fn inputs(&self, domain: &str) -> Result<Inputs, serde_json::Error> {
        // The registry's fields are private; it is rebuilt from its serialized form, which is
        // what the controller derived the entries from.
        let registry = serde_json::json!({
            "domain": domain,
            "services": self.services,
            "endpoints": self.endpoints.iter().filter(|(h, _)| self.services.contains_key(*h)).collect::<BTreeMap<_, _>>(),
            "workloads": {},
        });
        let registry: Registry = serde_json::from_value(registry)?;
        Ok(Inputs {
            resources: self.istio.values().cloned().collect(),
            registry,
            skipped: self.skipped.keys().map(|(t, ns, name)| format!("{t} {ns}/{name}")).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::config::Resource as WireResource;

    fn upsert(r#type: &str, namespace: &str, name: &str, json: serde_json::Value) -> WireResource {
        let key = ResourceKey { r#type: r#type.into(), namespace: namespace.into(), name: name.into() };
        WireResource { key: Some(key), resource_version: String::new(), json: json.to_string().into_bytes() }
    }

    fn service(host: &str) -> serde_json::Value {
        serde_json::json!({"hostname": host, "namespace": "a", "name": "reviews", "addresses": ["10.0.0.1"],
            "ports": [{"name": "http", "port": 9080, "target_port": 9080, "protocol": "HTTP"}],
            "export_to": [], "labels": {}, "selector": null, "origin": {"kind": "kubernetes"},
            "location": "MESH_INTERNAL", "resolution": "STATIC"})
    }

    #[test]
    fn a_bad_resource_refuses_the_whole_update_and_names_itself() {
        let host = "reviews.a.svc.cluster.local";
        let full = ConfigUpdate {
            version: "1".into(),
            full: true,
            upserts: vec![upsert(SERVICE_TYPE, "", host, service(host))],
            ..Default::default()
        };
        let held = Held::default().apply(&full).unwrap();
        assert!(held.inputs("cluster.local").unwrap().registry.service(host).is_some());
        let bad = ConfigUpdate {
            version: "2".into(),
            base_version: "1".into(),
            upserts: vec![upsert(
                "networking.istio.io/VirtualService",
                "a",
                "reviews",
                serde_json::json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                    "metadata": {"name": "reviews", "namespace": "a"}, "spec": {"hosts": 5}}),
            )],
            removals: vec![ResourceKey { r#type: SERVICE_TYPE.into(), namespace: String::new(), name: host.into() }],
            ..Default::default()
        };
        let error = held.apply(&bad).unwrap_err();
        assert_eq!(error.errors.len(), 1);
        assert!(error.to_string().contains("VirtualService a/reviews: spec.hosts"), "{error}");
        assert!(held.inputs("cluster.local").unwrap().registry.service(host).is_some(), "the held copy is untouched");
    }
}
