//! Probe rewrite: the app's httpGet and tcpSocket probes go to the sidecar's health port.
//!
//! Under STRICT mTLS the kubelet's plain-text probe would be refused by the inbound capture, so
//! each probe becomes an httpGet of `/app-health/<container>/<readyz|livez|startupz>` on 15021,
//! which is never captured. The original (with a named port resolved to its number, which the
//! proxy cannot look up) is kept in the `sidecar.istio.io/appProbers` annotation; the proxy reads
//! it from its downward-API file and runs the real probe against the app over localhost.

use crate::config::ports;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The sidecar paths and what each one stands for.
pub type AppProbers = BTreeMap<String, Value>;

/// Rewrites the probes of `containers` in place and returns the originals by sidecar path.
pub fn rewrite(containers: &mut [Container]) -> AppProbers {
    let mut kept = AppProbers::new();
    for c in containers.iter_mut() {
        let name = c.name.clone();
        let ports = c.ports.clone().unwrap_or_default();
        let resolve = |p: &IntOrString| match p {
            IntOrString::Int(n) => Some(*n),
            IntOrString::String(s) => s
                .parse()
                .ok()
                .or_else(|| ports.iter().find(|cp| cp.name.as_deref() == Some(s.as_str())).map(|cp| cp.container_port)),
        };
        for (kind, probe) in
            [("readyz", &mut c.readiness_probe), ("livez", &mut c.liveness_probe), ("startupz", &mut c.startup_probe)]
        {
            let Some(p) = probe.as_mut() else { continue };
            let path = format!("/app-health/{name}/{kind}");
            if let Some(original) = original(p, &resolve) {
                kept.insert(path.clone(), original);
                p.tcp_socket = None;
                p.http_get = Some(HTTPGetAction {
                    path: Some(path),
                    port: IntOrString::Int(ports::HEALTH.into()),
                    scheme: Some("HTTP".into()),
                    ..Default::default()
                });
            }
        }
    }
    kept
}

/// The probe as the proxy must run it, or `None` when it stays as it is: exec and gRPC probes
/// (they do not cross the capture), an httpGet with its own `host` (it is not aimed at this pod),
/// a port name the container does not declare, or a probe already aimed at the sidecar.
fn original(p: &Probe, resolve: &impl Fn(&IntOrString) -> Option<i32>) -> Option<Value> {
    let timeout = p.timeout_seconds.unwrap_or(1);
    if let Some(h) = &p.http_get {
        let port = resolve(&h.port)?;
        if h.host.is_some() || port == i32::from(ports::HEALTH) {
            return None;
        }
        let mut get = json!({
            "path": h.path.clone().unwrap_or_else(|| "/".into()),
            "port": port,
            "scheme": h.scheme.clone().unwrap_or_else(|| "HTTP".into()),
        });
        if let Some(headers) = &h.http_headers {
            get["httpHeaders"] = serde_json::to_value(headers).ok()?;
        }
        return Some(json!({ "httpGet": get, "timeoutSeconds": timeout }));
    }
    if let Some(t) = &p.tcp_socket {
        if t.host.is_some() {
            return None;
        }
        let port = resolve(&t.port)?;
        return Some(json!({ "tcpSocket": { "port": port }, "timeoutSeconds": timeout }));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, ExecAction, TCPSocketAction};

    fn web() -> Container {
        Container {
            name: "web".into(),
            ports: Some(vec![ContainerPort { name: Some("http".into()), container_port: 8080, ..Default::default() }]),
            readiness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    path: Some("/ready".into()),
                    port: IntOrString::String("http".into()),
                    ..Default::default()
                }),
                period_seconds: Some(5),
                timeout_seconds: Some(2),
                ..Default::default()
            }),
            liveness_probe: Some(Probe {
                tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(8080), host: None }),
                ..Default::default()
            }),
            startup_probe: Some(Probe {
                exec: Some(ExecAction { command: Some(vec!["true".into()]) }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn http_and_tcp_probes_go_to_the_health_port_and_the_originals_are_kept() {
        let mut cs = vec![web()];
        let kept = rewrite(&mut cs);
        let ready = cs[0].readiness_probe.as_ref().unwrap();
        let get = ready.http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some("/app-health/web/readyz"));
        assert_eq!(get.port, IntOrString::Int(15021));
        assert_eq!(ready.period_seconds, Some(5), "timing fields stay");
        let live = cs[0].liveness_probe.as_ref().unwrap();
        assert!(live.tcp_socket.is_none());
        assert_eq!(live.http_get.as_ref().unwrap().path.as_deref(), Some("/app-health/web/livez"));
        assert!(cs[0].startup_probe.as_ref().unwrap().exec.is_some(), "exec probes are left alone");

        assert_eq!(
            kept["/app-health/web/readyz"],
            json!({"httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTP"}, "timeoutSeconds": 2})
        );
        assert_eq!(kept["/app-health/web/livez"], json!({"tcpSocket": {"port": 8080}, "timeoutSeconds": 1}));
        assert_eq!(kept.len(), 2);
    }

    #[test]
    fn probes_that_cannot_be_forwarded_stay_as_they_are() {
        let mut c = web();
        c.readiness_probe.as_mut().unwrap().http_get.as_mut().unwrap().port = IntOrString::String("nope".into());
        c.liveness_probe.as_mut().unwrap().tcp_socket.as_mut().unwrap().host = Some("10.0.0.1".into());
        let before = c.clone();
        let mut cs = vec![c];
        assert!(rewrite(&mut cs).is_empty());
        assert_eq!(cs[0], before);
    }

    #[test]
    fn rewriting_twice_changes_nothing_more() {
        let mut cs = vec![web()];
        rewrite(&mut cs);
        let once = cs.clone();
        assert!(rewrite(&mut cs).is_empty());
        assert_eq!(cs, once);
    }
}
