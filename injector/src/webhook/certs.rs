//! The webhook's serving certificate: from files (a Secret mounted by the operator), from the
//! mesh CA (`mesh_ca`), or, while that cannot be reached, a fresh CA and a certificate for the
//! Service's DNS names made with rcgen. The CA is what goes into the webhook configuration's
//! `caBundle`.

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("building the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("mesh CA: {message}")]
    MeshCa { message: String },
}

/// Who made a serving certificate, which decides how it is renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertSource {
    /// Files an operator mounted: their renewal is the operator's.
    Files,
    /// Made here, with its own CA: used while the mesh CA cannot be reached.
    SelfSigned,
    /// Signed by the mesh CA (the controller).
    MeshCa,
}

/// A serving certificate and the CA that clients must trust for it (PEM).
#[derive(Clone)]
pub struct ServingCert {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// When to make a new one (two thirds into its life); `None` for one read from files,
    /// whose renewal belongs to whoever writes the files.
    pub renew_at: Option<SystemTime>,
    pub source: CertSource,
}

impl std::fmt::Debug for ServingCert {
    // The key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert")
            .field("renew_at", &self.renew_at)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The DNS names a Service `name` in `namespace` answers to.
pub fn service_dns_names(name: &str, namespace: &str, domain: &str) -> Vec<String> {
    vec![
        name.to_string(),
        format!("{name}.{namespace}"),
        format!("{name}.{namespace}.svc"),
        format!("{name}.{namespace}.svc.{domain}"),
    ]
}

/// A new CA and a certificate for `dns_names` signed by it, valid for `validity`.
pub fn self_signed(dns_names: &[String], validity: Duration) -> Result<ServingCert, CertError> {
    let now = SystemTime::now();
    let not_before = time::OffsetDateTime::from(now - Duration::from_secs(3600));
    let not_after = time::OffsetDateTime::from(now + validity);

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(DnType::CommonName, "mesh-injector webhook CA");
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(dns_names.to_vec())?;
    leaf.distinguished_name.push(DnType::CommonName, dns_names.first().cloned().unwrap_or_default());
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(ServingCert {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        renew_at: Some(now + validity * 2 / 3),
        source: CertSource::SelfSigned,
    })
}

/// `tls.crt`, `tls.key` and (if present) `ca.crt` from `dir`, as a kubernetes.io/tls Secret
/// mounts them. Without `ca.crt` the certificate chain itself is the bundle.
pub fn from_dir(dir: &Path) -> Result<ServingCert, CertError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path)
            .map_err(|e| CertError::File { path: path.display().to_string(), message: e.to_string() })
    };
    let cert_pem = read("tls.crt")?;
    let key_pem = read("tls.key")?;
    let ca_pem = if dir.join("ca.crt").exists() { read("ca.crt")? } else { cert_pem.clone() };
    Ok(ServingCert { ca_pem, cert_pem, key_pem, renew_at: None, source: CertSource::Files })
}

/// The rustls server configuration for `cert` (HTTP/2 and HTTP/1.1, as the API server may use
/// either).
pub fn server_config(cert: &ServingCert) -> Result<Arc<ServerConfig>, CertError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| CertError::File { path: what.into(), message: e.to_string() };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| bad("certificate", &e))?;
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).map_err(|e| bad("private key", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
