//! kube-proxy's job and name resolution. Services and Endpoints are watched; each change rewrites
//! (1) our iptables chains: nat `<P>-SERVICES` (from PREROUTING and OUTPUT) sends a
//! ClusterIP:port to `<P>-SVC-*`, which picks a ready endpoint at random with kube-proxy's
//! probabilities and DNATs in `<P>-SEP-*` (`<P>` is `MESH` unless a second cluster on the host
//! sets another); and (2) every pod's bind-mounted /etc/hosts, which maps Service names
//! to ClusterIPs. /etc/hosts was chosen over a DNS responder: nothing to run or port to bind, and
//! glibc, musl and Go all read it.

use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};

use crate::cmd::{run, run_quiet, run_with_stdin};
use crate::config::ClusterEnv;

const MARK: &str = "0x4000/0x4000";
/// Our jump rules: (table, built-in chain, our chain's suffix).
const JUMPS: &[(&str, &str, &str)] = &[
    ("nat", "PREROUTING", "SERVICES"),
    ("nat", "OUTPUT", "SERVICES"),
    ("nat", "POSTROUTING", "POSTROUTING"),
    ("filter", "OUTPUT", "FILTER"),
    ("filter", "FORWARD", "FILTER"),
];

/// Keeps the host's iptables in step with Services and Endpoints.
pub struct Proxy {
    env: ClusterEnv,
    /// Per-service chains written last time, so that chains of deleted Services are removed.
    chains: Mutex<BTreeSet<String>>,
    /// Without bridge netfilter, replies between pods on the bridge bypass conntrack, so every
    /// service connection must be masqueraded; with it, only hairpin connections are.
    masquerade_all: bool,
}

impl Proxy {
    /// Creates our chains and hooks them into the built-in ones.
    pub async fn install(env: &ClusterEnv) -> Result<Self> {
        for (table, builtin, suffix) in JUMPS {
            let chain = &format!("{}-{suffix}", env.chain_prefix);
            run_quiet(&["iptables", "-w", "-t", table, "-N", chain]).await;
            let rule = ["-j", chain, "-m", "comment", "--comment", "mesh-node-agent"];
            let check = [&["iptables", "-w", "-t", table, "-C", builtin][..], &rule].concat();
            if run(&check).await.is_err() {
                run(&[&["iptables", "-w", "-t", table, "-I", builtin, "1"][..], &rule].concat()).await?;
            }
        }
        let br_nf = std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables").unwrap_or_default();
        let masquerade_all = br_nf.trim() != "1";
        tracing::info!(masquerade_all, "service proxy installed");
        Ok(Self { env: env.clone(), chains: Mutex::new(BTreeSet::new()), masquerade_all })
    }

    /// Rewrites our chains atomically with `iptables-restore --noflush`.
    pub async fn sync(&self, services: &[Arc<Service>], endpoints: &[Arc<Endpoints>]) -> Result<()> {
        let old = self.chains.lock().expect("chains lock").clone();
        let (text, new) = self.render(services, endpoints, &old);
        run_with_stdin(&["iptables-restore", "-w", "--noflush"], Some(&text)).await?;
        *self.chains.lock().expect("chains lock") = new;
        Ok(())
    }

