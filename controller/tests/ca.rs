//! The CA and the config stream over real TLS on loopback (15012's server): a client trusting
//! the root gets a certificate carrying exactly its token's SPIFFE ID; tokens, DNS names and
//! CSRs are checked; the config stream works over the same TLS; a client without the root
//! cannot connect; a renewed serving certificate reaches new connections.

use std::sync::Arc;
use std::time::Duration;

use controller::ca::authority::{Authority, LeafNames};
use controller::ca::policy::{Identity, Policy};
use controller::ca::review::{ReviewError, TokenReviewer};
use controller::ca::service::CaService;
use controller::ca::serving::{ServingCert, service_names};
use controller::config::hub::Hub;
use controller::config::server::{ConfigService, StreamSettings};
use controller::metrics::Metrics;
use proto::ca::SignCertificateRequest;
use proto::ca::certificate_authority_client::CertificateAuthorityClient;
use proto::config::config_discovery_client::ConfigDiscoveryClient;
use proto::config::{Hello, ProxyIdentity, ProxyMessage, proxy_message};
use rcgen::{CertificateParams, KeyPair, SanType};
use tokio_rustls::rustls::pki_types;
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

const SERVER_NAME: &str = "mesh-controller.istio-system.svc";

/// Tokens and whose they are, as a TokenReview would answer.
struct FixedReviewer;

#[tonic::async_trait]
impl TokenReviewer for FixedReviewer {
    async fn review(&self, token: &str) -> Result<Identity, ReviewError> {
        let (namespace, service_account) = match token {
            "token-of-reviews" => ("a", "reviews"),
            "token-of-injector" => ("istio-system", "mesh-injector"),
            _ => return Err(ReviewError::Unauthenticated("the token is not valid for audience \"istio-ca\"".into())),
        };
        Ok(Identity { namespace: namespace.into(), service_account: service_account.into() })
    }
}

struct Controller {
    address: String,
    root_pem: String,
}

