//! Network namespaces, veth pairs and addresses for every test that needs a network: the
//! data-plane tests of tier 3 (each "pod" a namespace with the real capture rules) and the local
//! cluster's node agent of tier 4 (each pod a namespace on the host bridge). One helper, so both
//! tiers build a pod's network the same way.
//!
//! It drives iproute2 (`ip`) instead of making system calls: no `unsafe`, and every step can be
//! replayed by hand from the error message, which quotes the command and its stderr.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

mod availability;

pub use availability::{skip_unless_available, unavailable};

/// Runs `argv` to completion and returns its stdout; a non-zero exit is an error that quotes the
/// command and its stderr.
pub fn run(argv: &[&str]) -> io::Result<String> {
    let (program, args) = argv.split_first().ok_or_else(|| io::Error::other("empty command"))?;
    let out =
        Command::new(program).args(args).output().map_err(|e| io::Error::other(format!("starting {program}: {e}")))?;
    checked(argv, out)
}

/// Runs a command whose failure is expected at times (deleting what is already gone).
pub fn run_quiet(argv: &[&str]) {
    let _ = run(argv);
}

fn checked(argv: &[&str], out: Output) -> io::Result<String> {
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates the namespace `name` with its loopback up.
pub fn create(name: &str) -> io::Result<()> {
    run(&["ip", "netns", "add", name])?;
    if let Err(e) = run(&["ip", "-n", name, "link", "set", "lo", "up"]) {
        run_quiet(&["ip", "netns", "del", name]);
        return Err(e);
    }
    Ok(())
}

/// Kills whatever still runs in the namespace, then removes it (its veths go with it).
pub fn destroy(name: &str) {
    kill_processes(name);
    run_quiet(&["ip", "netns", "del", name]);
}

/// SIGKILLs every process inside the namespace `name`.
pub fn kill_processes(name: &str) {
    if let Ok(pids) = run(&["ip", "netns", "pids", name]) {
        for pid in pids.split_whitespace() {
            run_quiet(&["kill", "-s", "KILL", pid]);
        }
    }
}

/// The names of every network namespace on the machine.
pub fn list() -> Vec<String> {
    run(&["ip", "netns", "list"])
        .map(|list| list.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect())
        .unwrap_or_default()
}

/// Gives `dev` inside namespace `ns` its addresses (CIDR form) and brings it up.
pub fn configure(ns: &str, dev: &str, addrs: &[&str]) -> io::Result<()> {
    for addr in addrs {
        run(&["ip", "-n", ns, "addr", "add", addr, "dev", dev])?;
    }
    run(&["ip", "-n", ns, "link", "set", dev, "up"])?;
    Ok(())
}

/// Joins namespaces `a` and `b` with a veth pair, `a_dev` in `a` and `b_dev` in `b`. Both ends
/// are made inside their namespaces, so their names never meet in the host's.
pub fn veth_between(a: &str, a_dev: &str, b: &str, b_dev: &str) -> io::Result<()> {
    run(&["ip", "link", "add", a_dev, "netns", a, "type", "veth", "peer", "name", b_dev, "netns", b])?;
    Ok(())
}

/// Joins namespace `ns` to a host bridge: a veth pair whose host end `host_dev` is enslaved to
/// `bridge` (with hairpin on, so a pod calling its own Service gets the packets back) and whose
/// other end is `eth0` in `ns`, with address `cidr` and a default route via `gateway`.
pub fn attach_to_bridge(ns: &str, host_dev: &str, bridge: &str, cidr: &str, gateway: &str) -> io::Result<()> {
    // The peer is created in the namespace as `eth0` directly: no temporary name in the host's.
    run(&["ip", "link", "add", host_dev, "type", "veth", "peer", "name", "eth0", "netns", ns])?;
    run(&["ip", "link", "set", host_dev, "master", bridge, "up"])?;
    run(&["ip", "link", "set", "dev", host_dev, "type", "bridge_slave", "hairpin", "on"])?;
    configure(ns, "eth0", &[cidr])?;
    run(&["ip", "-n", ns, "route", "add", "default", "via", gateway])?;
    Ok(())
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A process-unique number, for names that parallel tests must not share.
pub fn unique() -> usize {
    COUNTER.fetch_add(1, Ordering::SeqCst)
}

/// A namespace owned by a test: created with a unique name, deleted on drop (also when the test
/// panics), with everything still running in it.
pub struct Netns {
    pub name: String,
    handle: File,
}

impl Netns {
    /// Creates `mt-TAG-PID-N` with its loopback up. The `mt-` prefix keeps test namespaces apart
    /// from the node agent's `mesh-pod-*`, which its clean-up removes.
    pub fn new(tag: &str) -> io::Result<Netns> {
        let name = format!("mt-{tag}-{}-{}", std::process::id(), unique());
        create(&name)?;
        match File::open(format!("/var/run/netns/{name}")) {
            Ok(handle) => Ok(Netns { name, handle }),
            Err(e) => {
                destroy(&name);
                Err(e)
            }
        }
    }

    /// The namespace's file, for `setns` (which the caller does: this crate has no `unsafe`).
    pub fn handle(&self) -> &File {
        &self.handle
    }

    /// Runs a command inside the namespace; fails unless it exits 0.
    pub fn exec(&self, args: &[&str]) -> io::Result<Output> {
        let mut argv = vec!["ip", "netns", "exec", self.name.as_str()];
        argv.extend_from_slice(args);
        let out = self.command(args).output()?;
        checked(&argv, out.clone()).map(|_| out)
    }

    /// A command to run inside the namespace, not started yet.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        destroy(&self.name);
    }
}

/// Joins two test namespaces with a veth pair and gives each end its addresses (CIDR form).
pub fn link(a: &Netns, a_addrs: &[&str], b: &Netns, b_addrs: &[&str]) -> io::Result<()> {
    let n = unique();
    let (va, vb) = (format!("va{n}"), format!("vb{n}"));
    veth_between(&a.name, &va, &b.name, &vb)?;
    configure(&a.name, &va, a_addrs)?;
    configure(&b.name, &vb, b_addrs)?;
    Ok(())
}

#[cfg(test)]
mod tests;
