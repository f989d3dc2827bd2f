//! The agent's settings: the shared `e2e/cluster.env` (which the local-cluster script also reads, so
//! both agree on the bridge, the CIDRs and the state dir) and `e2e/images.yaml` (image → binary).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;

/// Values from `cluster.env` the agent needs. Every field falls back to the default the
/// local-cluster script uses, so the agent also runs with no env file at all.
#[derive(Debug, Clone)]
pub struct ClusterEnv {
    /// Linux bridge every pod's veth is plugged into; the host's address on it is the pods'
    /// default gateway and the Node's InternalIP.
    pub bridge: String,
    /// The host's address on the bridge: the pods' default gateway, the Node's InternalIP.
    pub bridge_ip: Ipv4Addr,
    /// Prefix length of the bridge's subnet, which holds the pod CIDR; pods get the same one.
    pub bridge_prefix: u8,
    /// Pod IPs are handed out from this range (the Node's spec.podCIDR).
    pub pod_cidr: Ipv4Net,
    /// ClusterIPs live here; the host routes it onto the bridge so that connect() to a ClusterIP
    /// finds a route before our DNAT rewrites it.
    pub service_cidr: Ipv4Net,
    /// Root of everything the agent writes: `pods/` (volumes, hosts files), `logs/`
    /// (`logs/<namespace>_<pod>/<container>.log`, read by `e2e/local-cluster logs`).
    pub state_dir: PathBuf,
    /// Admin kubeconfig the agent talks to the API server with.
    pub kubeconfig: Option<PathBuf>,
    /// DNS suffix of Service names (`name.ns.svc.<domain>`).
    pub cluster_domain: String,
    /// CA certificate of the API server, used when a ca.crt must be written and no
    /// kube-root-ca.crt ConfigMap exists.
    pub ca_file: Option<PathBuf>,
    /// Node name when `--node-name` is not given.
    pub node_name: String,
    /// Prefix of our iptables chains (`MESH-SERVICES`, `MESH-SVC-…`); a second cluster on the same
    /// host sets another (`NODE_AGENT_CHAIN_PREFIX`, at most 7 characters).
    pub chain_prefix: String,
    /// Network namespaces are named `<prefix>pod-<ns>_<pod>-<uid>`; only those are cleaned up.
    pub netns_prefix: String,
}

impl ClusterEnv {
    /// Reads `KEY=VALUE` lines (shell syntax: `export`, quotes, `$VAR`, `${VAR:-default}`).
    pub fn load(path: Option<&Path>) -> Result<Self> {
        // Like bash sourcing the file: `${X:-default}` takes X from the environment, a plain
        // `X=value` does not.
        let vars: HashMap<String, String> = match path {
            Some(path) => {
                parse_env(&std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?)
            }
            None => HashMap::new(),
        };
        // A key the file does not set comes from the environment, as in the sourcing shell.
        let get = |keys: &[&str]| {
            keys.iter().find_map(|k| vars.get(*k).cloned().or_else(|| std::env::var(k).ok()).filter(|v| !v.is_empty()))
        };
        let bridge = get(&["BRIDGE"]).unwrap_or_else(|| "mesh0".into());
        let pod_cidr: Ipv4Net = get(&["POD_CIDR"]).unwrap_or_else(|| "10.244.0.0/24".into()).parse()?;
        let bridge_ip = match get(&["BRIDGE_IP"]) {
            Some(ip) => ip.split('/').next().unwrap_or_default().parse().context("BRIDGE_IP")?,
            None => pod_cidr.hosts().next().context("pod CIDR has no hosts")?,
        };
        let bridge_prefix: u8 = match get(&["BRIDGE_PREFIX"]) {
            Some(p) => p.parse().context("BRIDGE_PREFIX")?,
            None => pod_cidr.prefix_len(),
        };
        let bridge_net = Ipv4Net::new(bridge_ip, bridge_prefix)?.trunc();
        if !bridge_net.contains(&pod_cidr) {
            bail!("pod CIDR {pod_cidr} is not inside the bridge subnet {bridge_net}");
        }
        let service_cidr = get(&["SERVICE_CIDR"]).unwrap_or_else(|| "10.96.0.0/16".into()).parse()?;
        let state_dir = get(&["NODE_AGENT_DIR"])
            .or_else(|| get(&["STATE_DIR"]).map(|d| format!("{d}/node-agent")))
            .unwrap_or_else(|| "/var/lib/mesh-e2e/cluster/node-agent".into());
        let state_dir = PathBuf::from(state_dir);
        // The node's own credentials when the cluster made them, as a kubelet has.
        let kubeconfig = [get(&["NODE_KUBECONFIG"]), get(&["KUBECONFIG_PATH", "KUBECONFIG"])]
            .into_iter()
            .flatten()
            .map(PathBuf::from)
            .find(|p| p.exists());
        let cluster_domain = get(&["CLUSTER_DOMAIN"]).unwrap_or_else(|| "cluster.local".into());
        let ca_file = get(&["CA_FILE"])
            .map(PathBuf::from)
            .or_else(|| get(&["STATE_DIR"]).map(|d| PathBuf::from(d).join("pki/ca.crt")))
            .filter(|p| p.exists());
        let node_name = get(&["NODE_NAME"]).unwrap_or_else(|| "mesh-node".into());
        let netns_prefix = get(&["NETNS_PREFIX"]).unwrap_or_else(|| "mesh-".into());
        let chain_prefix = get(&["NODE_AGENT_CHAIN_PREFIX"]).unwrap_or_else(|| "MESH".into());
        if chain_prefix.len() > 7 {
            bail!("NODE_AGENT_CHAIN_PREFIX {chain_prefix:?} is longer than 7 characters (iptables allows 28 in all)");
        }
        Ok(Self {
            bridge,
            bridge_ip,
            bridge_prefix,
            pod_cidr,
            service_cidr,
            state_dir,
            kubeconfig,
            cluster_domain,
            ca_file,
            node_name,
            netns_prefix,
            chain_prefix,
        })
    }
}

