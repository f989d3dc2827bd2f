//! Every label and annotation the injector reads or writes, in one place.
//!
//! Names a user already knows from Istio keep Istio's spelling, so existing manifests behave the
//! same here. Where Istio has no name for something (the kept probe definitions, the sidecar
//! mode), the name is Istio-like and listed in `injector/README.md`.

/// Namespace label: `enabled` injects every pod of the namespace, `disabled` none.
pub const NAMESPACE_INJECTION: &str = "istio-injection";

/// Pod label (first) or annotation (second): `"true"` or `"false"` overrides the namespace.
pub const INJECT: &str = "sidecar.istio.io/inject";

/// Pod annotation written at injection: what was added (JSON). Its presence makes injection a
/// no-op, which is what keeps a second pass (re-invocation, `kube-inject` on injected YAML)
/// from adding a second sidecar.
pub const STATUS: &str = "sidecar.istio.io/status";

/// Pod annotation: `"true"` for a native sidecar (init container with `restartPolicy: Always`),
/// `"false"` for a classic one; absent means "what the cluster supports".
pub const NATIVE_SIDECAR: &str = "sidecar.istio.io/nativeSidecar";

/// Pod annotation: `"false"` keeps the app's probes as they are (Istio's name).
pub const REWRITE_PROBES: &str = "sidecar.istio.io/rewriteAppHTTPProbers";

/// Pod annotation written at injection: the app's original probes that were rewritten, as JSON
/// keyed by the sidecar path that now serves them (`/app-health/<container>/readyz`). The proxy
/// reads it from its downward-API file and forwards each probe to the app.
pub const APP_PROBERS: &str = "sidecar.istio.io/appProbers";

/// Pod annotations for the sidecar's resources (Istio's names). Values are Kubernetes quantities.
pub const PROXY_CPU: &str = "sidecar.istio.io/proxyCPU";
pub const PROXY_MEMORY: &str = "sidecar.istio.io/proxyMemory";
pub const PROXY_CPU_LIMIT: &str = "sidecar.istio.io/proxyCPULimit";
pub const PROXY_MEMORY_LIMIT: &str = "sidecar.istio.io/proxyMemoryLimit";

/// Pod label written at injection: `istio` says the pod runs a sidecar, so peer sidecars speak
/// mutual TLS to it (auto mTLS). A value the pod already has (`disabled`) is kept. The name is
/// the one the compiler reads (`common`).
pub const TLS_MODE: &str = common::registry::TLS_MODE_LABEL;

/// Prometheus scrape annotations, set unless the pod already has its own.
pub const PROMETHEUS_SCRAPE: &str = "prometheus.io/scrape";
pub const PROMETHEUS_PORT: &str = "prometheus.io/port";
pub const PROMETHEUS_PATH: &str = "prometheus.io/path";
