//! The config files of the mesh paths: the same Kubernetes objects a controller would send,
//! replayed with `--config-file`. The client's sidecar routes the Service `backend`
//! (ClusterIP 10.96.0.10, port 8080 named `http`, or `tcp` for the L4 path) by its
//! ClusterIP; in the two-sidecar path the endpoint is the server sidecar's inbound listener,
//! which the server sidecar recognises as its own workload's HTTP port.

use std::net::SocketAddr;

/// The Service address the client's sidecar treats every connection as dialled to.
pub const SERVICE_ADDRESS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 96, 0, 10)), 8080);

/// The `Host` header the load generator sends, as an app in the mesh would.
pub const SERVICE_HOST: &str = "backend.default.svc.cluster.local:8080";

/// The four listener ports of one sidecar.
pub struct Ports {
    pub outbound: u16,
    pub inbound: u16,
    pub admin: u16,
    pub readiness: u16,
}

/// The Service with one endpoint, `127.0.0.1:<endpoint_port>`, on a port named `port_name`
/// (`http`, or `tcp` for a plain relay). The client sidecar is given
/// the next hop's port; the server sidecar, whose workload is that endpoint, the app's port.
/// With `sidecar`, the endpoint is a Pod carrying the injector's label, so the client's
/// sidecar speaks mutual TLS to it (auto mTLS).
pub fn config(endpoint_port: u16, sidecar: bool, port_name: &str) -> String {
    let mut config = endpoints(endpoint_port, port_name);
    if sidecar {
        config = config.replace(
            "addresses: [{ip: 127.0.0.1}]",
            "addresses: [{ip: 127.0.0.1, targetRef: {kind: Pod, name: backend-0}}]",
        );
        config.push_str(
            "---
apiVersion: v1
kind: Pod
metadata: {name: backend-0, namespace: default, labels: {app: backend, security.istio.io/tlsMode: istio}}
status: {podIP: 127.0.0.1}
",
        );
    }
    config
}

fn endpoints(endpoint_port: u16, port_name: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: backend, namespace: default}}
spec:
  clusterIP: 10.96.0.10
  selector: {{app: backend}}
  ports:
  - {{name: {port_name}, port: 8080, targetPort: {endpoint_port}}}
---
apiVersion: v1
kind: Endpoints
metadata: {{name: backend, namespace: default}}
subsets:
- addresses: [{{ip: 127.0.0.1}}]
  ports: [{{name: {port_name}, port: {endpoint_port}}}]
"
    )
}
