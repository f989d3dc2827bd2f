//! `mesh-proxy`: the sidecar and gateway data plane.
//!
//! The data path (capture, routing, resilience, mTLS) arrives with the "Sidecar proxy" issues;
//! until then this binary only answers `--version` and `--help`, and says so.

use clap::Parser;

/// The mesh's sidecar and gateway proxy.
#[derive(Debug, Parser)]
#[command(name = "mesh-proxy", version, about)]
struct Cli {}

fn main() -> std::process::ExitCode {
    Cli::parse();
    eprintln!("mesh-proxy: the data plane is not built yet (see ARCHITECTURE.md, \"Status\")");
    std::process::ExitCode::FAILURE
}
