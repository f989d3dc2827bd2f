//! The config stream over real loopback sockets with tonic clients: snapshot, incremental
//! update, removal, NACK tracking, resume by version, and resync of a proxy too slow to read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::registry::Registry;
use common::resource::Resource;
use controller::config::hub::Hub;
use controller::config::server::{ConfigService, StreamSettings};
use controller::config::world::World;
use controller::metrics::Metrics;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use proto::config::config_discovery_client::ConfigDiscoveryClient;
use proto::config::{
    Ack, ConfigUpdate, Hello, Nack, ProxyIdentity, ProxyMessage, ResourceError, ResourceKey, proxy_message,
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const WAIT: Duration = Duration::from_secs(5);
const VS_TYPE: &str = "networking.istio.io/VirtualService";

/// A VirtualService `reviews` in namespace `a`, visible only there, with `weight` on its route.
fn virtual_service(weight: u32, extra_hosts: usize) -> String {
    let hosts: Vec<String> =
        std::iter::once("reviews".to_string()).chain((0..extra_hosts).map(|i| format!("h{i}.example.com"))).collect();
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: a}}
spec:
  hosts: [{}]
  exportTo: [.]
  http: [{{route: [{{destination: {{host: reviews}}, weight: {weight}}}]}}]
",
        hosts.join(", ")
    )
}

fn world(yaml: &str) -> World {
    let (resources, errors) = Resource::parse_yaml_documents(yaml);
    assert!(errors.is_empty(), "{errors:?}");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "reviews", "namespace": "a"},
        "spec": {"clusterIP": "10.0.0.1", "ports": [{"name": "http", "port": 9080}]}
    }))
    .unwrap();
    let endpoints: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "reviews", "namespace": "a"},
        "subsets": [{"addresses": [{"ip": "10.1.0.1"}], "ports": [{"name": "http", "port": 9080}]}]
    }))
    .unwrap();
    let registry = Registry::builder("cluster.local").service(service).endpoints(endpoints).build();
    World::build(&resources, &registry)
}

async fn start(queue: usize) -> (Arc<Hub>, String) {
    start_with(StreamSettings { queue, ..StreamSettings::default() }).await
}

