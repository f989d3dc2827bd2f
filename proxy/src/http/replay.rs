//! Request bodies that can be sent more than once: to retry a request, or to mirror it.
//!
//! A body streams to the first attempt as it arrives, and its frames are recorded on the way
//! up to [`REPLAY_LIMIT`] bytes. A retry replays the recording, then carries on reading the
//! client where the previous attempt stopped, so a retry never waits for a body the client
//! has not sent yet. A body larger than the limit keeps streaming, but the recording is
//! dropped and the request can no longer be retried or mirrored.
//!
//! The recording is per request and touched by one attempt at a time: each new attempt takes
//! a new generation, and a body of an older attempt (one hyper may still hold in a connection
//! task) stops reading, so the client's body has exactly one reader.

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::sync::Notify;

/// Request bodies up to this size are kept for retries and mirrors; larger ones stream once.
pub const REPLAY_LIMIT: usize = 64 * 1024;

pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A request body as sent upstream.
pub enum RequestBody {
    /// The client's body, sent once as it arrives.
    Stream(Incoming),
    /// No body at all.
    Empty,
    /// One attempt's view of a recorded body.
    Replay(ReplayBody),
    /// A finished copy (a mirror's body).
    Copy { chunks: std::vec::IntoIter<Bytes>, trailers: Option<HeaderMap> },
}

impl RequestBody {
    /// A body with no frames.
    pub fn empty() -> Self {
        RequestBody::Empty
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The client is still sending.
    Streaming,
    /// The whole body is recorded.
    Complete,
    /// The body outgrew the limit (or failed): it cannot be sent again.
    Lost,
}

struct Recording {
    chunks: Vec<Bytes>,
    len: usize,
    trailers: Option<HeaderMap>,
    state: State,
    /// The client's body while it has more to give.
    source: Option<Incoming>,
    /// The attempt allowed to read `source`.
    generation: u64,
}

/// A client's body, recorded so it can be sent again.
#[derive(Clone)]
pub struct Replayable {
    shared: Arc<Shared>,
}

struct Shared {
    recording: Mutex<Recording>,
    /// Woken when the body is complete or lost, for mirrors waiting on it.
    settled: Notify,
}

impl Replayable {
    pub fn new(source: Incoming) -> Self {
        let recording = Recording {
            chunks: Vec::new(),
            len: 0,
            trailers: None,
            state: State::Streaming,
            source: Some(source),
            generation: 0,
        };
        Replayable { shared: Arc::new(Shared { recording: Mutex::new(recording), settled: Notify::new() }) }
    }

    fn lock(&self) -> MutexGuard<'_, Recording> {
        lock(&self.shared)
    }

    /// A body for the next attempt, or `None` when the body can no longer be replayed.
    pub fn attempt(&self) -> Option<RequestBody> {
        let mut recording = self.lock();
        if recording.state == State::Lost {
            return None;
        }
        recording.generation += 1;
        let generation = recording.generation;
        Some(RequestBody::Replay(ReplayBody { shared: self.shared.clone(), generation, next: 0, trailers_sent: false }))
    }

    /// Whether another attempt could still send the whole body.
    pub fn replayable(&self) -> bool {
        self.lock().state != State::Lost
    }

    /// Waits until the primary attempt has read the whole body; a copy of it, or `None` when
    /// it outgrew the limit.
    pub async fn finished_copy(&self) -> Option<RequestBody> {
        loop {
            let settled = self.shared.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            {
                let recording = self.lock();
                match recording.state {
                    State::Complete => {
                        let chunks = recording.chunks.clone().into_iter();
                        return Some(RequestBody::Copy { chunks, trailers: recording.trailers.clone() });
                    }
                    State::Lost => return None,
                    State::Streaming => {}
                }
            }
            settled.await;
        }
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, Recording> {
    // A panic while holding the lock leaves a consistent recording (every write is one
    // assignment), so a poisoned lock is used as is.
    shared.recording.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One attempt's reader: the recorded frames, then the rest of the client's body.
pub struct ReplayBody {
    shared: Arc<Shared>,
    generation: u64,
    /// The next recorded chunk to send.
    next: usize,
    trailers_sent: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("request body superseded by a newer attempt")]
struct Superseded;

impl ReplayBody {
    fn poll_source(
        &mut self,
        recording: &mut Recording,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some(source) = recording.source.as_mut() else {
            if !self.trailers_sent {
                self.trailers_sent = true;
                if let Some(trailers) = recording.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
            }
            return Poll::Ready(None);
        };
        match Pin::new(&mut *source).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.trailers_sent = true;
                self.settle(recording, State::Complete);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                self.settle(recording, State::Lost);
                Poll::Ready(Some(Err(error.into())))
            }
            Poll::Ready(Some(Ok(frame))) => {
                let ended = source.is_end_stream();
                if let Some(data) = frame.data_ref() {
                    self.record(recording, data.clone());
                } else if let Some(trailers) = frame.trailers_ref() {
                    recording.trailers = Some(trailers.clone());
                    self.trailers_sent = true;
                }
                if ended {
                    self.settle(recording, State::Complete);
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn record(&mut self, recording: &mut Recording, data: Bytes) {
        if recording.state != State::Streaming {
            return;
        }
        if recording.len + data.len() > REPLAY_LIMIT {
            recording.chunks = Vec::new();
            self.next = 0;
            recording.state = State::Lost;
            self.shared.settled.notify_waiters();
            return;
        }
        recording.len += data.len();
        recording.chunks.push(data);
        self.next = recording.chunks.len();
    }

    /// The client's body has ended (or failed): no more reads, and mirrors may go.
    fn settle(&self, recording: &mut Recording, state: State) {
        recording.source = None;
        if recording.state == State::Streaming {
            recording.state = state;
        }
        self.shared.settled.notify_waiters();
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let shared = self.shared.clone();
        let mut recording = lock(&shared);
        if recording.generation != self.generation {
            return Poll::Ready(Some(Err(Box::new(Superseded))));
        }
        if let Some(chunk) = recording.chunks.get(self.next) {
            let chunk = chunk.clone();
            self.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        self.poll_source(&mut recording, cx)
    }

    fn is_end_stream(&self) -> bool {
        let recording = lock(&self.shared);
        if recording.generation != self.generation || self.next < recording.chunks.len() {
            return false;
        }
        match &recording.source {
            Some(source) => source.is_end_stream(),
            None => self.trailers_sent || recording.trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let recording = lock(&self.shared);
        let recorded: usize = recording.chunks.iter().skip(self.next).map(Bytes::len).sum();
        let rest = recording.source.as_ref().map(Body::size_hint).unwrap_or_else(|| SizeHint::with_exact(0));
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + recorded as u64);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + recorded as u64);
        }
        hint
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RequestBody::Stream(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Replay(body) => Pin::new(body).poll_frame(cx),
            RequestBody::Copy { chunks, trailers } => match chunks.next() {
                Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                None => Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t)))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Stream(body) => body.is_end_stream(),
            RequestBody::Empty => true,
            RequestBody::Replay(body) => body.is_end_stream(),
            RequestBody::Copy { chunks, trailers } => chunks.len() == 0 && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Stream(body) => body.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Replay(body) => body.size_hint(),
            RequestBody::Copy { chunks, .. } => {
                SizeHint::with_exact(chunks.as_slice().iter().map(|c| c.len() as u64).sum())
            }
        }
    }
}
