//! The workload certificate from the mesh CA: the proxy makes a key and a CSR, proves who it is
//! with its pod's projected service-account token (audience `istio-ca`), and gets a short-lived
//! certificate for its SPIFFE ID from `mesh.ca.v1.CertificateAuthority` on the controller's
//! TLS port (15012), trusting only the mesh root. It asks again at two thirds of the
//! certificate's life, and after a failure with backoff, keeping the certificate in force
//! meanwhile; new handshakes use the newest one, so rotation drops no connection.
//!
//! The key never leaves the process: it is not written to disk, and not logged.

use super::{Credentials, CredentialsError, MeshTls};
use proto::ca_client::{CertificateRequest, ClientError, request_certificate};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the CA is and how the proxy proves who it is.
#[derive(Debug, Clone)]
pub struct CaSettings {
    /// The controller's TLS port, `https://mesh-controller.istio-system.svc:15012`.
    pub address: String,
    /// The mesh root the controller's certificate must chain to (re-read at every request).
    pub root_cert: PathBuf,
    /// The pod's projected token for the CA's audience (re-read at every request: the kubelet
    /// rotates it).
    pub token_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("reading {what} {}: {source}", .path.display())]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("the CA at {address}: {source}")]
    Ca { address: String, source: ClientError },
    #[error("the certificate the CA signed: {0}")]
    Credentials(#[from] CredentialsError),
}

/// A certificate from the CA, and when to ask for the next one.
pub struct Obtained {
    pub credentials: Credentials,
    pub renew_at: SystemTime,
}

/// Asks the CA once.
pub async fn obtain(settings: &CaSettings) -> Result<Obtained, CaError> {
    let read = |what, path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|source| CaError::Read { what, path: path.clone(), source })
    };
    let root_pem = read("the mesh root", &settings.root_cert)?;
    let request = CertificateRequest {
        address: settings.address.clone(),
        server_name: None,
        root_pem: root_pem.clone(),
        token: read("the token", &settings.token_file)?,
        dns: Vec::new(),
        validity_seconds: 0,
    };
    let signed = request_certificate(&request)
        .await
        .map_err(|source| CaError::Ca { address: settings.address.clone(), source })?;
    let roots = if signed.trust_bundle_pem.is_empty() { root_pem } else { signed.trust_bundle_pem.concat() };
    let credentials = Credentials::from_pem(&signed.chain_pem.concat(), &signed.key_pem, &roots)?;
    let now = SystemTime::now();
    let expires = UNIX_EPOCH + Duration::from_secs(signed.expires_at_unix_seconds.max(0) as u64);
    let life = expires.duration_since(now).unwrap_or_default();
    Ok(Obtained { credentials, renew_at: now + life * 2 / 3 })
}

/// The first retry after a failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Keeps `tls` holding a certificate from the CA for as long as the proxy runs.
pub async fn keep_certified(settings: CaSettings, tls: Arc<MeshTls>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match obtain(&settings).await {
            Ok(obtained) => {
                tls.install(obtained.credentials);
                backoff = FIRST_BACKOFF;
                let wait = obtained.renew_at.duration_since(SystemTime::now()).unwrap_or_default();
                tracing::info!(renew_in_s = wait.as_secs(), "workload certificate from the mesh CA");
                tokio::time::sleep(wait.max(FIRST_BACKOFF)).await;
            }
            Err(error) => {
                let keeping = tls.current().map(|c| c.identity.clone());
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, keeping = ?keeping, "no workload certificate from the mesh CA");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
