//! What the injector adds, as settings: the image, where the control plane lives, defaults.

use std::collections::BTreeMap;

/// The mesh's fixed ports (MESH.md, "Conventions").
pub mod ports {
    pub const OUTBOUND: u16 = 15001;
    pub const INBOUND: u16 = 15006;
    pub const MERGED_METRICS: u16 = 15020;
    pub const HEALTH: u16 = 15021;
    pub const PROXY_METRICS: u16 = 15090;
    pub const WEBHOOK: u16 = 15017;
    /// The controller's config stream and CA over TLS (15010 is the same stream in plaintext,
    /// for tests).
    pub const CONTROLLER_TLS: u16 = 15012;
}

/// The UID (and GID) the proxy runs as; the capture rules never redirect its traffic.
pub const PROXY_UID: i64 = 1337;

/// Which kind of sidecar to add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidecarMode {
    /// An init container with `restartPolicy: Always` (Kubernetes 1.29+): it starts before the
    /// app containers, and a Job's pod completes when its app containers do.
    Native,
    /// The first app container, with a postStart hook that holds the next containers until the
    /// proxy is ready. A Job must call `POST localhost:15000/quitquitquit` to end.
    Classic,
}

impl SidecarMode {
    /// Native sidecars are on by default from Kubernetes 1.29.
    pub fn for_server(major: u32, minor: u32) -> Self {
        if (major, minor) >= (1, 29) { SidecarMode::Native } else { SidecarMode::Classic }
    }
}

/// Settings of one injector.
#[derive(Debug, Clone)]
pub struct InjectConfig {
    /// Image of both the init step and the sidecar (`mesh-proxy`).
    pub proxy_image: String,
    pub image_pull_policy: Option<String>,
    /// The control plane's namespace; its pods are never injected (the controller and the
    /// injector must start without themselves).
    pub control_plane_namespace: String,
    /// Address of the controller's config and CA gRPC over TLS, `https://host:port`.
    pub controller_address: String,
    /// Audience of the projected token the proxy shows the CA (checked with TokenReview).
    pub ca_audience: String,
    /// Trust domain of the workload identities.
    pub trust_domain: String,
    /// The mode for pods that do not choose with an annotation.
    pub default_mode: SidecarMode,
    /// Whether the cluster runs native sidecars: when it is known not to (older than 1.29), a
    /// pod asking for one is refused, since the API server would drop `restartPolicy` and the
    /// proxy would block the pod's init phase forever.
    pub native_supported: bool,
    /// Whether probes are rewritten when the pod does not say.
    pub rewrite_probes: bool,
    /// Resources when the pod's annotations do not set them.
    pub default_resources: ProxyResources,
}

/// Requests and limits of the sidecar, as Kubernetes quantity strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyResources {
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: String,
    pub memory_limit: String,
}

impl Default for ProxyResources {
    /// Istio's defaults: enough for a sidecar with light traffic, capped so a runaway proxy
    /// cannot starve its node.
    fn default() -> Self {
        ProxyResources {
            cpu_request: "100m".into(),
            memory_request: "128Mi".into(),
            cpu_limit: "2000m".into(),
            memory_limit: "1024Mi".into(),
        }
    }
}

impl Default for InjectConfig {
    fn default() -> Self {
        let ns = "istio-system".to_string();
        InjectConfig {
            proxy_image: "mesh/proxy:dev".into(),
            image_pull_policy: None,
            controller_address: controller_address(&ns),
            control_plane_namespace: ns,
            ca_audience: "istio-ca".into(),
            trust_domain: "cluster.local".into(),
            default_mode: SidecarMode::Classic,
            native_supported: true,
            rewrite_probes: true,
            default_resources: ProxyResources::default(),
        }
    }
}

/// The controller's TLS port in the control plane's namespace, as sidecars dial it.
pub fn controller_address(control_plane_namespace: &str) -> String {
    format!("https://mesh-controller.{control_plane_namespace}.svc:{}", ports::CONTROLLER_TLS)
}

/// The namespace a pod is created in, as far as the injector knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    /// The namespace's labels; `None` when unknown (the webhook relies on its configuration's
    /// namespaceSelector to have chosen the namespace; `kube-inject` has no cluster).
    pub labels: Option<BTreeMap<String, String>>,
}

impl NamespaceInfo {
    pub fn selected(name: impl Into<String>) -> Self {
        NamespaceInfo { name: name.into(), labels: None }
    }

    pub fn labelled(name: impl Into<String>, labels: &[(&str, &str)]) -> Self {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        NamespaceInfo { name: name.into(), labels: Some(labels) }
    }
}
