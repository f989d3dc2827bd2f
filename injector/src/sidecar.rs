//! The containers and volumes the injector adds: `istio-init` (the capture rules) and
//! `istio-proxy` (the sidecar). Container names are Istio's, so `kubectl logs -c istio-proxy`,
//! dashboards and Prometheus relabelling written for Istio keep working.

use crate::config::{InjectConfig, PROXY_UID, SidecarMode, ports};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, DownwardAPIVolumeFile, DownwardAPIVolumeSource,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler,
    ObjectFieldSelector, Probe, ProjectedVolumeSource, ResourceRequirements, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

pub const INIT_CONTAINER: &str = "istio-init";
pub const PROXY_CONTAINER: &str = "istio-proxy";

pub const PODINFO_VOLUME: &str = "mesh-podinfo";
pub const TOKEN_VOLUME: &str = "mesh-token";
pub const CREDENTIALS_VOLUME: &str = "mesh-credentials";
/// The mesh's root certificate, which the controller publishes in every namespace as the
/// ConfigMap `istio-ca-root-cert` (Istio's name); the proxy trusts the controller by it.
pub const ROOT_CERT_VOLUME: &str = "istio-ca-root-cert";

/// Downward-API files of the pod's labels and annotations (`labels`, `annotations`).
pub const PODINFO_DIR: &str = "/etc/mesh/pod";
/// The projected service-account token the proxy shows the CA.
pub const TOKEN_DIR: &str = "/var/run/secrets/tokens";
pub const TOKEN_FILE: &str = "mesh-token";
/// Where the proxy keeps its certificate and key: memory only, never the node's disk.
pub const CREDENTIALS_DIR: &str = "/etc/mesh/credentials";
/// Where the root certificate is mounted (`root-cert.pem`), the proxy's default.
pub const ROOT_CERT_DIR: &str = "/var/run/secrets/istio";

/// How long the proxy's token lives; the kubelet refreshes it at 80%.
const TOKEN_SECONDS: i64 = 43_200;

/// How the classic sidecar's postStart hook waits for readiness: `bash` and `/dev/tcp`, which
/// the proxy image (Debian) has and which needs no tool in the image beyond the shell. The
/// kubelet does not start the next container until the hook returns, so the app starts with
/// its traffic already going through a ready proxy (Istio's `holdApplicationUntilProxyStarts`).
/// After 120 s it gives up and the kubelet restarts the sidecar.
pub fn hold_until_ready_command() -> Vec<String> {
    let script = format!(
        "for _ in $(seq 480); do \
         if (exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET /healthz/ready HTTP/1.0\\r\\n\\r\\n' >&3 \
         && read -r -t 2 _ code _ <&3 && [ \"$code\" = 200 ]) 2>/dev/null; then exit 0; fi; \
         sleep 0.25; done; echo 'istio-proxy not ready after 120s' >&2; exit 1",
        port = ports::HEALTH
    );
    vec!["bash".into(), "-c".into(), script]
}

/// The init step: `mesh-proxy init`, reading the pod's `traffic.sidecar.istio.io/*` annotations
/// from the downward-API file. The only container with NET_ADMIN and NET_RAW, and it runs
/// before any app code.
pub fn init_container(cfg: &InjectConfig, resources: &ResourceRequirements) -> Container {
    let args = [
        "init",
        "--proxy-uid",
        &PROXY_UID.to_string(),
        "--proxy-gid",
        &PROXY_UID.to_string(),
        "--outbound-port",
        &ports::OUTBOUND.to_string(),
        "--inbound-port",
        &ports::INBOUND.to_string(),
        "--from-annotations",
        &format!("{PODINFO_DIR}/annotations"),
    ];
    Container {
        name: INIT_CONTAINER.into(),
        image: Some(cfg.proxy_image.clone()),
        image_pull_policy: cfg.image_pull_policy.clone(),
        args: Some(args.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.clone()),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![mount(PODINFO_VOLUME, PODINFO_DIR, true)]),
        ..Default::default()
    }
}

/// What the sidecar needs to know about its pod that the downward API cannot give as env.
pub struct PodFacts<'a> {
    pub labels: &'a BTreeMap<String, String>,
    pub app_containers: Vec<String>,
}

