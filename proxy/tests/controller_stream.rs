//! Loopback: the proxy fed by the real controller's config stream (controller::config, driven
//! without Kubernetes by publishing worlds into its hub): the snapshot routes traffic, a config
//! that cannot be run is NACKed while the old one serves, and a controller restart costs
//! nothing: the proxy keeps its config, reconnects, resumes by version and applies what changed.

mod support;

use common::registry::Registry;
use common::resource::Resource;
use controller::config::hub::{Hub, ProxyStatus};
use controller::config::server::{ConfigService, StreamSettings as ServerSettings};
use controller::config::world::World;
use controller::metrics::Metrics;
use mesh_proxy::config::ConfigStore;
use mesh_proxy::config::identity::IdentitySettings;
use mesh_proxy::config::stream::StreamSettings;
use mesh_proxy::listener::OriginalDst;
use mesh_proxy::proxy::{Listeners, Proxy, ProxyConfig};
use mesh_proxy::routing::MeshRouter;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::binary::RunningBinary;
use support::mesh::{get, upstream};
use support::{WAIT, loopback};

/// The world the controller would build from the API server: `reviews` in namespace `a`, its
/// one endpoint at `endpoint`, and the Istio resources in `yaml`.
fn world(endpoint: SocketAddr, yaml: &str) -> World {
    let (resources, errors) = Resource::parse_yaml_documents(yaml);
    assert!(errors.is_empty(), "{errors:?}");
    let service = serde_json::from_value(json!({
        "metadata": {"name": "reviews", "namespace": "a"},
        "spec": {"clusterIP": "10.0.0.1", "ports": [{"name": "http", "port": 9080, "targetPort": endpoint.port()}]}
    }))
    .unwrap();
    let endpoints = serde_json::from_value(json!({
        "metadata": {"name": "reviews", "namespace": "a"},
        "subsets": [{"addresses": [{"ip": endpoint.ip().to_string()}],
                     "ports": [{"name": "http", "port": endpoint.port()}]}]
    }))
    .unwrap();
    let registry = Registry::builder("cluster.local").service(service).endpoints(endpoints).build();
    World::build(&resources, &registry)
}

fn virtual_service(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: a}}\n\
         spec: {{hosts: [reviews], http: [{spec}]}}\n"
    )
}

/// A listener on `addr` that can be bound again as soon as the previous one is gone.
fn listen(addr: SocketAddr) -> std::net::TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(64).unwrap().into_std().unwrap()
}

/// The controller's stream server on its own runtime, so that dropping it is a hard stop.
fn start_controller(hub: Arc<Hub>, listener: std::net::TcpListener) -> tokio::runtime::Runtime {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.spawn(async move {
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let _ = ConfigService::new(hub, ServerSettings::default()).serve(listener, std::future::pending()).await;
    });
    runtime
}

fn proxy_in_namespace_a() -> (Proxy, Arc<ConfigStore>) {
    let identity = IdentitySettings { pod_name: "web-0".into(), namespace: "a".into(), ..Default::default() };
    let store = Arc::new(ConfigStore::for_identity(identity).unwrap());
    let cfg = ProxyConfig {
        outbound: loopback(),
        inbound: loopback(),
        admin: loopback(),
        readiness: loopback(),
        original_dst: OriginalDst::Kernel,
        ..ProxyConfig::default()
    };
    let proxy = Proxy::start(&cfg, Listeners::bind(&cfg).unwrap(), Arc::new(MeshRouter::new(store.clone()))).unwrap();
    (proxy, store)
}

