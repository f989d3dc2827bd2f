//! AdmissionReview in, AdmissionReview out: the webhook's logic without the server around it.
//!
//! Both `admission.k8s.io/v1` and `v1beta1` are accepted (their shapes are the same for what is
//! used here) and the answer uses the version of the question, as the API server requires.
//! Input that is not an AdmissionReview is an HTTP 400; a review of a pod that cannot be
//! injected is answered with `allowed: false` and a message naming the pod and the field.

use crate::config::{InjectConfig, NamespaceInfo};
use crate::inject::{self, Outcome};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde_json::{Value, json};

const VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// What the server sends back.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// HTTP 200 with this AdmissionReview.
    Review(Value),
    /// HTTP 400 with this message: the body was not an AdmissionReview we can answer.
    BadRequest(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn {
    api_version: Option<String>,
    kind: Option<String>,
    request: Option<RequestIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn {
    uid: Option<String>,
    kind: Option<Kind>,
    namespace: Option<String>,
    operation: Option<String>,
    object: Option<Value>,
}

#[derive(Deserialize)]
struct Kind {
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: String,
}

/// Answers one AdmissionReview body.
pub fn answer(body: &[u8], cfg: &InjectConfig) -> Reply {
    let review: ReviewIn = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return Reply::BadRequest(format!("the body is not an AdmissionReview: {e}")),
    };
    let version = review.api_version.unwrap_or_default();
    if !VERSIONS.contains(&version.as_str()) || review.kind.as_deref() != Some("AdmissionReview") {
        return Reply::BadRequest(format!(
            "expected kind AdmissionReview of apiVersion {}, got kind {:?} of apiVersion {version:?}",
            VERSIONS.join(" or "),
            review.kind.unwrap_or_default()
        ));
    }
    let Some(req) = review.request else {
        return Reply::BadRequest("AdmissionReview has no request".into());
    };
    let Some(uid) = req.uid.filter(|u| !u.is_empty()) else {
        return Reply::BadRequest("AdmissionReview request.uid is missing".into());
    };
    let response = respond(&req.kind, req.operation.as_deref(), req.namespace, req.object, cfg);
    let mut response = response;
    response["uid"] = Value::String(uid);
    Reply::Review(json!({ "apiVersion": version, "kind": "AdmissionReview", "response": response }))
}

/// The `response` of the review, without its uid.
fn respond(
    kind: &Option<Kind>,
    operation: Option<&str>,
    namespace: Option<String>,
    object: Option<Value>,
    cfg: &InjectConfig,
) -> Value {
    let is_pod = kind.as_ref().is_some_and(|k| k.group.is_empty() && k.kind == "Pod");
    if !is_pod || operation != Some("CREATE") {
        // Our configuration only sends pod creations; anything else passes untouched.
        return json!({ "allowed": true });
    }
    let Some(object) = object else {
        return deny("request.object is missing".into());
    };
    let pod: Pod = match serde_json::from_value(object) {
        Ok(p) => p,
        Err(e) => return deny(format!("request.object is not a valid Pod: {e}")),
    };
    let ns = namespace.or_else(|| pod.metadata.namespace.clone()).unwrap_or_else(|| "default".into());
    let id = inject::pod_id(&pod, &ns);
    match inject::patch(&pod, &NamespaceInfo::selected(ns), cfg) {
        Ok((Outcome::Skipped(reason), _)) => {
            tracing::info!(pod = %id, reason = reason.describe(), "not injected");
            json!({ "allowed": true })
        }
        Ok((Outcome::Injected { mode, reason, .. }, ops)) => {
            tracing::info!(pod = %id, ?mode, reason = reason.describe(), "injected");
            let patch = ByteString(serde_json::to_vec(&ops).unwrap_or_default());
            json!({ "allowed": true, "patchType": "JSONPatch", "patch": patch })
        }
        Err(e) => {
            tracing::warn!(pod = %id, error = %e, "refused");
            deny(e.to_string())
        }
    }
}

fn deny(message: String) -> Value {
    json!({ "allowed": false, "status": { "code": 400, "reason": "BadRequest", "message": message } })
}

#[cfg(test)]
mod tests;
