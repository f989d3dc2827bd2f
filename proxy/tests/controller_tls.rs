//! Loopback: the proxy dials the controller's TLS port (15012's server, from the controller
//! crate) trusting only the mesh root from a file, and gets its config stream; a wrong root or
//! a missing root file fails with a clear error; `http://` stays plaintext.

use controller::ca::authority::{Authority, LeafNames};
use controller::ca::policy::{Identity, Policy};
use controller::ca::review::{ReviewError, TokenReviewer};
use controller::ca::service::CaService;
use controller::ca::serving::ServingCert;
use controller::config::hub::Hub;
use controller::config::server::{ConfigService, StreamSettings};
use controller::metrics::Metrics;
use mesh_proxy::config::controller::{DialError, connect};
use proto::config::config_discovery_client::ConfigDiscoveryClient;
use proto::config::{Hello, ProxyIdentity, ProxyMessage, proxy_message};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt as _;
use tonic::transport::Endpoint;

struct NoTokens;

#[tonic::async_trait]
impl TokenReviewer for NoTokens {
    async fn review(&self, _token: &str) -> Result<Identity, ReviewError> {
        Err(ReviewError::Unauthenticated("no tokens in this test".into()))
    }
}

/// The controller's TLS server on loopback with a certificate for `localhost`; returns its
/// port and the root that signed the certificate.
async fn start_tls() -> (u16, String) {
    let authority = Arc::new(Authority::generate("cluster.local").unwrap());
    let names = LeafNames { uris: Vec::new(), dns: vec!["localhost".into()] };
    let tls =
        ServingCert::issue(&authority, names, Duration::from_secs(3600)).unwrap().server_config(&[b"h2"]).unwrap();
    let policy = Policy {
        trust_domain: "cluster.local".into(),
        domain: "cluster.local".into(),
        namespace: "istio-system".into(),
        default_validity: Duration::from_secs(3600),
        max_validity: Duration::from_secs(3600),
    };
    let ca = CaService::new(authority.clone(), Arc::new(NoTokens), policy, Arc::new(|_: &str| false)).into_server();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = ConfigService::new(hub(), StreamSettings::default());
    tokio::spawn(config.serve_tls(ca, listener, tls, std::future::pending()));
    (port, authority.root_pem().to_string())
}

fn hub() -> Arc<Hub> {
    Hub::new("cluster.local", "istio-system", Arc::new(Metrics::new()))
}

/// Whether a stream opened on `channel` gets its first snapshot.
async fn gets_snapshot(channel: tonic::transport::Channel) -> bool {
    let identity = ProxyIdentity { namespace: "a".into(), pod_name: "p".into(), ..ProxyIdentity::default() };
    let hello = Hello { identity: Some(identity), ..Hello::default() };
    let outbound = tokio_stream::iter([ProxyMessage { message: Some(proxy_message::Message::Hello(hello)) }])
        .chain(tokio_stream::pending());
    let mut updates = ConfigDiscoveryClient::new(channel).stream_config(outbound).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), updates.message()).await.unwrap().unwrap();
    first.is_some_and(|update| update.full)
}

fn root_file(dir: &Path, pem: &str) -> std::path::PathBuf {
    let path = dir.join("root-cert.pem");
    std::fs::write(&path, pem).unwrap();
    path
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-proxy-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn https_trusts_the_mesh_root_and_streams_config() {
    let (port, root) = start_tls().await;
    let dir = temp_dir("tls-ok");
    let endpoint = Endpoint::from_shared(format!("https://localhost:{port}")).unwrap();
    let channel = connect(endpoint, &root_file(&dir, &root)).await.unwrap();
    assert!(gets_snapshot(channel).await);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn another_root_fails_the_handshake() {
    let (port, _) = start_tls().await;
    let dir = temp_dir("tls-other-root");
    let other = Authority::generate("cluster.local").unwrap();
    let endpoint = Endpoint::from_shared(format!("https://localhost:{port}")).unwrap();
    let error = connect(endpoint, &root_file(&dir, other.root_pem())).await.unwrap_err();
    assert!(matches!(error, DialError::Transport(_)), "{error:?}");
    assert!(format!("{:?}", std::error::Error::source(&error)).contains("InvalidCertificate"), "{error:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_missing_root_file_is_named() {
    let (port, _) = start_tls().await;
    let endpoint = Endpoint::from_shared(format!("https://localhost:{port}")).unwrap();
    let error = connect(endpoint, Path::new("/nonexistent/root-cert.pem")).await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains("/nonexistent/root-cert.pem") && message.contains("MESH_CA_ROOT_CERT"), "{message}");
}

#[tokio::test]
async fn http_stays_plaintext() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(ConfigService::new(hub(), StreamSettings::default()).serve(listener, std::future::pending()));
    let endpoint = Endpoint::from_shared(address).unwrap();
    let channel = connect(endpoint, Path::new("/nonexistent/root-cert.pem")).await.unwrap();
    assert!(gets_snapshot(channel).await);
}
