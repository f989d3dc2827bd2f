//! `mesh-injector`: adds the mesh's sidecar to pods, as a mutating admission webhook and as the
//! `kube-inject` command.
//!
//! The injection itself is pure functions over Kubernetes types, so the webhook and the CLI run
//! the same code and every pod shape can be unit-tested:
//!
//! - [`policy`]: who gets a sidecar (pod label over annotation over namespace label);
//! - [`inject`]: the injected pod and the JSONPatch to it, built from [`sidecar`] (containers and
//!   volumes), [`probes`] (probe rewrite) and [`resources`] (the sidecar's requests and limits);
//! - [`patch`]: the JSONPatch between two documents;
//! - [`kube_inject`]: multi-document YAML of workloads in, injected YAML out;
//! - [`webhook`]: the HTTPS server on 15017, its certificate and the caBundle of its configuration.
#![forbid(unsafe_code)]

pub mod config;
pub mod inject;
pub mod keys;
pub mod kube_inject;
pub mod patch;
pub mod policy;
pub mod probes;
pub mod resources;
pub mod sidecar;
pub mod webhook;

/// Why a pod cannot be injected. The webhook refuses the pod with this message.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("Pod {pod}: annotation {annotation}: {message}")]
    Annotation { pod: String, annotation: String, message: String },
    #[error("Pod {pod}: {message}")]
    Invalid { pod: String, message: String },
    #[error("serializing the pod: {0}")]
    Serialize(#[source] serde_json::Error),
}
