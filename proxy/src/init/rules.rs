//! The capture rules as data: a pure function from [`Options`] to the nat-table rules.
//!
//! Keeping the rules as data (rather than a script) lets `--dry-run` print exactly what would be
//! installed, lets the unit tests check each annotation's effect, and lets [`super::apply`]
//! install the same list with `iptables-restore`.
//!
//! The shape follows Istio's, so anyone who has read `iptables-save` in an Istio pod finds the
//! same chains under our names:
//!
//! - `PREROUTING → MESH_INBOUND`: inbound TCP, minus excluded ports, goes to `MESH_IN_REDIRECT`
//!   (REDIRECT to the inbound port).
//! - `OUTPUT → MESH_OUTPUT`: outbound TCP of the pod's apps goes to `MESH_REDIRECT` (REDIRECT to
//!   the outbound port), except traffic of the proxy's UID/GID (no loops), to localhost, and to
//!   excluded ports and ranges.
//!
//! Loopback (`-o lo`) needs care, because an app talking to its own pod IP also leaves via `lo`:
//! the proxy's connections from 127.0.0.6 (inbound forwarding to the app) are never touched; the
//! proxy's own connections to the pod IP are sent through inbound handling (so a request to one's
//! own Service gets the same inbound policy as any other); an app's connections over `lo` are not
//! captured at all.

use super::{Options, Selection};
use ipnet::IpNet;

pub const NAT: &str = "nat";
pub const CHAIN_INBOUND: &str = "MESH_INBOUND";
pub const CHAIN_REDIRECT: &str = "MESH_REDIRECT";
pub const CHAIN_IN_REDIRECT: &str = "MESH_IN_REDIRECT";
pub const CHAIN_OUTPUT: &str = "MESH_OUTPUT";

/// The source address the proxy uses when it forwards inbound traffic to the app, so the rules
/// can tell that traffic apart from an app's own loopback traffic (Istio uses the same address).
pub const INBOUND_PASSTHROUGH_SOURCE: &str = "127.0.0.6/32";

/// One rule: the chain it is appended to and the match/target arguments after `-A CHAIN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: &'static str,
    pub args: Vec<String>,
}

impl Rule {
    fn new(chain: &'static str, args: &[&str]) -> Self {
        Rule { chain, args: args.iter().map(|s| s.to_string()).collect() }
    }

    /// The rule in `iptables-save` form, e.g. `-A MESH_OUTPUT -d 127.0.0.1/32 -j RETURN`.
    pub fn to_spec(&self) -> String {
        format!("-A {} {}", self.chain, self.args.join(" "))
    }
}

/// The whole rule set for the nat table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    /// Our chains; installing them flushes whatever an earlier run put there.
    pub chains: Vec<&'static str>,
    /// Rules inside our chains, in order.
    pub rules: Vec<Rule>,
    /// The jumps from the built-in chains into ours. They are added only when missing, which is
    /// what makes a second run replace our rules instead of duplicating the jumps.
    pub hooks: Vec<Rule>,
}

impl RuleSet {
    /// The rules as `iptables` commands, one per line, for `--dry-run` and for logs.
    pub fn to_commands(&self) -> Vec<String> {
        let mut out = Vec::new();
        for chain in &self.chains {
            out.push(format!("iptables -t {NAT} -N {chain}"));
        }
        for rule in self.rules.iter().chain(&self.hooks) {
            out.push(format!("iptables -t {NAT} {}", rule.to_spec()));
        }
        out
    }

