//! Injection of one pod: a pure function from the pod (and where it is created) to the injected
//! pod, and the JSONPatch between the two that the webhook returns.

use crate::config::{InjectConfig, NamespaceInfo, SidecarMode, ports};
use crate::patch::{self, PatchOp};
use crate::policy::{self, Decision, Reason};
use crate::sidecar::{self, PodFacts};
use crate::{InjectError, keys, probes, resources};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use std::collections::BTreeMap;

/// What happened to a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Injected { pod: Box<Pod>, mode: SidecarMode, reason: Reason },
    Skipped(Reason),
}

/// Injects `pod`, created in `ns`, if the policy says so.
pub fn inject(pod: &Pod, ns: &NamespaceInfo, cfg: &InjectConfig) -> Result<Outcome, InjectError> {
    let reason = match policy::decide(pod, ns, cfg) {
        Decision::Skip(r) => return Ok(Outcome::Skipped(r)),
        Decision::Inject(r) => r,
    };
    let id = pod_id(pod, &ns.name);
    let mut out = pod.clone();
    let mut annotations = out.metadata.annotations.take().unwrap_or_default();
    let mode = mode_for(&id, &annotations, cfg)?;
    let rewrite = flag(&id, &annotations, keys::REWRITE_PROBES)?.unwrap_or(cfg.rewrite_probes);
    let resources = resources::for_pod(&id, &annotations, &cfg.default_resources)?;
    let labels = out.metadata.labels.clone().unwrap_or_default();
    let spec =
        out.spec.as_mut().ok_or_else(|| InjectError::Invalid { pod: id.clone(), message: "spec is missing".into() })?;
    let volumes = sidecar::volumes(cfg);
    if let Some(v) = spec.volumes.iter().flatten().find(|v| volumes.iter().any(|ours| ours.name == v.name)) {
        let message = format!("spec.volumes: `{}` is the name of a volume the sidecar needs; rename it", v.name);
        return Err(InjectError::Invalid { pod: id, message });
    }

    let probers = if rewrite { probes::rewrite(&mut spec.containers) } else { Default::default() };
    let facts = PodFacts { labels: &labels, app_containers: spec.containers.iter().map(|c| c.name.clone()).collect() };
    let proxy = sidecar::proxy_container(cfg, mode, &facts, resources.clone());
    let inits = spec.init_containers.get_or_insert_with(Vec::new);
    // The capture rules go first, so no other container's traffic escapes them.
    inits.insert(0, sidecar::init_container(cfg, &resources));
    match mode {
        // Before the app's init containers, so they already have a working proxy.
        SidecarMode::Native => inits.insert(1, proxy),
        // First, so its postStart hook holds the app until the proxy is ready.
        SidecarMode::Classic => spec.containers.insert(0, proxy),
    }
    spec.volumes.get_or_insert_with(Vec::new).extend(volumes.iter().cloned());

    annotations.insert(keys::STATUS.into(), status(mode, &volumes));
    if !probers.is_empty() {
        annotations.insert(keys::APP_PROBERS.into(), serde_json::to_string(&probers).unwrap_or_default());
    }
    if !annotations.contains_key(keys::PROMETHEUS_SCRAPE) {
        annotations.insert(keys::PROMETHEUS_SCRAPE.into(), "true".into());
        annotations.insert(keys::PROMETHEUS_PORT.into(), ports::MERGED_METRICS.to_string());
        annotations.insert(keys::PROMETHEUS_PATH.into(), "/stats/prometheus".into());
    }
    out.metadata.annotations = Some(annotations);
    out.metadata.labels.get_or_insert_with(Default::default).entry(keys::TLS_MODE.into()).or_insert("istio".into());
    Ok(Outcome::Injected { pod: Box::new(out), mode, reason })
}

/// The injection as a JSONPatch against `pod` (empty when the pod is skipped).
///
/// Both sides are serialized through the same types, so the patch holds only the injector's
/// changes; applied by the API server to the object it has, it leaves every other field as sent.
pub fn patch(pod: &Pod, ns: &NamespaceInfo, cfg: &InjectConfig) -> Result<(Outcome, Vec<PatchOp>), InjectError> {
    let outcome = inject(pod, ns, cfg)?;
    let ops = match &outcome {
        Outcome::Injected { pod: injected, .. } => {
            let before = serde_json::to_value(pod).map_err(InjectError::Serialize)?;
            let after = serde_json::to_value(injected).map_err(InjectError::Serialize)?;
            patch::diff(&before, &after)
        }
        Outcome::Skipped(_) => Vec::new(),
    };
    Ok((outcome, ops))
}

/// `namespace/name`, or `namespace/generateName*` for a pod the API server has not named yet.
pub fn pod_id(pod: &Pod, namespace: &str) -> String {
    let m = &pod.metadata;
    let name = match (&m.name, &m.generate_name) {
        (Some(n), _) if !n.is_empty() => n.clone(),
        (_, Some(g)) => format!("{g}*"),
        _ => "<unnamed>".into(),
    };
    format!("{namespace}/{name}")
}

fn mode_for(id: &str, annotations: &BTreeMap<String, String>, cfg: &InjectConfig) -> Result<SidecarMode, InjectError> {
    Ok(match flag(id, annotations, keys::NATIVE_SIDECAR)? {
        Some(true) if !cfg.native_supported => {
            return Err(InjectError::Annotation {
                pod: id.to_string(),
                annotation: keys::NATIVE_SIDECAR.to_string(),
                message: "\"true\" needs Kubernetes 1.29 or newer; this cluster runs classic sidecars only".into(),
            });
        }
        Some(true) => SidecarMode::Native,
        Some(false) => SidecarMode::Classic,
        None => cfg.default_mode,
    })
}

/// A `"true"`/`"false"` annotation; another value is an error rather than a silent default.
fn flag(id: &str, annotations: &BTreeMap<String, String>, key: &str) -> Result<Option<bool>, InjectError> {
    match annotations.get(key).map(|v| v.trim()) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(InjectError::Annotation {
            pod: id.to_string(),
            annotation: key.to_string(),
            message: format!("`{other}` is not valid (expected \"true\" or \"false\")"),
        }),
    }
}

/// What was injected, in the shape of Istio's status annotation (tools read its lists).
fn status(mode: SidecarMode, volumes: &[k8s_openapi::api::core::v1::Volume]) -> String {
    let (inits, containers) = match mode {
        SidecarMode::Native => (vec![sidecar::INIT_CONTAINER, sidecar::PROXY_CONTAINER], vec![]),
        SidecarMode::Classic => (vec![sidecar::INIT_CONTAINER], vec![sidecar::PROXY_CONTAINER]),
    };
    json!({
        "initContainers": inits,
        "containers": containers,
        "volumes": volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        "native": mode == SidecarMode::Native,
    })
    .to_string()
}

#[cfg(test)]
mod tests;
