//! One endpoint of a cluster as the data path sees it: where it is, its weight, and the state
//! balancing and outlier detection keep for it (requests in flight, failures in a row, its
//! ejection).
//!
//! The address and weight belong to one config; the state is shared, by `Arc`, with every
//! later config that has the same cluster and address, so a config push neither forgets an
//! ejection nor loses count of requests in flight.

use crate::outlier::{EndpointHealth, Millis};
use crate::route::Dial;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub struct Endpoint {
    pub address: SocketAddr,
    /// Relative share of traffic (at least 1), where the balancer honours weights.
    pub weight: u32,
    /// The SPIFFE ID its mutual TLS must prove, when the proxy speaks mTLS to it.
    pub mtls: Option<Arc<str>>,
    pub state: Arc<EndpointState>,
}

/// What outlasts a config swap.
#[derive(Debug, Default)]
pub struct EndpointState {
    /// Requests sent and not finished: from the send until the response body ends or the
    /// attempt fails. LEAST_REQUEST compares these.
    active: AtomicU64,
    pub health: EndpointHealth,
}

impl Endpoint {
    /// An endpoint with `state` carried over from a previous config, or fresh.
    pub fn new(address: SocketAddr, weight: u32, state: Option<Arc<EndpointState>>) -> Self {
        Endpoint { address, weight: weight.max(1), mtls: None, state: state.unwrap_or_default() }
    }

    /// The endpoint spoken to with mutual TLS, proving `identity`.
    pub fn with_mtls(self, identity: Option<Arc<str>>) -> Self {
        Endpoint { mtls: identity, ..self }
    }

    /// How to connect to it.
    pub fn dial(&self) -> Dial {
        Dial { address: self.address, mtls: self.mtls.clone() }
    }

    pub fn active_requests(&self) -> u64 {
        self.state.active.load(Relaxed)
    }

    /// Counts a request as active until the guard drops.
    pub fn start_request(&self) -> ActiveRequest {
        self.state.active.fetch_add(1, Relaxed);
        ActiveRequest(self.state.clone())
    }

    /// Ejected now; reads the clock only when an ejection is set.
    pub fn is_ejected(&self, now: &mut Option<Millis>) -> bool {
        self.state.health.maybe_ejected() && self.state.health.is_ejected(*now.get_or_insert_with(crate::outlier::now))
    }
}

/// One request in flight to an endpoint; dropping it ends the request.
#[derive(Debug)]
pub struct ActiveRequest(Arc<EndpointState>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_active_until_its_guard_drops_and_state_is_shared_across_configs() {
        let first = Endpoint::new("127.0.0.1:80".parse().unwrap(), 0, None);
        assert_eq!(first.weight, 1, "weight 0 is read as 1");
        let guard = first.start_request();
        let second = Endpoint::new(first.address, 3, Some(first.state.clone()));
        assert_eq!(second.active_requests(), 1, "the next config sees the request in flight");
        drop(guard);
        assert_eq!((first.active_requests(), second.active_requests()), (0, 0));
    }
}
