//! The HTTP server every service shares: accept, parse, hand the request to the service's role.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What this process serves.
#[derive(Debug, Clone)]
pub struct App {
    pub service: Role,
    /// The `version` label of this instance, reported in answers so tests can tell versions apart.
    pub version: String,
}

/// A service and the addresses of the services it calls.
#[derive(Debug, Clone)]
pub enum Role {
    Productpage { details: String, reviews: String },
    Details,
    Reviews { ratings: String },
    Ratings,
}

/// A response with a body we built ourselves.
pub type Reply = Response<Full<Bytes>>;

/// Serves `app` on `addr` until the process ends.
pub async fn serve(app: App, addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    eprintln!("bookinfo {:?} {} listening on {}", app.service, app.version, listener.local_addr()?);
    serve_on(app, listener).await
}

/// Serves `app` on an already bound listener (tests bind port 0 and read the address).
pub async fn serve_on(app: App, listener: TcpListener) -> anyhow::Result<()> {
    let app = Arc::new(app);
    loop {
        let (stream, _) = listener.accept().await?;
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&app, request).await) }
            });
            // A client that goes away mid-request is its own business.
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn handle(app: &App, request: Request<Incoming>) -> Reply {
    let path = request.uri().path().to_string();
    if path == "/health" {
        return text(StatusCode::OK, "ok\n");
    }
    let headers = request.headers().clone();
    match &app.service {
        Role::Productpage { details, reviews } => {
            crate::productpage::handle(&path, request.uri().query(), &headers, details, reviews).await
        }
        Role::Details => crate::details::handle(&path),
        Role::Reviews { ratings } => crate::reviews::handle(&path, &headers, &app.version, ratings).await,
        Role::Ratings => crate::ratings::handle(&path),
    }
}

/// A plain-text answer.
pub fn text(status: StatusCode, body: &str) -> Reply {
    with_type(status, "text/plain; charset=utf-8", body.to_string())
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
    with_type(status, "application/json", value.to_string())
}

/// An answer with the given content type.
pub fn with_type(status: StatusCode, content_type: &str, body: String) -> Reply {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a response of a status, one header and a body is always valid")
}

/// The book id of `/<prefix>/<id>`, if the path has that shape.
pub fn book_id(path: &str, prefix: &str) -> Option<u32> {
    path.strip_prefix(prefix)?.strip_prefix('/')?.parse().ok()
}
