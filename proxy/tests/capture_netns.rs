//! Tier 3: the capture rules in real network namespaces.
//!
//! Pod A (10.10.0.1) gets `mesh-proxy init`; pod B (10.10.0.2 and 10.10.1.2) is a peer. Each
//! check connects and looks at which listener the connection lands on, and for captured ones
//! what `SO_ORIGINAL_DST` reports. Needs root, `ip` and `iptables`; skips with a reason
//! otherwise (fails under `e2e/run-tests`, which sets `MESH_REQUIRE_NETNS`).

mod support;

use mesh_proxy::sys::original_dst;
use std::time::Duration;
use support::Child;
use support::netns::{self, Inside, Netns, accept_within, nothing_pending};

const LIMIT: Duration = Duration::from_secs(10);
const BIN: &str = env!("CARGO_BIN_EXE_mesh-proxy");

/// Skips (with the reason) where namespaces are unavailable; fails instead under `e2e/run-tests`.
fn skip() -> bool {
    netns::skip_unless_available()
}

fn pods() -> (Netns, Netns) {
    let a = Netns::new("a").unwrap();
    let b = Netns::new("b").unwrap();
    netns::link(&a, &["10.10.0.1/16"], &b, &["10.10.0.2/16", "10.10.1.2/16"]).unwrap();
    (a, b)
}

#[test]
fn capture_rules_redirect_exactly_the_traffic_istio_would() {
    if skip() {
        return;
    }
    let (a, b) = pods();
    let init = [
        BIN,
        "init",
        "--exclude-outbound-ports",
        "9999",
        "--exclude-outbound-ip-ranges",
        "10.10.1.0/24",
        "--exclude-inbound-ports",
        "7070",
    ];
    // Twice: the second run must replace, not duplicate.
    a.exec(&init).unwrap();
    a.exec(&init).unwrap();
    let saved = String::from_utf8(a.exec(&["iptables-save", "-t", "nat"]).unwrap().stdout).unwrap();
    assert_eq!(saved.lines().filter(|l| *l == "-A OUTPUT -p tcp -j MESH_OUTPUT").count(), 1, "{saved}");
    assert_eq!(saved.lines().filter(|l| *l == "-A PREROUTING -p tcp -j MESH_INBOUND").count(), 1, "{saved}");
    assert_eq!(saved.lines().filter(|l| *l == "-A MESH_OUTPUT -j MESH_REDIRECT").count(), 1, "{saved}");

    let outbound = a.listen("0.0.0.0:15001");
    let inbound = a.listen("0.0.0.0:15006");
    let a_local = a.listen("127.0.0.1:7777");
    let a_excluded = a.listen("0.0.0.0:7070");
    let b_8080 = b.listen("0.0.0.0:8080");
    let b_9999 = b.listen("0.0.0.0:9999");

    // An app's outbound connection lands on 15001, which sees the real destination.
    let _app = a.connect("10.10.0.2:8080").unwrap();
    let (captured, _) = accept_within(&outbound, LIMIT).expect("outbound connection captured on 15001");
    assert_eq!(original_dst(&captured, false).unwrap(), "10.10.0.2:8080".parse().unwrap());
    assert!(nothing_pending(&b_8080));

    // The proxy's own UID goes straight out: no loop.
    let out = a.as_proxy_uid(&["bash", "-c", "exec 3<>/dev/tcp/10.10.0.2/8080"]).output().unwrap();
    assert!(out.status.success(), "uid 1337 cannot connect: {}", String::from_utf8_lossy(&out.stderr));
    let (_, peer) = accept_within(&b_8080, LIMIT).expect("uid 1337 reaches the real destination");
    assert_eq!(peer.ip().to_string(), "10.10.0.1");
    assert!(nothing_pending(&outbound));

    // Localhost is never captured.
    let _local = a.connect("127.0.0.1:7777").unwrap();
    accept_within(&a_local, LIMIT).expect("localhost not captured");
    assert!(nothing_pending(&outbound));

    // Excluded outbound port and range go direct.
    let _p = a.connect("10.10.0.2:9999").unwrap();
    accept_within(&b_9999, LIMIT).expect("excluded port not captured");
    let _r = a.connect("10.10.1.2:8080").unwrap();
    let (direct, _) = accept_within(&b_8080, LIMIT).expect("excluded range not captured");
    assert_eq!(direct.local_addr().unwrap().to_string(), "10.10.1.2:8080");
    assert!(nothing_pending(&outbound));

    // Inbound to the pod IP lands on 15006 with the original port.
    let _in = b.connect("10.10.0.1:8080").unwrap();
    let (captured, _) = accept_within(&inbound, LIMIT).expect("inbound connection captured on 15006");
    assert_eq!(original_dst(&captured, false).unwrap(), "10.10.0.1:8080".parse().unwrap());

    // An excluded inbound port is reached directly.
    let _ex = b.connect("10.10.0.1:7070").unwrap();
    accept_within(&a_excluded, LIMIT).expect("excluded inbound port not captured");
    assert!(nothing_pending(&inbound));

    // An app calling its own pod IP over lo is not captured either way.
    let _own = a.connect("10.10.0.1:7070").unwrap();
    accept_within(&a_excluded, LIMIT).expect("app to own pod IP not captured");
    assert!(nothing_pending(&outbound) && nothing_pending(&inbound));
}

