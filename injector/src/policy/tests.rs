use super::*;
use k8s_openapi::api::core::v1::PodSpec;
use std::collections::BTreeMap;

fn pod(label: Option<&str>, annotation: Option<&str>) -> Pod {
    let map = |v: Option<&str>| v.map(|v| BTreeMap::from([(keys::INJECT.to_string(), v.to_string())]));
    let mut p = Pod::default();
    p.metadata.name = Some("web".into());
    p.metadata.labels = map(label);
    p.metadata.annotations = map(annotation);
    p.spec = Some(PodSpec::default());
    p
}

fn ns(label: Option<&str>) -> NamespaceInfo {
    match label {
        Some(v) => NamespaceInfo::labelled("shop", &[(keys::NAMESPACE_INJECTION, v)]),
        None => NamespaceInfo::labelled("shop", &[]),
    }
}

#[test]
fn precedence_is_pod_label_then_annotation_then_namespace() {
    use Decision::{Inject, Skip};
    use Reason::*;
    let cfg = InjectConfig::default();
    // (pod label, pod annotation, namespace label) -> decision
    let table = [
        (None, None, Some("enabled"), Inject(NamespaceLabel)),
        (None, None, Some("disabled"), Skip(NamespaceLabel)),
        (None, None, None, Skip(NamespaceUnlabelled)),
        (None, Some("false"), Some("enabled"), Skip(PodAnnotation)),
        (None, Some("true"), None, Inject(PodAnnotation)),
        (None, Some("true"), Some("disabled"), Inject(PodAnnotation)),
        (Some("false"), None, Some("enabled"), Skip(PodLabel)),
        (Some("true"), None, None, Inject(PodLabel)),
        (Some("true"), None, Some("disabled"), Inject(PodLabel)),
        (Some("false"), Some("true"), Some("enabled"), Skip(PodLabel)),
        (Some("true"), Some("false"), Some("disabled"), Inject(PodLabel)),
        // A value that is not a boolean is no choice; the next level decides.
        (Some("maybe"), Some("false"), Some("enabled"), Skip(PodAnnotation)),
        (Some("maybe"), None, Some("enabled"), Inject(NamespaceLabel)),
        (None, None, Some("banana"), Skip(NamespaceLabel)),
    ];
    for (label, annotation, ns_label, want) in table {
        let got = decide(&pod(label, annotation), &ns(ns_label), &cfg);
        assert_eq!(got, want, "pod label {label:?}, annotation {annotation:?}, namespace {ns_label:?}");
    }
}

#[test]
fn unknown_namespace_labels_mean_the_caller_selected_it() {
    let cfg = InjectConfig::default();
    assert_eq!(
        decide(&pod(None, None), &NamespaceInfo::selected("shop"), &cfg),
        Decision::Inject(Reason::NamespaceSelected)
    );
    assert_eq!(
        decide(&pod(None, Some("false")), &NamespaceInfo::selected("shop"), &cfg),
        Decision::Skip(Reason::PodAnnotation)
    );
}

#[test]
fn control_plane_host_network_and_injected_pods_are_skipped_whatever_the_labels() {
    let cfg = InjectConfig::default();
    let opted_in = pod(Some("true"), None);
    let cp = NamespaceInfo::labelled(cfg.control_plane_namespace.clone(), &[(keys::NAMESPACE_INJECTION, "enabled")]);
    assert_eq!(decide(&opted_in, &cp, &cfg), Decision::Skip(Reason::ControlPlaneNamespace));

    let mut host = opted_in.clone();
    host.spec.as_mut().unwrap().host_network = Some(true);
    assert_eq!(decide(&host, &ns(Some("enabled")), &cfg), Decision::Skip(Reason::HostNetwork));

    let mut done = opted_in.clone();
    done.metadata.annotations = Some(BTreeMap::from([(keys::STATUS.to_string(), "{}".to_string())]));
    assert_eq!(decide(&done, &ns(Some("enabled")), &cfg), Decision::Skip(Reason::AlreadyInjected));

    let mut by_hand = opted_in;
    by_hand.spec.as_mut().unwrap().containers.push(k8s_openapi::api::core::v1::Container {
        name: crate::sidecar::PROXY_CONTAINER.into(),
        ..Default::default()
    });
    assert_eq!(decide(&by_hand, &ns(Some("enabled")), &cfg), Decision::Skip(Reason::AlreadyInjected));
}
