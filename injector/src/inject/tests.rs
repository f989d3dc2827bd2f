use super::*;
use crate::sidecar::{INIT_CONTAINER, PROXY_CONTAINER};
use k8s_openapi::api::core::v1::Container;
use serde_json::Value;

fn pod_json() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-7d4f-", "labels": {"app": "web", "version": "v1"}},
        "spec": {
            "serviceAccountName": "web",
            "initContainers": [{"name": "migrate", "image": "web:1"}],
            "containers": [{
                "name": "web",
                "image": "web:1",
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 3}
            }],
            "volumes": [{"name": "data", "emptyDir": {}}]
        }
    })
}

fn pod() -> Pod {
    serde_json::from_value(pod_json()).unwrap()
}

fn enabled() -> NamespaceInfo {
    NamespaceInfo::labelled("shop", &[(keys::NAMESPACE_INJECTION, "enabled")])
}

fn injected(pod: &Pod, cfg: &InjectConfig) -> (Pod, SidecarMode) {
    match inject(pod, &enabled(), cfg).unwrap() {
        Outcome::Injected { pod, mode, .. } => (*pod, mode),
        other => panic!("not injected: {other:?}"),
    }
}

fn names(cs: &[Container]) -> Vec<&str> {
    cs.iter().map(|c| c.name.as_str()).collect()
}

fn apply(doc: &Value, ops: &[PatchOp]) -> Value {
    let patch: json_patch::Patch = serde_json::from_value(serde_json::to_value(ops).unwrap()).unwrap();
    let mut doc = doc.clone();
    json_patch::patch(&mut doc, &patch).unwrap();
    doc
}

#[test]
fn classic_mode_puts_the_sidecar_first_with_a_hold_hook() {
    let (p, mode) = injected(&pod(), &InjectConfig::default());
    assert_eq!(mode, SidecarMode::Classic);
    let spec = p.spec.unwrap();
    assert_eq!(names(spec.init_containers.as_ref().unwrap()), [INIT_CONTAINER, "migrate"]);
    assert_eq!(names(&spec.containers), [PROXY_CONTAINER, "web"]);
    let proxy = &spec.containers[0];
    assert!(proxy.restart_policy.is_none());
    let hook = proxy.lifecycle.as_ref().unwrap().post_start.as_ref().unwrap();
    assert_eq!(hook.exec.as_ref().unwrap().command.as_ref().unwrap(), &sidecar::hold_until_ready_command());
    assert!(proxy.startup_probe.is_none());
}

#[test]
fn native_mode_adds_a_restartable_init_container_after_the_capture_step() {
    let cfg = InjectConfig { default_mode: SidecarMode::Native, ..Default::default() };
    let (p, mode) = injected(&pod(), &cfg);
    assert_eq!(mode, SidecarMode::Native);
    let spec = p.spec.unwrap();
    let inits = spec.init_containers.unwrap();
    assert_eq!(names(&inits), [INIT_CONTAINER, PROXY_CONTAINER, "migrate"]);
    assert_eq!(inits[1].restart_policy.as_deref(), Some("Always"));
    assert!(inits[1].lifecycle.is_none(), "no hold hook: the kubelet orders native sidecars");
    assert!(inits[1].startup_probe.is_some());
    assert_eq!(names(&spec.containers), ["web"]);
    let status: Value = serde_json::from_str(&p.metadata.annotations.unwrap()[keys::STATUS]).unwrap();
    assert_eq!(status["native"], true);
}

#[test]
fn the_annotation_chooses_the_mode_over_the_cluster_default() {
    let mut p = pod();
    p.metadata.annotations = Some([(keys::NATIVE_SIDECAR.to_string(), "true".to_string())].into());
    assert_eq!(injected(&p, &InjectConfig::default()).1, SidecarMode::Native);
    let native = InjectConfig { default_mode: SidecarMode::Native, ..Default::default() };
    p.metadata.annotations = Some([(keys::NATIVE_SIDECAR.to_string(), "false".to_string())].into());
    assert_eq!(injected(&p, &native).1, SidecarMode::Classic);
    let old_cluster = InjectConfig { native_supported: false, ..Default::default() };
    p.metadata.annotations = Some([(keys::NATIVE_SIDECAR.to_string(), "true".to_string())].into());
    let err = inject(&p, &enabled(), &old_cluster).unwrap_err().to_string();
    assert!(err.contains("needs Kubernetes 1.29 or newer"), "{err}");
    p.metadata.annotations = Some([(keys::NATIVE_SIDECAR.to_string(), "sometimes".to_string())].into());
    let err = inject(&p, &enabled(), &native).unwrap_err().to_string();
    assert_eq!(
        err,
        "Pod shop/web-7d4f-*: annotation sidecar.istio.io/nativeSidecar: `sometimes` is not valid (expected \"true\" or \"false\")"
    );
}

