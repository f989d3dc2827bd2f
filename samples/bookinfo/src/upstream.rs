//! Calls to the other services, forwarding the headers that tie a request's journey together.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Headers copied from the request being served onto every call it makes: the trace context
/// (so a tracer joins the spans into one trace), the request id (so logs join), and `end-user`
/// (so a VirtualService can route a user's calls anywhere in the call graph).
pub const FORWARDED: &[&str] = &[
    "x-request-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-ot-span-context",
    "end-user",
    "user-agent",
];

/// Why a call produced no answer.
#[derive(Debug)]
pub enum CallError {
    /// No answer within the timeout.
    Timeout,
    /// Connecting, sending or reading failed.
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Timeout => write!(f, "timed out"),
            CallError::Failed(reason) => write!(f, "{reason}"),
        }
    }
}

/// `GET http://<address><path>` with the forwarded headers of `incoming`, bounded by `timeout`.
/// Tries `1 + retries` times when an attempt fails or answers 5xx, as Bookinfo's callers do.
pub async fn get(
    address: &str,
    path: &str,
    incoming: &HeaderMap,
    timeout: Duration,
    retries: u32,
) -> Result<(StatusCode, Bytes), CallError> {
    let mut last = CallError::Failed("no attempt made".into());
    for _ in 0..=retries {
        match tokio::time::timeout(timeout, attempt(address, path, incoming)).await {
            Ok(Ok((status, body))) if !status.is_server_error() => return Ok((status, body)),
            Ok(Ok((status, body))) => last = CallError::Failed(format!("{status}: {}", String::from_utf8_lossy(&body))),
            Ok(Err(error)) => last = error,
            Err(_) => last = CallError::Timeout,
        }
    }
    Err(last)
}

async fn attempt(address: &str, path: &str, incoming: &HeaderMap) -> Result<(StatusCode, Bytes), CallError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| CallError::Failed(format!("{what} {address}: {e}"));
    let stream = TcpStream::connect(address).await.map_err(|e| failed("connecting to", &e))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| failed("handshake with", &e))?;
    tokio::spawn(connection);
    let mut request = Request::get(path).header(http::header::HOST, address);
    for name in FORWARDED {
        if let Some(value) = incoming.get(*name) {
            request = request.header(*name, value);
        }
    }
    let request = request.body(Empty::<Bytes>::new()).map_err(|e| failed("building a request to", &e))?;
    let response = sender.send_request(request).await.map_err(|e| failed("requesting from", &e))?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| failed("reading from", &e))?.to_bytes();
    Ok((status, body))
}
