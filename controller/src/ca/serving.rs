//! The controller's own serving certificate, issued by its CA for its Service's DNS names and
//! renewed before it expires; 15012 and (without certificate files) the webhook serve it.
//!
//! Connections look the certificate up per handshake ([`ServingCert`] is a rustls certificate
//! resolver), so a renewal reaches new connections at once and open ones keep theirs.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rcgen::KeyPair;
use tokio_rustls::rustls::crypto::ring::{default_provider, sign::any_supported_type};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

use super::authority::{Authority, AuthorityError, LeafNames};

/// The DNS names of Service `service` in `namespace`: `<svc>.<ns>.svc` and
/// `<svc>.<ns>.svc.<domain>`.
pub fn service_names(service: &str, namespace: &str, domain: &str) -> Vec<String> {
    vec![format!("{service}.{namespace}.svc"), format!("{service}.{namespace}.svc.{domain}")]
}

/// A certificate for `names`, renewed by [`ServingCert::renew`].
pub struct ServingCert {
    current: ArcSwap<CertifiedKey>,
    names: LeafNames,
    validity: Duration,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert").field("names", &self.names).finish_non_exhaustive()
    }
}

impl ServingCert {
    /// Issues the first certificate for `names`, valid for `validity`.
    pub fn issue(authority: &Authority, names: LeafNames, validity: Duration) -> Result<Arc<Self>, AuthorityError> {
        let first = certified_key(authority, &names, validity)?;
        Ok(Arc::new(Self { current: ArcSwap::from_pointee(first), names, validity }))
    }

    /// Re-issues the certificate when two thirds of its validity have passed, forever.
    pub async fn renew(self: Arc<Self>, authority: Arc<Authority>) {
        let mut wait = self.validity * 2 / 3;
        loop {
            tokio::time::sleep(wait).await;
            match certified_key(&authority, &self.names, self.validity) {
                Ok(renewed) => {
                    self.current.store(Arc::new(renewed));
                    wait = self.validity * 2 / 3;
                    tracing::info!(names = ?self.names.dns, "serving certificate renewed");
                }
                // Not expected with names that were issued once; retry soon rather than expire.
                Err(error) => {
                    wait = Duration::from_secs(60).min(self.validity / 10);
                    tracing::error!(%error, "cannot renew the serving certificate; retrying");
                }
            }
        }
    }

    /// A TLS server config that serves the current certificate, offering `alpn` protocols.
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, rustls::Error> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A fresh key and a certificate for it, as rustls serves them: the leaf, then the root.
fn certified_key(authority: &Authority, names: &LeafNames, validity: Duration) -> Result<CertifiedKey, AuthorityError> {
    let key = KeyPair::generate().map_err(AuthorityError::Build)?;
    let issued = authority.issue(&key, names, validity)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = any_supported_type(&der).map_err(|error| AuthorityError::ServingKey(error.to_string()))?;
    let chain = vec![CertificateDer::from(issued.leaf_der)];
    Ok(CertifiedKey::new(chain, signing))
}
