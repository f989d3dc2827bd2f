//! `mesh-injector`: the mutating admission webhook that adds the sidecar, and `kube-inject`.
//!
//! The webhook arrives with the "Injector" issue; until then this binary only answers
//! `--version` and `--help`, and says so.

use clap::Parser;

/// The mesh's sidecar injector.
#[derive(Debug, Parser)]
#[command(name = "mesh-injector", version, about)]
struct Cli {}

fn main() -> std::process::ExitCode {
    Cli::parse();
    eprintln!("mesh-injector: the webhook is not built yet (see ARCHITECTURE.md, \"Status\")");
    std::process::ExitCode::FAILURE
}
