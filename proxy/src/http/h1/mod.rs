//! The HTTP/1.1 client of forwarding: one request at a time on a pooled connection, with no
//! task of its own.
//!
//! hyper's client runs every connection as a separate task and passes each request and its
//! response through channels to it; a pooled connection then needs one more task to learn
//! when it is free again. For a proxy that sends one request at a time per connection, that
//! is three task switches and several allocations per request: a fifth of the instructions a
//! request cost the sidecar (`e2e/bench/instructions`: 34.8k, 27.5k without them). Here the
//! task that serves the downstream request writes the upstream request itself ([`send`]),
//! reads the response head, and hands over a [`ResponseBody`] that reads the rest from the
//! connection and puts the connection back in the pool the moment the body's last byte is
//! read.
//!
//! That path is for requests without a body, nearly all of a mesh's traffic. A request with
//! a body goes through hyper's client on the same pooled connections ([`send_streaming`]):
//! its response may start while the body is still being written, which needs a reader and a
//! writer at once.

mod body;
mod conn;
mod decode;
mod encode;

pub use body::ResponseBody;
pub use conn::{Conn, SendError, Upgraded, is_idempotent, send, send_streaming};

/// Why an exchange with the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the request: {0}")]
    Write(#[source] std::io::Error),
    #[error("reading the response: {0}")]
    Read(#[source] std::io::Error),
    #[error("the connection closed before a response")]
    ClosedBeforeResponse,
    #[error("the connection closed in the middle of the response")]
    Truncated,
    #[error("invalid response head: {0}")]
    Head(String),
    #[error("response head larger than {} KiB", decode::MAX_HEAD / 1024)]
    HeadTooLarge,
    #[error("invalid chunked encoding in the response body")]
    Chunked,
    /// A request with a body, exchanged by hyper's client.
    #[error("{0}")]
    Exchange(#[source] hyper::Error),
}
