//! Putting the pieces together: bind the listeners, serve, drain on request.

use crate::admin::{self, AdminState, Endpoints};
use crate::drain::Drain;
use crate::http::client::{ClientConfig, HttpClient};
use crate::http::server::HttpShared;
use crate::listener::{self, ListenerShared, OriginalDst};
use crate::probes::ProbeSource;
use crate::route::{ConnectionRouter, Direction};
use crate::stats::Stats;
use crate::tls::MeshTls;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// The proxy's runtime settings.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Outbound capture listener (the apps' redirected connections arrive here).
    pub outbound: SocketAddr,
    /// Inbound capture listener (other pods' redirected connections arrive here).
    pub inbound: SocketAddr,
    /// Admin server; keep it on localhost.
    pub admin: SocketAddr,
    /// Readiness endpoint for the kubelet.
    pub readiness: SocketAddr,
    /// After a drain starts, in-flight work gets at most this long before the proxy exits.
    pub drain_period: Duration,
    /// How the capture listeners learn a connection's destination.
    pub original_dst: OriginalDst,
    /// Source address of the proxy's connections to the app on the inbound side.
    pub inbound_source_v4: Option<IpAddr>,
    /// Worker threads of the runtime (reported in `/config_dump`).
    pub concurrency: usize,
    /// The app's original probes, forwarded under `/app-health/` on the readiness port.
    pub app_probes: Option<ProbeSource>,
    /// The workload certificate for mutual TLS with peer sidecars; empty: plaintext only.
    pub tls: Arc<MeshTls>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
        ProxyConfig {
            outbound: SocketAddr::new(any, 15001),
            inbound: SocketAddr::new(any, 15006),
            admin: SocketAddr::new(local, 15000),
            readiness: SocketAddr::new(any, 15021),
            drain_period: Duration::from_secs(5),
            original_dst: OriginalDst::Kernel,
            inbound_source_v4: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6))),
            concurrency: 2,
            app_probes: None,
            tls: Arc::default(),
        }
    }
}

/// The four sockets, bound before anything is served. Binding is separate from serving so a
/// caller can bind inside a network namespace (or with privileges) and serve elsewhere.
#[derive(Debug)]
pub struct Listeners {
    pub outbound: std::net::TcpListener,
    pub inbound: std::net::TcpListener,
    pub admin: std::net::TcpListener,
    pub readiness: std::net::TcpListener,
}

impl Listeners {
    pub fn bind(cfg: &ProxyConfig) -> io::Result<Self> {
        let bind = |addr: SocketAddr, what: &str| {
            let l = std::net::TcpListener::bind(addr)
                .map_err(|e| io::Error::new(e.kind(), format!("binding the {what} listener on {addr}: {e}")))?;
            l.set_nonblocking(true)?;
            Ok::<_, io::Error>(l)
        };
        Ok(Listeners {
            outbound: bind(cfg.outbound, "outbound")?,
            inbound: bind(cfg.inbound, "inbound")?,
            admin: bind(cfg.admin, "admin")?,
            readiness: bind(cfg.readiness, "readiness")?,
        })
    }
}

/// The addresses actually bound (port 0 in the config becomes a real port).
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    pub readiness: SocketAddr,
}

/// A running proxy.
pub struct Proxy {
    drain: Drain,
    drain_period: Duration,
    addresses: Addresses,
    stats: Arc<Stats>,
}

