//! Whether this machine can run network-namespace tests, and what a test does when it cannot.

use std::process::Command;

/// Why this machine cannot run namespace tests, if it cannot: not root, a tool missing, or
/// namespaces not allowed (an unprivileged container).
pub fn unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1));
    if uid != Some("0") {
        return Some("not running as root".into());
    }
    for tool in ["ip", "iptables", "iptables-restore", "setpriv", "bash"] {
        let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output();
        if !found.is_ok_and(|o| o.status.success()) {
            return Some(format!(
                "`{tool}` not installed (e2e/install-test-deps.sh installs it: iproute2 iptables util-linux)"
            ));
        }
    }
    match crate::Netns::new("probe") {
        Ok(_) => None,
        Err(e) => Some(format!("cannot create a network namespace: {e}")),
    }
}

/// True when the calling test should return at once because namespaces are unavailable; it
/// prints why. With `MESH_REQUIRE_NETNS` set (as `e2e/run-tests` does when run as root), a skip
/// would hide a failure, so it panics instead.
pub fn skip_unless_available() -> bool {
    let Some(reason) = unavailable() else { return false };
    if std::env::var_os("MESH_REQUIRE_NETNS").is_some() {
        panic!("network-namespace tests are required here (MESH_REQUIRE_NETNS) but cannot run: {reason}");
    }
    eprintln!("skipping network-namespace test: {reason}");
    true
}
