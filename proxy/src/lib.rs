//! `mesh-proxy`: the mesh's sidecar data plane.
//!
//! The module map is flat on purpose: `init` installs the capture rules; `listener` accepts the
//! captured connections (outbound 15001, inbound 15006) and asks `route` how to carry each one;
//! `tcp` and `http` carry them; `admin` answers on 15000/15021, where `probes` runs the app's
//! rewritten probes; `drain` makes shutdown graceful; `sys` holds the only raw system calls.
//! `config` reads `--config-file` or the controller's config stream, compiles it with
//! `common::compile` and swaps the result in atomically; `routing` routes connections and
//! requests by those tables behind the traits of `route`; `reason` names why the proxy answered
//! a request itself; `policy` holds each route's timeouts, retries, faults and mirrors;
//! `balance` picks a cluster's endpoint (DestinationRule `loadBalancer`) and `outlier` ejects
//! endpoints that keep failing (`outlierDetection`); `sni` reads TLS server names. Without a
//! config every connection is passed through to its original destination, as Istio does for
//! unknown destinations.

pub mod admin;
pub mod balance;
pub mod breaker;
pub mod cli;
pub mod config;
pub mod drain;
pub mod http;
pub mod init;
pub mod listener;
pub mod logging;
pub mod outlier;
pub mod policy;
pub mod probes;
pub mod proxy;
pub mod reason;
pub mod route;
pub mod routing;
pub mod sni;
pub mod stats;
pub mod sys;
pub mod tcp;
pub mod tls;
