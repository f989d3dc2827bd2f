//! The caller's end of `SignCertificate`: a fresh key, a CSR, and the call over TLS trusting
//! the mesh root. Sidecars use it for their workload certificates, the injector for its
//! serving certificate, and `mesh-controller sign` runs it by hand.

use crate::ca::SignCertificateRequest;
use crate::ca::certificate_authority_client::CertificateAuthorityClient;
use rcgen::{CertificateParams, KeyPair, SanType};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// What to ask for and where.
#[derive(Clone)]
pub struct CertificateRequest {
    /// The controller's TLS port, `https://mesh-controller.istio-system.svc:15012`.
    pub address: String,
    /// The name the controller's certificate is checked against, when it is not the address's
    /// host (a controller reached by IP).
    pub server_name: Option<String>,
    /// The mesh root (PEM) the controller's certificate must chain to.
    pub root_pem: String,
    /// The caller's service-account token for the CA's audience.
    pub token: String,
    /// DNS names to ask for (granted only to the controller's namespace, for its Services).
    pub dns: Vec<String>,
    /// Seconds of validity to ask for; 0 for the CA's default.
    pub validity_seconds: i64,
}

impl std::fmt::Debug for CertificateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateRequest")
            .field("address", &self.address)
            .field("server_name", &self.server_name)
            .field("token", &"<redacted>")
            .field("dns", &self.dns)
            .finish_non_exhaustive()
    }
}

/// A signed certificate and its key.
pub struct Obtained {
    /// The private key, PKCS#8 PEM. Never logged.
    pub key_pem: String,
    /// The chain, leaf first.
    pub chain_pem: Vec<String>,
    /// The roots to verify peers with.
    pub trust_bundle_pem: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at_unix_seconds: i64,
}

/// Why no certificate was obtained.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The key or CSR could not be made.
    #[error("cannot build the request: {0}")]
    Build(#[from] rcgen::Error),
    /// The controller could not be reached over TLS.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The controller refused.
    #[error("the CA refused ({:?}): {}", .0.code(), .0.message())]
    Refused(tonic::Status),
    /// The token cannot be sent as a header.
    #[error("the token is not a valid header value")]
    Token,
}

/// Generates a key, asks the CA at `request.address` to sign it, and returns both.
pub async fn request_certificate(request: &CertificateRequest) -> Result<Obtained, ClientError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    for name in &request.dns {
        params.subject_alt_names.push(SanType::DnsName(name.as_str().try_into()?));
    }
    let csr_pem = params.serialize_request(&key)?.pem()?;
    let connect_error = |source| ClientError::Connect { address: request.address.clone(), source };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&request.root_pem));
    if let Some(name) = &request.server_name {
        tls = tls.domain_name(name.clone());
    }
    let channel = Endpoint::from_shared(request.address.clone())
        .map_err(connect_error)?
        .tls_config(tls)
        .map_err(connect_error)?
        .connect()
        .await
        .map_err(connect_error)?;
    let mut call =
        tonic::Request::new(SignCertificateRequest { csr_pem, requested_validity_seconds: request.validity_seconds });
    let bearer = format!("Bearer {}", request.token.trim()).parse().map_err(|_| ClientError::Token)?;
    call.metadata_mut().insert("authorization", bearer);
    let signed = CertificateAuthorityClient::new(channel).sign_certificate(call).await.map_err(ClientError::Refused)?;
    let signed = signed.into_inner();
    Ok(Obtained {
        key_pem: key.serialize_pem(),
        chain_pem: signed.cert_chain_pem,
        trust_bundle_pem: signed.trust_bundle_pem,
        expires_at_unix_seconds: signed.expires_at_unix_seconds,
    })
}
