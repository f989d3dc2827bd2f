//! Loopback: mutual TLS between two sidecars (auto mTLS). The client's sidecar routes by a
//! config in which the endpoint's pod runs a sidecar (`security.istio.io/tlsMode: istio`); the
//! server's sidecar terminates the mutual TLS on its inbound listener and hands plaintext to the
//! app. Certificates come from the controller's CA code.

mod support;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Empty;
use mesh_proxy::config::identity::IdentitySettings;
use mesh_proxy::proxy::Proxy;
use mesh_proxy::tls::{MeshTls, files};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use support::certs::{TestCa, spiffe};
use support::mesh::{get, pod, service, start_mesh_with_tls, upstream};
use support::{bounded, h1_client, half_close_server, start_peer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SIDECAR: (&str, &str) = ("security.istio.io/tlsMode", "istio");

fn client_identity() -> IdentitySettings {
    IdentitySettings { pod_name: "productpage".into(), namespace: "default".into(), ..Default::default() }
}

/// The client's config: `reviews` on 9080, one pod behind the peer's inbound listener.
fn reviews_config(peer: &Proxy, labels: &[(&str, &str)]) -> String {
    service("reviews", "10.96.0.50", "http", 9080, &[pod("reviews-v1", labels, peer.addresses().inbound)])
}

#[tokio::test]
async fn http_between_sidecars_is_mutual_tls_and_the_app_sees_plain_http() {
    let ca = TestCa::new();
    let app = upstream("reviews", "127.0.0.1").await;
    // The pod has no serviceAccountName: its identity is the account `default`.
    let peer = start_peer(app.addr(), true, ca.tls("default"));
    let config = reviews_config(&peer, &[("app", "reviews"), SIDECAR]);
    let client = start_mesh_with_tls(&config, client_identity(), None, ca.tls("productpage"));

    for _ in 0..3 {
        let (status, headers, body) = get(client.outbound(), "reviews:9080", "/reviews/1", &[]).await;
        assert_eq!(status, StatusCode::OK, "{headers:?} {body}");
        assert_eq!(body, "reviews");
    }
    assert_eq!(app.count(), 3);
    assert_eq!(app.last().path, "/reviews/1");
    assert_eq!(peer.stats().inbound.mtls_accepted.load(Relaxed), 1, "one pooled mTLS connection carried all three");
}

#[tokio::test]
async fn without_the_sidecar_label_the_connection_stays_plaintext() {
    let ca = TestCa::new();
    let app = upstream("reviews", "127.0.0.1").await;
    let peer = start_peer(app.addr(), true, ca.tls("default"));
    let client =
        start_mesh_with_tls(&reviews_config(&peer, &[("app", "reviews")]), client_identity(), None, ca.tls("pp"));
    let (status, _, _) = get(client.outbound(), "reviews:9080", "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(peer.stats().inbound.mtls_accepted.load(Relaxed), 0);
}

#[tokio::test]
async fn a_peer_proving_another_identity_is_refused_until_its_certificate_is_rotated() {
    let ca = TestCa::new();
    let app = upstream("reviews", "127.0.0.1").await;
    let peer_tls = ca.tls("ratings");
    let peer = start_peer(app.addr(), true, peer_tls.clone());
    let config = reviews_config(&peer, &[("app", "reviews"), SIDECAR]);
    let client = start_mesh_with_tls(&config, client_identity(), None, ca.tls("productpage"));

    let (status, headers, _) = get(client.outbound(), "reviews:9080", "/", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["x-mesh-reason"], "connect_failure outbound|9080||reviews.default.svc.cluster.local");
    assert_eq!(app.count(), 0, "nothing reached the app");

    // The peer's certificate is rotated to the identity the registry expects: the next
    // connection succeeds, with no restart.
    peer_tls.install(ca.credentials("default"));
    let (status, _, body) = get(client.outbound(), "reviews:9080", "/", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "reviews"));
}

#[tokio::test]
async fn a_peer_of_another_mesh_fails_the_handshake_on_both_sides() {
    let (ours, theirs) = (TestCa::new(), TestCa::new());
    let app = upstream("reviews", "127.0.0.1").await;
    let peer = start_peer(app.addr(), true, ours.tls("default"));
    let config = reviews_config(&peer, &[("app", "reviews"), SIDECAR]);
    let client = start_mesh_with_tls(&config, client_identity(), None, theirs.tls("default"));
    let (status, headers, _) = get(client.outbound(), "reviews:9080", "/", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers["x-mesh-reason"].to_str().unwrap().starts_with("connect_failure "), "{headers:?}");
    assert_eq!(app.count(), 0);
    bounded("the peer to count the failed handshake", async {
        while peer.stats().inbound.mtls_fail.load(Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn plaintext_from_outside_the_mesh_is_still_served() {
    let ca = TestCa::new();
    let app = upstream("reviews", "127.0.0.1").await;
    let peer = start_peer(app.addr(), true, ca.tls("default"));
    let mut client = h1_client::<Empty<Bytes>>(peer.addresses().inbound).await;
    let req = http::Request::builder().uri("/plain").header("host", "reviews").body(Empty::new()).unwrap();
    let resp = bounded("response", client.send_request(req)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(app.last().path, "/plain");
    assert_eq!(peer.stats().inbound.mtls_accepted.load(Relaxed), 0);
}

#[tokio::test]
async fn tcp_between_sidecars_is_mutual_tls_and_half_close_crosses_it() {
    let ca = TestCa::new();
    let app = half_close_server().await;
    let peer = start_peer(app, false, ca.tls("default"));
    let cluster_ip: SocketAddr = "10.96.0.51:5432".parse().unwrap();
    let config =
        service("db", "10.96.0.51", "tcp", 5432, &[pod("db-0", &[("app", "db"), SIDECAR], peer.addresses().inbound)]);
    let client = start_mesh_with_tls(&config, client_identity(), Some(cluster_ip), ca.tls("productpage"));

    let mut conn = TcpStream::connect(client.outbound()).await.unwrap();
    conn.write_all(&[7u8; 100_000]).await.unwrap();
    conn.shutdown().await.unwrap();
    let mut reply = String::new();
    bounded("the reply after half-close", conn.read_to_string(&mut reply)).await.unwrap();
    assert_eq!(reply, "got 100000 bytes");
    assert_eq!(peer.stats().inbound.mtls_accepted.load(Relaxed), 1);
}

#[tokio::test]
async fn a_rotated_certificate_directory_is_picked_up() {
    let ca = TestCa::new();
    let dir = std::env::temp_dir().join(format!("mesh-certs-{}", std::process::id()));
    ca.write_dir(&dir, "first");
    let tls = Arc::new(MeshTls::with(files::load(&dir).unwrap()));
    assert_eq!(tls.current().unwrap().identity, spiffe("first"));
    let watch = tokio::spawn(files::watch(dir.clone(), tls.clone(), Duration::from_millis(20)));

    // Let the watch take its first look at the files before they change (a change within the
    // same mtime tick would go unseen; real rotations are hours apart).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ca.write_dir(&dir, "second");
    bounded("the new certificate to be installed", async {
        while tls.current().unwrap().identity != spiffe("second") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    // A broken set keeps the certificate in force.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(dir.join(files::KEY), "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(tls.current().unwrap().identity, spiffe("second"));
    watch.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The first bytes a TLS client sends: a ClientHello without any `istio` protocol, as an app
/// speaking its own TLS would.
fn app_client_hello() -> Vec<u8> {
    use tokio_rustls::rustls::{ClientConfig, ClientConnection, RootCertStore};
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let mut conn = ClientConnection::new(Arc::new(config), "db.example.com".try_into().unwrap()).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

#[tokio::test]
async fn an_apps_own_tls_is_passed_to_the_app_untouched() {
    let ca = TestCa::new();
    let app = half_close_server().await;
    let peer = start_peer(app, false, ca.tls("default"));
    let hello = app_client_hello();
    let mut conn = TcpStream::connect(peer.addresses().inbound).await.unwrap();
    conn.write_all(&hello).await.unwrap();
    conn.shutdown().await.unwrap();
    let mut reply = String::new();
    bounded("the app's answer", conn.read_to_string(&mut reply)).await.unwrap();
    assert_eq!(reply, format!("got {} bytes", hello.len()), "the ClientHello reached the app whole");
    assert_eq!(peer.stats().inbound.mtls_accepted.load(Relaxed), 0);
}

#[tokio::test]
async fn a_server_first_protocol_is_served_not_stalled() {
    let ca = TestCa::new();
    // The app speaks first, as a database or SMTP server does, and the client waits for it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"220 ready\r\n").await;
            });
        }
    });
    let peer = start_peer(app, false, ca.tls("default"));
    let mut conn = TcpStream::connect(peer.addresses().inbound).await.unwrap();
    let mut greeting = [0u8; 11];
    bounded("the server's greeting", conn.read_exact(&mut greeting)).await.unwrap();
    assert_eq!(&greeting, b"220 ready\r\n");
}

#[tokio::test]
async fn mutual_tls_reaching_a_sidecar_still_waiting_for_its_certificate_is_refused() {
    let ca = TestCa::new();
    let app = upstream("reviews", "127.0.0.1").await;
    let waiting = Arc::new(MeshTls::expecting());
    let peer = start_peer(app.addr(), true, waiting.clone());
    let config = reviews_config(&peer, &[("app", "reviews"), SIDECAR]);
    let client = start_mesh_with_tls(&config, client_identity(), None, ca.tls("productpage"));
    let (status, headers, _) = get(client.outbound(), "reviews:9080", "/", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{headers:?}");
    assert_eq!(app.count(), 0, "the TLS bytes never reached the app as if they were plaintext");
    assert!(peer.stats().inbound.mtls_fail.load(Relaxed) > 0);
    // Plaintext from outside the mesh is served meanwhile.
    let mut plain = h1_client::<Empty<Bytes>>(peer.addresses().inbound).await;
    let req = http::Request::builder().uri("/").header("host", "reviews").body(Empty::new()).unwrap();
    assert_eq!(bounded("response", plain.send_request(req)).await.unwrap().status(), StatusCode::OK);
    // Once the certificate arrives, the mesh's request goes through.
    waiting.install(ca.credentials("default"));
    let (status, _, body) = get(client.outbound(), "reviews:9080", "/", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "reviews"));
}
