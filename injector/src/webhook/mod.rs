//! The mutating admission webhook: HTTPS on 15017, certificate, and the cluster calls it needs.

pub mod certs;
pub mod cluster;
pub mod mesh_ca;
pub mod renew;
pub mod review;
pub mod server;