/// Serves ConfigDiscovery and the CA over TLS on a loopback port, as `run` does on 15012.
async fn start(serving_validity: Duration) -> Controller {
    let authority = Arc::new(Authority::generate("cluster.local").unwrap());
    let names = LeafNames { uris: Vec::new(), dns: service_names("mesh-controller", "istio-system", "cluster.local") };
    let serving = ServingCert::issue(&authority, names, serving_validity).unwrap();
    let tls = serving.server_config(&[b"h2"]).unwrap();
    tokio::spawn(serving.renew(authority.clone()));
    let policy = Policy {
        trust_domain: "cluster.local".into(),
        domain: "cluster.local".into(),
        namespace: "istio-system".into(),
        default_validity: Duration::from_secs(24 * 3600),
        max_validity: Duration::from_secs(48 * 3600),
    };
    let lookup = Arc::new(|service: &str| service == "mesh-injector");
    let ca = CaService::new(authority.clone(), Arc::new(FixedReviewer), policy, lookup).into_server();
    let hub = Hub::new("cluster.local", "istio-system", Arc::new(Metrics::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("https://{}", listener.local_addr().unwrap());
    let config = ConfigService::new(hub, StreamSettings::default());
    tokio::spawn(config.serve_tls(ca, listener, tls, std::future::pending()));
    Controller { address, root_pem: authority.root_pem().to_string() }
}

async fn channel(address: &str, root_pem: &str) -> Result<Channel, tonic::transport::Error> {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(root_pem)).domain_name(SERVER_NAME);
    Endpoint::from_shared(address.to_string())?.tls_config(tls)?.connect().await
}

/// A CSR for a fresh key asking for `sans`.
fn csr(sans: &[SanType]) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans.to_vec();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

async fn sign(
    controller: &Controller,
    token: Option<&str>,
    csr_pem: String,
) -> Result<proto::ca::SignCertificateResponse, tonic::Status> {
    let mut client = CertificateAuthorityClient::new(channel(&controller.address, &controller.root_pem).await.unwrap());
    let mut request = tonic::Request::new(SignCertificateRequest { csr_pem, requested_validity_seconds: 0 });
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    client.sign_certificate(request).await.map(tonic::Response::into_inner)
}

/// The URI and DNS SANs of a PEM certificate, and whether `root_pem` signed it.
fn sans_of(leaf_pem: &str, root_pem: &str) -> (Vec<String>, Vec<String>, bool) {
    sans_of_der(&pem_der(leaf_pem), root_pem)
}

fn sans_of_der(leaf_der: &[u8], root_pem: &str) -> (Vec<String>, Vec<String>, bool) {
    let root_der = pem_der(root_pem);
    let (_, leaf) = X509Certificate::from_der(leaf_der).unwrap();
    let (_, root) = X509Certificate::from_der(&root_der).unwrap();
    let signed_by_root = leaf.verify_signature(Some(root.public_key())).is_ok();
    let (mut uris, mut dns) = (Vec::new(), Vec::new());
    for name in &leaf.subject_alternative_name().unwrap().expect("a SAN extension").value.general_names {
        match name {
            GeneralName::URI(uri) => uris.push(uri.to_string()),
            GeneralName::DNSName(name) => dns.push(name.to_string()),
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    (uris, dns, signed_by_root)
}

fn pem_der(pem: &str) -> Vec<u8> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
}

fn uri(value: &str) -> SanType {
    SanType::URI(value.try_into().unwrap())
}

fn dns(value: &str) -> SanType {
    SanType::DnsName(value.try_into().unwrap())
}

#[tokio::test]
async fn a_workload_gets_exactly_its_tokens_spiffe_id_whatever_it_asks() {
    let controller = start(Duration::from_secs(3600)).await;
    let asked = csr(&[uri("spiffe://cluster.local/ns/istio-system/sa/mesh-controller")]);
    let signed = sign(&controller, Some("token-of-reviews"), asked).await.unwrap();
    assert_eq!(signed.cert_chain_pem.len(), 1);
    assert_eq!(signed.trust_bundle_pem, vec![controller.root_pem.clone()]);
    let (uris, dns, signed_by_root) = sans_of(&signed.cert_chain_pem[0], &controller.root_pem);
    assert_eq!(uris, vec!["spiffe://cluster.local/ns/a/sa/reviews"]);
    assert!(dns.is_empty(), "{dns:?}");
    assert!(signed_by_root);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let lifetime = signed.expires_at_unix_seconds - now;
    assert!((24 * 3600 - 60..=24 * 3600).contains(&lifetime), "default validity is 24 h, got {lifetime} s");
}

#[tokio::test]
async fn missing_and_forged_tokens_are_unauthenticated() {
    let controller = start(Duration::from_secs(3600)).await;
    let missing = sign(&controller, None, csr(&[])).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert!(missing.message().contains("authorization: Bearer"), "{}", missing.message());
    let forged = sign(&controller, Some("forged"), csr(&[])).await.unwrap_err();
    assert_eq!(forged.code(), Code::Unauthenticated);
    assert!(forged.message().contains("istio-ca"), "{}", forged.message());
}

#[tokio::test]
async fn dns_names_only_for_the_controllers_namespace_and_its_services() {
    let controller = start(Duration::from_secs(3600)).await;
    let injector_names = ["mesh-injector.istio-system.svc", "mesh-injector.istio-system.svc.cluster.local"];
    let asked = csr(&injector_names.map(dns));
    let signed = sign(&controller, Some("token-of-injector"), asked).await.unwrap();
    let (uris, names, _) = sans_of(&signed.cert_chain_pem[0], &controller.root_pem);
    assert_eq!(uris, vec!["spiffe://cluster.local/ns/istio-system/sa/mesh-injector"]);
    assert_eq!(names, injector_names);

    let refused = sign(&controller, Some("token-of-reviews"), csr(&[dns("reviews.a.svc")])).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("\"reviews.a.svc\""), "{}", refused.message());
    let refused = sign(&controller, Some("token-of-injector"), csr(&[dns("mesh-controller.istio-system.svc")]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("no Service istio-system/mesh-controller"), "{}", refused.message());
}

#[tokio::test]
async fn a_request_that_is_not_a_csr_is_invalid() {
    let controller = start(Duration::from_secs(3600)).await;
    let invalid = sign(&controller, Some("token-of-reviews"), "not a CSR".into()).await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(invalid.message().contains("csr_pem"), "{}", invalid.message());
}

#[tokio::test]
async fn the_config_stream_works_over_tls() {
    let controller = start(Duration::from_secs(3600)).await;
    let mut client = ConfigDiscoveryClient::new(channel(&controller.address, &controller.root_pem).await.unwrap());
    let identity = ProxyIdentity {
        namespace: "a".into(),
        pod_name: "reviews-1".into(),
        service_account: "reviews".into(),
        ..ProxyIdentity::default()
    };
    let hello = Hello { identity: Some(identity), ..Hello::default() };
    let outbound = tokio_stream::iter([ProxyMessage { message: Some(proxy_message::Message::Hello(hello)) }])
        .chain(tokio_stream::pending());
    let mut updates = client.stream_config(outbound).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), updates.message()).await.unwrap().unwrap().unwrap();
    assert!(first.full, "the first update is a snapshot: {first:?}");
    assert!(!first.version.is_empty());
}

