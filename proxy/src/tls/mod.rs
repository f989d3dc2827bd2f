//! Mutual TLS between sidecars: Istio's auto mTLS, on the connection the sidecars make to each
//! other.
//!
//! The proxy holds its workload certificate (a SPIFFE ID in a URI SAN), its key and the mesh
//! roots as [`Credentials`]: one rustls client and one server configuration, built once per
//! certificate and swapped in whole ([`MeshTls`]). New handshakes use the newest credentials;
//! established connections keep the ones they were made with, so rotation drops nothing.
//!
//! - Outbound ([`connect`]): an endpoint the compiler marked for mTLS (its pod runs a sidecar,
//!   or its DestinationRule says `ISTIO_MUTUAL`) is dialled with TLS offering the ALPN
//!   protocol `istio`, presenting the proxy's certificate, and accepted only if its chain leads
//!   to a mesh root and its SPIFFE ID is the one the registry expects for it.
//! - Inbound ([`accept`]): a connection whose ClientHello offers an `istio` ALPN protocol is a
//!   peer sidecar's; it is terminated here, its client certificate checked against the roots,
//!   and what it carries is served as if it had arrived in plaintext. Anything else (plaintext,
//!   or an app's own TLS) is served as before: Istio's PERMISSIVE mode.
//! - Where credentials come from: [`files`], the layout Istio mounts at `/etc/certs`, re-read
//!   when it changes; or [`ca`], the mesh CA on the controller, asked again before expiry.

pub mod accept;
pub mod ca;
pub mod connect;
mod credentials;
pub mod files;
pub mod rewind;
mod verify;

pub use credentials::{Credentials, CredentialsError, MeshTls};
pub use rewind::Rewind;
pub use verify::spiffe_id;

/// The ALPN protocol a sidecar offers when it originates mutual TLS (Istio's name for its
/// TCP and HTTP peers alike); the inbound side takes a ClientHello offering a protocol that
/// starts with `istio` for mesh traffic.
pub const MESH_ALPN: &[u8] = b"istio";
