//! `mesh-injector kube-inject`: multi-document YAML in, the same YAML with sidecars out.
//!
//! Pods and the pod templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs,
//! CronJobs (and `List`s of them) are injected; every other document passes through. The
//! template is patched in place, so fields the injector does not model are kept.

use crate::config::{InjectConfig, NamespaceInfo};
use crate::inject::{self, Outcome};
use crate::patch;
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde_json::{Value, json};

/// A document that could not be injected, named by its position, kind and name.
#[derive(Debug, thiserror::Error)]
#[error("document {index} ({what}): {message}")]
pub struct DocumentError {
    pub index: usize,
    pub what: String,
    pub message: String,
}

/// One line of what happened, for stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub what: String,
    pub injected: bool,
    pub why: &'static str,
}

/// Injects every workload in `input`; `namespace` is used for objects that name none.
/// Any bad document fails the whole run (half-injected output piped into `kubectl apply` would
/// be worse than none), and every bad document is reported.
pub fn run(input: &str, namespace: &str, cfg: &InjectConfig) -> Result<(String, Vec<Note>), Vec<DocumentError>> {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let mut errors = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(input).enumerate() {
        let index = i + 1;
        let mut doc = match Value::deserialize(de) {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                // A syntax error ends the stream: the parser cannot find the next document.
                errors.push(DocumentError { index, what: "YAML".into(), message: e.to_string() });
                break;
            }
        };
        match inject_object(&mut doc, namespace, cfg, &mut notes) {
            Ok(()) => out.push(doc),
            Err((what, message)) => errors.push(DocumentError { index, what, message }),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut yaml = String::new();
    for (i, doc) in out.iter().enumerate() {
        if i > 0 {
            yaml.push_str("---\n");
        }
        yaml.push_str(
            &serde_yaml::to_string(doc)
                .map_err(|e| vec![DocumentError { index: i + 1, what: "output".into(), message: e.to_string() }])?,
        );
    }
    Ok((yaml, notes))
}

/// Where the pod template of each workload kind lives.
fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController" | "Job" => {
            Some("/spec/template")
        }
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

fn inject_object(
    doc: &mut Value,
    namespace: &str,
    cfg: &InjectConfig,
    notes: &mut Vec<Note>,
) -> Result<(), (String, String)> {
    let kind = doc["kind"].as_str().unwrap_or_default().to_string();
    let ns = doc["metadata"]["namespace"].as_str().unwrap_or(namespace).to_string();
    let what = format!("{kind} {ns}/{}", doc["metadata"]["name"].as_str().unwrap_or("<unnamed>"));
    if kind == "List" {
        for item in doc["items"].as_array_mut().into_iter().flatten() {
            inject_object(item, namespace, cfg, notes)?;
        }
        return Ok(());
    }
    let Some(pointer) = template_pointer(&kind) else { return Ok(()) };
    let Some(template) = doc.pointer_mut(pointer) else {
        return Err((what, format!("{} is missing", field(pointer))));
    };
    let mut pod_value = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": template.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": template.get("spec").cloned().unwrap_or(Value::Null),
    });
    if kind != "Pod" && pod_value["metadata"]["name"].is_null() {
        // A template has no name; the workload's makes the messages readable.
        pod_value["metadata"]["name"] = doc_name(&what);
    }
    let pod: Pod =
        serde_json::from_value(pod_value.clone()).map_err(|e| (what.clone(), format!("{}: {e}", field(pointer))))?;
    let (outcome, ops) =
        inject::patch(&pod, &NamespaceInfo::selected(ns), cfg).map_err(|e| (what.clone(), e.to_string()))?;
    patch::apply(&mut pod_value, &ops).map_err(|e| (what.clone(), e))?;
    let template = doc.pointer_mut(pointer).expect("checked above");
    template["spec"] = pod_value["spec"].take();
    template["metadata"]["annotations"] = pod_value["metadata"]["annotations"].take();
    if template["metadata"]["annotations"].is_null() {
        template["metadata"].as_object_mut().map(|m| m.remove("annotations"));
    }
    let (injected, why) = match outcome {
        Outcome::Injected { reason, .. } => (true, reason.describe()),
        Outcome::Skipped(reason) => (false, reason.describe()),
    };
    notes.push(Note { what, injected, why });
    Ok(())
}

fn doc_name(what: &str) -> Value {
    Value::String(what.rsplit('/').next().unwrap_or_default().to_string())
}

/// `/spec/template` as the field path `spec.template`.
fn field(pointer: &str) -> String {
    if pointer.is_empty() { "spec".into() } else { pointer.trim_start_matches('/').replace('/', ".") }
}

#[cfg(test)]
mod tests;
