//! The webhook over real TLS on loopback: a rustls client that trusts only the generated CA
//! sends AdmissionReviews over HTTP/1.1 and HTTP/2, as the API server does.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use injector::config::InjectConfig;
use injector::webhook::{certs, server};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

const HOST: &str = "mesh-injector.istio-system.svc";

struct Webhook {
    addr: SocketAddr,
    ca_pem: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start() -> Webhook {
    let dns = certs::service_dns_names("mesh-injector", "istio-system", "cluster.local");
    let cert = certs::self_signed(&dns, Duration::from_secs(3600)).unwrap();
    let tls = server::TlsHandle::new(certs::server_config(&cert).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve(listener, Arc::new(InjectConfig::default()), tls, async {
        let _ = stopped.await;
    }));
    Webhook { addr, ca_pem: cert.ca_pem, _stop: stop }
}

fn client_config(ca_pem: &str, alpn: &[u8]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(cfg)
}

async fn tls_stream(
    w: &Webhook,
    ca_pem: &str,
    alpn: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(w.addr).await?;
    let name = ServerName::try_from(HOST).unwrap();
    TlsConnector::from(client_config(ca_pem, alpn)).connect(name, tcp).await
}

/// One request over a new connection; HTTP/2 when `h2`.
async fn call(w: &Webhook, method: &str, path: &str, body: Vec<u8>, h2: bool) -> (StatusCode, Bytes) {
    let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
    let stream = tls_stream(w, &w.ca_pem, alpn).await.expect("TLS handshake with the generated CA");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn));
    let req = Request::builder()
        .method(method)
        .uri(format!("https://{HOST}{path}"))
        .header("host", HOST)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    };
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

fn review(version: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": version,
        "kind": "AdmissionReview",
        "request": {
            "uid": "e911857d-c318-11e8-bbad-025000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "shop",
            "operation": "CREATE",
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                       "spec": {"containers": [{"name": "web", "image": "web:1"}]}},
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn admission_reviews_get_a_patch_over_http1_and_http2() {
    let w = start().await;
    for (version, h2) in [("admission.k8s.io/v1", false), ("admission.k8s.io/v1beta1", true)] {
        let (status, body) = call(&w, "POST", "/inject", review(version), h2).await;
        assert_eq!(status, StatusCode::OK);
        let r: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(r["apiVersion"], version);
        assert_eq!(r["response"]["uid"], "e911857d-c318-11e8-bbad-025000000001");
        assert_eq!(r["response"]["allowed"], true);
        assert_eq!(r["response"]["patchType"], "JSONPatch");
        let patch: k8s_openapi::ByteString = serde_json::from_value(r["response"]["patch"].clone()).unwrap();
        let ops: Vec<Value> = serde_json::from_slice(&patch.0).unwrap();
        assert!(ops.iter().any(|op| op["value"]["name"] == "istio-proxy"), "{ops:?}");
    }
}

#[tokio::test]
async fn malformed_input_is_a_400_and_the_server_keeps_serving() {
    let w = start().await;
    let (status, body) = call(&w, "POST", "/inject", b"{\"apiVersion\": 12".to_vec(), false).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).starts_with("the body is not an AdmissionReview"));
    assert_eq!(call(&w, "GET", "/inject", vec![], false).await.0, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(call(&w, "GET", "/nope", vec![], true).await.0, StatusCode::NOT_FOUND);
    let (status, _) = call(&w, "POST", "/inject", vec![b' '; 5 * 1024 * 1024], false).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Plain text on the TLS port, and a connection dropped mid-handshake.
    let mut raw = tokio::net::TcpStream::connect(w.addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    drop(raw);
    drop(tokio::net::TcpStream::connect(w.addr).await.unwrap());

    let (status, body) = call(&w, "GET", "/ready", vec![], false).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok\n"[..]));
}

#[tokio::test]
async fn a_client_that_does_not_trust_our_ca_cannot_connect() {
    let w = start().await;
    let other = certs::self_signed(&[HOST.to_string()], Duration::from_secs(3600)).unwrap();
    let err = tls_stream(&w, &other.ca_pem, b"http/1.1").await.unwrap_err();
    assert!(err.to_string().contains("invalid peer certificate"), "{err}");
}

#[tokio::test]
async fn a_renewed_certificate_serves_new_connections() {
    let dns = certs::service_dns_names("mesh-injector", "istio-system", "cluster.local");
    let first = certs::self_signed(&dns, Duration::from_secs(3600)).unwrap();
    let tls = server::TlsHandle::new(certs::server_config(&first).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(listener, Arc::new(InjectConfig::default()), tls.clone(), std::future::pending()));
    let (stop, _) = tokio::sync::oneshot::channel();
    let w = Webhook { addr, ca_pem: first.ca_pem.clone(), _stop: stop };
    assert!(tls_stream(&w, &first.ca_pem, b"http/1.1").await.is_ok());

    let second = certs::self_signed(&dns, Duration::from_secs(3600)).unwrap();
    tls.set(certs::server_config(&second).unwrap());
    assert!(tls_stream(&w, &first.ca_pem, b"http/1.1").await.is_err(), "the old CA no longer verifies");
    assert!(tls_stream(&w, &second.ca_pem, b"http/1.1").await.is_ok());
}

#[tokio::test]
async fn a_generated_certificate_is_renewed_before_it_expires() {
    let dns = certs::service_dns_names("mesh-injector", "istio-system", "cluster.local");
    let validity = Duration::from_secs(3);
    let first = certs::self_signed(&dns, validity).unwrap();
    let tls = server::TlsHandle::new(certs::server_config(&first).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(listener, Arc::new(InjectConfig::default()), tls.clone(), std::future::pending()));
    let (bundles, mut published) = tokio::sync::mpsc::unbounded_channel();
    let publish = move |b: String| {
        let _ = bundles.send(b);
        std::future::ready(())
    };
    let renewal = injector::webhook::renew::Renewal { dns, validity, mesh_ca: None };
    tokio::spawn(injector::webhook::renew::renew_forever(first.clone(), renewal, tls, publish));
    let (stop, _) = tokio::sync::oneshot::channel();
    let w = Webhook { addr, ca_pem: first.ca_pem.clone(), _stop: stop };

    // At two thirds of the 3 s life the new CA is published beside the old one.
    let bundle = tokio::time::timeout(Duration::from_secs(5), published.recv()).await.unwrap().unwrap();
    assert!(bundle.ends_with(&first.ca_pem), "the old CA stays in the bundle");
    let new_ca = bundle.strip_suffix(&first.ca_pem).unwrap().to_string();
    assert!(new_ca.contains("BEGIN CERTIFICATE") && new_ca != first.ca_pem);
    // Then the server switches: the new CA alone verifies it, the old one no longer does.
    let mut switched = false;
    for _ in 0..50 {
        if tls_stream(&w, &new_ca, b"http/1.1").await.is_ok() {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(switched, "the renewed certificate is served");
    assert!(tls_stream(&w, &first.ca_pem, b"http/1.1").await.is_err());
    assert!(tls_stream(&w, &bundle, b"http/1.1").await.is_ok(), "the published bundle verifies it");
}