async fn start_with(settings: StreamSettings) -> (Arc<Hub>, String) {
    let hub = Hub::new("cluster.local", "istio-system", Arc::new(Metrics::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(ConfigService::new(hub.clone(), settings).serve(listener, std::future::pending()));
    (hub, address)
}

/// A proxy's end of the stream.
struct Proxy {
    to_controller: mpsc::Sender<ProxyMessage>,
    updates: Streaming<ConfigUpdate>,
}

impl Proxy {
    async fn connect(address: &str, namespace: &str, pod: &str, resume_version: &str) -> Self {
        Self::connect_with(address, namespace, pod, resume_version, false).await
    }

    /// A proxy that says whether it takes updates in parts.
    async fn connect_with(address: &str, namespace: &str, pod: &str, resume_version: &str, parts: bool) -> Self {
        let mut client = ConfigDiscoveryClient::connect(address.to_string()).await.unwrap();
        let (to_controller, outbound) = mpsc::channel(16);
        let identity = ProxyIdentity {
            pod_name: pod.into(),
            namespace: namespace.into(),
            service_account: "default".into(),
            ..ProxyIdentity::default()
        };
        let hello = Hello { identity: Some(identity), resume_version: resume_version.into(), accepts_parts: parts };
        to_controller.send(ProxyMessage { message: Some(proxy_message::Message::Hello(hello)) }).await.unwrap();
        let updates = client.stream_config(ReceiverStream::new(outbound)).await.unwrap().into_inner();
        Proxy { to_controller, updates }
    }

    async fn next(&mut self) -> ConfigUpdate {
        tokio::time::timeout(WAIT, self.updates.next()).await.expect("an update in time").unwrap().unwrap()
    }

    /// Asserts nothing arrives for a while.
    async fn nothing_for(&mut self, wait: Duration) {
        if let Ok(update) = tokio::time::timeout(wait, self.updates.next()).await {
            panic!("expected no update, got {update:?}");
        }
    }

    async fn ack(&self, version: &str) {
        let ack = Ack { version: version.into() };
        self.to_controller.send(ProxyMessage { message: Some(proxy_message::Message::Ack(ack)) }).await.unwrap();
    }
}

fn upserted(update: &ConfigUpdate) -> Vec<String> {
    update.upserts.iter().map(|resource| key_name(resource.key.as_ref().unwrap())).collect()
}

fn key_name(key: &ResourceKey) -> String {
    format!("{} {}/{}", key.r#type, key.namespace, key.name)
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn snapshot_then_only_changes_to_those_who_see_them() {
    let (hub, address) = start(16).await;
    hub.publish(world(&virtual_service(100, 0)), Instant::now()).unwrap();
    let mut in_a = Proxy::connect(&address, "a", "web-0", "").await;
    let mut in_b = Proxy::connect(&address, "b", "web-0", "").await;

    let snapshot = in_a.next().await;
    assert!(snapshot.full && snapshot.base_version.is_empty());
    assert_eq!(
        upserted(&snapshot),
        [
            format!("{VS_TYPE} a/reviews"),
            "mesh/Service /reviews.a.svc.cluster.local".into(),
            "mesh/Endpoints /reviews.a.svc.cluster.local".into(),
        ]
    );
    let json: serde_json::Value = serde_json::from_slice(&snapshot.upserts[0].json).unwrap();
    assert_eq!(json["spec"]["http"][0]["route"][0]["weight"], 100);
    let in_b_snapshot = in_b.next().await;
    assert_eq!(upserted(&in_b_snapshot).len(), 2, "b sees the Service, not a's VirtualService");
    in_a.ack(&snapshot.version).await;
    in_b.ack(&in_b_snapshot.version).await;

    hub.publish(world(&virtual_service(90, 0)), Instant::now()).unwrap();
    let update = in_a.next().await;
    assert!(!update.full);
    assert_eq!(update.base_version, snapshot.version);
    assert_eq!(upserted(&update), [format!("{VS_TYPE} a/reviews")], "only what changed");
    in_a.ack(&update.version).await;
    in_b.nothing_for(Duration::from_millis(300)).await;

    hub.publish(world(""), Instant::now()).unwrap();
    let removal = in_a.next().await;
    assert_eq!(removal.base_version, update.version);
    assert!(removal.upserts.is_empty());
    assert_eq!(removal.removals.iter().map(key_name).collect::<Vec<_>>(), [format!("{VS_TYPE} a/reviews")]);
    in_a.ack(&removal.version).await;
    in_b.nothing_for(Duration::from_millis(200)).await;

    eventually("both ACKs of the incremental updates to be measured", || {
        hub.metrics.push_latency.get_sample_count() == 2
    })
    .await;
    let acked = hub.proxies().into_iter().find(|status| status.proxy == "a/web-0").unwrap().acked;
    assert_eq!(acked, removal.version);
    assert_eq!(hub.metrics.connected_proxies.get(), 2);
    drop(in_b);
    eventually("the disconnect to be seen", || hub.metrics.connected_proxies.get() == 1).await;
}

#[tokio::test]
async fn nacks_are_recorded_per_proxy() {
    let (hub, address) = start(16).await;
    hub.publish(world(&virtual_service(100, 0)), Instant::now()).unwrap();
    let mut proxy = Proxy::connect(&address, "a", "web-0", "").await;
    let snapshot = proxy.next().await;
    let nack = Nack {
        version: snapshot.version.clone(),
        message: "1 resource rejected".into(),
        errors: vec![ResourceError {
            key: snapshot.upserts[0].key.clone(),
            message: "spec.http[0].route[0].weight: must be 0-100".into(),
        }],
    };
    proxy.to_controller.send(ProxyMessage { message: Some(proxy_message::Message::Nack(nack)) }).await.unwrap();
    eventually("the NACK to be counted", || hub.metrics.nacks.get() == 1).await;
    let status = hub.proxies().into_iter().next().unwrap();
    assert_eq!(status.nacked, Some((snapshot.version, "1 resource rejected".into())));
    assert!(status.acked.is_empty());
}

#[tokio::test]
async fn a_reconnecting_proxy_gets_only_what_changed_since_its_version() {
    let (hub, address) = start(16).await;
    hub.publish(world(&virtual_service(100, 0)), Instant::now()).unwrap();
    let mut first = Proxy::connect(&address, "a", "web-0", "").await;
    let snapshot = first.next().await;
    first.ack(&snapshot.version).await;
    drop(first);

    hub.publish(world(&virtual_service(50, 0)), Instant::now()).unwrap();
    let mut resumed = Proxy::connect(&address, "a", "web-0", &snapshot.version).await;
    let update = resumed.next().await;
    assert!(!update.full, "resumed, not resent");
    assert_eq!(update.base_version, snapshot.version);
    assert_eq!(upserted(&update), [format!("{VS_TYPE} a/reviews")]);
    assert_eq!(hub.metrics.pushes.with_label_values(&["resume"]).get(), 1);

    let mut up_to_date = Proxy::connect(&address, "a", "web-1", &update.version).await;
    let nothing_new = up_to_date.next().await;
    assert!(!nothing_new.full && nothing_new.upserts.is_empty() && nothing_new.removals.is_empty());
    assert_eq!(nothing_new.version, update.version);

    let mut unknown = Proxy::connect(&address, "a", "web-2", "1.7").await;
    let full = unknown.next().await;
    assert!(full.full, "a version of another controller process means a full snapshot");
    assert_eq!(full.upserts.len(), 3);
}

#[tokio::test]
async fn a_proxy_that_stops_reading_is_resynced_and_others_are_not_held_up() {
    let (hub, address) = start(1).await;
    hub.publish(world(&virtual_service(1, 10_000)), Instant::now()).unwrap();
    let mut slow = Proxy::connect(&address, "a", "slow-0", "").await;
    let mut fast = Proxy::connect(&address, "a", "fast-0", "").await;
    let first = slow.next().await;
    assert!(first.full);
    let mut fast_version = fast.next().await.version;
    // Each update is a large VirtualService (~250 kB): the slow proxy's HTTP/2 windows (2 MB with
    // hyper's client defaults), then its queue, fill.
    for weight in 2..=30 {
        let generation = hub.publish(world(&virtual_service(weight, 10_000)), Instant::now()).unwrap();
        let update = fast.next().await;
        assert_eq!(update.base_version, fast_version, "the fast proxy gets every update, in order");
        fast_version = update.version;
        assert_eq!(fast_version, hub.version(generation.number));
    }
    eventually("the slow stream to overflow", || hub.metrics.resyncs.get() >= 1).await;
    let mut saw_full = false;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let update = slow.next().await;
        if update.full {
            saw_full = true;
            let json: serde_json::Value = serde_json::from_slice(&update.upserts[0].json).unwrap();
            if json["spec"]["http"][0]["route"][0]["weight"] == 30 {
                break;
            }
        }
    }
    assert!(saw_full, "the slow proxy was resynced with a full snapshot");
}

#[tokio::test]
async fn a_proxy_that_accepts_parts_gets_large_updates_in_bounded_parts() {
    let part_bytes = 4096;
    let (hub, address) = start_with(StreamSettings { part_bytes, ..StreamSettings::default() }).await;
    // A ~25 kB VirtualService: several parts of its own, one of which is the Service.
    hub.publish(world(&virtual_service(100, 1_000)), Instant::now()).unwrap();
    let mut whole = Proxy::connect(&address, "a", "whole-0", "").await;
    let mut in_parts = Proxy::connect_with(&address, "a", "parts-0", "", true).await;
    let snapshot = whole.next().await;
    assert!(!snapshot.more, "a proxy that did not ask for parts gets one message");

    let mut parts = vec![in_parts.next().await];
    while parts.last().unwrap().more {
        parts.push(in_parts.next().await);
    }
    assert!(parts.len() >= 2, "{} part(s)", parts.len());
    for part in &parts {
        assert_eq!(
            (part.version.as_str(), part.base_version.as_str(), part.full),
            (snapshot.version.as_str(), "", true)
        );
        let json: usize = part.upserts.iter().map(|resource| resource.json.len()).sum();
        assert!(part.upserts.len() == 1 || json <= part_bytes, "{json} bytes in {} upserts", part.upserts.len());
    }
    let mut assembly = proto::parts::Assembly::default();
    let mut assembled = None;
    for part in parts {
        assembled = assembly.add(part).unwrap();
    }
    assert_eq!(assembled.as_ref(), Some(&snapshot), "the parts make up the snapshot");
    assert_eq!(hub.metrics.pushes.with_label_values(&["full"]).get(), 2, "one push per proxy, not per part");

    // The ACK of the version counts for the whole update; a small change is one message.
    in_parts.ack(&snapshot.version).await;
    eventually("the ACK to be recorded", || hub.proxies().iter().any(|status| status.acked == snapshot.version)).await;
    hub.publish(world(&virtual_service(50, 0)), Instant::now()).unwrap();
    let update = in_parts.next().await;
    assert!(!update.more && !update.full && update.base_version == snapshot.version);
    assert_eq!(upserted(&update), [format!("{VS_TYPE} a/reviews")]);
    in_parts.ack(&update.version).await;
    eventually("the incremental ACK to be measured once", || hub.metrics.push_latency.get_sample_count() == 1).await;
}
