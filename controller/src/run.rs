//! `mesh-controller run`: watch the cluster and serve config, admission and metrics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::assemble::Assembler;
use crate::config::hub::Hub;
use crate::config::server::{ConfigService, StreamSettings};
use crate::leader::{self, LeaderSettings};
use crate::metrics::Metrics;
use crate::monitoring::Monitoring;
use crate::watch::{Changes, Stores};
use crate::webhook::{self, Webhook};

/// Everything `run` needs to know.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where proxies connect for config (plaintext gRPC).
    pub config_address: SocketAddr,
    /// Where `/ready` and `/metrics` are served.
    pub monitoring_address: SocketAddr,
    /// Where the validating webhook is served, with its certificate and key (PEM files);
    /// `None` serves no webhook.
    pub webhook: Option<(SocketAddr, PathBuf, PathBuf)>,
    /// The cluster's DNS suffix.
    pub domain: String,
    /// The mesh's root namespace.
    pub root_namespace: String,
    /// How long the first change of a burst waits for the rest before a push: the bound on
    /// the delay a change sees in the controller.
    pub debounce: Duration,
    /// Stream queue and Hello timeout.
    pub stream: StreamSettings,
    /// The Lease replicas compete for to write status; `None` writes no status.
    pub leader: Option<LeaderSettings>,
}

/// Runs the controller until SIGINT or SIGTERM.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let hub = Hub::new(&settings.domain, &settings.root_namespace, metrics.clone());
    let monitoring = Monitoring::new(hub.clone());
    let monitoring_listener = bind(settings.monitoring_address, "monitoring").await?;
    tokio::spawn(monitoring.clone().serve(monitoring_listener));

    let client = kube::Client::try_default()
        .await
        .context("cannot configure a Kubernetes client (set KUBECONFIG, or run in a pod)")?;
    let changes = Changes::default();
    let stores = Arc::new(Stores::start(&client, &changes).await);
    tracing::info!(kinds = stores.istio.len(), "waiting for every cache to sync");
    stores.synced().await;
    let mut assembler = Assembler::new(&settings.domain);
    let seen = changes.take().map_or_else(Instant::now, |batch| batch.first_seen);
    hub.publish(assembler.world(&stores, &metrics, None), seen);
    tracing::info!(version = %hub.version(hub.current().number), "caches synced; first config published");

    let config_listener = bind(settings.config_address, "config").await?;
    if let Some((address, cert, key)) = &settings.webhook {
        let tls = webhook::tls_config(cert, key)?;
        let listener = bind(*address, "webhook").await?;
        let webhook = Arc::new(Webhook::new(stores.clone(), settings.domain.clone(), metrics.clone()));
        tokio::spawn(webhook.serve(listener, tls));
    }
    let rebuilt = Arc::new(tokio::sync::Notify::new());
    if let Some(leader) = settings.leader.clone() {
        let (leading, led) = tokio::sync::watch::channel(false);
        let leases = kube::Api::namespaced(client.clone(), &leader.namespace);
        tokio::spawn(leader::elect(leases, leader, leading));
        let statuses = crate::status::write_statuses(
            client.clone(),
            stores.clone(),
            rebuilt.clone(),
            settings.domain.clone(),
            led,
        );
        tokio::spawn(statuses);
    }
    monitoring.ready.store(true, Ordering::Release);
    tokio::spawn(rebuild_on_change(changes, stores, assembler, hub.clone(), settings.debounce, rebuilt));

    // Proxies keep their streams open forever; on shutdown they get a moment to see the
    // stream end cleanly, then the process exits and they reconnect to another replica.
    let stopping = Arc::new(tokio::sync::Notify::new());
    let signal = stopping.clone();
    let server = ConfigService::new(hub, settings.stream).serve(config_listener, async move {
        shutdown_signal().await;
        signal.notify_one();
    });
    tokio::select! {
        served = server => served?,
        _ = async { stopping.notified().await; tokio::time::sleep(Duration::from_secs(1)).await } => {}
    }
    tracing::info!("stopped");
    Ok(())
}

/// One rebuild per burst of changes: waits `debounce` after the first change of a burst so
/// the rest of the burst joins it, then publishes the new world.
async fn rebuild_on_change(
    changes: Changes,
    stores: Arc<Stores>,
    mut assembler: Assembler,
    hub: Arc<Hub>,
    debounce: Duration,
    rebuilt: Arc<tokio::sync::Notify>,
) {
    loop {
        let seen = changes.next().await;
        tokio::time::sleep_until((seen + debounce).into()).await;
        let Some(batch) = changes.take() else { continue };
        let started = Instant::now();
        let world = tokio::task::block_in_place(|| assembler.world(&stores, &hub.metrics, Some(&batch.kinds)));
        let published = hub.publish(world, seen);
        rebuilt.notify_one();
        tracing::debug!(rebuild_ms = started.elapsed().as_millis() as u64, changed = published.is_some(), "rebuilt");
    }
}

async fn bind(address: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address} for the {what} port"))
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match terminate.as_mut() { Some(signal) => { signal.recv().await; } None => std::future::pending().await } } => {}
    }
    tracing::info!("shutting down");
}
