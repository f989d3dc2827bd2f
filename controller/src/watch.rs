//! Reflectors on everything the controller reads from the Kubernetes API.
//!
//! Each kind gets a kube-runtime reflector (list, then watch; re-list with backoff when the
//! API server goes away), whose store the config is rebuilt from. Nothing polls: every event
//! pokes a [`Changes`] notifier, which the debouncer turns into one rebuild per burst.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::resource::Kind;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

/// Tells the debouncer that something changed, since when, and of which kinds.
#[derive(Clone, Default)]
pub struct Changes {
    batch: Arc<Mutex<Option<Batch>>>,
    notify: Arc<Notify>,
}

/// The changes since the last rebuild.
#[derive(Clone, Debug)]
pub struct Batch {
    /// When the first one was seen.
    pub first_seen: Instant,
    /// The kinds that changed (`Service`, `VirtualService`, ...).
    pub kinds: BTreeSet<&'static str>,
}

impl Changes {
    /// Records a change of `kind` now.
    pub fn poke(&self, kind: &'static str) {
        let mut batch = self.batch.lock().expect("changes lock");
        batch.get_or_insert_with(|| Batch { first_seen: Instant::now(), kinds: BTreeSet::new() }).kinds.insert(kind);
        self.notify.notify_one();
    }

    /// Waits for a change and returns when the first one of the batch was seen.
    pub async fn next(&self) -> Instant {
        loop {
            if let Some(batch) = &*self.batch.lock().expect("changes lock") {
                return batch.first_seen;
            }
            self.notify.notified().await;
        }
    }

    /// Starts a new batch: changes from now on belong to the next rebuild.
    pub fn take(&self) -> Option<Batch> {
        self.batch.lock().expect("changes lock").take()
    }
}

/// An Istio kind as this API server serves it.
pub struct IstioStore {
    /// Which kind.
    pub kind: Kind,
    /// The group/version/plural watched.
    pub api: ApiResource,
    /// Its objects.
    pub store: Store<DynamicObject>,
}

/// Where a Service's endpoints are read from.
pub enum EndpointStore {
    /// `discovery.k8s.io/v1` EndpointSlices (Kubernetes 1.21 and later).
    Slices(Store<EndpointSlice>),
    /// Core `Endpoints`, on clusters without EndpointSlice v1 (1.20 serves only v1beta1,
    /// whose endpoints the Endpoints objects carry just the same).
    Endpoints(Store<Endpoints>),
}

/// Every store.
pub struct Stores {
    /// The served Istio kinds.
    pub istio: Vec<IstioStore>,
    /// Services.
    pub services: Store<Service>,
    /// EndpointSlices or Endpoints.
    pub endpoints: EndpointStore,
    /// Pods.
    pub pods: Store<Pod>,
    /// Namespaces.
    pub namespaces: Store<Namespace>,
}

impl Stores {
    /// Starts a reflector for every kind; `changes` is poked on every event.
    pub async fn start(client: &Client, changes: &Changes) -> Self {
        let mut istio = Vec::new();
        for (kind, api) in served_istio_kinds(client).await {
            tracing::info!(kind = %kind, version = %api.version, "watching");
            let store = reflect(Api::all_with(client.clone(), &api), api.clone(), kind.name(), changes);
            istio.push(IstioStore { kind, api, store });
        }
        let endpoints = if serves_endpoint_slices_v1(client).await {
            tracing::info!("reading endpoints from discovery.k8s.io/v1 EndpointSlices");
            EndpointStore::Slices(reflect(Api::all(client.clone()), (), "EndpointSlice", changes))
        } else {
            tracing::info!("EndpointSlice v1 is not served; reading endpoints from core/v1 Endpoints");
            EndpointStore::Endpoints(reflect(Api::all(client.clone()), (), "Endpoints", changes))
        };
        Stores {
            istio,
            services: reflect(Api::all(client.clone()), (), "Service", changes),
            endpoints,
            pods: reflect(Api::all(client.clone()), (), "Pod", changes),
            namespaces: reflect(Api::all(client.clone()), (), "Namespace", changes),
        }
    }

    /// Waits until every store has its first complete list.
    pub async fn synced(&self) {
        for istio in &self.istio {
            let _ = istio.store.wait_until_ready().await;
        }
        let _ = self.services.wait_until_ready().await;
        match &self.endpoints {
            EndpointStore::Slices(store) => drop(store.wait_until_ready().await),
            EndpointStore::Endpoints(store) => drop(store.wait_until_ready().await),
        }
        let _ = self.pods.wait_until_ready().await;
        let _ = self.namespaces.wait_until_ready().await;
    }
}

/// Runs a reflector for `api` in the background and returns its store.
fn reflect<K>(api: Api<K>, dyntype: K::DynamicType, kind: &'static str, changes: &Changes) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let writer = Writer::new(dyntype);
    let store = writer.as_reader();
    let changes = changes.clone();
    tokio::spawn(async move {
        // Managed fields are never read and are a large part of every object.
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(|object: &mut K| object.meta_mut().managed_fields = None)
            .reflect(writer);
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                    changes.poke(kind)
                }
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Err(error) => tracing::warn!(kind, %error, "watch failed; retrying with backoff"),
            }
        }
    });
    store
}

/// The Istio kinds the API server serves, each at the first of its versions that is served
/// (the stored `v1` where the CRDs are current).
async fn served_istio_kinds(client: &Client) -> Vec<(Kind, ApiResource)> {
    let mut served = Vec::new();
    for group_name in ["networking.istio.io", "security.istio.io"] {
        let group = match kube::discovery::group(client, group_name).await {
            Ok(group) => group,
            Err(error) => {
                tracing::warn!(group = group_name, %error, "API group not served; apply manifests/crds.yaml");
                continue;
            }
        };
        for kind in Kind::ALL.iter().copied().filter(|kind| kind.group() == group_name) {
            let found = kind.versions().iter().find_map(|version| {
                group.versioned_resources(version).into_iter().find(|(api, _)| api.kind == kind.name())
            });
            match found {
                Some((api, _)) => served.push((kind, api)),
                None => tracing::warn!(kind = %kind, "kind not served; apply manifests/crds.yaml"),
            }
        }
    }
    served
}

async fn serves_endpoint_slices_v1(client: &Client) -> bool {
    match kube::discovery::group(client, "discovery.k8s.io").await {
        Ok(group) => group.versioned_resources("v1").iter().any(|(api, _)| api.kind == "EndpointSlice"),
        Err(_) => false,
    }
}
