//! The root, published: a ConfigMap `istio-ca-root-cert` (key `root-cert.pem`) in every
//! namespace, Istio's names, so pods mount it and tooling that reads it carries over.
//!
//! Every replica writes, with server-side apply under one field manager: they all hold the same
//! root (from the same Secret), so their writes are identical and an unchanged apply is a no-op
//! on the API server. That needs no leader (publishing works with `--no-status`, and a new
//! namespace is served without waiting for a Lease hand-over) at the cost of one request per
//! replica per namespace event. Two watches drive it, neither with a cache: Namespaces (a new
//! one gets the ConfigMap) and ConfigMaps of that one name (one deleted or edited is put back).

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

/// The ConfigMap's name in every namespace.
pub const CONFIG_MAP: &str = "istio-ca-root-cert";
/// Its key holding the root certificate.
pub const ROOT_KEY: &str = "root-cert.pem";
/// The server-side apply field manager.
const MANAGER: &str = "mesh-controller-ca";

/// The ConfigMap for `root_pem`.
pub fn config_map(namespace: &str, root_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIG_MAP.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([("istio.io/config".to_string(), "true".to_string())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(ROOT_KEY.to_string(), root_pem.to_string())])),
        ..ConfigMap::default()
    }
}

/// Keeps the ConfigMap in every namespace up to date with `root_pem`, forever.
pub async fn publish_root(client: Client, root_pem: String) {
    let namespaces = watcher(Api::<Namespace>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .filter_map(|namespace| async move {
            match namespace {
                Ok(namespace) if namespace.metadata.deletion_timestamp.is_none() => Some(namespace.name_any()),
                Ok(_) => None,
                Err(error) => {
                    tracing::warn!(%error, "namespace watch failed; retrying with backoff");
                    None
                }
            }
        });
    let selector = watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP}"));
    let stale = watcher(Api::<ConfigMap>::all(client.clone()), selector).default_backoff().filter_map(|event| {
        let root_pem = root_pem.clone();
        async move {
            match event {
                // Deleted: put it back, unless its namespace is going (the apply then fails quietly).
                Ok(watcher::Event::Delete(map)) => map.namespace(),
                Ok(watcher::Event::Apply(map) | watcher::Event::InitApply(map)) => {
                    let current = map.data.as_ref().and_then(|data| data.get(ROOT_KEY));
                    (current != Some(&root_pem)).then(|| map.namespace()).flatten()
                }
                Ok(_) => None,
                Err(error) => {
                    tracing::warn!(%error, "{CONFIG_MAP} watch failed; retrying with backoff");
                    None
                }
            }
        }
    });
    let mut todo = std::pin::pin!(futures::stream::select(namespaces, stale));
    while let Some(namespace) = todo.next().await {
        apply(&client, &namespace, &root_pem).await;
    }
}

async fn apply(client: &Client, namespace: &str, root_pem: &str) {
    let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    let patch = Patch::Apply(config_map(namespace, root_pem));
    match api.patch(CONFIG_MAP, &PatchParams::apply(MANAGER).force(), &patch).await {
        Ok(_) => tracing::debug!(%namespace, "root certificate published"),
        // A namespace being deleted refuses new objects; nothing to publish there.
        Err(kube::Error::Api(status)) if status.code == 403 && status.message.contains("being terminated") => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => tracing::warn!(%namespace, %error, "cannot publish the root certificate {CONFIG_MAP}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_config_map_has_istios_names() {
        let map = super::config_map("default", "PEM");
        assert_eq!(map.metadata.name.as_deref(), Some("istio-ca-root-cert"));
        assert_eq!(map.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(map.data.unwrap()["root-cert.pem"], "PEM");
        let json = serde_json::to_value(super::config_map("a", "b")).unwrap();
        assert_eq!(
            (json["apiVersion"].as_str(), json["kind"].as_str()),
            (Some("v1"), Some("ConfigMap")),
            "apply needs both"
        );
    }
}
