//! `mesh-proxy`: the mesh's sidecar data plane.
//!
//! The module map is flat on purpose: `init` installs the capture rules; `listener` accepts the
//! captured connections (outbound 15001, inbound 15006) and asks `route` how to carry each one;
//! `tcp` and `http` carry them; `admin` answers on 15000/15021; `drain` makes shutdown graceful;
//! `sys` holds the only raw system calls. Routing tables (from `common::compile`) will plug in
//! behind the traits in `route`; until then every connection is passed through to its original
//! destination, as Istio does for unknown destinations.

pub mod admin;
pub mod cli;
pub mod drain;
pub mod http;
pub mod init;
pub mod listener;
pub mod logging;
pub mod proxy;
pub mod route;
pub mod stats;
pub mod sys;
pub mod tcp;