    fn render(
        &self,
        services: &[Arc<Service>],
        endpoints: &[Arc<Endpoints>],
        old: &BTreeSet<String>,
    ) -> (String, BTreeSet<String>) {
        let eps: HashMap<(String, String), &Endpoints> = endpoints
            .iter()
            .map(|e| {
                ((e.metadata.namespace.clone().unwrap_or_default(), e.metadata.name.clone().unwrap_or_default()), &**e)
            })
            .collect();
        let mut nat = Vec::new();
        let mut filter = Vec::new();
        let mut chains = BTreeSet::new();
        let p = &self.env.chain_prefix;
        nat.push(format!("-A {p}-POSTROUTING -m mark --mark {MARK} -j MASQUERADE"));
        for svc in services {
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let name = svc.metadata.name.clone().unwrap_or_default();
            let Some(spec) = &svc.spec else { continue };
            let Some(cip) = spec.cluster_ip.as_deref().filter(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok()) else {
                continue;
            };
            for port in spec.ports.iter().flatten() {
                let proto = port.protocol.as_deref().unwrap_or("TCP").to_lowercase();
                let port_name = port.name.clone().unwrap_or_default();
                let backends = ready_backends(eps.get(&(ns.clone(), name.clone())).copied(), &port_name);
                let comment = format!("{ns}/{name}:{port_name}");
                let dst = format!("-d {cip}/32 -p {proto} -m {proto} --dport {}", port.port);
                if backends.is_empty() {
                    filter.push(format!(
                        "-A {p}-FILTER {dst} -m comment --comment \"{comment} has no endpoints\" -j REJECT"
                    ));
                    continue;
                }
                let svc_chain = chain_name(&format!("{p}-SVC-"), &comment);
                chains.insert(svc_chain.clone());
                nat.push(format!("-A {p}-SERVICES {dst} -m comment --comment \"{comment}\" -j {svc_chain}"));
                if self.masquerade_all {
                    nat.push(format!("-A {svc_chain} -j MARK --set-xmark {MARK}"));
                }
                let n = backends.len();
                for (i, (ip, target_port)) in backends.iter().enumerate() {
                    let sep = chain_name(&format!("{p}-SEP-"), &format!("{comment}/{ip}:{target_port}"));
                    chains.insert(sep.clone());
                    let left = n - i;
                    if left > 1 {
                        let p = 1.0 / left as f64;
                        nat.push(format!("-A {svc_chain} -m statistic --mode random --probability {p:.10} -j {sep}"));
                    } else {
                        nat.push(format!("-A {svc_chain} -j {sep}"));
                    }
                    // Hairpin: a pod reaching itself through its Service must see the reply
                    // come from the host, not from itself.
                    nat.push(format!("-A {sep} -s {ip}/32 -j MARK --set-xmark {MARK}"));
                    nat.push(format!("-A {sep} -p {proto} -m {proto} -j DNAT --to-destination {ip}:{target_port}"));
                }
            }
        }
        let br = &self.env.bridge;
        filter.push(format!("-A {p}-FILTER -i {br} -j ACCEPT"));
        filter.push(format!("-A {p}-FILTER -o {br} -j ACCEPT"));
        let mut text = format!("*nat\n:{p}-SERVICES - [0:0]\n:{p}-POSTROUTING - [0:0]\n");
        for c in chains.union(old) {
            text.push_str(&format!(":{c} - [0:0]\n"));
        }
        for rule in nat {
            text.push_str(&rule);
            text.push('\n');
        }
        for c in old.difference(&chains) {
            text.push_str(&format!("-X {c}\n"));
        }
        text.push_str(&format!("COMMIT\n*filter\n:{p}-FILTER - [0:0]\n"));
        for rule in filter {
            text.push_str(&rule);
            text.push('\n');
        }
        text.push_str("COMMIT\n");
        (text, chains)
    }
}

/// Ready addresses of the Endpoints port named like the Service port.
fn ready_backends(ep: Option<&Endpoints>, port_name: &str) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for subset in ep.and_then(|e| e.subsets.as_ref()).into_iter().flatten() {
        let Some(port) = subset.ports.iter().flatten().find(|p| p.name.as_deref().unwrap_or_default() == port_name)
        else {
            continue;
        };
        for addr in subset.addresses.iter().flatten() {
            out.push((addr.ip.clone(), port.port));
        }
    }
    out.sort();
    out
}

/// iptables chain names are limited to 28 characters; a hash keeps them short and stable.
fn chain_name(prefix: &str, key: &str) -> String {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    format!("{prefix}{:016X}", h.finish())
}

/// Removes every chain and jump rule the proxy made (with this cluster's prefix).
pub async fn cleanup(prefix: &str) {
    for (table, builtin, suffix) in JUMPS {
        let chain = format!("{prefix}-{suffix}");
        let rule = ["-j", &chain, "-m", "comment", "--comment", "mesh-node-agent"];
        while run(&[&["iptables", "-w", "-t", table, "-D", builtin][..], &rule].concat()).await.is_ok() {}
    }
    let ours: Vec<String> =
        ["SERVICES", "POSTROUTING", "FILTER", "SVC-", "SEP-"].iter().map(|s| format!("{prefix}-{s}")).collect();
    for table in ["nat", "filter"] {
        let Ok(saved) = run(&["iptables-save", "-t", table]).await else { continue };
        let chains: Vec<&str> = saved
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| ours.iter().any(|p| c.starts_with(p.as_str())))
            .collect();
        for c in &chains {
            run_quiet(&["iptables", "-w", "-t", table, "-F", c]).await;
        }
        for c in &chains {
            run_quiet(&["iptables", "-w", "-t", table, "-X", c]).await;
        }
    }
}

