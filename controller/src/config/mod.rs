//! The config stream: what each proxy may see, and how changes reach it.
//!
//! - [`world`]: every sendable entry (Istio resources, registry services and endpoints) with its
//!   audience, rebuilt per debounced batch of changes and diffed against the previous one;
//! - [`visibility`] and [`delta`]: pure functions deciding who sees what, and what one proxy is
//!   sent after a change;
//! - [`hub`]: the current generation, a short history for resuming proxies, connected proxies;
//! - [`server`] and [`session`]: the gRPC service and each proxy's stream;
//! - [`parts`]: queued updates turned into messages as the stream is read, in bounded parts;
//! - [`transport`]: HTTP/2 on the config ports, with what one connection may hold bounded.

pub mod delta;
pub mod hub;
pub mod parts;
pub mod server;
pub mod session;
pub mod transport;
pub mod visibility;
pub mod world;

#[cfg(test)]
mod tests;
