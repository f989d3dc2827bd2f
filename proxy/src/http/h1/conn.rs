//! One upstream connection, and one request and response exchanged on it.

use super::Error;
use super::body::ResponseBody;
use super::decode;
use super::encode;
use crate::breaker::ConnSlot;
use crate::http::pool::Home;
use crate::http::replay::RequestBody;
use crate::tls::connect::UpstreamIo;
use crate::tls::rewind::Rewind;
use bytes::{Buf, BytesMut};
use http::{Method, Request, Response, StatusCode, Version, request};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;
use tokio_util::either::Either;

/// How much the read buffer grows by when it is full.
const READ_SIZE: usize = 8 * 1024;

/// An upstream HTTP/1.1 connection between requests: the socket, what was read from it and
/// not consumed yet, and a buffer for writing request heads, kept to be reused.
pub struct Conn {
    io: UpstreamIo,
    pub(super) read_buf: BytesMut,
    write_buf: BytesMut,
    /// Requests sent on it so far.
    pub served: u32,
    /// The connection's place under its cluster's `maxConnections`, freed when it closes.
    _slot: Option<ConnSlot>,
}

/// The connection of a request the upstream switched protocols on (101), with the bytes that
/// came after the response head, for splicing to the downstream one.
pub type Upgraded = Rewind<UpstreamIo>;

/// A failed exchange, and whether the request can be sent again on another connection: it
/// was not sent, or not answered at all and is safe to repeat.
pub struct SendError {
    pub error: Error,
    pub retry: bool,
}

impl Conn {
    /// Boxed: a connection moves from the pool to a request and its response body and back,
    /// as a pointer rather than a few hundred bytes.
    pub fn new(io: UpstreamIo, slot: Option<ConnSlot>) -> Box<Self> {
        Box::new(Conn { io, read_buf: BytesMut::new(), write_buf: BytesMut::new(), served: 0, _slot: slot })
    }

    /// Reads what the socket has into the read buffer: `Ok(0)` at the end of the stream.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read_buf.capacity() - self.read_buf.len() < READ_SIZE / 8 {
            self.read_buf.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read_buf)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Writes and flushes the write buffer (TLS sends its records on flush), then empties it.
    async fn write_out(&mut self) -> io::Result<()> {
        self.io.write_all(&self.write_buf).await?;
        self.io.flush().await?;
        self.write_buf.clear();
        Ok(())
    }

    /// Whether the server closed the connection (or sent something nobody asked for) while it
    /// sat in the pool. One non-blocking peek: it costs a system call, so it is asked only
    /// before a request that could not simply be sent again on a new connection.
    pub fn closed_while_idle(&self) -> bool {
        let tcp = match &self.io {
            Either::Left(tcp) => tcp,
            Either::Right(tls) => tls.get_ref().0,
        };
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(Waker::noop());
        !self.read_buf.is_empty() || tcp.poll_peek(&mut cx, &mut buf).is_ready()
    }

    /// Reads up to the final response head, skipping informational ones (100 Continue) but
    /// not 101. `received` tells whether the server sent anything at all.
    async fn read_head(&mut self, received: &mut bool) -> Result<Response<()>, Error> {
        loop {
            if let Some((response, len)) = decode::head(&self.read_buf)? {
                self.read_buf.advance(len);
                let status = response.status();
                if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                    continue;
                }
                return Ok(response);
            }
            match self.fill().await {
                Ok(0) if self.read_buf.is_empty() => return Err(Error::ClosedBeforeResponse),
                Ok(0) => return Err(Error::Truncated),
                Ok(_) => *received = true,
                Err(e) => return Err(Error::Read(e)),
            }
        }
    }
}

/// Methods whose requests may be repeated without a different effect (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// Sends `head`, a request without a body, on `conn` and reads the response head. The
/// response body reads the rest from the connection, which goes `home` once the body is read
/// to the end and the server keeps it open. A 101 answer gives the connection back as
/// [`Upgraded`].
pub async fn send(
    mut conn: Box<Conn>,
    head: &request::Parts,
    home: Home,
) -> Result<(Response<ResponseBody>, Option<Upgraded>), SendError> {
    conn.write_buf.clear();
    encode::head(&mut conn.write_buf, head);
    if let Err(e) = conn.write_out().await {
        return Err(SendError { error: Error::Write(e), retry: true });
    }
    conn.served += 1;
    let mut received = false;
    let response = match conn.read_head(&mut received).await {
        Ok(response) => response,
        // A server that closed a pooled connection as the request went out answers nothing:
        // a request that is safe to repeat can go again.
        Err(error) => return Err(SendError { error, retry: !received && is_idempotent(&head.method) }),
    };
    let (mut parts, ()) = response.into_parts();
    let keeps_alive = decode::keeps_alive(parts.version, &parts.headers);
    // The version describes this hop only: the downstream one is the proxy's own HTTP/1.1
    // (an HTTP/1.0 server would otherwise close the client's connection too).
    parts.version = Version::HTTP_11;
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        let after_head = conn.read_buf.split().to_vec();
        return Ok((Response::from_parts(parts, ResponseBody::empty()), Some(Rewind::new(conn.io, after_head))));
    }
    let framing = match decode::framing(&head.method, parts.status, &parts.headers) {
        Ok(framing) => framing,
        Err(error) => return Err(SendError { error, retry: false }),
    };
    let reusable = keeps_alive && !decode::has_token(&head.headers, "close") && framing != decode::Framing::UntilClose;
    let body = ResponseBody::new(conn, framing, reusable, home);
    Ok((Response::from_parts(parts, body), None))
}

/// Sends a request with a body through hyper's client on `conn`. hyper reads the response
/// while the body is still being written, which a request whose body streams needs (an echo
/// server answers as the body arrives; a server may answer before it has read it all). The
/// connection goes `home` when hyper is done with it, if the server keeps it open.
pub async fn send_streaming(
    conn: Box<Conn>,
    head: request::Parts,
    body: RequestBody,
    home: Home,
) -> Result<Response<Incoming>, Error> {
    let Conn { io, write_buf, served, _slot: slot, .. } = *conn;
    let (mut tx, connection) = http1::handshake(TokioIo::new(io)).await.map_err(Error::Exchange)?;
    let asks_close = decode::has_token(&head.headers, "close");
    let (reusable_tx, reusable_rx) = oneshot::channel();
    tokio::spawn(async move {
        let parts = connection.without_shutdown().await;
        let reusable = reusable_rx.await.unwrap_or(false);
        if let (Ok(parts), true) = (parts, reusable)
            && parts.read_buf.is_empty()
        {
            let io = parts.io.into_inner();
            home.release(Box::new(Conn { io, read_buf: BytesMut::new(), write_buf, served: served + 1, _slot: slot }));
        }
    });
    let mut response = tx.send_request(Request::from_parts(head, body)).await.map_err(Error::Exchange)?;
    // With no sender left, hyper's connection finishes once this response is read.
    drop(tx);
    let reusable = !asks_close && decode::keeps_alive(response.version(), response.headers());
    let _ = reusable_tx.send(reusable);
    *response.version_mut() = Version::HTTP_11;
    Ok(response)
}
