//! `mesh-proxy`: parse the command line, set up logging, hand over to the library.

use anyhow::Context;
use clap::Parser;
use mesh_proxy::cli::{Cli, Command, InitArgs, RunArgs};
use mesh_proxy::config::ConfigStore;
use mesh_proxy::config::stream::StreamSettings;
use mesh_proxy::route::{ConnectionRouter, HttpOnAllPorts, Passthrough};
use mesh_proxy::routing::MeshRouter;
use mesh_proxy::tls::MeshTls;
use mesh_proxy::tls::ca::CaSettings;
use std::sync::Arc;
use std::time::Duration;

/// How often --tls-dir is checked for a rotated certificate.
const CERTIFICATE_POLL: Duration = Duration::from_secs(5);

fn main() -> std::process::ExitCode {
    if let Err(error) = mesh_proxy::sys::map_own_code_on_demand() {
        // Only resident memory is at stake; the proxy works the same.
        eprintln!("mesh-proxy: paging advice for the executable not taken: {error}");
    }
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

/// The runtime the proxy serves on. With one worker it is tokio's current-thread runtime: every
/// task runs on the one thread, so waking a task and handing it work needs no cross-thread
/// queue or notification, and a request costs less CPU than on a one-worker multi-thread
/// runtime (see e2e/bench/README.md). Compiling a config still runs on the blocking pool.
fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match workers {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    builder.thread_name("mesh-proxy-worker").enable_all().build()
}

fn run(args: &RunArgs) -> anyhow::Result<()> {
    let mut cfg = args.config();
    // --tls-dir and --ca-address conflict (clap): at most one source fills the slot.
    cfg.tls = Arc::new(match (&args.tls_dir, &args.ca_address) {
        (Some(dir), _) => MeshTls::with(mesh_proxy::tls::files::load(dir).context("loading --tls-dir")?),
        (None, Some(_)) => MeshTls::expecting(),
        (None, None) => MeshTls::default(),
    });
    let runtime = runtime(cfg.concurrency).context("starting the runtime")?;
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
    let from_ca = args.ca_address.clone().map(|address| {
        let settings = CaSettings {
            address,
            root_cert: mesh_proxy::config::controller::root_cert_path(),
            token_file: args.ca_token_file.clone(),
        };
        (settings, cfg.tls.clone())
    });
    let stream = match (&args.config_file, &args.controller) {
        (None, Some(address)) => Some(StreamSettings::new(address, &args.identity.dns_domain)),
        _ => None,
    };
    let started = store.clone();
    runtime.block_on(async move {
        drop(tokio::spawn(release_startup_code(started)));
        if let Some((dir, tls)) = tls_watch {
            drop(tokio::spawn(mesh_proxy::tls::files::watch(dir, tls, CERTIFICATE_POLL)));
        }
        if let Some((settings, tls)) = from_ca {
            drop(tokio::spawn(mesh_proxy::tls::ca::keep_certified(settings, tls)));
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

/// Once the first config is in force, start-up is over: the executable's pages that only
/// start-up ran are given back (`sys::page_out_own_code`), so the sidecar's resident memory is
/// what its data path uses.
async fn release_startup_code(store: Option<Arc<ConfigStore>>) {
    if let Some(store) = store {
        while store.load().version == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    match mesh_proxy::sys::page_out_own_code() {
        Ok(mappings) => tracing::debug!(mappings, "start-up code paged out"),
        Err(error) => tracing::debug!(%error, "start-up code not paged out"),
    }
}
