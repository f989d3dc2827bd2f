//! `mesh-proxy`: parse the command line, set up logging, hand over to the library.

use anyhow::Context;
use clap::Parser;
use mesh_proxy::cli::{Cli, Command, InitArgs, RunArgs};
use mesh_proxy::config::ConfigStore;
use mesh_proxy::config::stream::StreamSettings;
use mesh_proxy::route::{ConnectionRouter, HttpOnAllPorts, Passthrough};
use mesh_proxy::routing::MeshRouter;
use mesh_proxy::tls::MeshTls;
use std::sync::Arc;
use std::time::Duration;

/// How often --tls-dir is checked for a rotated certificate.
const CERTIFICATE_POLL: Duration = Duration::from_secs(5);

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    mesh_proxy::logging::init(cli.log_format);
    let result = match cli.command {
        Some(Command::Init(args)) => init(&args),
        Some(Command::Run(args)) => run(&args),
        None => run(&cli.run),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The error chain on one line, without a backtrace: these are operator-facing.
            eprintln!("mesh-proxy: error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init(args: &InitArgs) -> anyhow::Result<()> {
    let from_file = match &args.from_annotations {
        Some(path) => mesh_proxy::init::settings_from_file(path)?,
        None => Default::default(),
    };
    let opts = args.base_options().with_settings(&args.settings().or(from_file))?;
    mesh_proxy::init::run(&opts, args.dry_run, &mut std::io::stdout())?;
    Ok(())
}

fn run(args: &RunArgs) -> anyhow::Result<()> {
    let mut cfg = args.config();
    if let Some(dir) = &args.tls_dir {
        let credentials = mesh_proxy::tls::files::load(dir).context("loading --tls-dir")?;
        cfg.tls = Arc::new(MeshTls::with(credentials));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.concurrency)
        .thread_name("mesh-proxy-worker")
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let store = match (args.config_source(), &args.controller) {
        (Some(source), _) => Some(Arc::new(ConfigStore::from_source(source).context("loading --config-file")?)),
        (None, Some(_)) => Some(Arc::new(ConfigStore::for_identity(args.identity_settings()).context("identity")?)),
        (None, None) => None,
    };
    let router: Arc<dyn ConnectionRouter> = match (&store, args.http_on_all_ports) {
        (Some(store), _) => Arc::new(MeshRouter::new(store.clone())),
        (None, true) => Arc::new(HttpOnAllPorts),
        (None, false) => Arc::new(Passthrough),
    };
    let poll = args.config_poll;
    let tls_watch = args.tls_dir.clone().map(|dir| (dir, cfg.tls.clone()));
    let stream = match (&args.config_file, &args.controller) {
        (None, Some(address)) => Some(StreamSettings::new(address, &args.identity.dns_domain)),
        _ => None,
    };
    runtime.block_on(async move {
        if let Some((dir, tls)) = tls_watch {
            drop(tokio::spawn(mesh_proxy::tls::files::watch(dir, tls, CERTIFICATE_POLL)));
        }
        match (store, stream) {
            (Some(store), Some(stream)) => drop(tokio::spawn(mesh_proxy::config::stream::run(store, stream))),
            (Some(store), None) => drop(tokio::spawn(mesh_proxy::config::watch::run(store, poll))),
            (None, _) => {}
        }
        mesh_proxy::proxy::run(cfg, router).await
    })?;
    // Connections still open after the drain period are dropped with the runtime.
    runtime.shutdown_background();
    Ok(())
}
