//! The agent's shared state and its three watches: Pods bound to this node (one worker task per
//! pod), and Services plus Endpoints (iptables rules and hosts files). Watches are kube-runtime
//! watchers; nothing polls.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::{Notify, watch};

use crate::config::{ClusterEnv, Images};
use crate::netns::Ipam;
use crate::services::{Hosts, Proxy};

pub struct Agent {
    pub client: Client,
    pub env: ClusterEnv,
    pub images: Images,
    pub node_name: String,
    pub ipam: Ipam,
    pub hosts: Hosts,
    services: Store<Service>,
}

impl Agent {
    /// Starts the Service and Endpoints reflectors and the task that applies them.
    /// The node's identity also needs kube-proxy's rights (ClusterRole system:node-proxier, which
    /// `e2e/local-cluster` binds to it) to watch every Service and Endpoints.
    pub fn start(client: Client, env: ClusterEnv, images: Images, node_name: String, proxy: Proxy) -> Arc<Self> {
        let changed = Arc::new(Notify::new());
        let (svc_store, svc_writer) = reflector::store();
        let (ep_store, ep_writer) = reflector::store();
        spawn_reflector(svc_writer, Api::<Service>::all(client.clone()), changed.clone());
        spawn_reflector(ep_writer, Api::<Endpoints>::all(client.clone()), changed.clone());
        let agent = Arc::new(Self {
            client,
            hosts: Hosts::new(&env.cluster_domain),
            ipam: Ipam::new(&env),
            env,
            images,
            node_name,
            services: svc_store.clone(),
        });
        tokio::spawn(sync_services(agent.clone(), proxy, svc_store, ep_store, changed));
        agent
    }

    /// Every Service currently known.
    pub fn services(&self) -> Vec<Arc<Service>> {
        self.services.state()
    }

    /// Services as owned values, for environment variables.
    pub fn service_list(&self) -> Vec<Service> {
        self.services.state().iter().map(|s| (**s).clone()).collect()
    }

    /// Watches this node's pods and hands each to its worker until the stream ends.
    pub async fn run_pods(self: Arc<Self>) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", self.node_name));
        let mut workers: HashMap<String, watch::Sender<Pod>> = HashMap::new();
        let mut listed: HashSet<String> = HashSet::new();
        let mut stream = watcher(api, cfg).default_backoff().boxed();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Apply(pod)) | Ok(watcher::Event::InitApply(pod)) => {
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    listed.insert(uid.clone());
                    match workers.get(&uid) {
                        Some(tx) if !tx.is_closed() => {
                            tx.send_replace(pod);
                        }
                        _ => {
                            let (tx, rx) = watch::channel(pod);
                            tokio::spawn(crate::pod::run(self.clone(), rx));
                            workers.insert(uid, tx);
                        }
                    }
                }
                Ok(watcher::Event::Delete(pod)) => {
                    // Dropping the sender tells the worker the object is gone.
                    workers.remove(pod.metadata.uid.as_deref().unwrap_or_default());
                }
                Ok(watcher::Event::Init) => listed.clear(),
                Ok(watcher::Event::InitDone) => {
                    workers.retain(|uid, _| listed.contains(uid));
                }
                Err(e) => tracing::warn!(error = %e, "pod watch error"),
            }
            workers.retain(|_, tx| !tx.is_closed());
        }
    }
}

/// Keeps `writer`'s store filled from a watch of `api`, ringing `changed` on every event.
fn spawn_reflector<K>(writer: reflector::store::Writer<K>, api: Api<K>, changed: Arc<Notify>)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tokio::spawn(stream.for_each(move |ev| {
        if let Err(e) = ev {
            tracing::debug!(error = %e, "watch error");
        }
        changed.notify_one();
        async {}
    }));
}

/// Applies Service/Endpoints changes: iptables rules and hosts files, batched over 100 ms.
async fn sync_services(
    agent: Arc<Agent>,
    proxy: Proxy,
    svcs: Store<Service>,
    eps: Store<Endpoints>,
    changed: Arc<Notify>,
) {
    loop {
        changed.notified().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let services = svcs.state();
        if let Err(e) = proxy.sync(&services, &eps.state()).await {
            tracing::warn!(error = %format!("{e:#}"), "iptables sync failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            changed.notify_one();
        }
        agent.hosts.refresh(&services);
    }
}
