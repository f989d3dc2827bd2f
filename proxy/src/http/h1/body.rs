//! A response body read straight from its upstream connection.

use super::Error;
use super::conn::Conn;
use super::decode::{self, Chunks, Step};
use crate::http::pool::Home;
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// How much of the body is left, as its framing tells.
#[derive(Debug)]
enum Reading {
    Length(u64),
    Chunked(Chunks),
    UntilClose,
    Done,
}

/// What the bytes at hand gave.
enum Progress {
    NeedMore,
    /// Data, and whether it is the body's last.
    Data(Bytes, bool),
    Trailers(http::HeaderMap),
    End,
    Failed(Error),
}

/// The body of an upstream response. It owns the connection while it is read; once it is read
/// to the end the connection goes back to the pool at once (before the proxy has even written
/// the last bytes downstream), unless the server asked to close it. Dropped before the end, it
/// closes the connection: what is left of the body cannot be skipped without reading it.
pub struct ResponseBody {
    reading: Reading,
    conn: Option<Box<Conn>>,
    reusable: bool,
    home: Option<Home>,
}

impl ResponseBody {
    /// A body with nothing in it and no connection behind it.
    pub(super) fn empty() -> Self {
        ResponseBody { reading: Reading::Done, conn: None, reusable: false, home: None }
    }

    pub(super) fn new(conn: Box<Conn>, framing: decode::Framing, reusable: bool, home: Home) -> Self {
        let reading = match framing {
            decode::Framing::Empty => Reading::Done,
            decode::Framing::Length(len) => Reading::Length(len),
            decode::Framing::Chunked => Reading::Chunked(Chunks::Size),
            decode::Framing::UntilClose => Reading::UntilClose,
        };
        let mut body = ResponseBody { reading, conn: Some(conn), reusable, home: Some(home) };
        if matches!(body.reading, Reading::Done) {
            body.finish();
        }
        body
    }

    /// The body is read: the connection goes home if it can carry another request (nothing
    /// unread is left on it), else it closes.
    fn finish(&mut self) {
        self.reading = Reading::Done;
        if let (Some(conn), Some(home)) = (self.conn.take(), self.home.take())
            && self.reusable
            && conn.read_buf.is_empty()
        {
            home.release(conn);
        }
    }

    fn fail(&mut self, error: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.reading = Reading::Done;
        self.conn = None;
        Poll::Ready(Some(Err(error)))
    }

    /// The next piece the buffered bytes give, without reading.
    fn progress(&mut self) -> Progress {
        let Some(conn) = self.conn.as_mut() else { return Progress::End };
        let buf = &mut conn.read_buf;
        match &mut self.reading {
            Reading::Done => Progress::End,
            Reading::Length(_) | Reading::UntilClose if buf.is_empty() => Progress::NeedMore,
            Reading::Length(remaining) => {
                let n = (*remaining).min(buf.len() as u64);
                *remaining -= n;
                Progress::Data(buf.split_to(n as usize).freeze(), *remaining == 0)
            }
            Reading::UntilClose => Progress::Data(buf.split().freeze(), false),
            Reading::Chunked(state) => match decode::step(state, buf) {
                Ok(Step::NeedMore) => Progress::NeedMore,
                Ok(Step::Data(data)) => Progress::Data(data, false),
                Ok(Step::Trailers(trailers)) => Progress::Trailers(trailers),
                Ok(Step::End) => Progress::End,
                Err(error) => Progress::Failed(error),
            },
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            match this.progress() {
                Progress::Data(data, last) => {
                    if last {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Progress::Trailers(trailers) => {
                    this.finish();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Progress::End => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Progress::Failed(error) => return this.fail(error),
                Progress::NeedMore => {}
            }
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(this.reading, Reading::UntilClose) => {
                    this.reusable = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(Error::Truncated),
                Ok(_) => {}
                Err(e) => return this.fail(Error::Read(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.reading, Reading::Done | Reading::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.reading {
            Reading::Length(len) => SizeHint::with_exact(len),
            Reading::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").field("reading", &self.reading).field("reusable", &self.reusable).finish()
    }
}
