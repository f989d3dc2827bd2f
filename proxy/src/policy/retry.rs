//! When a failed attempt is tried again: Istio's `retries` (`attempts`, `perTryTimeout`,
//! `retryOn`, `backoff`, `retryIgnorePreviousHosts`) with Envoy's condition names, and the
//! default Istio applies to routes that set none.
//!
//! The difference from Istio: its default (2 retries on `connect-failure`, `refused-stream`,
//! `unavailable`, `cancelled` and 503) replays any request, POST included. Here the default
//! replays only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE); a POST or PATCH
//! is sent again by default only when the upstream cannot have seen it (the connection failed,
//! or HTTP/2 `REFUSED_STREAM`). A `retries` written by the user applies to every method.

use common::api::networking::virtual_service::HttpRetry;
use http::{HeaderMap, Method, StatusCode};
use std::time::Duration;

/// Retry conditions, as bits.
mod on {
    pub const FIVE_XX: u16 = 1;
    pub const GATEWAY_ERROR: u16 = 1 << 1;
    pub const RESET: u16 = 1 << 2;
    pub const CONNECT_FAILURE: u16 = 1 << 3;
    pub const RETRIABLE_4XX: u16 = 1 << 4;
    pub const REFUSED_STREAM: u16 = 1 << 5;
    pub const RESET_BEFORE_REQUEST: u16 = 1 << 6;
    pub const RATE_LIMITED: u16 = 1 << 7;
}

/// gRPC status codes a `retryOn` may name.
const GRPC_CONDITIONS: [(&str, u8); 5] =
    [("cancelled", 1), ("deadline-exceeded", 4), ("resource-exhausted", 8), ("internal", 13), ("unavailable", 14)];

/// What `retryOn` retries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RetryOn {
    flags: u16,
    /// Status codes listed in `retryOn` (Istio turns each into a `retriable-status-codes` entry).
    statuses: Vec<u16>,
    /// Bit `n` set: retry on `grpc-status: n`.
    grpc: u32,
}

impl RetryOn {
    /// Reads Envoy's comma-separated list. Conditions that need settings Istio has no field
    /// for (`retriable-headers`) or transports the proxy does not speak
    /// (`http3-post-connect-failure`) are accepted and never fire.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut on = RetryOn::default();
        for condition in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let flag = match condition {
                "5xx" => on::FIVE_XX,
                "gateway-error" => on::GATEWAY_ERROR,
                "reset" => on::RESET,
                "reset-before-request" => on::RESET_BEFORE_REQUEST,
                "connect-failure" => on::CONNECT_FAILURE,
                "retriable-4xx" => on::RETRIABLE_4XX,
                "refused-stream" => on::REFUSED_STREAM,
                "envoy-ratelimited" => on::RATE_LIMITED,
                "retriable-status-codes" | "retriable-headers" | "http3-post-connect-failure" => 0,
                other => {
                    if let Some((_, code)) = GRPC_CONDITIONS.iter().find(|(name, _)| *name == other) {
                        on.grpc |= 1 << code;
                        0
                    } else if let Ok(code) = other.parse::<u16>()
                        && (100..=599).contains(&code)
                    {
                        on.statuses.push(code);
                        0
                    } else {
                        return Err(format!("retryOn: {other:?} is not a retry condition"));
                    }
                }
            };
            on.flags |= flag;
        }
        Ok(on)
    }

    fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

/// Why an attempt got no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No connection: the request was not sent.
    Connect,
    /// HTTP/2 `REFUSED_STREAM`: sent, but not processed.
    Refused,
    /// The connection or stream ended before a response.
    Reset,
    /// No response within `perTryTimeout`.
    PerTryTimeout,
}

/// The retry policy of one route.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 disables retries.
    pub retries: u32,
    /// Time allowed to each attempt until its response headers.
    pub per_try_timeout: Option<Duration>,
    pub on: RetryOn,
    /// Written by the user, so it applies to every method; Istio's default does not.
    pub written: bool,
    /// The first backoff interval, doubled per retry up to ten times itself (Envoy's rule).
    pub backoff: Duration,
    /// Retries prefer endpoints not tried yet for this request (`retryIgnorePreviousHosts`).
    pub avoid_tried: bool,
}

/// Envoy's default first backoff interval.
const BACKOFF_BASE: Duration = Duration::from_millis(25);

impl RetryPolicy {
    /// What Istio configures on a route with no `retries`.
    pub fn istio_default() -> Self {
        RetryPolicy {
            retries: 2,
            per_try_timeout: None,
            on: RetryOn::parse("connect-failure,refused-stream,unavailable,cancelled,503").expect("valid"),
            written: false,
            backoff: BACKOFF_BASE,
            avoid_tried: true,
        }
    }

    /// The user's `retries`. `retryRemoteLocalities` is accepted and has no effect yet: the
    /// proxy does not know localities, so every endpoint is a candidate.
    pub fn written(retry: &HttpRetry) -> Result<Self, String> {
        Ok(RetryPolicy {
            retries: u32::try_from(retry.attempts).map_err(|_| format!("attempts: {} is negative", retry.attempts))?,
            per_try_timeout: retry.per_try_timeout.map(|t| t.get()).filter(|t| !t.is_zero()),
            on: RetryOn::parse(&retry.retry_on)?,
            written: true,
            backoff: retry.backoff.map(|b| b.get()).filter(|b| !b.is_zero()).unwrap_or(BACKOFF_BASE),
            avoid_tried: retry.retry_ignore_previous_hosts.unwrap_or(true),
        })
    }

