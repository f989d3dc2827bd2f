//! Istio's rules for what an HTTP route does with a request: redirect, rewrite, retries and
//! injected faults.

use super::http::{HttpAbort, HttpDelay, HttpFaultInjection, HttpRedirect, HttpRetry, HttpRewrite};
use super::validate::ONE_MILLISECOND;
use crate::validate::{Diagnostics, FieldPath, rules};

/// Retry conditions Envoy understands, for `retries.retryOn`, besides 3-digit status codes.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

pub(super) fn redirect_rules(redirect: &HttpRedirect, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if redirect.port.is_some() && redirect.derive_port.is_some() {
        diagnostics.error(&path.field("derivePort"), "set port or derivePort, not both");
    }
    if let Some(port) = redirect.port {
        rules::port(port, &path.field("port"), diagnostics);
    }
    let changes_nothing = redirect.uri.is_empty()
        && redirect.authority.is_empty()
        && redirect.scheme.is_empty()
        && redirect.port.is_none()
        && redirect.derive_port.is_none();
    if changes_nothing {
        diagnostics.error(path, "a redirect must change something; set uri, authority, scheme or port");
    }
    if !redirect.scheme.is_empty() && !matches!(redirect.scheme.as_str(), "http" | "https") {
        diagnostics
            .error(&path.field("scheme"), format!("scheme {:?} is not valid; use http or https", redirect.scheme));
    }
    if let Some(code) = redirect.redirect_code
        && !matches!(code, 301 | 302 | 303 | 307 | 308)
    {
        diagnostics.error(
            &path.field("redirectCode"),
            format!("{code} is not a redirect status; use 301, 302, 303, 307 or 308"),
        );
    }
}

pub(super) fn rewrite_rules(rewrite: &HttpRewrite, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if rewrite.uri.is_empty() && rewrite.authority.is_empty() && rewrite.uri_regex_rewrite.is_none() {
        diagnostics.error(path, "a rewrite must change something; set uri, authority or uriRegexRewrite");
    }
    if let Some(regex_rewrite) = &rewrite.uri_regex_rewrite {
        let path = path.field("uriRegexRewrite");
        diagnostics.unsupported(&path);
        if !rewrite.uri.is_empty() {
            diagnostics.error(&path, "set uri or uriRegexRewrite, not both");
        }
        rules::regex(&regex_rewrite.r#match, &path.field("match"), diagnostics);
    }
}

pub(super) fn retry_rules(retries: &HttpRetry, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if retries.attempts < 0 {
        diagnostics.error(
            &path.field("attempts"),
            format!("attempts {} is negative; use 0 (no retries) or more", retries.attempts),
        );
    }
    if let Some(timeout) = retries.per_try_timeout {
        rules::duration_at_least(timeout, ONE_MILLISECOND, &path.field("perTryTimeout"), diagnostics);
    }
    if let Some(backoff) = retries.backoff {
        rules::duration_at_least(backoff, ONE_MILLISECOND, &path.field("backoff"), diagnostics);
    }
    if !retries.retry_on.is_empty() {
        for condition in retries.retry_on.split(',').map(str::trim) {
            if !is_retry_condition(condition) {
                diagnostics.error(
                    &path.field("retryOn"),
                    format!(
                        "{condition:?} is not a retry condition; use a comma-separated list of {} or 3-digit status codes",
                        RETRY_ON.join(", ")
                    ),
                );
            }
        }
    }
}

/// A known retry condition, or an HTTP status code such as `503`.
pub(crate) fn is_retry_condition(condition: &str) -> bool {
    RETRY_ON.contains(&condition)
        || (condition.len() == 3 && condition.parse::<u16>().is_ok_and(|code| (100..=599).contains(&code)))
}

pub(super) fn fault_rules(fault: &HttpFaultInjection, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if fault.delay.is_none() && fault.abort.is_none() {
        diagnostics.error(path, "a fault needs a delay, an abort or both");
    }
    if let Some(delay) = &fault.delay {
        delay_rules(delay, &path.field("delay"), diagnostics);
    }
    if let Some(abort) = &fault.abort {
        abort_rules(abort, &path.field("abort"), diagnostics);
    }
}

fn delay_rules(delay: &HttpDelay, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if delay.exponential_delay.is_some() {
        diagnostics.unsupported(&path.field("exponentialDelay"));
    }
    match (delay.fixed_delay, delay.exponential_delay) {
        (Some(fixed), None) => rules::duration_at_least(fixed, ONE_MILLISECOND, &path.field("fixedDelay"), diagnostics),
        (None, None) => diagnostics.error(&path.field("fixedDelay"), "a delay needs fixedDelay, for example 5s"),
        (Some(_), Some(_)) => diagnostics.error(path, "set fixedDelay or exponentialDelay, not both"),
        (None, Some(_)) => {}
    }
    if let Some(percentage) = &delay.percentage {
        rules::percent(percentage, &path.field("percentage"), diagnostics);
    }
    if let Some(percent) = delay.percent
        && !(0..=100).contains(&percent)
    {
        diagnostics.error(&path.field("percent"), format!("{percent} is not a percentage; use a number from 0 to 100"));
    }
}

fn abort_rules(abort: &HttpAbort, path: &FieldPath, diagnostics: &mut Diagnostics) {
    let kinds = [abort.http_status.is_some(), abort.grpc_status.is_some(), abort.http2_error.is_some()];
    match kinds.into_iter().filter(|set| *set).count() {
        0 => diagnostics.error(&path.field("httpStatus"), "an abort needs an httpStatus, for example 503"),
        1 => {}
        _ => diagnostics.error(path, "set exactly one of httpStatus, grpcStatus or http2Error"),
    }
    if let Some(status) = abort.http_status
        && !(200..=599).contains(&status)
    {
        diagnostics.error(&path.field("httpStatus"), format!("HTTP status {status} is out of range; use 200 to 599"));
    }
    if let Some(name) = &abort.grpc_status
        && crate::api::grpc_status::code(name).is_none()
    {
        diagnostics.error(
            &path.field("grpcStatus"),
            format!("{name:?} is not a gRPC status; use a name such as UNAVAILABLE or a number from 0 to 16"),
        );
    }
    if abort.http2_error.is_some() {
        diagnostics.unsupported(&path.field("http2Error"));
    }
    if let Some(percentage) = &abort.percentage {
        rules::percent(percentage, &path.field("percentage"), diagnostics);
    }
}
