//! Tier 3: routing through both sidecars in real network namespaces.
//!
//! Pod A (10.10.0.1, "productpage") and pod B (10.10.0.2 = reviews-v1, 10.10.1.2 = reviews-v2)
//! each get `mesh-proxy init` and a proxy running as UID 1337 with the same `--config-file`.
//! A's app dials the reviews ClusterIP with no knowledge of the proxy; the request is captured
//! by A's proxy, routed by Istio's request-routing YAML, and arrives at B's app through B's
//! inbound capture (so from 127.0.0.6). Needs root, `ip` and `iptables`; skips otherwise.
//! The same run with workload certificates and the injector's sidecar label on the pods has
//! the two sidecars speak mutual TLS to each other, on the captured connection.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};
use support::Child;
use support::certs::TestCa;
use support::netns::{self, Inside, Netns};

const BIN: &str = env!("CARGO_BIN_EXE_mesh-proxy");
const LIMIT: Duration = Duration::from_secs(10);

/// One HTTP/1.1 request from inside `ns`; the whole response.
fn http(ns: &Netns, addr: &'static str, path: &str, host: &str, extra: &str) -> Option<String> {
    let mut s = ns.connect(addr).ok()?;
    s.set_read_timeout(Some(LIMIT)).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// An HTTP app in `ns` answering `NAME at LOCAL-IP from PEER-IP` to every request: the local
/// address tells which pod IP the request was routed to, the peer who delivered it.
fn app(ns: &Netns, addr: &str, name: &'static str) {
    let listener = ns.listen(addr);
    listener.set_nonblocking(false).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let peer = s.peer_addr().unwrap().ip();
            let local = s.local_addr().unwrap().ip();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read_exact(&mut byte).is_ok() {
                    head.push(byte[0]);
                }
                let body = format!("{name} at {local} from {peer}");
                let _ =
                    write!(s, "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            });
        }
    });
}

fn sidecar(ns: &Netns, config: &str, pod: &str, ips: &str, tls_dir: Option<&Path>) -> Child {
    ns.exec(&[BIN, "init"]).unwrap();
    let mut args = vec![
        BIN,
        "run",
        "--concurrency",
        "1",
        "--config-file",
        config,
        "--pod-name",
        pod,
        "--pod-namespace",
        "default",
        "--instance-ips",
        ips,
    ];
    if let Some(dir) = tls_dir {
        args.extend(["--tls-dir", dir.to_str().unwrap()]);
    }
    let child =
        ns.as_proxy_uid(&args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let child = Child(child);
    let deadline = Instant::now() + LIMIT;
    while !http(ns, "127.0.0.1:15021", "/healthz/ready", "x", "").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
        assert!(Instant::now() < deadline, "proxy {pod} never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

const CONFIG: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {clusterIP: 10.96.0.50, ports: [{name: http, port: 9080, targetPort: 9080}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: reviews, namespace: default}
subsets:
- addresses: [{ip: 10.10.0.2, targetRef: {kind: Pod, name: reviews-v1, namespace: default}}]
  ports: [{name: http, port: 9080}]
- addresses: [{ip: 10.10.1.2, targetRef: {kind: Pod, name: reviews-v2, namespace: default}}]
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: default, labels: {app: reviews, version: v1}}
status: {podIP: 10.10.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2, namespace: default, labels: {app: reviews, version: v2}}
status: {podIP: 10.10.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: productpage-v1, namespace: default, labels: {app: productpage, version: v1}}
status: {podIP: 10.10.0.1}
---
"#;

#[test]
fn app_calling_a_service_ip_is_routed_through_both_sidecars() {
    let inbound = route_through_both_sidecars("r", CONFIG, false);
    if let Some(inbound) = inbound {
        assert_eq!(inbound["mtls_accepted"], 0, "no certificates: plaintext between the sidecars");
    }
}

#[test]
fn sidecars_with_certificates_speak_mutual_tls_on_the_captured_connection() {
    let config = CONFIG.replace("labels: {app: reviews,", "labels: {security.istio.io/tlsMode: istio, app: reviews,");
    if let Some(inbound) = route_through_both_sidecars("m", &config, true) {
        assert!(inbound["mtls_accepted"].as_u64().unwrap() > 0, "B's inbound terminated mTLS: {inbound}");
        assert_eq!(inbound["mtls_fail"], 0);
    }
}

/// Pods A and B in namespaces `{prefix}a` and `{prefix}b`, routed by `config` and Istio's
/// request-routing YAML; with `mtls`, each sidecar has a workload certificate of one mesh.
/// Returns B's inbound counters (`None` when network namespaces are not available here).
fn route_through_both_sidecars(prefix: &str, config: &str, mtls: bool) -> Option<serde_json::Value> {
    if netns::skip_unless_available() {
        return None;
    }
    let a = Netns::new(&format!("{prefix}a")).unwrap();
    let b = Netns::new(&format!("{prefix}b")).unwrap();
    netns::link(&a, &["10.10.0.1/16"], &b, &["10.10.0.2/16", "10.10.1.2/16"]).unwrap();
    // The ClusterIP range is routed towards the peer, as a node would; nothing listens there.
    a.exec(&["ip", "route", "add", "10.96.0.0/16", "via", "10.10.0.2"]).unwrap();
    let dir = std::env::temp_dir().join(format!("mesh-routing-netns-{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config_file = dir.join("config.yaml");
    let routing = include_str!("fixtures/istio-request-routing.yaml");
    std::fs::write(&config_file, format!("{config}{routing}")).unwrap();
    let config_file = config_file.to_str().unwrap();
    let certs = dir.join("certs");
    if mtls {
        // The pods have no service account: both are `default`, which the client expects.
        TestCa::new().write_dir(&certs, "default");
    }
    let tls_dir = mtls.then_some(certs.as_path());

    app(&b, "0.0.0.0:9080", "reviews");
    let _b_proxy = sidecar(&b, config_file, "reviews-v1", "10.10.0.2,10.10.1.2", tls_dir);
    let _a_proxy = sidecar(&a, config_file, "productpage-v1", "10.10.0.1", tls_dir);

    let body = |response: String| {
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response.rsplit("\r\n\r\n").next().unwrap().to_string()
    };
    for _ in 0..3 {
        // v2's address, delivered by B's inbound sidecar (from 127.0.0.6): both sidecars.
        let jason = http(&a, "10.96.0.50:9080", "/reviews/0", "reviews:9080", "end-user: jason\r\n")
            .expect("response for jason");
        assert_eq!(body(jason), "reviews at 10.10.1.2 from 127.0.0.6");
        let others = http(&a, "10.96.0.50:9080", "/reviews/0", "reviews:9080", "").expect("response");
        assert_eq!(body(others), "reviews at 10.10.0.2 from 127.0.0.6");
    }
    let stats = body(http(&b, "127.0.0.1:15000", "/stats", "admin", "").expect("B's stats"));
    let _ = std::fs::remove_dir_all(dir);
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("stats are JSON");
    Some(stats["inbound"].clone())
}
