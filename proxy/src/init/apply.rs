//! Installing a [`RuleSet`]: picking the iptables backend and applying the rules idempotently.
//!
//! Two iptables backends exist and a pod's rules must go into the one the node (and any other
//! tool in the pod) uses, or they are silently ignored: `iptables-legacy` (x_tables) and
//! `iptables-nft` (nf_tables). We pick the one that already holds rules, and otherwise the one
//! the plain `iptables` command points at.

use super::rules::{NAT, Rule, RuleSet};
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// The iptables flavour in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// `legacy`, `nft`, or `default` when only an unsuffixed `iptables` exists.
    pub kind: &'static str,
    /// The command that changes single rules (`iptables-nft`, ...).
    pub iptables: String,
    /// The command that applies a whole table (`iptables-nft-restore`, ...).
    pub restore: String,
    /// The command that prints a table (`iptables-nft-save`, ...).
    pub save: String,
}

impl Backend {
    fn suffixed(kind: &'static str) -> Self {
        Backend {
            kind,
            iptables: format!("iptables-{kind}"),
            restore: format!("iptables-{kind}-restore"),
            save: format!("iptables-{kind}-save"),
        }
    }

    fn plain() -> Self {
        Backend {
            kind: "default",
            iptables: "iptables".into(),
            restore: "iptables-restore".into(),
            save: "iptables-save".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "the kernel refused to change iptables rules ({detail}): the init container needs the NET_ADMIN \
         capability (and NET_RAW), e.g. securityContext.capabilities.add: [NET_ADMIN, NET_RAW]"
    )]
    MissingNetAdmin { detail: String },
    #[error("`{command}` was not found: install the iptables package (it provides iptables-legacy and iptables-nft)")]
    NotInstalled { command: String },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed { command: String, status: String, stderr: String },
    #[error("running `{command}`: {source}")]
    Io { command: String, source: std::io::Error },
}

/// Runs a command, turning the usual failures into errors a user can act on.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<Output, ApplyError> {
    let command = format!("{program} {}", args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ApplyError::NotInstalled { command: program.to_string() },
        _ => ApplyError::Io { command: command.clone(), source },
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).map_err(|source| ApplyError::Io { command: command.clone(), source })?;
    }
    child.wait_with_output().map_err(|source| ApplyError::Io { command, source })
}

/// Fails with a clear error unless `output` succeeded.
fn check(program: &str, args: &[&str], output: Output) -> Result<Output, ApplyError> {
    if output.status.success() {
        return Ok(output);
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if is_permission_error(&stderr) {
        return Err(ApplyError::MissingNetAdmin { detail: stderr });
    }
    Err(ApplyError::Failed {
        command: format!("{program} {}", args.join(" ")),
        status: output.status.to_string(),
        stderr,
    })
}

/// iptables reports EPERM in a few spellings depending on version and backend.
pub fn is_permission_error(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("permission denied") || s.contains("operation not permitted") || s.contains("you must be root")
}

/// Counts the rules a backend currently holds (all tables), or `None` if it cannot be asked.
fn rule_count(backend: &Backend) -> Option<usize> {
    let out = run(&backend.save, &[], None).ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("-A ")).count())
}

/// True when the backend's commands exist (whether or not we may use them).
fn installed(backend: &Backend) -> bool {
    run(&backend.iptables, &["--version"], None).is_ok_and(|o| o.status.success())
}

/// Picks the backend: the one that already has rules, else the one `iptables --version` names.
pub fn detect() -> Result<Backend, ApplyError> {
    let legacy = Backend::suffixed("legacy");
    let nft = Backend::suffixed("nft");
    let (legacy_rules, nft_rules) = (rule_count(&legacy), rule_count(&nft));
    match (legacy_rules, nft_rules) {
        (Some(l), Some(n)) if l > 0 && n == 0 => return Ok(legacy),
        (Some(l), Some(n)) if n > 0 && l == 0 => return Ok(nft),
        (Some(l), None) if l > 0 => return Ok(legacy),
        (None, Some(n)) if n > 0 => return Ok(nft),
        _ => {}
    }
    let out = check("iptables", &["--version"], run("iptables", &["--version"], None)?)?;
    let version = String::from_utf8_lossy(&out.stdout).to_string();
    Ok(backend_from_version(&version, installed(&legacy), installed(&nft)))
}

/// Maps `iptables --version` output to a backend, preferring the suffixed commands when they exist.
pub fn backend_from_version(version: &str, have_legacy: bool, have_nft: bool) -> Backend {
    if version.contains("nf_tables") && have_nft {
        Backend::suffixed("nft")
    } else if version.contains("legacy") && have_legacy {
        Backend::suffixed("legacy")
    } else {
        Backend::plain()
    }
}

/// Installs `rules` with `backend`: our chains are created or emptied and refilled in one
/// `iptables-restore --noflush` transaction, and the jumps from PREROUTING/OUTPUT are added only
/// if missing. Running it twice leaves the same rules as running it once.
pub fn install(backend: &Backend, rules: &RuleSet) -> Result<(), ApplyError> {
    let mut missing: Vec<Rule> = Vec::new();
    for hook in &rules.hooks {
        let mut args = vec!["-w", "-t", NAT, "-C", hook.chain];
        args.extend(hook.args.iter().map(String::as_str));
        let out = run(&backend.iptables, &args, None)?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if is_permission_error(&stderr) {
                return Err(ApplyError::MissingNetAdmin { detail: stderr.trim().to_string() });
            }
            missing.push(hook.clone());
        }
    }
    let input = rules.to_restore(&missing);
    let args = ["-w", "--noflush"];
    check(&backend.restore, &args, run(&backend.restore, &args, Some(&input))?)?;
    Ok(())
}

/// The nat table as `iptables-save` prints it, for logs and tests.
pub fn save_nat(backend: &Backend) -> Result<String, ApplyError> {
    let args = ["-t", NAT];
    let out = check(&backend.save, &args, run(&backend.save, &args, None)?)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
