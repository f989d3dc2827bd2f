//! The paths a request can take to the backend, each started as real processes: direct, through
//! one or two of our sidecars, or through one or two nginx reverse proxies doing the same job.

use anyhow::{Context, bail};
use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A path from the load generator to the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Direct,
    /// Through `n` mesh sidecars: the client's outbound side, then the server's inbound side.
    Mesh(u8),
    /// Through two sidecars that speak mutual TLS to each other, as they do in the mesh: the
    /// server's pod carries the injector's label, and each sidecar has a workload certificate.
    MeshMtls,
    /// Through one sidecar relaying the Service's port as plain TCP (named `tcp`): the same
    /// process and connections as `Mesh(1)` with no HTTP work, the floor of what any sidecar
    /// spends per request on this machine (the kernel's part of it above all).
    MeshTcp,
    /// Through `n` nginx reverse proxies in a chain.
    Nginx(u8),
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Direct => write!(f, "direct"),
            Route::Mesh(1) => write!(f, "1 sidecar"),
            Route::Mesh(n) => write!(f, "{n} sidecars"),
            Route::MeshMtls => write!(f, "2 sidecars mTLS"),
            Route::MeshTcp => write!(f, "1 sidecar L4"),
            Route::Nginx(1) => write!(f, "1 nginx"),
            Route::Nginx(n) => write!(f, "{n} nginx"),
        }
    }
}

/// What starts the processes of a path.
#[derive(Clone, Debug)]
pub struct Launch {
    pub proxy_binary: PathBuf,
    pub nginx_binary: PathBuf,
    /// Worker threads of each proxy: `--concurrency` for ours, `worker_processes` for nginx.
    pub workers: usize,
    /// Where processes run, when pinning: the CPUs of the client's "node" (the load generator,
    /// the client's sidecar or first nginx) and of the server's (the backend, the server's
    /// sidecar or second nginx), as `taskset -c` lists.
    pub placement: Option<Placement>,
    /// Scratch directory for config files and nginx's prefix.
    pub work_dir: PathBuf,
}

/// The two "nodes" of a run, as CPU lists: a request crosses from one to the other as it would
/// between two machines, and the two sidecars of a path never take turns on one core.
#[derive(Clone, Debug)]
pub struct Placement {
    pub client: String,
    pub server: String,
}

/// Which node a process belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

impl Placement {
    /// Wraps `program` in `taskset` for `side`.
    pub fn command(&self, side: Side, program: &Path) -> Command {
        let cpus = match side {
            Side::Client => &self.client,
            Side::Server => &self.server,
        };
        let mut command = Command::new("taskset");
        command.arg("-c").arg(cpus).arg(program);
        command
    }
}

/// A child process stopped when dropped, so no run leaves anything behind.
pub struct Process(pub Child);

impl Drop for Process {
    /// SIGTERM first, so that a process with children of its own stops them: nginx's master
    /// stops its workers, while SIGKILL would leave them running. SIGKILL after a second.
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A started path: where the load generator connects, and the proxies on the way.
pub struct RunningRoute {
    pub entry: SocketAddr,
    pub proxies: Vec<Process>,
}

/// A port free on loopback now (the kernel picks it; it is released for the child to bind).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Launch {
    fn command(&self, side: Side, program: &Path) -> Command {
        match &self.placement {
            Some(placement) => placement.command(side, program),
            None => Command::new(program),
        }
    }

    /// Starts `route` in front of the backend on `backend`.
    pub fn start(&self, route: Route, backend: SocketAddr) -> anyhow::Result<RunningRoute> {
        match route {
            Route::Direct => Ok(RunningRoute { entry: backend, proxies: Vec::new() }),
            Route::Mesh(hops) => self.start_mesh(hops, false, "http", backend),
            Route::MeshMtls => self.start_mesh(2, true, "http", backend),
            Route::MeshTcp => self.start_mesh(1, false, "tcp", backend),
            Route::Nginx(hops) => self.start_nginx(hops, backend),
        }
    }

