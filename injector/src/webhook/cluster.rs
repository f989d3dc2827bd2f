//! What the webhook asks the API server: its version (native sidecars or not) and, to make the
//! API server trust it, the `caBundle` of its MutatingWebhookConfiguration.

use crate::config::SidecarMode;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::Api;
use kube::api::PostParams;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("MutatingWebhookConfiguration {name}: {source}")]
    WebhookConfig { name: String, source: kube::Error },
    #[error("MutatingWebhookConfiguration {name} has no webhooks")]
    NoWebhooks { name: String },
    #[error("reading the server version: {0}")]
    Version(#[source] kube::Error),
    #[error("server version {major}.{minor} is not a number")]
    BadVersion { major: String, minor: String },
}

/// The sidecar mode the API server supports, from its version.
pub async fn server_mode(client: &kube::Client) -> Result<(SidecarMode, String), ClusterError> {
    let info = client.apiserver_version().await.map_err(ClusterError::Version)?;
    Ok((mode_for_version(&info.major, &info.minor)?, info.git_version))
}

/// The mode for a server reporting `major`.`minor`; managed clusters report minors like "29+".
pub fn mode_for_version(major: &str, minor: &str) -> Result<SidecarMode, ClusterError> {
    let num = |s: &str| s.trim_end_matches(|c: char| !c.is_ascii_digit()).parse::<u32>().ok();
    match (num(major), num(minor)) {
        (Some(major), Some(minor)) => Ok(SidecarMode::for_server(major, minor)),
        _ => Err(ClusterError::BadVersion { major: major.into(), minor: minor.into() }),
    }
}

/// Sets `caBundle` on every webhook of the configuration `name`; returns how many. Retries on
/// conflicts (someone else updated it between our read and write).
pub async fn patch_ca_bundle(client: &kube::Client, name: &str, ca_pem: &str) -> Result<usize, ClusterError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let err = |source| ClusterError::WebhookConfig { name: name.to_string(), source };
    let mut attempt = 0;
    loop {
        let mut config = api.get(name).await.map_err(err)?;
        let hooks = config.webhooks.as_mut().filter(|w| !w.is_empty());
        let Some(hooks) = hooks else { return Err(ClusterError::NoWebhooks { name: name.to_string() }) };
        let bundle = ByteString(ca_pem.as_bytes().to_vec());
        if hooks.iter().all(|h| h.client_config.ca_bundle.as_ref() == Some(&bundle)) {
            return Ok(hooks.len());
        }
        for h in hooks.iter_mut() {
            h.client_config.ca_bundle = Some(bundle.clone());
        }
        let n = hooks.len();
        match api.replace(name, &PostParams::default(), &config).await {
            Ok(_) => return Ok(n),
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => return Err(err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_sidecars_from_1_29() {
        assert_eq!(mode_for_version("1", "20").unwrap(), SidecarMode::Classic);
        assert_eq!(mode_for_version("1", "28+").unwrap(), SidecarMode::Classic);
        assert_eq!(mode_for_version("1", "29").unwrap(), SidecarMode::Native);
        assert_eq!(mode_for_version("1", "33+").unwrap(), SidecarMode::Native);
        assert_eq!(mode_for_version("2", "0").unwrap(), SidecarMode::Native);
        let err = mode_for_version("1", "").unwrap_err().to_string();
        assert_eq!(err, "server version 1. is not a number");
    }
}
