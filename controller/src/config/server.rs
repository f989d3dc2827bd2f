//! The gRPC service `mesh.config.v1.ConfigDiscovery`: accepts proxy streams and hands each to a
//! [`Session`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use common::compile::ProxyKind as CompileKind;
use futures::StreamExt;
use proto::ca::certificate_authority_server::CertificateAuthorityServer;
use proto::config::config_discovery_server::{ConfigDiscovery, ConfigDiscoveryServer};
use proto::config::{Hello, ProxyKind, ProxyMessage, proxy_message};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::rustls::ServerConfig;
use tonic::service::Routes;
use tonic::{Request, Response, Status, Streaming};

use super::hub::Hub;
use super::parts::{PART_BYTES, Parts};
use super::session::Session;
use super::transport::{self, Http2Settings};
use super::visibility::ProxyInfo;
use crate::ca::service::CaService;

/// How streams are served.
#[derive(Clone, Debug)]
pub struct StreamSettings {
    /// Updates queued for one proxy before it counts as too slow and is resynced instead; a
    /// queue of 16 means a proxy may fall 16 updates behind.
    pub queue: usize,
    /// How long a new stream may take to say `Hello`.
    pub hello_timeout: Duration,
    /// The most resource bytes in one message to a proxy that accepts updates in parts.
    pub part_bytes: usize,
    /// What one HTTP/2 connection may hold.
    pub http2: Http2Settings,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            queue: 16,
            hello_timeout: Duration::from_secs(10),
            part_bytes: PART_BYTES,
            http2: Http2Settings::default(),
        }
    }
}

/// The config stream service.
pub struct ConfigService {
    hub: Arc<Hub>,
    settings: StreamSettings,
}

impl ConfigService {
    /// A service over `hub`.
    pub fn new(hub: Arc<Hub>, settings: StreamSettings) -> Self {
        Self { hub, settings }
    }

    /// Serves the config stream on `listener` (plaintext gRPC) until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let http2 = self.settings.http2.clone();
        let routes = Routes::new(ConfigDiscoveryServer::new(self));
        transport::serve(listener, None, routes, &http2, shutdown).await
    }

    /// Serves the config stream and `ca` (`mesh.ca.v1.CertificateAuthority`) over TLS on
    /// `listener` (15012) until `shutdown` completes. `tls` must offer ALPN `h2`.
    pub async fn serve_tls(
        self,
        ca: CertificateAuthorityServer<CaService>,
        listener: TcpListener,
        tls: Arc<ServerConfig>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let http2 = self.settings.http2.clone();
        let routes = Routes::new(ConfigDiscoveryServer::new(self)).add_service(ca);
        transport::serve(listener, Some(tls), routes, &http2, shutdown).await
    }
}

#[tonic::async_trait]
impl ConfigDiscovery for ConfigService {
    type StreamConfigStream = Parts;

    async fn stream_config(
        &self,
        request: Request<Streaming<ProxyMessage>>,
    ) -> Result<Response<Self::StreamConfigStream>, Status> {
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(self.settings.hello_timeout, inbound.next())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello within the time allowed"))?;
        let hello = match first {
            Some(Ok(ProxyMessage { message: Some(proxy_message::Message::Hello(hello)) })) => hello,
            Some(Ok(_)) => return Err(Status::invalid_argument("the first message on the stream must be a Hello")),
            Some(Err(status)) => return Err(status),
            None => return Err(Status::cancelled("the stream closed before Hello")),
        };
        let proxy = proxy_info(&hello)?;
        tracing::info!(proxy = %format!("{}/{}", proxy.namespace, proxy.pod_name), kind = ?proxy.kind,
            resume = %hello.resume_version, "proxy connected");
        let (outbox, updates) = mpsc::channel(self.settings.queue.max(1));
        let session = Session::open(self.hub.clone(), proxy, &hello.resume_version, outbox)
            .ok_or_else(|| Status::unavailable("the stream closed before its first update"))?;
        tokio::spawn(session.run(inbound));
        Ok(Response::new(Parts::new(updates, hello.accepts_parts, self.settings.part_bytes)))
    }
}

/// Reads who the proxy is from its Hello; a namespace and pod name are required.
fn proxy_info(hello: &Hello) -> Result<ProxyInfo, Status> {
    let identity = hello.identity.as_ref().ok_or_else(|| Status::invalid_argument("Hello.identity is required"))?;
    if identity.namespace.is_empty() || identity.pod_name.is_empty() {
        return Err(Status::invalid_argument(
            "Hello.identity.namespace and Hello.identity.pod_name are required (the pod's namespace and name)",
        ));
    }
    let ips = identity
        .ips
        .iter()
        .map(|ip| {
            ip.parse::<IpAddr>()
                .map_err(|_| Status::invalid_argument(format!("Hello.identity.ips: {ip:?} is not an IP address")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let kind = match ProxyKind::try_from(identity.kind) {
        Ok(ProxyKind::Gateway) => CompileKind::Gateway,
        _ => CompileKind::Sidecar,
    };
    Ok(ProxyInfo {
        kind,
        namespace: identity.namespace.clone(),
        pod_name: identity.pod_name.clone(),
        service_account: identity.service_account.clone(),
        labels: identity.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<BTreeMap<_, _>>(),
        ips,
    })
}
