//! Clusters as the data path reads them: where traffic for a (host, subset, port) goes and
//! with which DestinationRule policy.

use std::fmt;

use serde::{Serialize, Serializer};

use super::display_option;
use crate::api::networking::destination_rule::TrafficPolicy;
use crate::registry::{EndpointAddress, MeshLocation, Protocol, Resolution};
use crate::validate::ObjectRef;

/// Names a cluster: a service host, a subset of it (empty for all endpoints) and a port.
/// Written as Istio names clusters: `outbound|9080|v1|reviews.default.svc.cluster.local`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterKey {
    /// The destination host, fully qualified and lowercase.
    pub host: String,
    /// The subset name, or empty.
    pub subset: String,
    /// The service port.
    pub port: u16,
}

impl ClusterKey {
    /// A key for `host` (already fully qualified), `subset` (may be empty) and `port`.
    pub fn new(host: impl Into<String>, subset: impl Into<String>, port: u16) -> Self {
        Self { host: host.into(), subset: subset.into(), port }
    }
}

impl fmt::Display for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "outbound|{}|{}|{}", self.port, self.subset, self.host)
    }
}

impl Serialize for ClusterKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Whether a cluster can take traffic, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ClusterStatus {
    /// The host is known; the subset (if any) is defined. It may still have no ready endpoint.
    Known,
    /// A route names a subset no visible DestinationRule defines: the proxy answers 503.
    SubsetNotFound,
    /// The host is not a service this proxy sees: the proxy answers 503 (`no_healthy_upstream`)
    /// or passes the connection through, as the outbound policy says.
    UnknownHost,
}

/// Where traffic for one (host, subset, port) goes, and how.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cluster {
    /// Its key.
    pub key: ClusterKey,
    /// Whether it can take traffic.
    pub status: ClusterStatus,
    /// The service port's protocol (`Unknown` for an unknown host).
    pub protocol: Protocol,
    /// Whether the endpoints are in the mesh (auto mTLS applies) or outside.
    pub location: MeshLocation,
    /// How endpoints are found; `Passthrough` means "the address dialled".
    pub resolution: Resolution,
    /// The ready endpoints that carry the subset's labels, with the port to connect to.
    pub endpoints: Vec<ClusterEndpoint>,
    /// The DestinationRule's policy, resolved for this subset and port.
    pub policy: TrafficPolicy,
    /// The DestinationRule the policy and subset come from.
    #[serde(serialize_with = "display_option")]
    pub destination_rule: Option<ObjectRef>,
    /// The service's short name, for messages (`reviews`).
    pub service_name: String,
}

impl Cluster {
    /// Why the cluster cannot take traffic, as the proxy reports it in its 503 response
    /// (`subset_not_found reviews/v3`, `no_healthy_upstream`); `None` when it has ready
    /// endpoints or resolves them itself.
    pub fn unavailable_reason(&self) -> Option<String> {
        match self.status {
            ClusterStatus::SubsetNotFound => {
                Some(format!("subset_not_found {}/{}", self.service_name, self.key.subset))
            }
            ClusterStatus::UnknownHost => Some("no_healthy_upstream".to_string()),
            ClusterStatus::Known if self.endpoints.is_empty() && self.resolution != Resolution::Passthrough => {
                Some("no_healthy_upstream".to_string())
            }
            ClusterStatus::Known => None,
        }
    }
}

/// One endpoint of a cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterEndpoint {
    /// Where to connect.
    pub address: EndpointAddress,
    /// The port on the endpoint.
    pub port: u16,
    /// Relative share of traffic.
    pub weight: u32,
    /// `region/zone/subzone`, empty when unknown.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub locality: String,
    /// The identity to expect in mTLS (service account); empty when unknown.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_account: String,
    /// `Some` when the proxy speaks mesh mutual TLS to this endpoint: the SPIFFE identity its
    /// certificate must carry (empty: any identity of the trust domain). Set by the
    /// DestinationRule's `tls.mode: ISTIO_MUTUAL`, or, when the rule says nothing, by auto
    /// mTLS: the endpoint's pod runs a sidecar (label `security.istio.io/tlsMode: istio`) and
    /// the service is in the mesh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtls_identity: Option<String>,
}