#[tokio::test]
async fn a_client_without_the_root_cannot_connect() {
    let controller = start(Duration::from_secs(3600)).await;
    let other_root = Authority::generate("cluster.local").unwrap();
    let error = channel(&controller.address, other_root.root_pem()).await.unwrap_err();
    let chain = format!("{:?}", std::error::Error::source(&error));
    assert!(chain.contains("InvalidCertificate"), "the handshake fails on the certificate: {chain}");
}

#[tokio::test]
async fn the_serving_certificate_is_renewed_for_new_connections() {
    // Valid for 3 s: renewed after 2 s.
    let controller = start(Duration::from_secs(3)).await;
    let first = served_certificate(&controller).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let second = served_certificate(&controller).await;
    assert_ne!(first, second, "a new connection gets the renewed certificate");
    let (_, names, signed_by_root) = sans_of_der(&second, &controller.root_pem);
    assert_eq!(names, service_names("mesh-controller", "istio-system", "cluster.local"));
    assert!(signed_by_root);
}

/// The leaf certificate the server presents to a new TLS connection (DER).
async fn served_certificate(controller: &Controller) -> Vec<u8> {
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    roots.add(pki_types::CertificateDer::from(pem_der(&controller.root_pem))).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let address = controller.address.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = pki_types::ServerName::try_from(SERVER_NAME).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn the_client_obtains_a_certificate_for_its_own_key() {
    use controller::ca::client::{CertificateRequest, request_certificate};
    let controller = start(Duration::from_secs(3600)).await;
    let injector_names = ["mesh-injector.istio-system.svc".to_string()];
    let request = CertificateRequest {
        address: controller.address.clone(),
        server_name: Some(SERVER_NAME.into()),
        root_pem: controller.root_pem.clone(),
        token: "token-of-injector\n".into(),
        dns: injector_names.to_vec(),
        validity_seconds: 3600,
    };
    let obtained = request_certificate(&request).await.unwrap();
    let (uris, names, signed_by_root) = sans_of(&obtained.chain_pem[0], &controller.root_pem);
    assert_eq!(
        (uris, names, signed_by_root),
        (vec!["spiffe://cluster.local/ns/istio-system/sa/mesh-injector".into()], injector_names.to_vec(), true)
    );
    let leaf_der = pem_der(&obtained.chain_pem[0]);
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    let key = KeyPair::from_pem(&obtained.key_pem).unwrap();
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw(),
        "the certificate is for the returned key"
    );
    let lifetime = obtained.expires_at_unix_seconds - time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((3600 - 60..=3600).contains(&lifetime), "{lifetime}");
    assert!(!format!("{request:?}").contains("token-of-injector"), "Debug hides the token");
}
