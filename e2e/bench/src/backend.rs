//! The upstream every scenario ends at: a small HTTP/1.1 server answering `200` with a fixed
//! body, so the figures measure the path to it, not the work behind it.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use tokio::net::TcpListener;

/// The answer: small, like a typical JSON reply of a microservice.
pub const BODY: &[u8] = b"{\"service\":\"backend\",\"status\":\"ok\",\"padding\":\"0123456789abcdef\"}\n";

/// Serves until the process ends; every connection gets its own task.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let service = service_fn(|_req: Request<Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))
            });
            // Connection errors (a client going away mid-request) end only that connection.
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