#[test]
fn include_lists_limit_capture() {
    if skip() {
        return;
    }
    let (a, b) = pods();
    a.exec(&[BIN, "init", "--include-outbound-ip-ranges", "10.10.1.0/24", "--include-inbound-ports", "8080"]).unwrap();
    let outbound = a.listen("0.0.0.0:15001");
    let inbound = a.listen("0.0.0.0:15006");
    let a_9090 = a.listen("0.0.0.0:9090");
    let b_8080 = b.listen("0.0.0.0:8080");

    let _x = a.connect("10.10.1.2:8080").unwrap();
    let (captured, _) = accept_within(&outbound, LIMIT).expect("included range captured");
    assert_eq!(original_dst(&captured, false).unwrap(), "10.10.1.2:8080".parse().unwrap());
    let _y = a.connect("10.10.0.2:8080").unwrap();
    accept_within(&b_8080, LIMIT).expect("range outside the include list goes direct");

    let _in = b.connect("10.10.0.1:8080").unwrap();
    accept_within(&inbound, LIMIT).expect("included inbound port captured");
    let _other = b.connect("10.10.0.1:9090").unwrap();
    accept_within(&a_9090, LIMIT).expect("other inbound port not captured");
}

#[test]
fn annotations_file_is_honoured_and_dry_run_prints() {
    if skip() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("mesh-annotations-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("annotations");
    std::fs::write(&file, "traffic.sidecar.istio.io/excludeOutboundPorts=\"5432\"\nsidecar.istio.io/inject=\"true\"\n")
        .unwrap();
    let (a, _b) = pods();
    let out = a.exec(&[BIN, "init", "--dry-run", "--from-annotations", file.to_str().unwrap()]).unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("iptables -t nat -A MESH_OUTPUT -p tcp --dport 5432 -j RETURN"), "{printed}");
    // A dry run changes nothing.
    let saved = String::from_utf8(a.exec(&["iptables-save", "-t", "nat"]).unwrap().stdout).unwrap();
    assert!(!saved.contains("MESH_"), "{saved}");
    a.exec(&[BIN, "init", "--from-annotations", file.to_str().unwrap()]).unwrap();
    let saved = String::from_utf8(a.exec(&["iptables-save", "-t", "nat"]).unwrap().stdout).unwrap();
    assert!(saved.contains("-A MESH_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN"), "{saved}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn missing_net_admin_is_named() {
    if skip() {
        return;
    }
    let (a, _b) = pods();
    // Drop every capability, as a pod without NET_ADMIN would run.
    let out = a.as_proxy_uid(&["--inh-caps=-all", BIN, "init"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NET_ADMIN"), "{stderr}");
}

/// A plain HTTP/1.0 GET from inside `ns`; returns the whole response.
fn http_get(ns: &Netns, addr: &'static str, path: &'static str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = ns.connect(addr).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// An echo server in `ns` that answers `PEER-IP:DATA` after the client half-closes.
fn echo_server(ns: &Netns, addr: &str) {
    let listener = ns.listen(addr);
    listener.set_nonblocking(false).unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let peer = s.peer_addr().unwrap().ip();
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            let _ = s.write_all(format!("{peer}:{}", String::from_utf8_lossy(&buf)).as_bytes());
        }
    });
}

fn send_half_close(ns: &Netns, addr: &str, msg: &str) -> String {
    use std::io::{Read, Write};
    let mut s = ns.connect(addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(msg.as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn proxy_in_a_pod_carries_captured_traffic_without_loops() {
    if skip() {
        return;
    }
    let (a, b) = pods();
    a.exec(&[BIN, "init"]).unwrap();
    let proxy =
        Child(a.as_proxy_uid(&[BIN, "run", "--concurrency", "1"]).stderr(std::process::Stdio::null()).spawn().unwrap());
    let deadline = std::time::Instant::now() + LIMIT;
    while !http_get(&a, "127.0.0.1:15021", "/healthz/ready").is_some_and(|r| r.starts_with("HTTP/1.0 200")) {
        assert!(std::time::Instant::now() < deadline, "proxy in pod A never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Outbound: A's app → B, through A's proxy, which connects as UID 1337 (not captured again).
    echo_server(&b, "0.0.0.0:8080");
    assert_eq!(send_half_close(&a, "10.10.0.2:8080", "hello"), "10.10.0.1:hello");

    // Inbound: B → A's app, through A's proxy, which reaches the app from 127.0.0.6.
    echo_server(&a, "0.0.0.0:9080");
    assert_eq!(send_half_close(&b, "10.10.0.1:9080", "inbound"), "127.0.0.6:inbound");

    let clusters = http_get(&a, "127.0.0.1:15000", "/clusters").unwrap();
    let body: serde_json::Value = serde_json::from_str(clusters.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["clusters"][0]["stats"]["cx_total"], 1, "{body}");
    assert_eq!(body["clusters"][1]["stats"]["cx_total"], 1, "{body}");
    assert_eq!(body["clusters"][0]["stats"]["original_dst_fail"], 0, "{body}");
    drop(proxy);
}

#[test]
fn init_uses_the_backend_that_already_has_rules() {
    if skip() {
        return;
    }
    let (a, _b) = pods();
    if a.exec(&["iptables-legacy", "-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport", "1", "-j", "ACCEPT"]).is_err()
    {
        eprintln!("skipping: iptables-legacy unusable here");
        return;
    }
    a.exec(&[BIN, "init"]).unwrap();
    a.exec(&[BIN, "init"]).unwrap();
    let legacy = String::from_utf8(a.exec(&["iptables-legacy-save", "-t", "nat"]).unwrap().stdout).unwrap();
    assert_eq!(legacy.lines().filter(|l| *l == "-A OUTPUT -p tcp -j MESH_OUTPUT").count(), 1, "{legacy}");
    let nft =
        a.exec(&["iptables-nft-save", "-t", "nat"]).map(|o| String::from_utf8(o.stdout).unwrap()).unwrap_or_default();
    assert!(!nft.contains("MESH_"), "rules must not be split across backends:\n{nft}");
}
