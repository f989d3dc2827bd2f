//! `mesh-controller run`: watch the cluster and serve config, admission and metrics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use proto::ca::certificate_authority_server::CertificateAuthorityServer;
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;

use crate::assemble::Assembler;
use crate::ca::authority::{Authority, LeafNames};
use crate::ca::policy::Policy;
use crate::ca::review::KubeTokenReviewer;
use crate::ca::service::CaService;
use crate::ca::serving::{ServingCert, service_names};
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
    /// Where the validating webhook is served, with its certificate and key (PEM files) or,
    /// without them, the serving certificate the CA issues the controller.
    pub webhook: (SocketAddr, Option<(PathBuf, PathBuf)>),
    /// The CA and the TLS port (15012).
    pub ca: CaSettings,
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

/// The certificate authority and the TLS config port.
#[derive(Clone, Debug)]
pub struct CaSettings {
    /// Where the config stream and the CA are served over TLS (15012).
    pub tls_address: SocketAddr,
    /// The controller's namespace: of the root's Secret, and the only one whose service
    /// accounts get DNS names (of its Services).
    pub namespace: String,
    /// The Secret holding the root certificate and key.
    pub secret: String,
    /// The controller's Service, whose DNS names its serving certificate carries.
    pub service: String,
    /// The SPIFFE trust domain.
    pub trust_domain: String,
    /// The audience a caller's token must be issued for.
    pub audience: String,
    /// The validity of a certificate whose request asks for none.
    pub default_validity: Duration,
    /// The longest validity granted.
    pub max_validity: Duration,
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
    let (authority, serving) = start_ca(&client, &settings).await?;
    let changes = Changes::default();
    let stores = Arc::new(Stores::start(&client, &changes).await);
    tracing::info!(kinds = stores.istio.len(), "waiting for every cache to sync");
    stores.synced().await;
    let mut assembler = Assembler::new(&settings.domain);
    let seen = changes.take().map_or_else(Instant::now, |batch| batch.first_seen);
    hub.publish(assembler.world(&stores, &metrics, None), seen);
    tracing::info!(version = %hub.version(hub.current().number), "caches synced; first config published");

    let config_listener = bind(settings.config_address, "config").await?;
    let tls_listener = bind(settings.ca.tls_address, "TLS config and CA").await?;
    serve_webhook(&settings, &serving, Webhook::new(stores.clone(), settings.domain.clone(), metrics.clone())).await?;
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
    let ca = ca_service(&authority, &client, &stores, &settings).into_server();
    monitoring.ready.store(true, Ordering::Release);
    tokio::spawn(rebuild_on_change(changes, stores, assembler, hub.clone(), settings.debounce, rebuilt));

    let tls = serving.server_config(&[b"h2"]).context("the TLS settings of 15012")?;
    tokio::spawn(serving.renew(authority));
    serve_config(hub, settings.stream, (config_listener, tls_listener), ca, tls).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Serves the config stream on 15010 (plaintext) and, with the CA, on 15012 (TLS) until
/// SIGINT or SIGTERM.
///
/// Proxies keep their streams open forever; on shutdown they get a moment to see the stream
/// end cleanly, then the process exits and they reconnect to another replica.
async fn serve_config(
    hub: Arc<Hub>,
    stream: StreamSettings,
    (plaintext, tls): (TcpListener, TcpListener),
    ca: CertificateAuthorityServer<CaService>,
    tls_config: Arc<ServerConfig>,
) -> anyhow::Result<()> {
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let stopped = |mut stopping: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    let plaintext = ConfigService::new(hub.clone(), stream.clone()).serve(plaintext, stopped(stopping.clone()));
    let tls = ConfigService::new(hub, stream).serve_tls(ca, tls, tls_config, stopped(stopping));
    tokio::select! {
        served = async { tokio::try_join!(plaintext, tls) } => { served?; }
        _ = async {
            shutdown_signal().await;
            stop.send_replace(true);
            tokio::time::sleep(Duration::from_secs(1)).await;
        } => {}
    }
    Ok(())
}

/// Loads (or, on first start, creates) the root, publishes it to every namespace, and issues
/// the controller's serving certificate.
async fn start_ca(client: &kube::Client, settings: &Settings) -> anyhow::Result<(Arc<Authority>, Arc<ServingCert>)> {
    let ca = &settings.ca;
    let secrets = kube::Api::namespaced(client.clone(), &ca.namespace);
    let authority = Arc::new(crate::ca::root::load_or_create(&secrets, &ca.secret, &ca.trust_domain).await?);
    tokio::spawn(crate::ca::publish::publish_root(client.clone(), authority.root_pem().to_string()));
    let names = LeafNames { uris: Vec::new(), dns: service_names(&ca.service, &ca.namespace, &settings.domain) };
    let serving = ServingCert::issue(&authority, names, ca.default_validity)
        .context("cannot issue the controller's serving certificate")?;
    Ok((authority, serving))
}

/// Serves the validating webhook with the certificate files given, else with `serving`.
async fn serve_webhook(settings: &Settings, serving: &Arc<ServingCert>, webhook: Webhook) -> anyhow::Result<()> {
    let (address, files) = &settings.webhook;
    let tls = match files {
        Some((cert, key)) => webhook::tls_config(cert, key)?,
        None => serving.server_config(&[]).context("the webhook's TLS settings")?,
    };
    let listener = bind(*address, "webhook").await?;
    tokio::spawn(Arc::new(webhook).serve(listener, tls));
    Ok(())
}

/// The CA service: tokens reviewed by the API server, DNS names checked against the Services
/// of the controller's namespace.
fn ca_service(
    authority: &Arc<Authority>,
    client: &kube::Client,
    stores: &Arc<Stores>,
    settings: &Settings,
) -> CaService {
    let ca = &settings.ca;
    let policy = Policy {
        trust_domain: ca.trust_domain.clone(),
        domain: settings.domain.clone(),
        namespace: ca.namespace.clone(),
        default_validity: ca.default_validity,
        max_validity: ca.max_validity,
    };
    let (services, namespace) = (stores.services.clone(), ca.namespace.clone());
    let lookup = Arc::new(move |name: &str| {
        services.get(&kube::runtime::reflector::ObjectRef::new(name).within(&namespace)).is_some()
    });
    let reviewer = Arc::new(KubeTokenReviewer::new(client.clone(), &ca.audience));
    CaService::new(authority.clone(), reviewer, policy, lookup)
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
