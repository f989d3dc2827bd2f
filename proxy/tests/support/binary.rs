//! The `mesh-proxy` binary started by a test, on ports the kernel picks.
//!
//! Tests used to find "free" ports by binding and releasing them, which races with every other
//! test taking ports at the same time; a lost race showed up as "proxy never listened" with
//! nothing to go on. Here the binary binds port 0 itself and the test reads the bound addresses
//! from its `proxy ready` log line, and every log line is kept to explain a failure.

use super::{Child, WAIT};
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// Where the started binary listens, from its `proxy ready` line.
#[derive(Debug, Clone, Copy)]
pub struct BoundPorts {
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    pub readiness: SocketAddr,
}

/// A running `mesh-proxy`, killed and reaped when dropped.
pub struct RunningBinary {
    pub child: Child,
    pub ports: BoundPorts,
    logs: Arc<Mutex<String>>,
}

impl RunningBinary {
    /// The process id, for signals.
    pub fn id(&self) -> u32 {
        self.child.0.id()
    }

    /// Starts `command` (a `mesh-proxy` command line without port or log flags) with every
    /// listener on port 0 and JSON logs, and waits for it to say where it listens.
    pub fn start(mut command: Command) -> RunningBinary {
        for port in ["MESH_OUTBOUND_PORT", "MESH_INBOUND_PORT", "MESH_ADMIN_PORT", "MESH_READINESS_PORT"] {
            command.env(port, "0");
        }
        command.env("MESH_LOG_FORMAT", "json").env("RUST_LOG", "info");
        // Wrapped at once, so a start that fails below still kills the process.
        let mut child =
            Child(command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("starting mesh-proxy"));
        let stderr = child.0.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let kept = logs.clone();
        // Reads stderr to the end, so the proxy never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(ports) = ports_in(&line) {
                    let _ = ready_tx.send(ports);
                }
                let mut logs = kept.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let deadline = std::time::Instant::now() + WAIT;
        let ports = loop {
            match ready_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(ports) => break ports,
                Err(_) if std::time::Instant::now() > deadline => {
                    panic!("mesh-proxy never said it was ready; its log:\n{}", logs.lock().unwrap())
                }
                Err(_) => {}
            }
            if let Some(status) = child.0.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100)); // the last lines
                panic!("mesh-proxy exited with {status} before it was ready; its log:\n{}", logs.lock().unwrap());
            }
        };
        RunningBinary { child, ports, logs }
    }

    /// Every log line so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Waits (bounded by [`WAIT`]) for the process to exit by itself.
    pub fn wait_for_exit(&mut self, after: &str) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100)); // the last lines
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "mesh-proxy did not exit after {after}; its log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The listen addresses in a JSON `proxy ready` line, if that is what `line` is.
fn ports_in(line: &str) -> Option<BoundPorts> {
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    if event["message"] != "proxy ready" {
        return None;
    }
    let port = |name: &str| -> Option<SocketAddr> {
        let bound: SocketAddr = event[name].as_str()?.parse().ok()?;
        // Listeners on 0.0.0.0 are reached through loopback.
        Some(SocketAddr::from(([127, 0, 0, 1], bound.port())))
    };
    Some(BoundPorts {
        outbound: port("outbound")?,
        inbound: port("inbound")?,
        admin: port("admin")?,
        readiness: port("readiness")?,
    })
}
