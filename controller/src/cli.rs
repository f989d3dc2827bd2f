//! The command line: one subcommand per job, so each can be run and tested alone.

use std::io::Read;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use common::resource::Resource;
use common::validate::ValidationContext;

/// The mesh's control plane.
#[derive(Debug, Parser)]
#[command(name = "mesh-controller", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions of every Istio kind the mesh serves, as YAML.
    ///
    /// `manifests/crds.yaml` holds this output; a test fails when it is stale.
    Crds,
    /// Check resource files with Istio's rules, as admission will; exit 1 on any error.
    ///
    /// Warnings and fields the mesh does not act on yet are printed but do not fail.
    Validate {
        /// A YAML file with one or more documents; `-` reads standard input.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
    },
}

/// Runs the command line and returns the process's exit code.
pub fn run() -> ExitCode {
    match Cli::parse().command {
        Command::Crds => print_all(&common::crds::to_yaml()),
        Command::Validate { files } => validate_files(&files),
    }
}

/// Writes `text` to standard output; a closed pipe (`| head`) is not an error worth a panic.
fn print_all(text: &str) -> ExitCode {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cannot write to standard output: {error}");
            ExitCode::FAILURE
        }
    }
}

fn validate_files(files: &[String]) -> ExitCode {
    let mut failed = false;
    let mut resources = Vec::new();
    for file in files {
        let text = match read_input(file) {
            Ok(text) => text,
            Err(error) => {
                eprintln!("{file}: cannot read: {error}");
                failed = true;
                continue;
            }
        };
        let (parsed, errors) = Resource::parse_yaml_documents(&text);
        for error in errors {
            eprintln!("{file}: {error}");
            failed = true;
        }
        resources.extend(parsed);
    }
    let context = ValidationContext::standalone();
    for resource in &resources {
        let diagnostics = resource.validate(&context);
        for diagnostic in diagnostics.all() {
            eprintln!("{diagnostic}");
        }
        failed |= diagnostics.has_errors();
        if !diagnostics.has_errors() {
            println!("{}: valid", resource.object_ref());
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn read_input(file: &str) -> std::io::Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
    }
}