    /// The `iptables-restore --noflush` input: declaring a chain (`:NAME - [0:0]`) creates it or
    /// empties it, so the chains' contents are replaced atomically. `hooks` are the built-in
    /// chain jumps still missing (see [`RuleSet::hooks`]).
    pub fn to_restore(&self, hooks: &[Rule]) -> String {
        let mut out = format!("*{NAT}\n");
        for chain in &self.chains {
            out.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for rule in self.rules.iter().chain(hooks) {
            out.push_str(&rule.to_spec());
            out.push('\n');
        }
        out.push_str("COMMIT\n");
        out
    }
}

/// Builds the IPv4 nat rules for `opts`. IPv6 ranges in the options are skipped here; they
/// belong to the `ip6tables` rule set, which is not installed yet.
pub fn build(opts: &Options) -> RuleSet {
    let mut rules = Vec::new();
    let outbound_port = opts.outbound_port.to_string();
    let inbound_port = opts.inbound_port.to_string();
    rules.push(Rule::new(CHAIN_REDIRECT, &["-p", "tcp", "-j", "REDIRECT", "--to-ports", &outbound_port]));
    rules.push(Rule::new(CHAIN_IN_REDIRECT, &["-p", "tcp", "-j", "REDIRECT", "--to-ports", &inbound_port]));
    inbound_rules(opts, &mut rules);
    outbound_rules(opts, &mut rules);
    RuleSet {
        chains: vec![CHAIN_INBOUND, CHAIN_REDIRECT, CHAIN_IN_REDIRECT, CHAIN_OUTPUT],
        rules,
        hooks: vec![
            Rule::new("PREROUTING", &["-p", "tcp", "-j", CHAIN_INBOUND]),
            Rule::new("OUTPUT", &["-p", "tcp", "-j", CHAIN_OUTPUT]),
        ],
    }
}

/// Inbound ports never captured: the user's list plus the proxy's own status ports, sorted so
/// the output is stable and duplicates vanish.
fn excluded_inbound(opts: &Options) -> Vec<u16> {
    let mut ports: Vec<u16> =
        opts.exclude_inbound_ports.iter().copied().chain(Options::ALWAYS_EXCLUDED_INBOUND).collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn inbound_rules(opts: &Options, rules: &mut Vec<Rule>) {
    let excluded = excluded_inbound(opts);
    match &opts.include_inbound_ports {
        Selection::All => {
            for port in &excluded {
                rules.push(Rule::new(CHAIN_INBOUND, &["-p", "tcp", "--dport", &port.to_string(), "-j", "RETURN"]));
            }
            rules.push(Rule::new(CHAIN_INBOUND, &["-p", "tcp", "-j", CHAIN_IN_REDIRECT]));
        }
        Selection::Only(ports) => {
            for port in ports.iter().filter(|p| !excluded.contains(p)) {
                let port = port.to_string();
                rules.push(Rule::new(CHAIN_INBOUND, &["-p", "tcp", "--dport", &port, "-j", CHAIN_IN_REDIRECT]));
            }
        }
    }
}

fn outbound_rules(opts: &Options, rules: &mut Vec<Rule>) {
    let uid = opts.proxy_uid.to_string();
    let gid = opts.proxy_gid.to_string();
    let out = |args: &[&str]| Rule::new(CHAIN_OUTPUT, args);
    // The proxy forwarding inbound traffic to the app: already handled, leave it alone.
    rules.push(out(&["-o", "lo", "-s", INBOUND_PASSTHROUGH_SOURCE, "-j", "RETURN"]));
    // The proxy calling its own pod IP: treat as inbound, as if it came from another pod.
    rules.push(out(&[
        "-o",
        "lo",
        "!",
        "-d",
        "127.0.0.1/32",
        "-m",
        "owner",
        "--uid-owner",
        &uid,
        "-j",
        CHAIN_IN_REDIRECT,
    ]));
    // An app calling its own pod over lo: not captured.
    rules.push(out(&["-o", "lo", "-m", "owner", "!", "--uid-owner", &uid, "-j", "RETURN"]));
    // Everything else the proxy sends goes straight out: this is what prevents loops.
    rules.push(out(&["-m", "owner", "--uid-owner", &uid, "-j", "RETURN"]));
    rules.push(out(&[
        "-o",
        "lo",
        "!",
        "-d",
        "127.0.0.1/32",
        "-m",
        "owner",
        "--gid-owner",
        &gid,
        "-j",
        CHAIN_IN_REDIRECT,
    ]));
    rules.push(out(&["-o", "lo", "-m", "owner", "!", "--gid-owner", &gid, "-j", "RETURN"]));
    rules.push(out(&["-m", "owner", "--gid-owner", &gid, "-j", "RETURN"]));
    rules.push(out(&["-d", "127.0.0.1/32", "-j", "RETURN"]));
    for port in &opts.exclude_outbound_ports {
        rules.push(out(&["-p", "tcp", "--dport", &port.to_string(), "-j", "RETURN"]));
    }
    for net in opts.exclude_outbound_cidrs.iter().filter(|n| is_v4(n)) {
        rules.push(out(&["-d", &net.to_string(), "-j", "RETURN"]));
    }
    match &opts.include_outbound_cidrs {
        Selection::All => rules.push(out(&["-j", CHAIN_REDIRECT])),
        Selection::Only(nets) => {
            for net in nets.iter().filter(|n| is_v4(n)) {
                rules.push(out(&["-d", &net.to_string(), "-j", CHAIN_REDIRECT]));
            }
        }
    }
}

fn is_v4(net: &IpNet) -> bool {
    matches!(net, IpNet::V4(_))
}
