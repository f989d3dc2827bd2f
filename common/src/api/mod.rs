//! Istio's API (`networking.istio.io`, `security.istio.io`) as Rust types.
//!
//! Field names, defaults and value formats are Istio's, so YAML from Istio's documentation
//! deserializes unchanged. Every spec struct denies unknown fields: a typo is an error, never a
//! silently ignored setting.

pub mod grpc_status;
pub mod networking;
pub mod security;
pub mod status;
pub mod types;

pub use status::MeshStatus;
pub use types::{Duration, HeaderOperations, Headers, Percent, PortSelector, StringMatch, WorkloadSelector};
