//! Renewal of the serving certificate before it expires, and the move from a self-signed
//! certificate to one from the mesh CA once the controller answers.

use super::certs::{self, CertError, CertSource, ServingCert};
use super::mesh_ca::MeshCa;
use super::server::TlsHandle;
use std::future::Future;
use std::time::{Duration, SystemTime};

/// While the certificate is self-signed because the mesh CA did not answer, it is asked again
/// this often.
const MESH_CA_RETRY: Duration = Duration::from_secs(30);

/// Where new certificates come from.
pub struct Renewal {
    /// The Service's DNS names, for self-signed certificates.
    pub dns: Vec<String>,
    /// Lifetime of a self-signed certificate.
    pub validity: Duration,
    /// The mesh CA and the names to ask it for, when the injector runs in a cluster with one.
    pub mesh_ca: Option<(MeshCa, Vec<String>)>,
}

/// Makes a new certificate at each `renew_at` (two thirds into the old one's life), forever;
/// while self-signed with a mesh CA configured, tries the CA every [`MESH_CA_RETRY`].
///
/// `publish` is called with the new CA followed by the old one, and awaited, before the server
/// switches: once the caBundle trusts both, no admission call meets an unknown CA, whether it
/// reaches the old certificate or the new one.
pub async fn renew_forever<F, Fut>(mut cert: ServingCert, renewal: Renewal, tls: TlsHandle, mut publish: F)
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = ()>,
{
    while let Some(at) = cert.renew_at {
        let waiting_for_ca = renewal.mesh_ca.is_some() && cert.source == CertSource::SelfSigned;
        let wake = if waiting_for_ca { at.min(SystemTime::now() + MESH_CA_RETRY) } else { at };
        tokio::time::sleep(wake.duration_since(SystemTime::now()).unwrap_or_default()).await;
        let due = SystemTime::now() >= at;
        let next = match next_certificate(&renewal, due).await {
            None => continue,
            Some(Ok(next)) => next,
            Some(Err(e)) => {
                tracing::error!(error = %e, "renewing the certificate failed; retrying in a minute");
                tokio::time::sleep(Duration::from_secs(60)).await;
                continue;
            }
        };
        let config = match certs::server_config(&next) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(error = %e, "the new certificate cannot be served; keeping the old one");
                tokio::time::sleep(Duration::from_secs(60)).await;
                continue;
            }
        };
        publish(bundle_during_switch(&next.ca_pem, &cert.ca_pem)).await;
        tls.set(config);
        tracing::info!(from = ?cert.source, to = ?next.source, "serving certificate replaced");
        cert = next;
    }
}

/// The next certificate: from the mesh CA when there is one; self-signed only when the current
/// one is due and the CA cannot help. `None`: nothing to do yet (keep the current one).
async fn next_certificate(renewal: &Renewal, due: bool) -> Option<Result<ServingCert, CertError>> {
    if let Some((ca, names)) = &renewal.mesh_ca {
        match ca.serving_cert(names).await {
            Ok(cert) => return Some(Ok(cert)),
            Err(e) if !due => {
                tracing::debug!(error = %e, "mesh CA not available yet; keeping the self-signed certificate");
                return None;
            }
            Err(e) => tracing::warn!(error = %e, "mesh CA not available; making a self-signed certificate"),
        }
    }
    due.then(|| certs::self_signed(&renewal.dns, renewal.validity))
}

/// The caBundle while switching from `old` to `new`: both, once each.
pub fn bundle_during_switch(new: &str, old: &str) -> String {
    if new == old { new.to_string() } else { format!("{new}{old}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_names_each_ca_once() {
        assert_eq!(bundle_during_switch("A\n", "B\n"), "A\nB\n");
        assert_eq!(bundle_during_switch("A\n", "A\n"), "A\n");
    }
}
