//! `security.istio.io`: served as `v1` and `v1beta1` with one schema; `v1` is stored.

pub mod authorization_policy;
pub mod peer_authentication;
pub mod request_authentication;

/// The API group of every kind in this module.
pub const GROUP: &str = "security.istio.io";
/// Every version served, newest (the stored one) first.
pub const VERSIONS: &[&str] = &["v1", "v1beta1"];
