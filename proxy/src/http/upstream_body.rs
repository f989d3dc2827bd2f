//! A response body from an upstream that keeps its request counted as active at the endpoint
//! until the body ends (or fails, or is dropped), so LEAST_REQUEST sees long downloads and gRPC
//! streams as the load they are, not only the wait for headers.

use super::h1;
use super::replay::BodyError;
use crate::routing::endpoint::ActiveRequest;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

#[derive(Debug)]
pub struct UpstreamBody {
    inner: Inner,
    active: Option<ActiveRequest>,
}

/// The body as the upstream's protocol delivers it.
#[derive(Debug)]
enum Inner {
    /// Read by the proxy's own HTTP/1.1 client.
    H1(h1::ResponseBody),
    /// From hyper's client: an HTTP/2 stream's, or the response to an HTTP/1.1 request with
    /// a body.
    Hyper(Incoming),
}

impl UpstreamBody {
    /// Keeps `active` until the body ends.
    pub fn hold(&mut self, active: ActiveRequest) {
        self.active = Some(active);
    }
}

impl From<Incoming> for UpstreamBody {
    fn from(inner: Incoming) -> Self {
        UpstreamBody { inner: Inner::Hyper(inner), active: None }
    }
}

impl From<h1::ResponseBody> for UpstreamBody {
    fn from(inner: h1::ResponseBody) -> Self {
        UpstreamBody { inner: Inner::H1(inner), active: None }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::H1(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::from),
            Inner::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::from),
        };
        // The last frame of a body that knows its end (a length) is followed by no poll: the
        // request stops being active with it.
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) || this.is_end_stream() {
            this.active = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::H1(body) => body.is_end_stream(),
            Inner::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::H1(body) => body.size_hint(),
            Inner::Hyper(body) => body.size_hint(),
        }
    }
}
