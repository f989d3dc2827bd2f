//! Who gets a sidecar.
//!
//! Precedence, first that speaks wins: the pod label `sidecar.istio.io/inject`, the pod annotation
//! of the same name, the namespace label `istio-injection`. Before any of them: pods of the
//! control plane's namespace, pods on the host network (capture rules would rewrite the node's
//! own traffic) and pods already injected are left alone.
//!
//! One difference from Istio's webhook selectors: a pod labelled `"true"` in a namespace labelled
//! `disabled` is injected here, because the pod label is the most specific choice (the issue's
//! rule). The webhook configuration sends such pods to the injector accordingly.

use crate::config::{InjectConfig, NamespaceInfo};
use crate::keys;
use k8s_openapi::api::core::v1::Pod;

/// Why a pod gets, or does not get, a sidecar. Logged with the pod, and written into
/// `kube-inject`'s diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Inject(Reason),
    Skip(Reason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    PodLabel,
    PodAnnotation,
    NamespaceLabel,
    /// The namespace's labels are not known: the caller (the webhook configuration's
    /// namespaceSelector, or a user running `kube-inject`) already chose it.
    NamespaceSelected,
    NamespaceUnlabelled,
    ControlPlaneNamespace,
    HostNetwork,
    AlreadyInjected,
}

impl Reason {
    pub fn describe(self) -> &'static str {
        match self {
            Reason::PodLabel => "pod label sidecar.istio.io/inject",
            Reason::PodAnnotation => "pod annotation sidecar.istio.io/inject",
            Reason::NamespaceLabel => "namespace label istio-injection",
            Reason::NamespaceSelected => "namespace selected by the caller",
            Reason::NamespaceUnlabelled => "namespace has no istio-injection label",
            Reason::ControlPlaneNamespace => "pod is in the control plane's namespace",
            Reason::HostNetwork => "pod uses the host network",
            Reason::AlreadyInjected => "pod already has the sidecar",
        }
    }
}

impl Decision {
    pub fn injects(self) -> bool {
        matches!(self, Decision::Inject(_))
    }
}

/// Decides whether `pod`, created in `ns`, gets a sidecar.
pub fn decide(pod: &Pod, ns: &NamespaceInfo, cfg: &InjectConfig) -> Decision {
    if ns.name == cfg.control_plane_namespace {
        return Decision::Skip(Reason::ControlPlaneNamespace);
    }
    if pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false) {
        return Decision::Skip(Reason::HostNetwork);
    }
    if is_injected(pod) {
        return Decision::Skip(Reason::AlreadyInjected);
    }
    let meta = &pod.metadata;
    if let Some(choice) = meta.labels.as_ref().and_then(|l| l.get(keys::INJECT)).and_then(|v| truthy(v)) {
        return verdict(choice, Reason::PodLabel);
    }
    if let Some(choice) = meta.annotations.as_ref().and_then(|a| a.get(keys::INJECT)).and_then(|v| truthy(v)) {
        return verdict(choice, Reason::PodAnnotation);
    }
    let Some(labels) = &ns.labels else {
        return Decision::Inject(Reason::NamespaceSelected);
    };
    match labels.get(keys::NAMESPACE_INJECTION).map(String::as_str) {
        Some("enabled") => Decision::Inject(Reason::NamespaceLabel),
        Some(_) => Decision::Skip(Reason::NamespaceLabel),
        None => Decision::Skip(Reason::NamespaceUnlabelled),
    }
}

fn verdict(inject: bool, reason: Reason) -> Decision {
    if inject { Decision::Inject(reason) } else { Decision::Skip(reason) }
}

/// Istio reads `"true"`/`"false"` (and Go's other boolean spellings); anything else is no choice.
fn truthy(v: &str) -> Option<bool> {
    match v.trim() {
        "true" | "True" | "TRUE" | "1" | "t" | "T" | "yes" | "y" => Some(true),
        "false" | "False" | "FALSE" | "0" | "f" | "F" | "no" | "n" => Some(false),
        _ => None,
    }
}

/// A pod carries our status annotation, or already has a container of the sidecar's name
/// (injected by hand or by an older injector).
pub fn is_injected(pod: &Pod) -> bool {
    let annotated = pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(keys::STATUS));
    let spec = pod.spec.as_ref();
    let named = |cs: Option<&Vec<k8s_openapi::api::core::v1::Container>>| {
        cs.is_some_and(|cs| cs.iter().any(|c| c.name == crate::sidecar::PROXY_CONTAINER))
    };
    annotated || spec.is_some_and(|s| named(Some(&s.containers)) || named(s.init_containers.as_ref()))
}

#[cfg(test)]
mod tests;