    /// One sidecar: the client's, routing the Service's ClusterIP to the backend. Two: the
    /// client's routes to the server's inbound listener, which hands the request to the app;
    /// with `mtls`, the two sidecars have certificates and the server's pod the sidecar label,
    /// so the client's sidecar speaks mutual TLS to the server's. `port_name` names the Service's
    /// port, and so its protocol.
    fn start_mesh(&self, hops: u8, mtls: bool, port_name: &str, backend: SocketAddr) -> anyhow::Result<RunningRoute> {
        let tls_dir = if mtls { Some(crate::certs::write_workload_certs(&self.work_dir)?) } else { None };
        let tls_dir = tls_dir.as_deref();
        let mut proxies = Vec::new();
        let mut next_hop = backend;
        if hops == 2 {
            let ports = self.mesh_ports()?;
            let config = crate::mesh::config(backend.port(), false, port_name);
            proxies.push(self.spawn_proxy(Side::Server, &ports, &config, "127.0.0.1", backend, tls_dir)?);
            next_hop = loopback(ports.inbound);
        } else if hops != 1 || mtls {
            bail!("mesh paths have one or two sidecars (mutual TLS takes two), not {hops}");
        }
        let ports = self.mesh_ports()?;
        let config = crate::mesh::config(next_hop.port(), mtls, port_name);
        let service = crate::mesh::SERVICE_ADDRESS;
        proxies.push(self.spawn_proxy(Side::Client, &ports, &config, "127.0.0.2", service, tls_dir)?);
        Ok(RunningRoute { entry: loopback(ports.outbound), proxies })
    }

    fn mesh_ports(&self) -> anyhow::Result<crate::mesh::Ports> {
        Ok(crate::mesh::Ports {
            outbound: free_port()?,
            inbound: free_port()?,
            admin: free_port()?,
            readiness: free_port()?,
        })
    }

    fn spawn_proxy(
        &self,
        side: Side,
        ports: &crate::mesh::Ports,
        config: &str,
        instance_ip: &str,
        fixed_upstream: SocketAddr,
        tls_dir: Option<&Path>,
    ) -> anyhow::Result<Process> {
        let name = match side {
            Side::Client => "client",
            Side::Server => "server",
        };
        let config_path = self.work_dir.join(format!("mesh-{name}.yaml"));
        std::fs::write(&config_path, config).with_context(|| format!("writing {}", config_path.display()))?;
        let mut command = self.command(side, &self.proxy_binary);
        command
            .args(["--outbound-port", &ports.outbound.to_string(), "--inbound-port", &ports.inbound.to_string()])
            .args(["--admin-port", &ports.admin.to_string(), "--readiness-port", &ports.readiness.to_string()])
            .args(["--concurrency", &self.workers.to_string(), "--fixed-upstream", &fixed_upstream.to_string()])
            .arg("--config-file")
            .arg(&config_path)
            .args(["--pod-name", &format!("bench-{name}"), "--pod-namespace", "default"])
            .args(["--instance-ips", instance_ip])
            .args(tls_dir.map(|dir| [std::ffi::OsStr::new("--tls-dir"), dir.as_os_str()]).into_iter().flatten())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        let child = command.spawn().with_context(|| format!("starting {}", self.proxy_binary.display()))?;
        Ok(Process(child))
    }

    /// A chain of nginx processes, each a reverse proxy with pooled keep-alive upstream
    /// connections, the way one would configure nginx for this job: the first on the client's
    /// node, the second (of two) on the server's, as the sidecars run.
    fn start_nginx(&self, hops: u8, backend: SocketAddr) -> anyhow::Result<RunningRoute> {
        let mut proxies = Vec::new();
        let mut next_hop = backend;
        for hop in (0..hops).rev() {
            let listen = loopback(free_port()?);
            let prefix = self.work_dir.join(format!("nginx-{hop}"));
            std::fs::create_dir_all(prefix.join("logs"))?;
            let config = crate::nginx::config(&prefix, listen, next_hop, self.workers);
            let config_path = prefix.join("nginx.conf");
            std::fs::write(&config_path, config)?;
            let side = if hop == 0 { Side::Client } else { Side::Server };
            let mut command = self.command(side, &self.nginx_binary);
            command.arg("-p").arg(&prefix).arg("-c").arg(&config_path).stdout(Stdio::null());
            let child = command.spawn().with_context(|| format!("starting {}", self.nginx_binary.display()))?;
            proxies.push(Process(child));
            next_hop = listen;
        }
        Ok(RunningRoute { entry: next_hop, proxies })
    }
}

/// Waits until a request through `entry` is answered 200, or fails after `within`.
pub async fn wait_until_answering(entry: SocketAddr, host: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let probe = crate::load::LoadSpec {
            target: entry,
            host: host.to_string(),
            connections: 1,
            rate: None,
            warmup: Duration::ZERO,
            duration: Duration::from_millis(50),
        };
        match crate::load::run(&probe).await {
            Ok(report) if report.ok > 0 && report.errors == 0 => return Ok(()),
            _ if Instant::now() > deadline => bail!("nothing answers 200 through {entry} after {within:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
