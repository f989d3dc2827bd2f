//! Running the util-linux / iproute2 / iptables tools the agent drives. Using the tools instead of
//! syscalls keeps the crate free of `unsafe` and makes every step reproducible by hand.

use anyhow::{Context, Result, bail};
use tokio::process::Command;

/// Runs `argv` to completion and returns its stdout; a non-zero exit is an error carrying stderr.
pub async fn run(argv: &[&str]) -> Result<String> {
    run_with_stdin(argv, None).await
}

/// Like [`run`], feeding `stdin` to the command (used for `iptables-restore`).
pub async fn run_with_stdin(argv: &[&str], stdin: Option<&str>) -> Result<String> {
    use tokio::io::AsyncWriteExt;
    let (prog, args) = argv.split_first().context("empty command")?;
    let mut cmd = Command::new(prog);
    cmd.args(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    cmd.stdin(if stdin.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() });
    let mut child = cmd.spawn().with_context(|| format!("starting {prog}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!("`{}` failed ({}): {}", argv.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command whose failure is expected sometimes (deleting something already gone).
pub async fn run_quiet(argv: &[&str]) {
    if let Err(e) = run(argv).await {
        tracing::debug!(error = %e, "ignored failure");
    }
}

/// Quotes `s` for `sh -c`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Sends `signal` to the whole process group `pgid` (each container runs in its own group, so
/// children it forked are signalled too).
pub async fn kill_group(pgid: u32, signal: &str) {
    run_quiet(&["kill", "-s", signal, "--", &format!("-{pgid}")]).await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn quotes_single_quotes() {
        assert_eq!(super::sh_quote("a'b"), r"'a'\''b'");
    }
}
