//! `mesh-node-agent`: the kubelet (and kube-proxy) of the local test cluster. It registers a
//! Node, runs the pods bound to it as processes in per-pod network and mount namespaces, writes
//! their status, and keeps iptables rules for Service ClusterIPs. See README.md for where it
//! differs from a real kubelet.
#![forbid(unsafe_code)]

mod agent;
mod cmd;
mod config;
mod container;
mod env;
mod launch;
mod netns;
mod node;
mod pod;
mod probe;
mod services;
mod status;
mod volumes;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Parser;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

#[derive(Parser, Debug)]
#[command(name = "mesh-node-agent", about = "Runs the pods of one Node of the local test cluster as processes")]
struct Args {
    /// Name of the Node object this agent registers and serves (default: NODE_NAME of cluster.env).
    #[arg(long)]
    node_name: Option<String>,
    /// Shared cluster settings (bridge, CIDRs, state dir, kubeconfig), as written by e2e/local-cluster.
    #[arg(long, env = "MESH_CLUSTER_ENV", default_value = "e2e/cluster.env")]
    cluster_env: PathBuf,
    /// Image → binary mapping.
    #[arg(long, env = "MESH_IMAGES", default_value = "e2e/images.yaml")]
    images: PathBuf,
    /// Kubeconfig to use instead of the one named in cluster.env.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Remove everything any run of the agent created (namespaces, veths, iptables chains, pod
    /// state) and exit.
    #[arg(long)]
    cleanup: bool,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if args.log_json {
        builder.json().init()
    } else {
        builder.init()
    }

    let env_file = locate(&args.cluster_env);
    let env = config::ClusterEnv::load(env_file.as_deref())?;
    tracing::info!(?env, "cluster settings");

    // Leftovers of a crashed run would hold IPs and iptables chains; start from nothing.
    netns::cleanup_all(&env).await;
    services::cleanup(&env.chain_prefix).await;
    let _ = std::fs::remove_dir_all(env.state_dir.join("pods"));
    if args.cleanup {
        netns::cleanup_host(&env).await;
        tracing::info!("cleanup done");
        return Ok(());
    }

    let node_name = args.node_name.clone().unwrap_or_else(|| env.node_name.clone());
    let images = config::Images::load(&locate(&args.images).unwrap_or(args.images.clone()))?;
    let client = client(args.kubeconfig.as_ref().or(env.kubeconfig.as_ref())).await?;
    netns::setup_host(&env).await?;
    let proxy = services::Proxy::install(&env).await?;
    node::register(&client, &node_name, &env).await?;
    tokio::spawn(node::heartbeat(client.clone(), node_name.clone(), env.clone()));

    let agent = agent::Agent::start(client, env, images, node_name, proxy);
    tokio::select! {
        _ = agent.clone().run_pods() => anyhow::bail!("pod watch ended"),
        _ = shutdown_signal() => tracing::info!("shutting down; pods are left to the next run or --cleanup"),
    }
    Ok(())
}

/// A relative path is tried from the working directory, then from the repository the binary was
/// built in (`target/debug/..` → repo root), so the agent runs from anywhere.
fn locate(path: &Path) -> Option<PathBuf> {
    if path.exists() {
        return Some(path.to_path_buf());
    }
    let exe = std::env::current_exe().ok()?;
    let repo = exe.parent()?.parent()?.parent()?;
    Some(repo.join(path)).filter(|p| p.exists())
}

async fn client(kubeconfig: Option<&PathBuf>) -> Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
