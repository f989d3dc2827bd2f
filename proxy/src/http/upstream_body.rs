//! A response body from an upstream that keeps its request counted as active at the endpoint
//! until the body ends (or fails, or is dropped), so LEAST_REQUEST sees long downloads and gRPC
//! streams as the load they are, not only the wait for headers.

use crate::routing::endpoint::ActiveRequest;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    active: Option<ActiveRequest>,
}

impl UpstreamBody {
    /// Keeps `active` until the body ends.
    pub fn hold(&mut self, active: ActiveRequest) {
        self.active = Some(active);
    }

    pub fn into_inner(self) -> Incoming {
        self.inner
    }
}

impl From<Incoming> for UpstreamBody {
    fn from(inner: Incoming) -> Self {
        UpstreamBody { inner, active: None }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.active = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