#[test]
fn only_the_init_step_has_network_capabilities() {
    let (p, _) = injected(&pod(), &InjectConfig::default());
    let spec = p.spec.unwrap();
    let init = &spec.init_containers.as_ref().unwrap()[0];
    let isc = init.security_context.as_ref().unwrap();
    assert_eq!(
        isc.capabilities.as_ref().unwrap().add.as_deref(),
        Some(&["NET_ADMIN".to_string(), "NET_RAW".to_string()][..])
    );
    assert_eq!(init.args.as_ref().unwrap()[0], "init");
    assert!(init.args.as_ref().unwrap().contains(&"/etc/mesh/pod/annotations".to_string()));

    let proxy = &spec.containers[0];
    let sc = proxy.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_user, Some(1337));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert!(caps.add.is_none());
    assert!(spec.containers[1].security_context.is_none(), "the app's container is not touched");
}

#[test]
fn the_sidecar_learns_its_identity_from_the_downward_api() {
    let (p, _) = injected(&pod(), &InjectConfig::default());
    let spec = p.spec.unwrap();
    let proxy = &spec.containers[0];
    let env: BTreeMap<_, _> = proxy.env.iter().flatten().map(|e| (e.name.as_str(), e)).collect();
    let field = |n: &str| env[n].value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path.clone();
    assert_eq!(field("POD_NAME"), "metadata.name");
    assert_eq!(field("POD_NAMESPACE"), "metadata.namespace");
    assert_eq!(field("INSTANCE_IP"), "status.podIP");
    assert_eq!(field("SERVICE_ACCOUNT"), "spec.serviceAccountName");
    assert_eq!(env["ISTIO_METAJSON_LABELS"].value.as_deref(), Some(r#"{"app":"web","version":"v1"}"#));
    assert_eq!(env["ISTIO_META_APP_CONTAINERS"].value.as_deref(), Some("web"));
    let ports: Vec<_> = proxy.ports.iter().flatten().map(|p| p.container_port).collect();
    assert_eq!(ports, [15090, 15021]);
    let ready = proxy.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!((ready.path.as_deref(), &ready.port), (Some("/healthz/ready"), &IntOrString::Int(15021)));

    let volumes = spec.volumes.unwrap();
    assert_eq!(
        volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["data", "mesh-podinfo", "mesh-token", "mesh-credentials", "istio-ca-root-cert"]
    );
    let root = volumes[4].config_map.as_ref().unwrap();
    assert_eq!((root.name.as_str(), root.optional), ("istio-ca-root-cert", Some(true)));
    assert_eq!(env["MESH_CA_ROOT_CERT"].value.as_deref(), Some("/var/run/secrets/istio/root-cert.pem"));
    assert_eq!(env["MESH_CONTROLLER_ADDRESS"].value.as_deref(), Some("https://mesh-controller.istio-system.svc:15012"));
    assert_eq!(env["MESH_CA_ADDRESS"].value.as_deref(), Some("https://mesh-controller.istio-system.svc:15012"));
    assert_eq!(env["MESH_TOKEN_FILE"].value.as_deref(), Some("/var/run/secrets/tokens/mesh-token"));
    let token =
        volumes[2].projected.as_ref().unwrap().sources.as_ref().unwrap()[0].service_account_token.as_ref().unwrap();
    assert_eq!(token.audience.as_deref(), Some("istio-ca"));
    assert_eq!(volumes[3].empty_dir.as_ref().unwrap().medium.as_deref(), Some("Memory"));
}

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

#[test]
fn the_pod_is_labelled_for_mutual_tls_unless_it_says_otherwise() {
    let (p, _) = injected(&pod(), &InjectConfig::default());
    let labels = p.metadata.labels.unwrap();
    assert_eq!(labels["security.istio.io/tlsMode"], "istio");
    assert_eq!(labels["app"], "web", "the pod's own labels stay");
    let mut disabled = pod();
    disabled.metadata.labels.as_mut().unwrap().insert("security.istio.io/tlsMode".into(), "disabled".into());
    let (p, _) = injected(&disabled, &InjectConfig::default());
    assert_eq!(p.metadata.labels.unwrap()["security.istio.io/tlsMode"], "disabled");
}

#[test]
fn a_plaintext_controller_address_asks_no_ca() {
    let cfg = InjectConfig {
        controller_address: "http://mesh-controller.istio-system.svc:15010".into(),
        ..Default::default()
    };
    let (p, _) = injected(&pod(), &cfg);
    let env = p.spec.unwrap().containers[0].env.clone().unwrap();
    assert!(env.iter().all(|e| e.name != "MESH_CA_ADDRESS"), "the CA is served on the TLS port only");
}

#[test]
fn probes_are_rewritten_unless_the_pod_says_no() {
    let (p, _) = injected(&pod(), &InjectConfig::default());
    let a = p.metadata.annotations.as_ref().unwrap();
    let kept: Value = serde_json::from_str(&a[keys::APP_PROBERS]).unwrap();
    assert_eq!(kept["/app-health/web/readyz"]["httpGet"]["port"], 8080);
    let web = &p.spec.as_ref().unwrap().containers[1];
    let get = web.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!(get.port, IntOrString::Int(15021));

    let mut no = pod();
    no.metadata.annotations = Some([(keys::REWRITE_PROBES.to_string(), "false".to_string())].into());
    let (p, _) = injected(&no, &InjectConfig::default());
    assert!(!p.metadata.annotations.as_ref().unwrap().contains_key(keys::APP_PROBERS));
    assert_eq!(p.spec.unwrap().containers[1], pod().spec.unwrap().containers[0]);
}

#[test]
fn resource_annotations_reach_the_sidecar() {
    let mut p = pod();
    p.metadata.annotations = Some(
        [
            (keys::PROXY_CPU.to_string(), "300m".to_string()),
            (keys::PROXY_MEMORY_LIMIT.to_string(), "512Mi".to_string()),
        ]
        .into(),
    );
    let (p, _) = injected(&p, &InjectConfig::default());
    let r = p.spec.unwrap().containers[0].resources.clone().unwrap();
    assert_eq!(r.requests.as_ref().unwrap()["cpu"].0, "300m");
    assert_eq!(r.requests.as_ref().unwrap()["memory"].0, "128Mi");
    assert_eq!(r.limits.as_ref().unwrap()["cpu"].0, "2000m");
    assert_eq!(r.limits.as_ref().unwrap()["memory"].0, "512Mi");
}

#[test]
fn prometheus_annotations_are_added_unless_the_pod_has_its_own() {
    let (p, _) = injected(&pod(), &InjectConfig::default());
    let a = p.metadata.annotations.unwrap();
    assert_eq!((a["prometheus.io/scrape"].as_str(), a["prometheus.io/port"].as_str()), ("true", "15020"));
    let mut own = pod();
    own.metadata.annotations = Some([("prometheus.io/scrape".to_string(), "false".to_string())].into());
    let (p, _) = injected(&own, &InjectConfig::default());
    let a = p.metadata.annotations.unwrap();
    assert_eq!(a["prometheus.io/scrape"], "false");
    assert!(!a.contains_key("prometheus.io/port"));
}

#[test]
fn the_patch_applies_to_the_raw_object_and_a_second_injection_changes_nothing() {
    for mode in [SidecarMode::Classic, SidecarMode::Native] {
        let cfg = InjectConfig { default_mode: mode, ..Default::default() };
        let mut raw = pod_json();
        // A field the injector's types do not know must survive the patch.
        raw["spec"]["containers"][0]["futureField"] = json!({"keep": true});
        let (_, ops) = patch(&pod(), &enabled(), &cfg).unwrap();
        let patched = apply(&raw, &ops);
        assert_eq!(
            patched["spec"]["containers"][if mode == SidecarMode::Classic { 1 } else { 0 }]["futureField"]["keep"],
            true
        );

        let once: Pod = serde_json::from_value(patched.clone()).unwrap();
        assert_eq!(once, injected(&pod(), &cfg).0, "applying the patch gives the injected pod");
        let (outcome, again) = patch(&once, &enabled(), &cfg).unwrap();
        assert_eq!(outcome, Outcome::Skipped(Reason::AlreadyInjected));
        assert!(again.is_empty(), "{again:?}");
    }
}

#[test]
fn skipped_pods_get_an_empty_patch() {
    let mut p = pod();
    p.metadata.labels.as_mut().unwrap().insert(keys::INJECT.into(), "false".into());
    let (outcome, ops) = patch(&p, &enabled(), &InjectConfig::default()).unwrap();
    assert_eq!(outcome, Outcome::Skipped(Reason::PodLabel));
    assert!(ops.is_empty());
}

#[test]
fn a_volume_named_like_ours_is_refused_with_its_field() {
    let mut p = pod();
    p.spec.as_mut().unwrap().volumes.as_mut().unwrap()[0].name = "mesh-token".into();
    let err = inject(&p, &enabled(), &InjectConfig::default()).unwrap_err().to_string();
    assert!(err.starts_with("Pod shop/web-7d4f-*: spec.volumes: `mesh-token`"), "{err}");
}
