//! Pod networking: one network namespace per pod, a veth pair into the host bridge, an address
//! from the pod CIDR. Everything the agent creates carries a fixed prefix so that a later run (or
//! `--cleanup`) can find and remove leftovers of a crashed one. The namespace and veth work is the
//! shared `netns` crate's, the same the data-plane tests build their pods with.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use anyhow::{Context, Result};

use crate::cmd::{run, run_quiet};
use crate::config::ClusterEnv;

/// Prefix of the host ends of pod veths.
const VETH_PREFIX: &str = "mna";

/// Names of one pod's network objects, derived from its UID so they never collide.
#[derive(Debug, Clone)]
pub struct PodNet {
    pub netns: String,
    pub host_veth: String,
    pub ip: Ipv4Addr,
}

/// Hands out pod IPs. Addresses are not reused until the range wraps, so stale conntrack entries
/// of a deleted pod never hit its successor.
#[derive(Debug)]
pub struct Ipam {
    used: Mutex<(BTreeSet<Ipv4Addr>, u32)>,
    env: ClusterEnv,
}

impl Ipam {
    pub fn new(env: &ClusterEnv) -> Self {
        Self { used: Mutex::new((BTreeSet::new(), 0)), env: env.clone() }
    }

    pub fn allocate(&self) -> Result<Ipv4Addr> {
        let mut guard = self.used.lock().expect("ipam lock");
        let (used, cursor) = &mut *guard;
        let hosts: Vec<Ipv4Addr> = self.env.pod_cidr.hosts().collect();
        for step in 0..hosts.len() as u32 {
            let idx = ((*cursor + step) as usize) % hosts.len();
            let ip = hosts[idx];
            if ip != self.env.bridge_ip && !used.contains(&ip) {
                used.insert(ip);
                *cursor = idx as u32 + 1;
                return Ok(ip);
            }
        }
        anyhow::bail!("pod CIDR {} is exhausted", self.env.pod_cidr)
    }

    pub fn free(&self, ip: Ipv4Addr) {
        self.used.lock().expect("ipam lock").0.remove(&ip);
    }
}

/// Makes sure the bridge exists with the host's address, that the host forwards, and that the
/// service CIDR routes onto the bridge (connect() to a ClusterIP needs a route before DNAT).
pub async fn setup_host(env: &ClusterEnv) -> Result<()> {
    if run(&["ip", "link", "show", &env.bridge]).await.is_err() {
        run(&["ip", "link", "add", "name", &env.bridge, "type", "bridge"]).await?;
    }
    let addr = format!("{}/{}", env.bridge_ip, env.bridge_prefix);
    let shown = run(&["ip", "-o", "-4", "addr", "show", "dev", &env.bridge]).await?;
    if !shown.contains(&format!(" {addr} ")) {
        run(&["ip", "addr", "add", &addr, "dev", &env.bridge]).await?;
    }
    run(&["ip", "link", "set", &env.bridge, "up"]).await?;
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("enabling ip_forward")?;
    let svc = env.service_cidr.to_string();
    run(&["ip", "route", "replace", &svc, "dev", &env.bridge, "src", &env.bridge_ip.to_string()]).await?;
    Ok(())
}

/// Creates the pod's namespace and wires it to the bridge.
pub async fn create(env: &ClusterEnv, uid: &str, pod_key: &str, ip: Ipv4Addr) -> Result<PodNet> {
    let short: String = uid.chars().filter(|c| c.is_ascii_hexdigit()).take(8).collect();
    // netns names are file names; keep them readable but unique per pod incarnation.
    let netns = format!("{}{pod_key}-{short}", netns_prefix(env));
    let net = PodNet { netns, host_veth: format!("{VETH_PREFIX}{short}"), ip };
    let (bridge, gateway) = (env.bridge.clone(), env.bridge_ip.to_string());
    let cidr = format!("{ip}/{}", env.bridge_prefix);
    let made = net.clone();
    blocking(move || {
        // A leftover of an earlier attempt for the same pod would make every step below fail.
        remove(&made);
        netns::create(&made.netns)?;
        netns::attach_to_bridge(&made.netns, &made.host_veth, &bridge, &cidr, &gateway)
    })
    .await
    .with_context(|| format!("wiring network namespace {}", net.netns))?;
    Ok(net)
}

/// Kills whatever still runs in the namespace and removes it (the veth pair goes with it).
pub async fn destroy(net: &PodNet) {
    let net = net.clone();
    let _ = tokio::task::spawn_blocking(move || remove(&net)).await;
}

fn remove(net: &PodNet) {
    netns::destroy(&net.netns);
    netns::run_quiet(&["ip", "link", "del", &net.host_veth]);
}

/// Runs the shared crate's blocking `ip` calls off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> Result<T> {
    Ok(tokio::task::spawn_blocking(work).await.context("network namespace task")??)
}

/// `<NETNS_PREFIX>pod-`: narrower than the cluster-wide prefix, so that other users of it (the
/// data-plane tests) are never touched by our cleanup.
fn netns_prefix(env: &ClusterEnv) -> String {
    format!("{}pod-", env.netns_prefix)
}

/// Removes every namespace and veth carrying our prefixes: leftovers of a crashed run.
pub async fn cleanup_all(env: &ClusterEnv) {
    let prefix = netns_prefix(env);
    let leftovers: Vec<String> = netns::list().into_iter().filter(|name| name.starts_with(&prefix)).collect();
    for name in leftovers {
        tracing::info!(netns = %name, "removing leftover network namespace");
        let _ = tokio::task::spawn_blocking(move || netns::destroy(&name)).await;
    }
    if let Ok(links) = run(&["ip", "-o", "link", "show", "type", "veth"]).await {
        for line in links.lines() {
            let name = line.split(':').nth(1).unwrap_or_default().trim();
            let name = name.split('@').next().unwrap_or_default();
            // Only ours: on our bridge, or on none (a second cluster's agent has another bridge).
            let master = line.split(" master ").nth(1).and_then(|m| m.split_whitespace().next());
            if name.starts_with(VETH_PREFIX) && master.is_none_or(|m| m == env.bridge) {
                tracing::info!(veth = name, "removing leftover veth");
                run_quiet(&["ip", "link", "del", name]).await;
            }
        }
    }
}

/// `--cleanup` only: also remove the service route. The bridge stays: the API server listens on
/// its address, and `e2e/local-cluster` made it (and removes it on `down`).
pub async fn cleanup_host(env: &ClusterEnv) {
    run_quiet(&["ip", "route", "del", &env.service_cidr.to_string(), "dev", &env.bridge]).await;
}
