//! `mesh-controller`: the control plane's binary; see the library for what it does.

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
