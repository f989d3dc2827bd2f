//! The webhook's serving certificate from the mesh CA: the controller signs, on 15012, a
//! certificate for the injector Service's DNS names, proven by the injector's projected
//! service-account token. The root it chains to is the one every namespace gets as the
//! ConfigMap `istio-ca-root-cert`, so the API server trusts the injector by the same root it
//! trusts the controller's validating webhook by.

use super::certs::{CertError, CertSource, ServingCert};
use controller::ca::client::{CertificateRequest, request_certificate};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The ConfigMap (and key) the controller publishes the root in.
pub const ROOT_CONFIG_MAP: &str = "istio-ca-root-cert";
pub const ROOT_KEY: &str = "root-cert.pem";

/// Where the CA is and how the injector proves who it is.
#[derive(Clone)]
pub struct MeshCa {
    /// The controller's TLS port, `https://mesh-controller.<ns>.svc:15012`.
    pub address: String,
    /// The injector's projected token for the CA's audience.
    pub token_file: PathBuf,
    /// Reads the root from the ConfigMap in `namespace`.
    pub client: kube::Client,
    pub namespace: String,
}

impl std::fmt::Debug for MeshCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshCa")
            .field("address", &self.address)
            .field("token_file", &self.token_file)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl MeshCa {
    /// The mesh root, `None` while the controller has not published it.
    pub async fn root(&self) -> Result<Option<String>, CertError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let config_map = api.get_opt(ROOT_CONFIG_MAP).await.map_err(|e| CertError::MeshCa {
            message: format!("reading ConfigMap {}/{ROOT_CONFIG_MAP}: {e}", self.namespace),
        })?;
        Ok(config_map.and_then(|c| c.data?.get(ROOT_KEY).cloned()))
    }

    /// A certificate for `dns` signed by the CA, renewed at two thirds of its life.
    pub async fn serving_cert(&self, dns: &[String]) -> Result<ServingCert, CertError> {
        let failed = |message: String| CertError::MeshCa { message };
        let root = self.root().await?.ok_or_else(|| {
            failed(format!(
                "ConfigMap {}/{ROOT_CONFIG_MAP} does not exist yet (the controller publishes it)",
                self.namespace
            ))
        })?;
        let token = std::fs::read_to_string(&self.token_file)
            .map_err(|e| failed(format!("reading the token {}: {e}", self.token_file.display())))?;
        let request = CertificateRequest {
            address: self.address.clone(),
            server_name: None,
            root_pem: root.clone(),
            token,
            dns: dns.to_vec(),
            validity_seconds: 0,
        };
        let obtained = request_certificate(&request).await.map_err(|e| failed(e.to_string()))?;
        let now = SystemTime::now();
        let expires = UNIX_EPOCH + Duration::from_secs(obtained.expires_at_unix_seconds.max(0) as u64);
        let life = expires.duration_since(now).unwrap_or_default();
        let bundle = if obtained.trust_bundle_pem.is_empty() { root } else { obtained.trust_bundle_pem.concat() };
        Ok(ServingCert {
            ca_pem: bundle,
            cert_pem: obtained.chain_pem.concat(),
            key_pem: obtained.key_pem,
            renew_at: Some(now + life * 2 / 3),
            source: CertSource::MeshCa,
        })
    }
}

/// The names to ask the CA for: it grants only the Service forms of a Service in its own
/// namespace (`name.ns.svc` and `name.ns.svc.<domain>`), which is what the API server dials.
pub fn requested_names(service: &str, namespace: &str, domain: &str) -> Vec<String> {
    vec![format!("{service}.{namespace}.svc"), format!("{service}.{namespace}.svc.{domain}")]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_only_for_service_names() {
        assert_eq!(
            requested_names("mesh-injector", "istio-system", "cluster.local"),
            ["mesh-injector.istio-system.svc", "mesh-injector.istio-system.svc.cluster.local"]
        );
    }
}