    /// Whether `method` may be replayed for reasons other than "the upstream never saw it".
    fn may_replay(&self, method: &Method) -> bool {
        self.written || is_idempotent(method)
    }

    /// Whether an attempt that failed this way is tried again.
    pub fn retries_failure(&self, failure: Failure, method: &Method) -> bool {
        let on = &self.on;
        match failure {
            Failure::Connect => {
                on.has(on::CONNECT_FAILURE | on::RESET_BEFORE_REQUEST)
                    || (self.may_replay(method) && on.has(on::FIVE_XX | on::GATEWAY_ERROR | on::RESET))
            }
            Failure::Refused => {
                on.has(on::REFUSED_STREAM) || (self.may_replay(method) && on.has(on::FIVE_XX | on::RESET))
            }
            Failure::Reset | Failure::PerTryTimeout => {
                self.may_replay(method) && on.has(on::FIVE_XX | on::GATEWAY_ERROR | on::RESET)
            }
        }
    }

    /// Whether a response with this status and headers is tried again (gRPC statuses are read
    /// from the headers: a trailers-only response).
    pub fn retries_response(&self, status: StatusCode, headers: &HeaderMap, method: &Method) -> bool {
        if !self.may_replay(method) {
            return false;
        }
        let on = &self.on;
        let code = status.as_u16();
        (on.has(on::FIVE_XX) && status.is_server_error())
            || (on.has(on::GATEWAY_ERROR) && matches!(code, 502..=504))
            || (on.has(on::RETRIABLE_4XX) && code == 409)
            || (on.has(on::RATE_LIMITED) && headers.contains_key("x-envoy-ratelimited"))
            || on.statuses.contains(&code)
            || (on.grpc != 0 && grpc_status(headers).is_some_and(|c| c < 32 && on.grpc & (1 << c) != 0))
    }

    /// How long to wait before retry number `retry` (1 for the first): a random time up to
    /// `(2^retry - 1) × backoff`, at most ten times `backoff` (Envoy's jittered exponential
    /// backoff: 0-25 ms, 0-75 ms, 0-175 ms, then 0-250 ms by default).
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = (1u32 << retry.min(16)) - 1;
        let ceiling = self.backoff.saturating_mul(factor).min(self.backoff.saturating_mul(10));
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

/// Methods that mean the same when sent twice (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(retry_on: &str) -> RetryPolicy {
        RetryPolicy::written(&HttpRetry { attempts: 3, retry_on: retry_on.into(), ..Default::default() }).unwrap()
    }

    #[test]
    fn status_codes_in_retry_on_are_retried() {
        let policy = written("connect-failure,503");
        let none = HeaderMap::new();
        assert!(policy.retries_response(StatusCode::SERVICE_UNAVAILABLE, &none, &Method::GET));
        assert!(!policy.retries_response(StatusCode::BAD_GATEWAY, &none, &Method::GET));
        assert!(written("gateway-error").retries_response(StatusCode::BAD_GATEWAY, &none, &Method::POST));
        assert!(written("5xx").retries_response(StatusCode::INTERNAL_SERVER_ERROR, &none, &Method::GET));
        assert!(written("retriable-4xx").retries_response(StatusCode::CONFLICT, &none, &Method::GET));
        assert!(!written("retriable-4xx").retries_response(StatusCode::NOT_FOUND, &none, &Method::GET));
        assert!(RetryOn::parse("connect-failure,bogus").is_err());
    }

    #[test]
    fn grpc_statuses_are_read_from_trailers_only_responses() {
        let policy = written("unavailable,deadline-exceeded");
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", "14".parse().unwrap());
        assert!(policy.retries_response(StatusCode::OK, &headers, &Method::POST));
        headers.insert("grpc-status", "13".parse().unwrap());
        assert!(!policy.retries_response(StatusCode::OK, &headers, &Method::POST));
        headers.insert("grpc-status", "4".parse().unwrap());
        assert!(policy.retries_response(StatusCode::OK, &headers, &Method::POST));
    }

    #[test]
    fn the_default_replays_a_post_only_when_the_upstream_never_saw_it() {
        let policy = RetryPolicy::istio_default();
        let none = HeaderMap::new();
        assert_eq!(policy.retries, 2);
        assert!(policy.retries_response(StatusCode::SERVICE_UNAVAILABLE, &none, &Method::GET));
        assert!(!policy.retries_response(StatusCode::SERVICE_UNAVAILABLE, &none, &Method::POST));
        assert!(policy.retries_failure(Failure::Connect, &Method::POST));
        assert!(policy.retries_failure(Failure::Refused, &Method::PATCH));
        assert!(!policy.retries_failure(Failure::Reset, &Method::GET), "reset is not in Istio's default");
        assert!(!written("").retries_failure(Failure::Connect, &Method::GET));
        assert!(written("5xx").retries_failure(Failure::PerTryTimeout, &Method::POST));
    }

    #[test]
    fn backoff_grows_with_jitter_up_to_ten_times_the_base() {
        let policy = RetryPolicy::istio_default();
        for _ in 0..200 {
            assert!(policy.backoff(1) <= Duration::from_millis(25));
            assert!(policy.backoff(2) <= Duration::from_millis(75));
            assert!(policy.backoff(9) <= Duration::from_millis(250));
        }
        assert!((0..200).any(|_| policy.backoff(9) > Duration::from_millis(75)));
    }
}
