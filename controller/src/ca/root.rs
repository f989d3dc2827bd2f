//! Where the root lives: a Secret in the controller's namespace, created on first start.
//!
//! Creation is create-if-absent: replicas starting together each generate a root, one create
//! wins, and the others get a conflict and load the winner's, so the mesh has one root.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

use super::authority::{Authority, AuthorityError, RootPem};

/// The key of the root certificate in the Secret (Istio's name for its self-signed CA).
pub const CERT_KEY: &str = "ca-cert.pem";
/// The key of the root's private key in the Secret.
pub const KEY_KEY: &str = "ca-key.pem";

/// Why the root could not be loaded or stored.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// The API server refused or could not be reached.
    #[error("Secret {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// The Secret exists but does not hold a usable root.
    #[error("Secret {namespace}/{name}: data.{field}: {message}")]
    Invalid { namespace: String, name: String, field: &'static str, message: String },
    /// A new root could not be generated.
    #[error("cannot generate a root: {0}")]
    Generate(AuthorityError),
}

/// Loads the root from Secret `name` of `api`'s namespace, or generates and stores one.
pub async fn load_or_create(api: &Api<Secret>, name: &str, trust_domain: &str) -> Result<Authority, RootError> {
    let namespace = api.namespace().unwrap_or_default().to_string();
    let api_error = |source| RootError::Api { namespace: namespace.clone(), name: name.to_string(), source };
    if let Some(secret) = api.get_opt(name).await.map_err(api_error)? {
        tracing::info!(secret = %format!("{namespace}/{name}"), "CA root loaded");
        return authority_of(&secret, &namespace, name);
    }
    let authority = Authority::generate(trust_domain).map_err(RootError::Generate)?;
    match api.create(&PostParams::default(), &secret_of(name, authority.root())).await {
        Ok(_) => {
            tracing::info!(secret = %format!("{namespace}/{name}"), "CA root generated and stored");
            Ok(authority)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            tracing::info!(secret = %format!("{namespace}/{name}"), "another replica stored a CA root first; using it");
            let secret = api.get(name).await.map_err(api_error)?;
            authority_of(&secret, &namespace, name)
        }
        Err(error) => Err(api_error(error)),
    }
}

/// The Secret that stores `root`.
pub fn secret_of(name: &str, root: &RootPem) -> Secret {
    let data = BTreeMap::from([
        (CERT_KEY.to_string(), ByteString(root.cert.clone().into_bytes())),
        (KEY_KEY.to_string(), ByteString(root.key.clone().into_bytes())),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([("app".to_string(), "mesh-controller".to_string())])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The CA a stored Secret holds.
pub fn authority_of(secret: &Secret, namespace: &str, name: &str) -> Result<Authority, RootError> {
    let invalid = |field, message: String| RootError::Invalid {
        namespace: namespace.to_string(),
        name: name.to_string(),
        field,
        message,
    };
    let field = |key: &'static str| {
        let bytes =
            secret.data.as_ref().and_then(|data| data.get(key)).ok_or_else(|| invalid(key, "missing".into()))?;
        String::from_utf8(bytes.0.clone()).map_err(|_| invalid(key, "not PEM text".into()))
    };
    let root = RootPem { cert: field(CERT_KEY)?, key: field(KEY_KEY)? };
    Authority::from_pem(root).map_err(|error| {
        let which = if matches!(error, AuthorityError::RootKey(_)) { KEY_KEY } else { CERT_KEY };
        invalid(which, error.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_root_loads_back_and_signs_as_the_same_root() {
        let authority = Authority::generate("cluster.local").unwrap();
        let loaded =
            authority_of(&secret_of("mesh-ca-secret", authority.root()), "istio-system", "mesh-ca-secret").unwrap();
        assert_eq!(loaded.root_pem(), authority.root_pem());
        assert!(!format!("{loaded:?}").contains("PRIVATE KEY"), "Debug must not show the key");
    }

    #[test]
    fn a_broken_secret_names_the_field() {
        let authority = Authority::generate("cluster.local").unwrap();
        let mut secret = secret_of("s", authority.root());
        secret.data.as_mut().unwrap().insert(KEY_KEY.into(), ByteString(b"garbage".to_vec()));
        let error = authority_of(&secret, "istio-system", "s").unwrap_err().to_string();
        assert!(error.contains("Secret istio-system/s: data.ca-key.pem"), "{error}");
        secret.data.as_mut().unwrap().remove(CERT_KEY);
        let error = authority_of(&secret, "istio-system", "s").unwrap_err().to_string();
        assert!(error.contains("data.ca-cert.pem: missing"), "{error}");
    }
}