/// One pod's /etc/hosts.
struct HostsEntry {
    namespace: String,
    path: PathBuf,
    hostname: String,
    ip: String,
    /// The pod's `hostAliases`, as `ip\tname...` lines.
    aliases: String,
}

/// The /etc/hosts files of all running pods, rewritten whenever Services change.
pub struct Hosts {
    domain: String,
    entries: Mutex<HashMap<String, HostsEntry>>,
}

impl Hosts {
    pub fn new(domain: &str) -> Self {
        Self { domain: domain.to_string(), entries: Mutex::new(HashMap::new()) }
    }

    /// Writes the pod's hosts file now and keeps it current from then on.
    pub fn register(&self, pod: &Pod, path: PathBuf, ip: &str, services: &[Arc<Service>]) {
        let mut aliases = String::new();
        for a in pod.spec.as_ref().and_then(|s| s.host_aliases.as_ref()).into_iter().flatten() {
            aliases.push_str(&format!("{}\t{}\n", a.ip, a.hostnames.clone().unwrap_or_default().join(" ")));
        }
        let entry = HostsEntry {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            path,
            hostname: pod.metadata.name.clone().unwrap_or_default(),
            ip: ip.into(),
            aliases,
        };
        self.write(&entry, services);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.entries.lock().expect("hosts lock").insert(uid, entry);
    }

    pub fn unregister(&self, uid: &str) {
        self.entries.lock().expect("hosts lock").remove(uid);
    }

    pub fn refresh(&self, services: &[Arc<Service>]) {
        for entry in self.entries.lock().expect("hosts lock").values() {
            self.write(entry, services);
        }
    }

    /// In place (same inode): the file is bind-mounted into running containers.
    fn write(&self, e: &HostsEntry, services: &[Arc<Service>]) {
        let mut text =
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{}\n", e.ip, e.hostname);
        text.push_str(&e.aliases);
        for svc in services {
            let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
            let name = svc.metadata.name.as_deref().unwrap_or_default();
            let Some(ip) = svc
                .spec
                .as_ref()
                .and_then(|s| s.cluster_ip.as_deref())
                .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
            else {
                continue;
            };
            let short = if ns == e.namespace { format!(" {name}") } else { String::new() };
            text.push_str(&format!("{ip}\t{name}.{ns}.svc.{d} {name}.{ns}.svc {name}.{ns}{short}\n", d = self.domain));
        }
        if let Err(err) = std::fs::write(&e.path, text) {
            tracing::warn!(path = %e.path.display(), error = %err, "writing hosts file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, ip: &str) -> Arc<Service> {
        let yaml = format!(
            "metadata: {{namespace: {ns}, name: {name}}}\nspec: {{clusterIP: {ip}, ports: [{{name: http, port: 80}}]}}"
        );
        Arc::new(serde_yaml::from_str(&yaml).unwrap())
    }

    #[test]
    fn balances_over_ready_endpoints_and_rejects_empty_services() {
        let ep: Endpoints = serde_yaml::from_str(
            "metadata: {namespace: a, name: web}\nsubsets:\n- addresses: [{ip: 10.244.0.2}, {ip: 10.244.0.3}]\n  notReadyAddresses: [{ip: 10.244.0.9}]\n  ports: [{name: http, port: 8080}]",
        )
        .unwrap();
        let env = ClusterEnv::load(None).unwrap();
        let proxy = Proxy { env, chains: Mutex::new(BTreeSet::new()), masquerade_all: false };
        let services = [svc("a", "web", "10.96.0.10"), svc("a", "empty", "10.96.0.11")];
        let (text, chains) = proxy.render(&services, &[Arc::new(ep)], &BTreeSet::from(["MESH-SVC-GONE".to_string()]));
        assert_eq!(chains.len(), 3, "one service chain and two endpoint chains");
        assert!(text.contains("--probability 0.5000000000"));
        assert!(text.contains("DNAT --to-destination 10.244.0.3:8080"));
        assert!(!text.contains("10.244.0.9"), "not-ready addresses get no traffic");
        assert!(text.contains("-d 10.96.0.11/32") && text.contains("-j REJECT"));
        assert!(text.contains("-X MESH-SVC-GONE"));
    }

    #[test]
    fn chain_names_fit_iptables_limit() {
        assert!(chain_name("MESH-SEP-", "a-very-long-namespace/a-very-long-service:http/10.0.0.1:8080").len() <= 28);
    }
}
