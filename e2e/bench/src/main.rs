//! `mesh-bench`: the data path's benchmarks (MESH.md, "Performance is a feature").
//!
//! `mesh-bench compare` starts a backend, then measures each path to it in turn (direct, one
//! and two mesh sidecars, in plaintext and in mutual TLS, one and two nginx reverse proxies) at
//! saturation and at a fixed rate, and prints a table with the ratios. `backend` and `load`
//! are its parts, runnable alone.

mod backend;
mod certs;
mod compare;
mod load;
mod median;
mod mesh;
mod nginx;
mod paths;
mod procstat;
mod report;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use paths::{Launch, Process, Route};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "mesh-bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Measure every path, one after the other, and print the comparison.
    Compare {
        /// The sidecar binary (build it with `cargo build --release -p mesh-proxy`).
        #[arg(long, default_value = "target/release/mesh-proxy")]
        proxy: PathBuf,
        /// The nginx binary (Debian's `nginx` package).
        #[arg(long, default_value = "/usr/sbin/nginx")]
        nginx: PathBuf,
        /// Paths to measure: direct, mesh1, mesh2, mesh2-mtls, mesh1-tcp (one sidecar relaying
        /// TCP: no HTTP work), nginx1, nginx2.
        #[arg(long, value_delimiter = ',', default_value = "direct,mesh1,mesh2,mesh2-mtls,mesh1-tcp,nginx1,nginx2")]
        routes: Vec<String>,
        /// Keep-alive connections of the load generator.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// The fixed rate of the latency run, requests per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Counted time of each run.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Uncounted time before each run.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        warmup: Duration,
        /// Worker threads of each proxy (ours: --concurrency; nginx: worker_processes).
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Rounds of every path, interleaved (each path once per round); each figure reported
        /// is the median of its rounds, memory the largest.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Place processes as on two nodes: the load generator with the client's sidecar (or
        /// first nginx) on the first half of the CPUs, the backend with the server's sidecar
        /// (or second nginx) on the rest (needs `taskset` and two CPUs).
        #[arg(long)]
        pin: bool,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Serve the backend: `200` with a small body on every request.
    Backend {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Apply load to one address and print the report as JSON.
    Load {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value = "backend")]
        host: String,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Requests per second; without it, as fast as answered.
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Uncounted time before the counted run.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        warmup: Duration,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len()));
    let value: f64 = number.parse().map_err(|_| format!("`{text}`: expected a number with ms or s, like 10s"))?;
    match unit {
        "ms" => Ok(Duration::from_secs_f64(value / 1000.0)),
        "s" | "" => Ok(Duration::from_secs_f64(value)),
        _ => Err(format!("`{text}`: the unit must be ms or s")),
    }
}

fn parse_route(name: &str) -> anyhow::Result<Route> {
    Ok(match name {
        "direct" => Route::Direct,
        "mesh1" => Route::Mesh(1),
        "mesh2" => Route::Mesh(2),
        "mesh2-mtls" => Route::MeshMtls,
        "mesh1-tcp" => Route::MeshTcp,
        "nginx1" => Route::Nginx(1),
        "nginx2" => Route::Nginx(2),
        other => bail!("unknown path `{other}`: use direct, mesh1, mesh2, mesh2-mtls, mesh1-tcp, nginx1 or nginx2"),
    })
}

/// A runtime with one worker: the load generator and backend are each kept to one thread so
/// the proxies' share of the machine is the same on every path.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?)
}

/// CPUs `from..to` as a `taskset` list.
fn cpu_list(from: usize, to: usize) -> String {
    if to - from == 1 { from.to_string() } else { format!("{from}-{}", to - 1) }
}

/// Pins this process (and the threads and children it starts afterwards) to `cpus`.
fn pin_self_to(cpus: &str) -> anyhow::Result<()> {
    let pid = std::process::id().to_string();
    let status = Command::new("taskset").args(["-a", "-p", "-c", cpus, &pid]).output().context("running taskset")?;
    if !status.status.success() {
        bail!("taskset failed: {}", String::from_utf8_lossy(&status.stderr));
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Backend { listen } => runtime()?.block_on(async {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            backend::serve(listener).await?;
            Ok(())
        }),
        Cmd::Load { target, host, connections, rate, duration, warmup } => runtime()?.block_on(async {
            let spec = load::LoadSpec { target, host, connections, rate, warmup, duration };
            println!("{}", serde_json::to_string_pretty(&load::run(&spec).await?)?);
            Ok(())
        }),
        Cmd::Compare { proxy, nginx, routes, connections, rate, duration, warmup, workers, rounds, pin, json } => {
            let routes = routes.iter().map(|r| parse_route(r)).collect::<anyhow::Result<Vec<_>>>()?;
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            let placement = if pin && cpus >= 2 {
                // Two nodes: the client's on the first half of the CPUs, the server's on the
                // rest. The load generator (this process) is the client's app.
                let half = cpus / 2;
                let placement = paths::Placement { client: cpu_list(0, half), server: cpu_list(half, cpus) };
                pin_self_to(&placement.client)?;
                Some(placement)
            } else {
                None
            };
            let work_dir = std::env::temp_dir().join(format!("mesh-bench-{}", std::process::id()));
            std::fs::create_dir_all(&work_dir)?;
            let launch = Launch { proxy_binary: proxy, nginx_binary: nginx, workers, placement, work_dir };
            let plan = compare::Plan { routes, connections, rate, warmup, duration, rounds: rounds.max(1) };
            let results = runtime()?.block_on(compare_all(&launch, &plan))?;
            print!("{}", report::render(&results, rate, workers, plan.rounds));
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
            }
            let _ = std::fs::remove_dir_all(&launch.work_dir);
            // A path that failed requests did less work than the others: its figures would
            // flatter it, and a proxy that drops requests under load is a bug to look at.
            let failed: Vec<String> = results
                .iter()
                .filter(|r| r.saturation.errors + r.fixed_rate.errors > 0)
                .map(|r| format!("{} ({} failed)", r.route, r.saturation.errors + r.fixed_rate.errors))
                .collect();
            if !failed.is_empty() {
                bail!("requests failed on: {}", failed.join(", "));
            }
            Ok(())
        }
    }
}

async fn compare_all(launch: &Launch, plan: &compare::Plan) -> anyhow::Result<Vec<compare::RouteResult>> {
    let backend_addr = SocketAddr::from(([127, 0, 0, 1], paths::free_port()?));
    let exe = std::env::current_exe()?;
    let mut backend = match &launch.placement {
        Some(placement) => placement.command(paths::Side::Server, &exe),
        None => Command::new(exe),
    };
    let _backend = Process(backend.args(["backend", "--listen", &backend_addr.to_string()]).spawn()?);
    paths::wait_until_answering(backend_addr, "backend", Duration::from_secs(10)).await?;
    let mut rounds: Vec<Vec<compare::RouteResult>> = plan.routes.iter().map(|_| Vec::new()).collect();
    for round in 1..=plan.rounds {
        for (&route, results) in plan.routes.iter().zip(&mut rounds) {
            eprintln!("measuring {route} (round {round} of {}) ...", plan.rounds);
            let result =
                compare::measure(launch, plan, route, backend_addr).await.with_context(|| format!("{route}"))?;
            results.push(result);
        }
    }
    Ok(rounds.into_iter().map(median::fold).collect())
}
