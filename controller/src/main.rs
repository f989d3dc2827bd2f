//! `mesh-controller`: the control plane.
//!
//! Today it prints the CRDs generated from `common`'s types and validates resource files with
//! Istio's rules; watching Kubernetes, the config stream and the CA come with their own issues
//! (see ARCHITECTURE.md).

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
