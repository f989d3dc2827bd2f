//! Why the proxy answered a request itself (or closed a connection) instead of forwarding it.
//!
//! Every such answer carries `x-mesh-reason: <code> [detail]`, is logged with the resource that
//! led there, and bumps the counter of its code, so "why did I get a 503" has an answer on
//! the wire, in the log and in `/stats`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The response header that says why the proxy answered on its own.
pub const REASON_HEADER: &str = "x-mesh-reason";

/// The reasons, as their codes appear in `x-mesh-reason` and `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No virtual host or no route matched the request (404), or a connection no route takes.
    NoRoute,
    /// The destination cluster has no ready endpoint, or its host is unknown (503).
    NoHealthyUpstream,
    /// A route names a subset no DestinationRule defines (503).
    SubsetNotFound,
    /// `REGISTRY_ONLY` and a destination the registry does not know (502).
    RegistryOnly,
    /// Connecting to the chosen endpoint failed (503).
    ConnectFailure,
    /// The upstream reset or closed before answering (503).
    UpstreamReset,
    /// The request names no host, so it cannot be routed (400).
    MissingHost,
    /// The cluster's endpoints are DNS names, which this proxy does not resolve yet (503).
    DnsUnsupported,
    /// The route's `timeout` (or the last attempt's `perTryTimeout`) passed before the
    /// upstream answered (504).
    Timeout,
    /// The route's `fault.abort` answered the request (its `httpStatus`, or 200 with a
    /// `grpc-status`).
    FaultAbort,
    /// A limit of the cluster's `connectionPool` was reached (503): the circuit breaker.
    Overflow,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::NoRoute,
        Reason::NoHealthyUpstream,
        Reason::SubsetNotFound,
        Reason::RegistryOnly,
        Reason::ConnectFailure,
        Reason::UpstreamReset,
        Reason::MissingHost,
        Reason::DnsUnsupported,
        Reason::Timeout,
        Reason::FaultAbort,
        Reason::Overflow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoRoute => "no_route",
            Reason::NoHealthyUpstream => "no_healthy_upstream",
            Reason::SubsetNotFound => "subset_not_found",
            Reason::RegistryOnly => "registry_only",
            Reason::ConnectFailure => "connect_failure",
            Reason::UpstreamReset => "upstream_reset",
            Reason::MissingHost => "missing_host",
            Reason::DnsUnsupported => "dns_unsupported",
            Reason::Timeout => "timeout",
            Reason::FaultAbort => "fault_abort",
            Reason::Overflow => "overflow",
        }
    }

    /// A short body for the local reply, so curl users see the reason too.
    pub fn body(self) -> &'static [u8] {
        match self {
            Reason::NoRoute => b"no route\n",
            Reason::NoHealthyUpstream => b"no healthy upstream\n",
            Reason::SubsetNotFound => b"subset not found\n",
            Reason::RegistryOnly => b"destination not in the registry (REGISTRY_ONLY)\n",
            Reason::ConnectFailure => b"upstream connect error\n",
            Reason::UpstreamReset => b"upstream connect error or disconnect/reset before headers\n",
            Reason::MissingHost => b"missing host\n",
            Reason::DnsUnsupported => b"DNS endpoints are not resolved by this proxy yet\n",
            Reason::Timeout => b"upstream request timeout\n",
            Reason::FaultAbort => b"fault filter abort\n",
            Reason::Overflow => b"upstream connect error: circuit breaker overflow\n",
        }
    }

    fn index(self) -> usize {
        Reason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// One counter per reason; relaxed atomics, read by the admin server.
#[derive(Debug, Default)]
pub struct ReasonCounters([AtomicU64; Reason::ALL.len()]);

impl ReasonCounters {
    pub fn count(&self, reason: Reason) {
        self.0[reason.index()].fetch_add(1, Relaxed);
    }

    pub fn get(&self, reason: Reason) -> u64 {
        self.0[reason.index()].load(Relaxed)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> =
            Reason::ALL.iter().map(|r| (r.as_str().to_string(), self.get(*r).into())).collect();
        map.into()
    }
}