async fn status(hub: &Hub, check: impl Fn(&ProxyStatus) -> bool) -> ProxyStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(s) = hub.proxies().into_iter().find(|s| s.proxy == "a/web-0" && check(s)) {
            return s;
        }
        assert!(Instant::now() < deadline, "proxy status never matched: {:?}", hub.proxies());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const HOST: &str = "reviews.a.svc.cluster.local:9080";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_routes_bad_config_is_nacked_and_a_restart_resumes_by_version() {
    let app = upstream("v1", "127.0.0.91").await;
    let hub = Hub::new("cluster.local", "istio-system", Arc::new(Metrics::new()));
    let first = hub.publish(world(app.addr(), ""), Instant::now()).unwrap();
    let listener = listen(loopback());
    let address = listener.local_addr().unwrap();
    let controller = start_controller(hub.clone(), listener);

    let (proxy, store) = proxy_in_namespace_a();
    let settings = StreamSettings {
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        ..StreamSettings::new(&address.to_string(), "cluster.local")
    };
    tokio::spawn(mesh_proxy::config::stream::run(store.clone(), settings));
    let outbound = proxy.addresses().outbound;

    // The snapshot: the Service and its endpoint, ACKed, and traffic follows it.
    let v1 = hub.version(first.number);
    status(&hub, |s| s.acked == v1).await;
    let (status_code, _, body) = get(outbound, HOST, "/", &[]).await;
    assert_eq!((status_code.as_u16(), body.as_str()), (200, "v1"));

    // A route the proxy cannot run (valid for the controller): NACKed with why, old config stays.
    let bytes = virtual_service("{directResponse: {status: 200, body: {bytes: aGk=}}}");
    let bad = hub.publish(world(app.addr(), &bytes), Instant::now()).unwrap();
    let nacked = status(&hub, |s| s.nacked.is_some()).await;
    let (version, message) = nacked.nacked.unwrap();
    assert_eq!(version, hub.version(bad.number));
    assert!(message.contains("directResponse.body.bytes"), "{message}");
    assert_eq!(nacked.acked, v1, "the NACKed version was not applied");
    let config_version = store.load().version;
    assert_eq!(get(outbound, HOST, "/", &[]).await.2, "v1");

    // A fixed route: applied on top of what the proxy runs (the stream resumes from v1).
    let header =
        virtual_service("{headers: {response: {set: {x-route: fixed}}}, route: [{destination: {host: reviews}}]}");
    let fixed = hub.publish(world(app.addr(), &header), Instant::now()).unwrap();
    status(&hub, |s| s.acked == hub.version(fixed.number)).await;
    let (_, headers, _) = get(outbound, HOST, "/", &[]).await;
    assert_eq!(headers.get("x-route").map(|v| v.to_str().unwrap()), Some("fixed"));

    // The controller goes away: the proxy keeps serving its last config.
    controller.shutdown_background();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, headers, body) = get(outbound, HOST, "/", &[]).await;
    assert_eq!((headers.get("x-route").map(|v| v.to_str().unwrap()), body.as_str()), (Some("fixed"), "v1"));

    // Back on the same address with a change made meanwhile: the proxy reconnects, resumes
    // from the version it ran (an incremental update, not a full snapshot) and applies it.
    let removed = hub.publish(world(app.addr(), ""), Instant::now()).unwrap();
    let resumes = hub.metrics.pushes.with_label_values(&["resume"]).get();
    let restarted = start_controller(hub.clone(), listen(address));
    status(&hub, |s| s.acked == hub.version(removed.number)).await;
    assert_eq!(hub.metrics.pushes.with_label_values(&["resume"]).get(), resumes + 1, "resumed by version");
    let (_, headers, _) = get(outbound, HOST, "/", &[]).await;
    assert!(headers.get("x-route").is_none(), "the removal was applied");
    assert!(store.load().version > config_version);
    restarted.shutdown_background();
}

/// Starts the binary as the injector would: identity and controller from the environment.
fn start_injected(controller: &SocketAddr, pod_info: &std::path::Path) -> RunningBinary {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-proxy"));
    command
        .env("MESH_CONTROLLER_ADDRESS", controller.to_string())
        .env("POD_NAME", "web-0")
        .env("POD_NAMESPACE", "a")
        .env("SERVICE_ACCOUNT", "web-sa")
        .env("INSTANCE_IP", "10.1.0.9")
        .env("MESH_POD_INFO_DIR", pod_info);
    RunningBinary::start(command)
}

/// The binary as the injector starts it: no flags, identity and controller from the environment
/// and the downward-API files; it says who it is in its Hello and runs the controller's config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_binary_introduces_itself_from_the_environment_and_acks() {
    let app = upstream("v1", "127.0.0.92").await;
    let hub = Hub::new("cluster.local", "istio-system", Arc::new(Metrics::new()));
    let first = hub.publish(world(app.addr(), ""), Instant::now()).unwrap();
    let listener = listen(loopback());
    let address = listener.local_addr().unwrap();
    let controller = start_controller(hub.clone(), listener);
    let dir = std::env::temp_dir().join(format!("mesh-stream-podinfo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("labels"), "app=\"web\"\nversion=\"v3\"\n").unwrap();
    let proxy = start_injected(&address, &dir);
    status(&hub, |s| s.acked == hub.version(first.number)).await;
    let _ = std::fs::remove_dir_all(&dir);
    let (_, _, dump) = get(proxy.ports.admin, "admin", "/config_dump", &[]).await;
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let identity = &dump["routing"]["identity"];
    assert_eq!(identity["spiffe_id"], "spiffe://cluster.local/ns/a/sa/web-sa", "{identity}");
    assert_eq!(identity["ips"], json!(["10.1.0.9"]));
    assert_eq!(identity["labels"], json!({"app": "web", "version": "v3"}));
    assert_eq!(get(proxy.ports.outbound, HOST, "/", &[]).await.2, "v1");
    controller.shutdown_background();
}
