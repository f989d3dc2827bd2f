//! `mesh-controller`: the control plane.
//!
//! It watches the Kubernetes API (Istio kinds, Services, Endpoints or EndpointSlices, Pods,
//! Namespaces) with reflectors, keeps one registry and one set of validated resources in
//! memory, and streams to every proxy only what that proxy can see, as versioned incremental
//! updates that the proxy ACKs or NACKs. It also serves the validating admission webhook and
//! Prometheus metrics. See ARCHITECTURE.md for where it sits.
#![forbid(unsafe_code)]

pub mod assemble;
pub mod ca;
pub mod config;
pub mod leader;
pub mod metrics;
pub mod monitoring;
pub mod probe;
pub mod run;
pub mod status;
pub mod watch;
pub mod webhook;
