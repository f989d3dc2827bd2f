//! A proxy routing by a `--config-file` on loopback, upstreams that record what they saw, and
//! the Kubernetes objects that describe them.

use super::{TestServer, bounded, loopback};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use mesh_proxy::config::identity::IdentitySettings;
use mesh_proxy::config::{ConfigSource, ConfigStore};
use mesh_proxy::listener::OriginalDst;
use mesh_proxy::proxy::{Listeners, Proxy, ProxyConfig};
use mesh_proxy::routing::MeshRouter;
use mesh_proxy::tls::MeshTls;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

static FILES: AtomicUsize = AtomicUsize::new(0);

pub struct Mesh {
    pub proxy: Proxy,
    pub store: Arc<ConfigStore>,
    pub file: PathBuf,
}

impl Mesh {
    pub fn outbound(&self) -> SocketAddr {
        self.proxy.addresses().outbound
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Writes `yaml` so a reader sees the old or the new file, never half of one.
pub fn write_config(path: &PathBuf, yaml: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// A proxy with `yaml` as its config, for pod `default/client` with `labels`. With
/// `original_dst`, every connection is routed as if the app had dialled that address;
/// without, connections are direct and routed by Host.
pub fn start_mesh(yaml: &str, labels: &[(&str, &str)], original_dst: Option<SocketAddr>) -> Mesh {
    let identity = IdentitySettings {
        pod_name: "client".into(),
        namespace: "default".into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    start_mesh_as(yaml, identity, original_dst)
}

/// As [`start_mesh`], for the pod `identity` describes.
pub fn start_mesh_as(yaml: &str, identity: IdentitySettings, original_dst: Option<SocketAddr>) -> Mesh {
    start_mesh_with_tls(yaml, identity, original_dst, Arc::default())
}

/// As [`start_mesh_as`], with `tls` as the proxy's workload certificate.
pub fn start_mesh_with_tls(
    yaml: &str,
    identity: IdentitySettings,
    original_dst: Option<SocketAddr>,
    tls: Arc<MeshTls>,
) -> Mesh {
    let n = FILES.fetch_add(1, Ordering::SeqCst);
    let file = std::env::temp_dir().join(format!("mesh-config-{}-{n}.yaml", std::process::id()));
    write_config(&file, yaml);
    let source = ConfigSource { path: file.clone(), domain: "cluster.local".into(), identity };
    let store = Arc::new(ConfigStore::from_source(source).expect("config loads"));
    let cfg = ProxyConfig {
        outbound: loopback(),
        inbound: loopback(),
        admin: loopback(),
        readiness: loopback(),
        drain_period: Duration::from_secs(5),
        original_dst: original_dst.map_or(OriginalDst::Kernel, OriginalDst::Fixed),
        tls,
        ..ProxyConfig::default()
    };
    let listeners = Listeners::bind(&cfg).unwrap();
    let proxy = Proxy::start(&cfg, listeners, Arc::new(MeshRouter::new(store.clone()))).unwrap();
    Mesh { proxy, store, file }
}

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub version: http::Version,
}

/// An HTTP upstream on `ip` that answers `name` and records every request.
pub struct Upstream {
    pub name: &'static str,
    pub server: TestServer,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
    pub fn last(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().expect("a request arrived")
    }
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }
}

pub async fn upstream(name: &'static str, ip: &str) -> Upstream {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let addr: SocketAddr = format!("{ip}:0").parse().unwrap();
    let server = super::serve_on(addr, move |req: Request<Incoming>| {
        let record = record.clone();
        async move {
            let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
            record.lock().unwrap().push(Seen { path, headers: req.headers().clone(), version: req.version() });
            let mut resp = Response::new(Full::new(Bytes::from(name)));
            resp.headers_mut().insert("x-upstream", name.parse().unwrap());
            resp.headers_mut().insert("x-app-header", "from-app".parse().unwrap());
            resp
        }
    })
    .await;
    Upstream { name, server, seen }
}

/// A pod behind a service: name, labels, and where it listens.
pub struct PodSpec<'a> {
    pub name: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
    pub addr: SocketAddr,
    pub ready: bool,
}

pub fn pod<'a>(name: &'a str, labels: &'a [(&'a str, &'a str)], addr: SocketAddr) -> PodSpec<'a> {
    PodSpec { name, labels, addr, ready: true }
}

/// A Service in `default` with one port, its Endpoints (one subset per pod, as each pod's
/// port differs on loopback) and the Pods.
pub fn service(name: &str, cluster_ip: &str, port_name: &str, port: u16, pods: &[PodSpec<'_>]) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{clusterIP: {cluster_ip}, ports: [{{name: {port_name}, port: {port}}}]}}\n---\n\
         apiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}, namespace: default}}\nsubsets:\n"
    );
    for p in pods {
        let list = if p.ready { "addresses" } else { "notReadyAddresses" };
        let _ = writeln!(
            y,
            "- {list}: [{{ip: {}, targetRef: {{kind: Pod, name: {}, namespace: default}}}}]\n  ports: [{{name: {port_name}, port: {}}}]",
            p.addr.ip(),
            p.name,
            p.addr.port()
        );
    }
    for p in pods {
        let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: default, labels: {{{}}}}}\n\
             status: {{podIP: {}}}\n",
            p.name,
            labels.join(", "),
            p.addr.ip()
        );
    }
    y.push_str("---\n");
    y
}

/// One HTTP/1.1 request with these headers; returns status, headers and body.
pub async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    request(addr, "GET", host, path, headers).await
}

pub async fn request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    let mut client = super::h1_client::<Empty<Bytes>>(addr).await;
    let mut req = Request::builder().method(method).uri(path).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = bounded("response", client.send_request(req.body(Empty::new()).unwrap())).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&body).into_owned())
}

/// Waits until the store has published `version`.
pub async fn wait_for_version(store: &ConfigStore, version: u64) {
    bounded("config reload", async {
        while store.load().version < version {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
