//! Loopback: the app's rewritten probes answered on the readiness port by running the originals
//! against a real app server, and `/quitquitquit` answering before the binary exits.

mod support;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use mesh_proxy::listener::OriginalDst;
use mesh_proxy::probes::ProbeSource;
use mesh_proxy::proxy::{Listeners, Proxy, ProxyConfig};
use mesh_proxy::route::Passthrough;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::binary::RunningBinary;
use support::{WAIT, loopback, serve};

fn proxy_with_probes(probers: String) -> Proxy {
    let cfg = ProxyConfig {
        outbound: loopback(),
        inbound: loopback(),
        admin: loopback(),
        readiness: loopback(),
        original_dst: OriginalDst::Fixed(loopback()),
        app_probes: Some(ProbeSource::Fixed(probers)),
        ..ProxyConfig::default()
    };
    Proxy::start(&cfg, Listeners::bind(&cfg).unwrap(), Arc::new(Passthrough)).unwrap()
}

/// One HTTP/1.0 exchange on a fresh connection; returns the status line and the whole reply.
fn raw(addr: SocketAddr, method: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nhost: kubelet\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

async fn probe(proxy: &Proxy, path: &str) -> u16 {
    let addr = proxy.addresses().readiness;
    let path = path.to_string();
    let reply = tokio::task::spawn_blocking(move || raw(addr, "GET", &path)).await.unwrap();
    reply.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad reply {reply:?}"))
}

#[tokio::test]
async fn http_and_tcp_probes_are_run_against_the_app_on_localhost() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = serve(move |req: Request<Incoming>| {
        let log = log.clone();
        async move {
            let header = req.headers().get("x-probe").map(|v| v.to_str().unwrap().to_string());
            log.lock().unwrap().push((req.uri().path().to_string(), header));
            let status = match req.uri().path() {
                "/ready" => StatusCode::OK,
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    StatusCode::OK
                }
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = status;
            r
        }
    })
    .await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let port = app.addr.port();
    let probers = serde_json::json!({
        "/app-health/web/readyz": {"httpGet": {"path": "/ready", "port": port, "scheme": "HTTP",
            "httpHeaders": [{"name": "x-probe", "value": "kubelet"}]}, "timeoutSeconds": 2},
        "/app-health/web/startupz": {"httpGet": {"path": "/starting", "port": port, "scheme": "HTTP"}},
        "/app-health/web/livez": {"tcpSocket": {"port": port}, "timeoutSeconds": 1},
        "/app-health/db/livez": {"tcpSocket": {"port": closed}, "timeoutSeconds": 1},
        "/app-health/slow/readyz": {"httpGet": {"path": "/slow", "port": port, "scheme": "HTTP"}, "timeoutSeconds": 1},
        "/app-health/down/readyz": {"httpGet": {"path": "/", "port": closed, "scheme": "HTTP"}},
    });
    let proxy = proxy_with_probes(probers.to_string());

    assert_eq!(probe(&proxy, "/app-health/web/readyz").await, 200);
    assert_eq!(probe(&proxy, "/app-health/web/startupz").await, 503, "the app's own status is answered");
    assert_eq!(probe(&proxy, "/app-health/web/livez").await, 200);
    assert_eq!(probe(&proxy, "/app-health/db/livez").await, 503, "nothing listens");
    assert_eq!(probe(&proxy, "/app-health/down/readyz").await, 503);
    assert_eq!(probe(&proxy, "/app-health/nope/readyz").await, 404);
    let started = Instant::now();
    assert_eq!(probe(&proxy, "/app-health/slow/readyz").await, 503);
    assert!(started.elapsed() < Duration::from_secs(3), "timeoutSeconds bounds the probe: {:?}", started.elapsed());

    let seen = seen.lock().unwrap().clone();
    assert!(seen.contains(&("/ready".to_string(), Some("kubelet".to_string()))), "{seen:?}");
    assert!(seen.contains(&("/starting".to_string(), None)), "{seen:?}");
}

/// The binary as injected: probes read from the downward-API annotations file in
/// MESH_POD_INFO_DIR, and `/quitquitquit` answered 200 before the process exits 0.
#[test]
fn binary_reads_probes_from_the_pod_info_dir_and_answers_quitquitquit_before_exiting() {
    let app = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = std::env::temp_dir().join(format!("mesh-podinfo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let probers = format!(
        r#"{{"/app-health/web/livez":{{"tcpSocket":{{"port":{}}},"timeoutSeconds":1}}}}"#,
        app.local_addr().unwrap().port()
    );
    let line = format!("sidecar.istio.io/appProbers=\"{}\"\n", probers.replace('"', "\\\""));
    std::fs::write(dir.join("annotations"), line).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-proxy"));
    command.args(["run", "--concurrency", "1"]).env("MESH_POD_INFO_DIR", &dir);
    let mut proxy = RunningBinary::start(command);
    let readiness = proxy.ports.readiness;
    assert!(raw(readiness, "GET", "/app-health/web/livez").starts_with("HTTP/1.0 200"));
    drop(app);
    assert!(raw(readiness, "GET", "/app-health/web/livez").starts_with("HTTP/1.0 503"));
    let _ = std::fs::remove_dir_all(&dir);

    let reply = raw(proxy.ports.admin, "POST", "/quitquitquit");
    assert!(reply.starts_with("HTTP/1.0 200") && reply.ends_with("OK\n"), "{reply:?}");
    let status = proxy.wait_for_exit("/quitquitquit");
    assert!(status.success(), "{status}; its log:\n{}", proxy.logs());
}
