//! Credentials from files, in the layout Istio mounts at `/etc/certs`: `cert-chain.pem` (the
//! workload certificate first), `key.pem` and `root-cert.pem`. Whoever writes them (a Secret
//! volume, an agent, a test) rotates the certificate by replacing them; the proxy notices the
//! change and installs the new credentials for new handshakes.

use super::{Credentials, CredentialsError, MeshTls};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub const CERT_CHAIN: &str = "cert-chain.pem";
pub const KEY: &str = "key.pem";
pub const ROOT_CERT: &str = "root-cert.pem";

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{dir}: {source}")]
    Invalid { dir: String, source: CredentialsError },
}

/// The credentials in `dir`.
pub fn load(dir: &Path) -> Result<Credentials, FilesError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| FilesError::Read { path: path.display().to_string(), source })
    };
    let (chain, key, roots) = (read(CERT_CHAIN)?, read(KEY)?, read(ROOT_CERT)?);
    Credentials::from_pem(&chain, &key, &roots)
        .map_err(|source| FilesError::Invalid { dir: dir.display().to_string(), source })
}

/// The three files' modification times: a change in any of them is a rotation.
fn stamp(dir: &Path) -> Vec<Option<SystemTime>> {
    [CERT_CHAIN, KEY, ROOT_CERT]
        .iter()
        .map(|name| std::fs::metadata(dir.join(name)).and_then(|m| m.modified()).ok())
        .collect()
}

/// Checks `dir` every `every` and installs its credentials when the files changed. A set that
/// does not load (a half-written rotation, a bad file) is logged and the credentials in force
/// stay; the next change is tried again.
pub async fn watch(dir: PathBuf, tls: Arc<MeshTls>, every: Duration) {
    let mut seen = stamp(&dir);
    loop {
        tokio::time::sleep(every).await;
        let now = stamp(&dir);
        if now == seen {
            continue;
        }
        seen = now;
        let loaded = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || load(&dir)
        })
        .await;
        match loaded {
            Ok(Ok(credentials)) => tls.install(credentials),
            Ok(Err(error)) => tracing::warn!(%error, "new workload certificate not installed; the current one stays"),
            Err(error) => tracing::warn!(%error, "loading the workload certificate failed"),
        }
    }
}
