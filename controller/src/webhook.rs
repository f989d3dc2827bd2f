//! The validating admission webhook (15017, HTTPS): `kubectl apply` of an Istio resource that
//! fails `common`'s validation is refused with the object, field path and what would be valid;
//! warnings (and fields the mesh accepts but does not act on yet) come back as admission
//! warnings, which kubectl prints.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use common::resource::Resource;
use common::validate::{Diagnostics, Severity};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kube::api::{DynamicObject, TypeMeta};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::assemble::validation_context;
use crate::metrics::Metrics;
use crate::watch::Stores;

/// The largest AdmissionReview read (the API server's own request limit is 3 MiB).
const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;

/// Serves admission reviews.
pub struct Webhook {
    stores: Arc<Stores>,
    domain: String,
    metrics: Arc<Metrics>,
}

impl Webhook {
    /// A webhook validating against the resources in `stores`.
    pub fn new(stores: Arc<Stores>, domain: String, metrics: Arc<Metrics>) -> Self {
        Self { stores, domain, metrics }
    }

    /// Serves HTTPS on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, tls: Arc<ServerConfig>) {
        let acceptor = TlsAcceptor::from(tls);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "webhook port: accept failed");
                    continue;
                }
            };
            let (acceptor, webhook) = (acceptor.clone(), self.clone());
            tokio::spawn(async move {
                let stream = match acceptor.accept(stream).await {
                    Ok(stream) => stream,
                    Err(error) => return tracing::debug!(%peer, %error, "webhook TLS handshake failed"),
                };
                let service = service_fn(move |request| {
                    let webhook = webhook.clone();
                    async move { Ok::<_, Infallible>(webhook.handle(request).await) }
                });
                if let Err(error) =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
                {
                    tracing::debug!(%peer, %error, "webhook connection ended");
                }
            });
        }
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::POST {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview");
        }
        let body = match Limited::new(request.into_body(), MAX_REVIEW_BYTES).collect().await {
            Ok(body) => body.to_bytes(),
            Err(error) => return plain(StatusCode::BAD_REQUEST, &format!("cannot read the request: {error}")),
        };
        let review: Value = match serde_json::from_slice(&body) {
            Ok(review) => review,
            Err(error) => return plain(StatusCode::BAD_REQUEST, &format!("not an AdmissionReview: {error}")),
        };
        let response = self.review(&review);
        let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response});
        Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("static response parts are valid")
    }

    /// The `response` of an AdmissionReview `review`.
    fn review(&self, review: &Value) -> Value {
        let request = &review["request"];
        let uid = request["uid"].clone();
        let object = &request["object"];
        if request["operation"] == "DELETE" || object.is_null() {
            return json!({"uid": uid, "allowed": true});
        }
        let resources = self.current_resources();
        let verdict = review_object(object.clone(), &self.domain, &resources);
        if !verdict.allowed {
            let kind = object["kind"].as_str().unwrap_or("unknown");
            self.metrics.admission_rejections.with_label_values(&[kind]).inc();
            tracing::info!(%kind, message = %verdict.message, "admission refused");
        }
        let mut response = json!({"uid": uid, "allowed": verdict.allowed});
        if !verdict.allowed {
            response["status"] = json!({"code": 422, "reason": "Invalid", "message": verdict.message});
        }
        if !verdict.warnings.is_empty() {
            response["warnings"] = json!(verdict.warnings);
        }
        response
    }

    /// The Istio resources in the caches, for cross-resource checks (subsets).
    fn current_resources(&self) -> Vec<Resource> {
        let mut resources = Vec::new();
        for istio in &self.stores.istio {
            for object in istio.store.state() {
                let mut object = DynamicObject::clone(&object);
                object.types =
                    Some(TypeMeta { api_version: istio.api.api_version.clone(), kind: istio.api.kind.clone() });
                if let Ok(Some(resource)) = Resource::from_document(serde_json::to_value(&object).unwrap_or_default()) {
                    resources.push(resource);
                }
            }
        }
        resources
    }
}

/// The decision on one object.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the object may be stored.
    pub allowed: bool,
    /// Why not: every error, one per line.
    pub message: String,
    /// Warnings and unsupported fields, one per entry.
    pub warnings: Vec<String>,
}

/// Validates one object as admission does, against the other `resources` of the cluster.
pub fn review_object(object: Value, domain: &str, resources: &[Resource]) -> Verdict {
    let resource = match Resource::from_document(object) {
        Ok(Some(resource)) => resource,
        Ok(None) => return Verdict { allowed: true, message: String::new(), warnings: Vec::new() },
        Err(error) => return Verdict { allowed: false, message: error.to_string(), warnings: Vec::new() },
    };
    let diagnostics = resource.validate(&validation_context(domain, resources));
    verdict(&diagnostics)
}

fn verdict(diagnostics: &Diagnostics) -> Verdict {
    let lines = |severity: Severity| diagnostics.of(severity).map(ToString::to_string).collect::<Vec<_>>();
    let errors = lines(Severity::Error);
    let mut warnings = lines(Severity::Warning);
    warnings.extend(lines(Severity::Unsupported));
    Verdict { allowed: errors.is_empty(), message: errors.join("\n"), warnings }
}

/// A TLS server config from PEM files: the certificate chain and its private key.
pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the webhook certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read the webhook key {} (PEM)", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the webhook certificate and key do not match")?;
    Ok(Arc::new(config))
}

fn plain(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(format!("{message}\n"))))
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::review_object;

    fn virtual_service(route: serde_json::Value) -> serde_json::Value {
        json!({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"hosts": ["reviews"], "http": [{"route": route}]}
        })
    }

    #[test]
    fn an_invalid_resource_is_refused_with_its_field_path() {
        let route = json!([{"destination": {"host": "reviews"}, "weight": 50}, {"destination": {"host": "reviews"}, "weight": 20}]);
        let verdict = review_object(virtual_service(route), "cluster.local", &[]);
        assert!(!verdict.allowed);
        assert!(verdict.message.contains("VirtualService default/reviews"), "{}", verdict.message);
        assert!(verdict.message.contains("spec.http[0].route"), "{}", verdict.message);
    }

    #[test]
    fn an_undefined_subset_is_a_warning_until_a_destination_rule_defines_it() {
        let route = json!([{"destination": {"host": "reviews", "subset": "v2"}}]);
        let verdict = review_object(virtual_service(route.clone()), "cluster.local", &[]);
        assert!(verdict.allowed);
        assert_eq!(verdict.warnings.len(), 1);
        assert!(verdict.warnings[0].contains("spec.http[0].route[0].destination.subset"), "{:?}", verdict.warnings);

        let (rules, _) = common::resource::Resource::parse_yaml_documents(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\nspec: {host: reviews, subsets: [{name: v2, labels: {version: v2}}]}\n",
        );
        let verdict = review_object(virtual_service(route), "cluster.local", &rules);
        assert!(verdict.allowed && verdict.warnings.is_empty(), "{verdict:?}");
    }

    #[test]
    fn unreadable_objects_are_refused_and_other_kinds_pass() {
        let mut object = virtual_service(json!([]));
        object["spec"]["http"][0]["timeout"] = json!("ten seconds");
        let verdict = review_object(object, "cluster.local", &[]);
        assert!(!verdict.allowed && verdict.message.contains("spec.http[0].timeout"), "{}", verdict.message);
        let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        assert!(review_object(config_map, "cluster.local", &[]).allowed);
    }
}
