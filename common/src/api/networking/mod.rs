//! `networking.istio.io`: served as `v1`, `v1beta1` and `v1alpha3` with one schema; `v1` is stored.

pub mod destination_rule;
pub mod gateway;
pub mod service_entry;
pub mod sidecar;
pub mod virtual_service;
pub mod workload_entry;

/// The API group of every kind in this module.
pub const GROUP: &str = "networking.istio.io";
/// Every version served, newest (the stored one) first.
pub const VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];
