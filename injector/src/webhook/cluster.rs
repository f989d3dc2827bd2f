//! What the webhook asks the API server: its version (native sidecars or not) and, to make the
//! API server trust the mesh's webhooks, the `caBundle` of its MutatingWebhookConfiguration
//! and of the controller's ValidatingWebhookConfiguration.

use crate::config::SidecarMode;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use kube::Api;
use kube::api::PostParams;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{kind} {name}: {source}")]
    WebhookConfig { kind: &'static str, name: String, source: kube::Error },
    #[error("{kind} {name} has no webhooks")]
    NoWebhooks { kind: &'static str, name: String },
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

/// A webhook configuration kind whose webhooks' `caBundle` the injector keeps.
pub trait WebhookConfiguration:
    kube::Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + DeserializeOwned
    + Serialize
{
    const KIND: &'static str;
    /// The client configurations of its webhooks.
    fn client_configs(&mut self) -> Vec<&mut WebhookClientConfig>;
}

impl WebhookConfiguration for MutatingWebhookConfiguration {
    const KIND: &'static str = "MutatingWebhookConfiguration";
    fn client_configs(&mut self) -> Vec<&mut WebhookClientConfig> {
        self.webhooks.iter_mut().flatten().map(|h| &mut h.client_config).collect()
    }
}

impl WebhookConfiguration for ValidatingWebhookConfiguration {
    const KIND: &'static str = "ValidatingWebhookConfiguration";
    fn client_configs(&mut self) -> Vec<&mut WebhookClientConfig> {
        self.webhooks.iter_mut().flatten().map(|h| &mut h.client_config).collect()
    }
}

/// Sets `caBundle` on every webhook of the configuration `name` of kind `C`; returns how many.
/// Retries on conflicts (someone else updated it between our read and write).
pub async fn patch_ca_bundle<C: WebhookConfiguration>(
    client: &kube::Client,
    name: &str,
    ca_pem: &str,
) -> Result<usize, ClusterError> {
    let api: Api<C> = Api::all(client.clone());
    let err = |source| ClusterError::WebhookConfig { kind: C::KIND, name: name.to_string(), source };
    let mut attempt = 0;
    loop {
        let mut config = api.get(name).await.map_err(err)?;
        let mut hooks = config.client_configs();
        if hooks.is_empty() {
            return Err(ClusterError::NoWebhooks { kind: C::KIND, name: name.to_string() });
        }
        let bundle = ByteString(ca_pem.as_bytes().to_vec());
        if hooks.iter().all(|h| h.ca_bundle.as_ref() == Some(&bundle)) {
            return Ok(hooks.len());
        }
        for h in hooks.iter_mut() {
            h.ca_bundle = Some(bundle.clone());
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