/// The sidecar container, for `mode`.
pub fn proxy_container(
    cfg: &InjectConfig,
    mode: SidecarMode,
    facts: &PodFacts<'_>,
    resources: ResourceRequirements,
) -> Container {
    let ready = health_probe(1, 2, 30);
    let mut c = Container {
        name: PROXY_CONTAINER.into(),
        image: Some(cfg.proxy_image.clone()),
        image_pull_policy: cfg.image_pull_policy.clone(),
        args: Some(vec!["run".into()]),
        env: Some(env(cfg, facts)),
        ports: Some(vec![port("http-envoy-prom", ports::PROXY_METRICS), port("mesh-health", ports::HEALTH)]),
        readiness_probe: Some(ready),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            run_as_user: Some(PROXY_UID),
            run_as_group: Some(PROXY_UID),
            run_as_non_root: Some(true),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount(CREDENTIALS_VOLUME, CREDENTIALS_DIR, false),
            mount(TOKEN_VOLUME, TOKEN_DIR, true),
            mount(PODINFO_VOLUME, PODINFO_DIR, true),
            mount(ROOT_CERT_VOLUME, ROOT_CERT_DIR, true),
        ]),
        ..Default::default()
    };
    match mode {
        SidecarMode::Native => {
            c.restart_policy = Some("Always".into());
            // The kubelet starts the next init container (and then the app) only once a
            // restartable init container's startup probe passes.
            c.startup_probe = Some(health_probe(0, 1, 600));
        }
        SidecarMode::Classic => {
            c.lifecycle = Some(Lifecycle {
                post_start: Some(LifecycleHandler {
                    exec: Some(ExecAction { command: Some(hold_until_ready_command()) }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    c
}

/// Environment of the sidecar: identity from the downward API (so it is right even though the
/// pod has no name yet at admission), plus where to find the controller and its credentials.
fn env(cfg: &InjectConfig, facts: &PodFacts<'_>) -> Vec<EnvVar> {
    let field = |name: &str, path: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), api_version: Some("v1".into()) }),
            ..Default::default()
        }),
        value: None,
    };
    let value = |name: &str, v: String| EnvVar { name: name.into(), value: Some(v), value_from: None };
    let mut env = vec![
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        field("INSTANCE_IP", "status.podIP"),
        field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field("HOST_IP", "status.hostIP"),
        // The labels at creation, as Istio passes them; the live ones are in PODINFO_DIR/labels.
        value("ISTIO_METAJSON_LABELS", serde_json::to_string(facts.labels).unwrap_or_default()),
        value("ISTIO_META_APP_CONTAINERS", facts.app_containers.join(",")),
        value("MESH_CONTROLLER_ADDRESS", cfg.controller_address.clone()),
        value("MESH_CA_ROOT_CERT", format!("{ROOT_CERT_DIR}/root-cert.pem")),
        value("MESH_TRUST_DOMAIN", cfg.trust_domain.clone()),
        value("MESH_TOKEN_FILE", format!("{TOKEN_DIR}/{TOKEN_FILE}")),
        value("MESH_CREDENTIALS_DIR", CREDENTIALS_DIR.into()),
        value("MESH_POD_INFO_DIR", PODINFO_DIR.into()),
    ];
    // The CA is served on the controller's TLS port (not on plaintext 15010): the sidecar asks
    // it for its certificate with the token above, and is ready once it has one.
    if cfg.controller_address.starts_with("https://") {
        env.push(value("MESH_CA_ADDRESS", cfg.controller_address.clone()));
    }
    env
}

/// The volumes the two containers mount.
pub fn volumes(cfg: &InjectConfig) -> Vec<Volume> {
    let file = |name: &str, path: &str| DownwardAPIVolumeFile {
        path: name.into(),
        field_ref: Some(ObjectFieldSelector { field_path: path.into(), api_version: Some("v1".into()) }),
        ..Default::default()
    };
    vec![
        Volume {
            name: PODINFO_VOLUME.into(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![file("labels", "metadata.labels"), file("annotations", "metadata.annotations")]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: TOKEN_VOLUME.into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(cfg.ca_audience.clone()),
                        expiration_seconds: Some(TOKEN_SECONDS),
                        path: TOKEN_FILE.into(),
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: CREDENTIALS_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource { medium: Some("Memory".into()), ..Default::default() }),
            ..Default::default()
        },
        // Optional: a pod created before the controller has published the root still starts
        // (serving its last config: none yet, so traffic passes through), and the kubelet
        // fills the file in once the ConfigMap exists; the proxy reads it at every connection
        // attempt.
        Volume {
            name: ROOT_CERT_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: ROOT_CERT_VOLUME.into(),
                optional: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        },
    ]
}

fn health_probe(initial_delay: i32, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz/ready".into()),
            port: IntOrString::Int(ports::HEALTH.into()),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

fn port(name: &str, number: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: number.into(),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), read_only: Some(read_only), ..Default::default() }
}
