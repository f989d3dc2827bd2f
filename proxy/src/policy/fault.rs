//! Injected faults (`fault.delay.fixedDelay`, `fault.abort.httpStatus`/`grpcStatus`), applied
//! on the client side as Istio does: the caller's proxy holds the request back, or answers it
//! itself, before it reaches any upstream. A delay comes first, then an abort, each drawn on
//! its own share of requests.

use super::Share;
use crate::http::ProxyBody;
use crate::reason::{REASON_HEADER, Reason};
use bytes::Bytes;
use common::api::Percent;
use common::api::networking::virtual_service::{HttpAbort, HttpDelay, HttpFaultInjection};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};
use std::time::Duration;

/// The faults of one route.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub delay: Option<(Duration, Share)>,
    pub abort: Option<(Abort, Share)>,
}

/// What an aborted request is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abort {
    Http(StatusCode),
    /// HTTP 200 with this `grpc-status`, as a trailers-only response.
    Grpc(u32),
}

impl Fault {
    pub fn build(fault: &HttpFaultInjection) -> Result<Self, String> {
        let delay = fault.delay.as_ref().map(delay).transpose().map_err(|e| format!("delay.{e}"))?.flatten();
        let abort = fault.abort.as_ref().map(abort).transpose().map_err(|e| format!("abort.{e}"))?.flatten();
        Ok(Fault { delay, abort })
    }

    /// The delay for this request, if it is drawn.
    pub fn draw_delay(&self) -> Option<Duration> {
        self.delay.filter(|(_, share)| share.draw()).map(|(delay, _)| delay)
    }

    /// The abort for this request, if it is drawn.
    pub fn draw_abort(&self) -> Option<Abort> {
        self.abort.filter(|(_, share)| share.draw()).map(|(abort, _)| abort)
    }
}

/// `percentage` (0-100, fractions allowed), else the deprecated integer `percent`, else every
/// request.
fn share(percentage: Option<&Percent>, percent: Option<i32>) -> Share {
    match (percentage, percent) {
        (Some(p), _) => Share::percent(p.value),
        (None, Some(p)) => Share::percent(f64::from(p)),
        (None, None) => Share::ALL,
    }
}

fn delay(delay: &HttpDelay) -> Result<Option<(Duration, Share)>, String> {
    // exponentialDelay alone is reported "not supported yet" by validation and injects nothing.
    Ok(delay.fixed_delay.map(|d| (d.get(), share(delay.percentage.as_ref(), delay.percent))))
}

fn abort(abort: &HttpAbort) -> Result<Option<(Abort, Share)>, String> {
    let kind = if let Some(status) = abort.http_status {
        let status = u16::try_from(status).ok().and_then(|s| StatusCode::from_u16(s).ok());
        Abort::Http(status.ok_or(format!("httpStatus: {:?} is not an HTTP status", abort.http_status))?)
    } else if let Some(name) = &abort.grpc_status {
        Abort::Grpc(common::api::grpc_status::code(name).ok_or(format!(
            "grpcStatus: {name:?} is not a gRPC status; use a name such as UNAVAILABLE or a number from 0 to 16"
        ))?)
    } else {
        // http2Error: reported "not supported yet" by validation; nothing is injected.
        return Ok(None);
    };
    Ok(Some((kind, share(abort.percentage.as_ref(), None))))
}

/// The proxy's answer to an aborted request.
pub fn abort_response(abort: Abort) -> Response<ProxyBody> {
    let reason = HeaderValue::from_static(Reason::FaultAbort.as_str());
    match abort {
        Abort::Http(status) => {
            let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(Reason::FaultAbort.body()))));
            *resp.status_mut() = status;
            resp.headers_mut().insert(REASON_HEADER, reason);
            resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            resp
        }
        Abort::Grpc(code) => {
            // Trailers-only: the status rides in the headers of a response with no body.
            let mut resp = Response::new(Either::Right(Full::new(Bytes::new())));
            let headers = resp.headers_mut();
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            headers.insert("grpc-status", HeaderValue::from(code));
            headers.insert("grpc-message", HeaderValue::from_static("fault injected"));
            headers.insert(REASON_HEADER, reason);
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deprecated_integer_percent_is_read_when_percentage_is_unset() {
        let fault = HttpFaultInjection {
            delay: Some(HttpDelay {
                fixed_delay: Some(common::api::Duration::from_millis(5)),
                percent: Some(0),
                ..Default::default()
            }),
            abort: None,
        };
        let fault = Fault::build(&fault).unwrap();
        assert_eq!(fault.delay, Some((Duration::from_millis(5), Share::percent(0.0))));
        assert!((0..100).all(|_| fault.draw_delay().is_none()));
    }
}