/// Minimal shell-assignment reader: enough for a file that is also `source`d by bash.
fn parse_env(text: &str) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line).trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        if !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        // Drop a trailing comment, then the quotes.
        let value = value.split(" #").next().unwrap_or_default().trim();
        let single = value.starts_with('\'');
        let value = value.trim_matches('"').trim_matches('\'');
        let value = if single { value.to_string() } else { expand_shell(value, &vars) };
        vars.insert(key.to_string(), value);
    }
    vars
}

/// Expands `$VAR`, `${VAR}` and `${VAR:-default}` from already-read keys or the environment.
fn expand_shell(value: &str, vars: &HashMap<String, String>) -> String {
    let lookup = |name: &str| vars.get(name).cloned().or_else(|| std::env::var(name).ok());
    let mut out = String::new();
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos + 1..];
        if let Some(body) = rest.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                out.push('$');
                continue;
            };
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let v = lookup(name).filter(|v| !v.is_empty());
            out.push_str(&v.or(default.map(str::to_string)).unwrap_or_default());
            rest = &body[end + 1..];
        } else {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            if end == 0 {
                out.push('$');
                continue;
            }
            out.push_str(&lookup(&rest[..end]).unwrap_or_default());
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// `e2e/images.yaml`: which local binary stands in for an image. Relative paths are taken from
/// the repository root (the file's parent's parent), so `target/debug/mesh-proxy` works.
#[derive(Debug, Clone, Default)]
pub struct Images {
    map: HashMap<String, PathBuf>,
    /// The file it was read from, so that an entry added while the agent runs is seen.
    source: Option<PathBuf>,
}

#[derive(serde::Deserialize)]
struct ImagesFile {
    images: HashMap<String, String>,
}

impl Images {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: ImagesFile = serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        // Absolute paths: containers start in /, not in the agent's working directory.
        let path = std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
        let root = path.parent().and_then(Path::parent).unwrap_or(Path::new("/")).to_path_buf();
        let map = file.images.into_iter().map(|(image, bin)| (image, root.join(bin))).collect();
        Ok(Self { map, source: Some(path) })
    }

    /// The map as the file says now (read again: it is small, and containers start rarely); the
    /// map already held if the file has become unreadable, with a warning.
    pub fn reloaded(&self) -> Images {
        let Some(source) = &self.source else { return self.clone() };
        Images::load(source).unwrap_or_else(|error| {
            tracing::warn!(error = %format!("{error:#}"), "keeping the image map read earlier");
            self.clone()
        })
    }

    /// The binary for `image`; a tag-less reference also matches `:latest`.
    pub fn binary(&self, image: &str) -> Option<&Path> {
        self.map
            .get(image)
            .or_else(|| if image.contains(':') { None } else { self.map.get(&format!("{image}:latest")) })
            .map(PathBuf::as_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_expands_earlier_keys_and_defaults() {
        let vars =
            parse_env("# c\nexport STATE_DIR=\"/tmp/x\"\nKUBECONFIG=${STATE_DIR}/kubeconfig\nA=${NOPE_X:-d} # note\n");
        assert_eq!(vars["KUBECONFIG"], "/tmp/x/kubeconfig");
        assert_eq!(vars["A"], "d");
    }
}
