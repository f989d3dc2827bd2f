//! The mesh's certificate authority.
//!
//! - [`authority`]: the root (self-signed, ECDSA P-256) and leaf signing;
//! - [`root`]: the root's Secret in the controller's namespace, created once for all replicas;
//! - [`publish`]: the root as ConfigMap `istio-ca-root-cert` in every namespace;
//! - [`review`] and [`policy`]: who the caller is (TokenReview) and which names it may have;
//! - [`service`]: the gRPC service `mesh.ca.v1.CertificateAuthority`;
//! - [`serving`]: the controller's own serving certificate (15012, the webhook), renewed;
//! - [`client`]: the caller's end (in `proto`, shared with the proxy), for `mesh-controller
//!   sign` and the injector.

pub mod authority;
/// The caller's end of the CA, shared with the proxy and the injector.
pub use proto::ca_client as client;
pub mod policy;
pub mod publish;
pub mod review;
pub mod root;
pub mod service;
pub mod serving;
