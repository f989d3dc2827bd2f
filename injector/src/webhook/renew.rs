//! Renewal of a generated serving certificate, before it expires.

use super::certs::{self, ServingCert};
use super::server::TlsHandle;
use std::future::Future;
use std::time::{Duration, SystemTime};

/// Makes a new certificate at each `renew_at` (two thirds into the old one's life), forever.
///
/// `publish` is called with the new CA followed by the old one, and awaited, before the server
/// switches: once the caBundle trusts both, no admission call meets an unknown CA, whether it
/// reaches the old certificate or the new one.
pub async fn renew_forever<F, Fut>(
    mut cert: ServingCert,
    dns: Vec<String>,
    validity: Duration,
    tls: TlsHandle,
    mut publish: F,
) where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = ()>,
{
    while let Some(at) = cert.renew_at {
        tokio::time::sleep(at.duration_since(SystemTime::now()).unwrap_or_default()).await;
        let next = match certs::self_signed(&dns, validity).and_then(|c| certs::server_config(&c).map(|s| (c, s))) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "renewing the certificate failed; retrying in a minute");
                tokio::time::sleep(Duration::from_secs(60)).await;
                continue;
            }
        };
        publish(format!("{}{}", next.0.ca_pem, cert.ca_pem)).await;
        tls.set(next.1);
        cert = next.0;
        tracing::info!("certificate renewed");
    }
}
