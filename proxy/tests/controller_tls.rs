//! Loopback: the proxy dials the controller's TLS port (15012's server, from the controller
//! crate) trusting only the mesh root from a file, and gets its config stream; a wrong root or
//! a missing root file fails with a clear error; `http://` stays plaintext. On the same port
//! the proxy gets its workload certificate from the CA, and two sidecars certified so speak
//! mutual TLS (the token review is the one stand-in: `token-of-<account>` proves that account
//! in `default`; the real TokenReview is tier 4's `e2e/tests/ca.sh`).

mod support;

use controller::ca::authority::{Authority, LeafNames};
use controller::ca::policy::{Identity, Policy};
use controller::ca::review::{ReviewError, TokenReviewer};
use controller::ca::service::CaService;
use controller::ca::serving::ServingCert;
use controller::config::hub::Hub;
use controller::config::server::{ConfigService, StreamSettings};
use controller::metrics::Metrics;
use mesh_proxy::config::controller::{DialError, connect};
use mesh_proxy::config::identity::IdentitySettings;
use mesh_proxy::tls::MeshTls;
use mesh_proxy::tls::ca::{self, CaError, CaSettings};
use proto::ca_client::ClientError;
use proto::config::config_discovery_client::ConfigDiscoveryClient;
use proto::config::{Hello, ProxyIdentity, ProxyMessage, proxy_message};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::mesh::{get, pod, service, start_mesh_with_tls, upstream};
use support::{bounded, start_peer};
use tokio_stream::StreamExt as _;
use tonic::transport::Endpoint;

struct NoTokens;

#[tonic::async_trait]
impl TokenReviewer for NoTokens {
    async fn review(&self, _token: &str) -> Result<Identity, ReviewError> {
        Err(ReviewError::Unauthenticated("no tokens in this test".into()))
    }
}

/// `token-of-<account>` proves the service account `<account>` of `default`.
struct AccountTokens;

#[tonic::async_trait]
impl TokenReviewer for AccountTokens {
    async fn review(&self, token: &str) -> Result<Identity, ReviewError> {
        match token.strip_prefix("token-of-") {
            Some(account) => Ok(Identity { namespace: "default".into(), service_account: account.into() }),
            None => Err(ReviewError::Unauthenticated("the token is not valid for audience \"istio-ca\"".into())),
        }
    }
}

/// The controller's TLS server on loopback with a certificate for `localhost`; returns its
/// port and the root that signed the certificate.
async fn start_tls() -> (u16, String) {
    start_tls_with(Arc::new(NoTokens)).await
}

/// As [`start_tls`], with the CA trusting tokens as `reviewer` says.
async fn start_tls_with(reviewer: Arc<dyn TokenReviewer>) -> (u16, String) {
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
    let ca = CaService::new(authority.clone(), reviewer, policy, Arc::new(|_: &str| false)).into_server();
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

/// What a sidecar of `account` would be configured with: the CA's address, the root, a token.
fn ca_settings(port: u16, dir: &Path, root: &str, token: &str) -> CaSettings {
    let token_file = dir.join(format!("token-{token}"));
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    CaSettings { address: format!("https://localhost:{port}"), root_cert: root_file(dir, root), token_file }
}

#[tokio::test]
async fn the_ca_certifies_the_sidecars_account_and_two_certified_sidecars_speak_mutual_tls() {
    let (port, root) = start_tls_with(Arc::new(AccountTokens)).await;
    let dir = temp_dir("ca-certified");
    let obtained = ca::obtain(&ca_settings(port, &dir, &root, "token-of-reviews")).await.unwrap();
    assert_eq!(obtained.credentials.identity, "spiffe://cluster.local/ns/default/sa/reviews");
    let renew_in = obtained.renew_at.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(renew_in > Duration::from_secs(30 * 60) && renew_in <= Duration::from_secs(40 * 60), "{renew_in:?}");

    // Each sidecar keeps itself certified; the client's expects the peer's pod account.
    let server_tls = Arc::new(MeshTls::default());
    let client_tls = Arc::new(MeshTls::default());
    tokio::spawn(ca::keep_certified(ca_settings(port, &dir, &root, "token-of-default"), server_tls.clone()));
    tokio::spawn(ca::keep_certified(ca_settings(port, &dir, &root, "token-of-productpage"), client_tls.clone()));
    bounded("both sidecars certified", async {
        while server_tls.current().is_none() || client_tls.current().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let app = upstream("reviews", "127.0.0.1").await;
    let peer = start_peer(app.addr(), true, server_tls);
    let sidecar = [("app", "reviews"), ("security.istio.io/tlsMode", "istio")];
    let config =
        service("reviews", "10.96.0.60", "http", 9080, &[pod("reviews-v1", &sidecar, peer.addresses().inbound)]);
    let identity =
        IdentitySettings { pod_name: "productpage".into(), namespace: "default".into(), ..Default::default() };
    let client = start_mesh_with_tls(&config, identity, None, client_tls);
    let (status, _, body) = get(client.outbound(), "reviews:9080", "/", &[]).await;
    assert_eq!((status, body.as_str()), (http::StatusCode::OK, "reviews"));
    assert_eq!(peer.stats().inbound.mtls_accepted.load(std::sync::atomic::Ordering::Relaxed), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_token_the_ca_refuses_and_a_missing_token_are_named() {
    let (port, root) = start_tls_with(Arc::new(AccountTokens)).await;
    let dir = temp_dir("ca-refused");
    let error = ca::obtain(&ca_settings(port, &dir, &root, "stolen")).await.err().unwrap();
    let message = error.to_string();
    assert!(matches!(error, CaError::Ca { source: ClientError::Refused(_), .. }), "{message}");
    assert!(message.contains(&format!("https://localhost:{port}")) && message.contains("istio-ca"), "{message}");

    let mut settings = ca_settings(port, &dir, &root, "token-of-reviews");
    settings.token_file = dir.join("no-such-token");
    let message = ca::obtain(&settings).await.err().unwrap().to_string();
    assert!(message.contains("no-such-token"), "{message}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `GET path` on `addr` with a plain socket: the status code and the body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, response.rsplit("\r\n\r\n").next().unwrap_or_default().to_string())
}

/// The `mesh-proxy` binary asking the CA at `port` for a certificate with `token`.
fn certified_binary(port: u16, dir: &Path, root: &str, token: &str) -> support::binary::RunningBinary {
    let settings = ca_settings(port, dir, root, token);
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-proxy"));
    command
        .args(["run", "--concurrency", "1", "--ca-address", &settings.address])
        .env("MESH_TOKEN_FILE", &settings.token_file)
        .env("MESH_CA_ROOT_CERT", &settings.root_cert);
    support::binary::RunningBinary::start(command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_gets_its_certificate_and_says_so_or_says_why_not() {
    let (port, root) = start_tls_with(Arc::new(AccountTokens)).await;
    let dir = temp_dir("ca-binary");
    let refused = certified_binary(port, &dir, &root, "stolen");
    let certified = certified_binary(port, &dir, &root, "token-of-reviews");
    let identity = "spiffe://cluster.local/ns/default/sa/reviews";
    bounded("the certificate in /config_dump", async {
        while !http_get(certified.ports.admin, "/config_dump").1.contains(identity) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    bounded("the refusal in the log", async {
        while !refused.logs().contains("no workload certificate from the mesh CA") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(refused.logs().contains("Unauthenticated"), "{}", refused.logs());
    let (_, dump) = http_get(refused.ports.admin, "/config_dump");
    assert!(dump.contains("\"waiting_for_certificate\": true"), "{dump}");
    std::fs::remove_dir_all(dir).unwrap();
}
