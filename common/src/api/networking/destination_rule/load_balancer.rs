//! How a proxy picks one endpoint of a service for each request or connection.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::Duration;

/// The balancing algorithm, either a simple one or a consistent hash, plus locality and
/// warm-up tuning.
///
/// Istio's `simple` and `consistentHash` are a protobuf `oneof`; both are optional fields here
/// and validation reports a rule that sets both, with its path.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancerSettings {
    /// A stateless algorithm. When neither this nor `consistentHash` is set, requests are
    /// spread with least-request balancing, Istio's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    /// Sends requests with the same key (a header, cookie, source IP or query parameter) to
    /// the same endpoint for as long as the set of endpoints does not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Prefers endpoints in the caller's region/zone/subzone and says where traffic goes when
    /// they fail. Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<LocalityLbSetting>,
    /// A new endpoint receives a share of traffic that grows linearly over this long, instead
    /// of its full share at once. Only for ROUND_ROBIN and LEAST_REQUEST. Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_duration_secs: Option<Duration>,
    /// Finer control of the same slow start: its length, the share a new endpoint starts at
    /// and how fast it grows. Not supported yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<WarmupConfiguration>,
}

/// A stateless balancing algorithm, with Istio's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    /// No choice made: the proxy uses its default, LEAST_REQUEST.
    #[default]
    Unspecified,
    /// A uniformly random endpoint; good for large pools without health state.
    Random,
    /// Connect to the address the caller asked for, without balancing; for traffic whose
    /// destination is already chosen (original destination).
    Passthrough,
    /// Each endpoint in turn.
    RoundRobin,
    /// Of two endpoints picked at random, the one with fewer requests in flight.
    LeastRequest,
    /// Deprecated name of LEAST_REQUEST, read as LEAST_REQUEST.
    LeastConn,
}

impl SimpleLb {
    /// The algorithm actually applied: `UNSPECIFIED` and the deprecated `LEAST_CONN` mean
    /// `LEAST_REQUEST`, as in Istio.
    pub fn effective(self) -> SimpleLb {
        match self {
            SimpleLb::Unspecified | SimpleLb::LeastConn => SimpleLb::LeastRequest,
            other => other,
        }
    }
}

/// Consistent hashing: what the hash key is and how the hash ring is built.
///
/// The key kinds (`httpHeaderName`, `httpCookie`, `useSourceIp`, `httpQueryParameterName`) are
/// a `oneof` in Istio, as are the ring kinds (`ringHash`, `maglev`, and the deprecated
/// `minimumRingSize`); validation requires exactly one key and at most one ring.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConsistentHashLb {
    /// Hash on the value of this request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    /// Hash on this cookie; when a request lacks it, the proxy sets it on the response so
    /// later requests stick to the same endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HttpCookie>,
    /// Hash on the caller's IP address (set to `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_source_ip: Option<bool>,
    /// Hash on the value of this query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_query_parameter_name: Option<String>,
    /// Use a ring hash (Ketama); each endpoint owns many points on a ring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    /// Use Maglev hashing: a fixed lookup table, faster to build and to look up than a ring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<MagLev>,
    /// Deprecated: the ring size of a ring hash; use `ringHash.minimumRingSize`. Read as that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

impl ConsistentHashLb {
    /// How many hash key kinds are set; a valid policy sets exactly one.
    pub fn keys_set(&self) -> usize {
        [
            self.http_header_name.is_some(),
            self.http_cookie.is_some(),
            self.use_source_ip.is_some(),
            self.http_query_parameter_name.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count()
    }

    /// The minimum ring size of a ring hash, from `ringHash` or the deprecated field; Istio's
    /// default is 1024 entries.
    pub fn ring_size(&self) -> u64 {
        self.ring_hash.as_ref().and_then(|ring| ring.minimum_ring_size).or(self.minimum_ring_size).unwrap_or(1024)
    }
}

/// The cookie a consistent hash keys on.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpCookie {
    /// The cookie's name. Required.
    #[serde(default)]
    pub name: String,
    /// The path the proxy gives a cookie it sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How long a cookie the proxy sets lives; without it the proxy never sets the cookie,
    /// and `0s` sets a session cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// Extra attributes of a cookie the proxy sets (`SameSite=Strict`, say). Not supported yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<HttpCookieAttribute>,
}

/// One attribute of a generated cookie.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpCookieAttribute {
    /// The attribute's name, such as `SameSite`.
    #[serde(default)]
    pub name: String,
    /// The attribute's value, such as `Strict`; empty for a flag attribute.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

/// Ring hash tuning.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RingHash {
    /// The ring has at least this many points; more points spread load more evenly across
    /// endpoints at the cost of memory. Istio's default is 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// Maglev tuning.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MagLev {
    /// The size of the lookup table, a prime number; larger tables move fewer keys when
    /// endpoints change. Istio's default is 65537.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u64>,
}

/// Locality-aware balancing: where traffic from a locality goes, and where it fails over to.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalityLbSetting {
    /// Weighted shares of traffic from a locality to other localities; exclusive with
    /// `failover`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribute: Vec<LocalityDistribute>,
    /// The region traffic from a region moves to when its own endpoints are unhealthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityFailover>,
    /// Ordered label keys (such as `topology.kubernetes.io/zone`): endpoints sharing more of
    /// them with the caller, in order, are preferred.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    /// Turns locality-aware balancing on or off for this destination, overriding the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Shares of the traffic from one locality.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalityDistribute {
    /// The callers' locality, `region/zone/subzone`, where a trailing part may be `*`.
    #[serde(default)]
    pub from: String,
    /// Destination locality to the percentage of traffic it gets; the weights add up to 100.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub to: BTreeMap<String, u32>,
}

/// Where a region's traffic fails over to.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalityFailover {
    /// The region whose endpoints are unhealthy.
    #[serde(default)]
    pub from: String,
    /// The region that takes its traffic.
    #[serde(default)]
    pub to: String,
}

/// Slow start for new endpoints.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WarmupConfiguration {
    /// How long a new endpoint's share keeps growing. Required when warm-up is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    /// The share, in percent of its full weight, a new endpoint starts at; Istio's default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_percent: Option<f64>,
    /// How the share grows: 1.0 (the default) linearly, larger values slower at first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggression: Option<f64>,
}
