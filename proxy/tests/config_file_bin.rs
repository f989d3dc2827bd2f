//! The `mesh-proxy` binary with `--config-file`: refuses to start on a config it cannot use,
//! naming the object and field, and reloads on SIGHUP.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use support::binary::RunningBinary;
use support::mesh::get;

const BIN: &str = env!("CARGO_BIN_EXE_mesh-proxy");

fn config_file(name: &str, yaml: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("mesh-bin-{name}-{}.yaml", std::process::id()));
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn a_config_that_cannot_be_read_stops_the_start_with_the_object_and_field() {
    let path = config_file(
        "bad",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: shop}\n\
         spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews}, wieght: 5}]}]}\n",
    );
    let out = Command::new(BIN)
        .args(["run", "--config-file", path.to_str().unwrap()])
        .envs(["MESH_OUTBOUND_PORT", "MESH_INBOUND_PORT", "MESH_ADMIN_PORT", "MESH_READINESS_PORT"].map(|v| (v, "0")))
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("VirtualService shop/reviews") && stderr.contains("wieght"), "{stderr}");
}

async fn version(admin: SocketAddr) -> Option<u64> {
    let connect = tokio::net::TcpStream::connect(admin).await;
    if connect.is_err() {
        return None;
    }
    let (_, _, body) = get(admin, "admin", "/config_dump", &[]).await;
    serde_json::from_str::<serde_json::Value>(&body).ok()?["routing"]["version"].as_u64()
}

#[tokio::test]
async fn sighup_reloads_the_config_file() {
    let path = config_file(
        "hup",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
         spec: {clusterIP: 10.96.7.7, ports: [{name: http, port: 80}]}\n",
    );
    let mut command = Command::new(BIN);
    command.args(["run", "--config-file", path.to_str().unwrap(), "--config-poll", "3600s"]);
    let proxy = RunningBinary::start(command);
    let admin = proxy.ports.admin;
    let wait_for = |wanted: u64| async move {
        let deadline = Instant::now() + support::WAIT;
        while version(admin).await != Some(wanted) {
            assert!(Instant::now() < deadline, "config version {wanted} never showed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    wait_for(1).await;
    let hup = Command::new("kill").args(["-HUP", &proxy.id().to_string()]).status().unwrap();
    assert!(hup.success());
    wait_for(2).await;
    let _ = std::fs::remove_file(&path);
}
