//! Passive health checking: endpoints that keep failing are taken out of the balancing pool
//! for a while, then let back in.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::Duration;

/// When an endpoint counts as failing, and for how long it is ejected.
///
/// Counters are per endpoint and per proxy: each proxy decides on its own what it has seen.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Count failures that happen locally (connect errors, resets, timeouts) apart from
    /// responses the endpoint sent, with `consecutiveLocalOriginFailures` as their threshold.
    /// Off by default: both kinds count together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_external_local_origin_errors: Option<bool>,
    /// With `splitExternalLocalOriginErrors`, eject after this many local failures in a row.
    /// Istio's default is 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<u32>,
    /// Eject after this many gateway errors in a row (HTTP 502, 503, 504, and for TCP a failed
    /// connection). 0 or unset disables this check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// Eject after this many 5xx responses in a row (and for TCP, connection failures).
    /// Istio's default is 5; 0 disables this check.
    #[serde(default, rename = "consecutive5xxErrors", skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx_errors: Option<u32>,
    /// Deprecated: read as `consecutiveGatewayErrors` (502, 503, 504 only), and then the 5xx
    /// check is off unless `consecutive5xxErrors` is set too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_errors: Option<i32>,
    /// How often endpoints are checked against the thresholds (and ejected ones let back).
    /// Istio's default is 10s; at least 1ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// How long an endpoint stays ejected the first time; each further ejection of the same
    /// endpoint multiplies it. Istio's default is 30s; at least 1ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// At most this percentage of the pool is ejected at once (at least one endpoint may
    /// always be). Istio's default is 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<i32>,
    /// Ejection stops while fewer than this percentage of the pool is healthy, so a failing
    /// service keeps all its endpoints. Istio's default is 0 (ejection always allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<i32>,
}

impl OutlierDetection {
    /// Istio's default sweep interval.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(10_000);
    /// Istio's default first ejection time.
    pub const DEFAULT_BASE_EJECTION_TIME: Duration = Duration::from_millis(30_000);
    /// Istio's default cap on the share of endpoints ejected.
    pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;
    /// Istio's default threshold of consecutive 5xx responses.
    pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
    /// Istio's default threshold of consecutive local-origin failures.
    pub const DEFAULT_CONSECUTIVE_LOCAL_ORIGIN: u32 = 5;

    /// The 5xx threshold in force, `None` when that check is off: `consecutive5xxErrors` if
    /// set (0 is off); else off when the deprecated `consecutiveErrors` is set; else 5.
    pub fn consecutive_5xx_threshold(&self) -> Option<u32> {
        match self.consecutive_5xx_errors {
            Some(0) => None,
            Some(count) => Some(count),
            None if self.consecutive_errors.is_some_and(|count| count > 0) => None,
            None => Some(Self::DEFAULT_CONSECUTIVE_5XX),
        }
    }

    /// The gateway-error threshold in force, `None` when that check is off:
    /// `consecutiveGatewayErrors` if set (0 is off), else the deprecated `consecutiveErrors`.
    pub fn consecutive_gateway_threshold(&self) -> Option<u32> {
        match self.consecutive_gateway_errors {
            Some(0) => None,
            Some(count) => Some(count),
            None => self.consecutive_errors.and_then(|count| u32::try_from(count).ok()).filter(|count| *count > 0),
        }
    }

    /// The local-origin failure threshold, `None` unless local failures are counted apart.
    pub fn local_origin_threshold(&self) -> Option<u32> {
        if self.split_external_local_origin_errors != Some(true) {
            return None;
        }
        Some(self.consecutive_local_origin_failures.unwrap_or(Self::DEFAULT_CONSECUTIVE_LOCAL_ORIGIN))
            .filter(|count| *count > 0)
    }

    /// The sweep interval, Istio's default when unset.
    pub fn interval_or_default(&self) -> Duration {
        self.interval.unwrap_or(Self::DEFAULT_INTERVAL)
    }

    /// The first ejection time, Istio's default when unset.
    pub fn base_ejection_time_or_default(&self) -> Duration {
        self.base_ejection_time.unwrap_or(Self::DEFAULT_BASE_EJECTION_TIME)
    }

    /// The cap on ejected endpoints in percent, Istio's default when unset.
    pub fn max_ejection_percent_or_default(&self) -> u32 {
        self.max_ejection_percent.map_or(Self::DEFAULT_MAX_EJECTION_PERCENT, |value| value.clamp(0, 100) as u32)
    }

    /// The healthy share below which ejection stops, in percent (0 when unset).
    pub fn min_health_percent_or_default(&self) -> u32 {
        self.min_health_percent.map_or(0, |value| value.clamp(0, 100) as u32)
    }
}
