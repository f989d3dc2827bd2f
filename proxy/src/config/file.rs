//! Reading `--config-file`: a multi-document YAML of the objects the controller watches
//! (Services, Endpoints, EndpointSlices, Pods, Istio resources), as `kubectl get -o yaml`
//! prints them, so a cluster's state can be replayed offline.

use common::registry::{Registry, RegistryBuilder};
use common::resource::Resource;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::de::DeserializeOwned;

/// What one file holds, read but not yet compiled.
#[derive(Debug, Default)]
pub struct Objects {
    pub services: Vec<Service>,
    pub endpoints: Vec<Endpoints>,
    pub slices: Vec<EndpointSlice>,
    pub pods: Vec<Pod>,
    /// Istio resources (ServiceEntries and WorkloadEntries also feed the registry).
    pub resources: Vec<Resource>,
    /// Kinds the proxy does not read (Deployments, Namespaces...), by `Kind namespace/name`.
    pub skipped: Vec<String>,
}

impl Objects {
    /// The registry these objects describe.
    pub fn registry(&self, domain: &str) -> Registry {
        let mut builder = RegistryBuilder::new(domain);
        for s in &self.services {
            builder = builder.service(s.clone());
        }
        for e in &self.endpoints {
            builder = builder.endpoints(e.clone());
        }
        for s in &self.slices {
            builder = builder.endpoint_slice(s.clone());
        }
        for p in &self.pods {
            builder = builder.pod(p.clone());
        }
        builder.istio_resources(&self.resources).build()
    }
}

/// Every document that could not be read, each naming its object and field.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct ParseErrors(pub Vec<String>);

/// Reads every document of `text`. One bad document makes the whole file fail: a replayed
/// config is all-or-nothing, so the proxy never runs half of what the file says.
pub fn parse(text: &str) -> Result<Objects, ParseErrors> {
    let mut objects = Objects::default();
    let mut errors = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        match serde::Deserialize::deserialize(document) {
            Ok(serde_json::Value::Null) => {}
            Ok(value) => add(&mut objects, value, &mut errors),
            Err(error) => errors.push(format!("document #{}: not valid YAML: {error}", index + 1)),
        }
    }
    if errors.is_empty() { Ok(objects) } else { Err(ParseErrors(errors)) }
}

fn add(objects: &mut Objects, value: serde_json::Value, errors: &mut Vec<String>) {
    let text = |field: &str| value.pointer(field).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let (kind, api_version) = (text("/kind"), text("/apiVersion"));
    let name = format!("{kind} {}/{}", text("/metadata/namespace"), text("/metadata/name"));
    match (kind.as_str(), api_version.as_str()) {
        ("List", _) => {
            let items = value.get("items").and_then(|v| v.as_array()).cloned().unwrap_or_default();
            items.into_iter().for_each(|item| add(objects, item, errors));
        }
        ("Service", "v1") => push(&mut objects.services, value, &name, errors),
        ("Endpoints", "v1") => push(&mut objects.endpoints, value, &name, errors),
        ("Pod", "v1") => push(&mut objects.pods, value, &name, errors),
        ("EndpointSlice", "discovery.k8s.io/v1" | "discovery.k8s.io/v1beta1") => {
            push(&mut objects.slices, value, &name, errors)
        }
        _ => match Resource::from_document(value) {
            Ok(Some(resource)) => objects.resources.push(resource),
            Ok(None) => objects.skipped.push(name),
            Err(error) => errors.push(error.to_string()),
        },
    }
}

fn push<T: DeserializeOwned>(list: &mut Vec<T>, value: serde_json::Value, name: &str, errors: &mut Vec<String>) {
    match serde_path_to_error::deserialize(value) {
        Ok(object) => list.push(object),
        Err(error) => errors.push(format!("{name}: {}: {}", error.path(), error.inner())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBJECTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.96.0.20
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: default, labels: {app: reviews, version: v1}}
status: {podIP: 10.1.0.5}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1, namespace: default}
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
"#;

    #[test]
    fn kubernetes_and_istio_objects_are_read_and_other_kinds_skipped() {
        let objects = parse(OBJECTS).unwrap();
        assert_eq!((objects.services.len(), objects.pods.len(), objects.resources.len()), (1, 1, 1));
        assert_eq!(objects.skipped, ["Deployment default/reviews-v1"]);
        let registry = objects.registry("cluster.local");
        let service = registry.service("reviews.default.svc.cluster.local").unwrap();
        assert_eq!(service.addresses, ["10.96.0.20".parse::<std::net::IpAddr>().unwrap()]);
    }

    #[test]
    fn a_bad_document_names_the_object_and_field() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {ports: [{port: x}]}\n";
        let error = parse(text).unwrap_err().to_string();
        assert!(error.contains("Service /bad") && error.contains("spec.ports[0].port"), "{error}");
        let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\nspec: {hots: []}\n";
        let error = parse(text).unwrap_err().to_string();
        assert!(error.contains("VirtualService") && error.contains("hots"), "{error}");
    }
}
