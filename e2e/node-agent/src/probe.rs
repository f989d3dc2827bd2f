//! Probe and lifecycle-hook actions. httpGet and tcpSocket are run from the host against the pod IP
//! (as kubelet does from the node); exec runs inside the pod's namespaces as the container's user.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ExecAction, HTTPGetAction, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::TcpStream;

use crate::launch::{Launch, PodContext};

/// Where an action runs: the pod's address and the container's namespaces and user.
#[derive(Clone)]
pub struct Target {
    pub pod_ip: String,
    pub container: Container,
    pub pod: PodContext,
    pub launch: Launch,
}

/// One probe attempt; `true` means success.
pub async fn probe_once(probe: &Probe, target: &Target) -> bool {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let attempt = async {
        if let Some(h) = &probe.http_get {
            http_get(h, target, timeout).await
        } else if let Some(t) = &probe.tcp_socket {
            match resolve_port(&t.port, &target.container) {
                Some(port) => TcpStream::connect((target.pod_ip.as_str(), port)).await.is_ok(),
                None => false,
            }
        } else if let Some(e) = &probe.exec {
            exec(e, target).await
        } else {
            // gRPC probes do not exist on 1.20; treat anything else as passing.
            true
        }
    };
    tokio::time::timeout(timeout + Duration::from_millis(200), attempt).await.unwrap_or(false)
}

/// Runs a postStart/preStop handler, bounded by `limit`.
pub async fn run_hook(h: &LifecycleHandler, target: &Target, limit: Duration) -> bool {
    let attempt = async {
        if let Some(e) = &h.exec {
            exec(e, target).await
        } else if let Some(g) = &h.http_get {
            http_get(g, target, limit).await
        } else {
            true
        }
    };
    tokio::time::timeout(limit, attempt).await.unwrap_or(false)
}

async fn exec(e: &ExecAction, target: &Target) -> bool {
    let mut launch = target.launch.clone();
    launch.argv = e.command.clone().unwrap_or_default();
    if launch.argv.is_empty() {
        return false;
    }
    let mut cmd = launch.command(&target.pod);
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    cmd.kill_on_drop(true);
    matches!(cmd.status().await, Ok(s) if s.success())
}

/// An HTTP GET with curl (HTTP and HTTPS without verification, like kubelet); 200-399 passes.
async fn http_get(h: &HTTPGetAction, target: &Target, timeout: Duration) -> bool {
    let Some(port) = resolve_port(&h.port, &target.container) else { return false };
    let host = h.host.clone().unwrap_or_else(|| target.pod_ip.clone());
    let scheme = h.scheme.as_deref().unwrap_or("HTTP").to_lowercase();
    let path = h.path.clone().unwrap_or_else(|| "/".into());
    let path = if path.starts_with('/') { path } else { format!("/{path}") };
    let url = format!("{scheme}://{host}:{port}{path}");
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--noproxy", "*", "--max-time"]);
    cmd.arg(format!("{}", timeout.as_secs_f32())).arg("-H").arg("User-Agent: kube-probe/1.20");
    for hd in h.http_headers.iter().flatten() {
        cmd.arg("-H").arg(format!("{}: {}", hd.name, hd.value));
    }
    cmd.arg(url).kill_on_drop(true);
    match cmd.output().await {
        Ok(out) => {
            let code: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
            (200..400).contains(&code)
        }
        Err(_) => false,
    }
}

/// A probe port is a number or the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, c: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => match name.parse::<u16>() {
            Ok(n) => Some(n),
            Err(_) => c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .and_then(|p| u16::try_from(p.container_port).ok()),
        },
    }
}
