//! The proxy's workload certificate as rustls configurations, and the slot that holds the
//! current one.

use super::MESH_ALPN;
use super::verify::{MeshServerVerifier, spiffe_id};
use arc_swap::ArcSwapOption;
use std::sync::Arc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

/// ALPN protocols the inbound side accepts from a peer sidecar: `istio` (ours), and the names
/// Istio's proxies offer, so a peer that speaks them is understood too.
const ACCEPTED_ALPN: [&[u8]; 5] =
    [MESH_ALPN, b"istio-peer-exchange", b"istio-http/1.0", b"istio-http/1.1", b"istio-h2"];

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("{what}: {message}")]
    Pem { what: &'static str, message: String },
    #[error("{0}: none found")]
    Empty(&'static str),
    #[error("the certificate carries no SPIFFE ID (a URI SAN spiffe://…)")]
    NoIdentity,
    #[error("building the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the root certificates: {0}")]
    Roots(String),
}

/// The proxy's certificate, key and trusted roots, ready for both ends of a connection.
pub struct Credentials {
    /// The proxy's own SPIFFE ID, from its certificate.
    pub identity: String,
    /// For connections the proxy originates: presents the certificate, checks the server's
    /// chain (the SPIFFE ID is checked by the caller, who knows which one to expect).
    pub client: Arc<ClientConfig>,
    /// For connections the proxy terminates: requires a client certificate chaining to a root.
    pub server: Arc<ServerConfig>,
}

impl std::fmt::Debug for Credentials {
    // The key stays out of every log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("identity", &self.identity).finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials from PEM: `chain` (the workload certificate first), its PKCS#8 or SEC1 `key`,
    /// and the mesh `roots`.
    pub fn from_pem(chain: &str, key: &str, roots: &str) -> Result<Credentials, CredentialsError> {
        let certs = |what: &'static str, pem: &str| -> Result<Vec<CertificateDer<'static>>, CredentialsError> {
            let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| CredentialsError::Pem { what, message: e.to_string() })?;
            if certs.is_empty() {
                return Err(CredentialsError::Empty(what));
            }
            Ok(certs)
        };
        let chain = certs("certificate chain", chain)?;
        let identity = spiffe_id(&chain[0]).ok_or(CredentialsError::NoIdentity)?;
        let mut store = RootCertStore::empty();
        for root in certs("root certificates", roots)? {
            store.add(root).map_err(|e| CredentialsError::Roots(e.to_string()))?;
        }
        let store = Arc::new(store);
        let private_key = || {
            PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|e| CredentialsError::Pem { what: "private key", message: e.to_string() })
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let verifier = Arc::new(MeshServerVerifier::new(store.clone(), provider.clone()));
        let mut client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(chain.clone(), private_key()?)?;
        client.alpn_protocols = vec![MESH_ALPN.to_vec()];

        let client_verifier = WebPkiClientVerifier::builder_with_provider(store, provider.clone())
            .build()
            .map_err(|e| CredentialsError::Roots(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain, private_key()?)?;
        server.alpn_protocols = ACCEPTED_ALPN.iter().map(|p| p.to_vec()).collect();

        Ok(Credentials { identity, client: Arc::new(client), server: Arc::new(server) })
    }
}

/// The credentials in force, if the proxy has any: without them it neither originates nor
/// terminates mutual TLS, and talks plaintext (as a proxy outside the mesh would).
#[derive(Default)]
pub struct MeshTls {
    current: ArcSwapOption<Credentials>,
    /// Credentials are on their way (from the CA): until they arrive, a peer's mutual TLS is
    /// refused rather than passed to the app as if it were plaintext.
    expected: bool,
}

impl std::fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTls").field("identity", &self.current().map(|c| c.identity.clone())).finish()
    }
}

impl MeshTls {
    /// A slot holding `credentials` from the start.
    pub fn with(credentials: Credentials) -> Self {
        MeshTls { current: ArcSwapOption::from_pointee(credentials), expected: true }
    }

    /// An empty slot that the mesh CA will fill.
    pub fn expecting() -> Self {
        MeshTls { current: ArcSwapOption::empty(), expected: true }
    }

    /// Whether the proxy is meant to speak mutual TLS, with credentials or waiting for them.
    pub fn expected(&self) -> bool {
        self.expected
    }

    /// The credentials for a new handshake.
    pub fn current(&self) -> Option<Arc<Credentials>> {
        self.current.load_full()
    }

    /// Replaces the credentials; connections already made keep theirs.
    pub fn install(&self, credentials: Credentials) {
        tracing::info!(identity = %credentials.identity, "workload certificate installed");
        self.current.store(Some(Arc::new(credentials)));
    }

    /// For `/config_dump`.
    pub fn describe(&self) -> serde_json::Value {
        match self.current() {
            Some(c) => serde_json::json!({ "mtls": true, "identity": c.identity }),
            None => serde_json::json!({ "mtls": false, "waiting_for_certificate": self.expected }),
        }
    }
}