impl Proxy {
    /// Starts serving on `listeners` with `router` deciding where connections go. Must be
    /// called inside a tokio runtime.
    pub fn start(cfg: &ProxyConfig, listeners: Listeners, router: Arc<dyn ConnectionRouter>) -> io::Result<Proxy> {
        let drain = Drain::new();
        let stats = Arc::new(Stats::default());
        let addresses = Addresses {
            outbound: listeners.outbound.local_addr()?,
            inbound: listeners.inbound.local_addr()?,
            admin: listeners.admin.local_addr()?,
            readiness: listeners.readiness.local_addr()?,
        };
        let capture = |direction: Direction, source_v4: Option<IpAddr>| {
            let client = HttpClient::new(&ClientConfig { source_v4, tls: cfg.tls.clone(), ..ClientConfig::default() });
            Arc::new(ListenerShared {
                direction,
                router: router.clone(),
                http: Arc::new(HttpShared::new(client, drain.clone(), stats.clone())),
                stats: stats.clone(),
                drain: drain.clone(),
                original_dst: cfg.original_dst,
                source_v4,
                tls: cfg.tls.clone(),
            })
        };
        let outbound = capture(Direction::Outbound, None);
        let inbound = capture(Direction::Inbound, cfg.inbound_source_v4);
        let state = Arc::new(AdminState {
            drain: drain.clone(),
            stats: stats.clone(),
            ready: false.into(),
            config: config_dump(cfg, &addresses),
            router: router.clone(),
            app_probes: cfg.app_probes.clone(),
            tls: cfg.tls.clone(),
        });
        tokio::spawn(listener::accept_loop(tokio::net::TcpListener::from_std(listeners.outbound)?, outbound));
        tokio::spawn(listener::accept_loop(tokio::net::TcpListener::from_std(listeners.inbound)?, inbound));
        let admin = tokio::net::TcpListener::from_std(listeners.admin)?;
        let readiness = tokio::net::TcpListener::from_std(listeners.readiness)?;
        tokio::spawn(admin::serve(admin, state.clone(), Endpoints::Admin));
        tokio::spawn(admin::serve(readiness, state.clone(), Endpoints::Readiness));
        state.ready.store(true, Relaxed);
        tracing::info!(
            outbound = %addresses.outbound, inbound = %addresses.inbound,
            admin = %addresses.admin, readiness = %addresses.readiness, "proxy ready"
        );
        Ok(Proxy { drain, drain_period: cfg.drain_period, addresses, stats })
    }

    pub fn addresses(&self) -> Addresses {
        self.addresses
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// A handle that starts the drain (what SIGTERM and `/quitquitquit` do).
    pub fn drain(&self) -> Drain {
        self.drain.clone()
    }

    /// Waits for a drain to be requested, then for in-flight work to finish or the drain period
    /// to pass. When this returns the process may exit.
    pub async fn wait(self) {
        self.drain.watch().signaled().await;
        tracing::info!(period = ?self.drain_period, "draining");
        let left = self.drain.finish(self.drain_period).await;
        if left == 0 {
            tracing::info!("drained");
        } else {
            tracing::warn!(connections = left, "drain period over with connections still open: closing them");
        }
    }
}

fn config_dump(cfg: &ProxyConfig, addrs: &Addresses) -> serde_json::Value {
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "listeners": [
            { "name": "virtualOutbound", "address": addrs.outbound.to_string() },
            { "name": "virtualInbound", "address": addrs.inbound.to_string() },
            { "name": "admin", "address": addrs.admin.to_string() },
            { "name": "readiness", "address": addrs.readiness.to_string() },
        ],
        "original_dst": match cfg.original_dst {
            OriginalDst::Kernel => "SO_ORIGINAL_DST".to_string(),
            OriginalDst::Fixed(a) => format!("fixed {a}"),
        },
        "inbound_source": cfg.inbound_source_v4.map(|ip| ip.to_string()),
        "concurrency": cfg.concurrency,
        "drain_period_ms": cfg.drain_period.as_millis() as u64,
    })
}

/// Runs the proxy until SIGTERM, SIGINT or `/quitquitquit`, then drains and returns.
pub async fn run(cfg: ProxyConfig, router: Arc<dyn ConnectionRouter>) -> io::Result<()> {
    let listeners = Listeners::bind(&cfg)?;
    let proxy = Proxy::start(&cfg, listeners, router)?;
    let drain = proxy.drain();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        }
        drain.start();
    });
    proxy.wait().await;
    Ok(())
}
