//! The HTTPS server: `POST /inject` answers AdmissionReviews, `GET /ready` says it is up.
//!
//! The TLS configuration sits behind a lock so a renewed certificate takes effect for the next
//! connection without a restart; connections already open keep the one they started with.

use super::review::{self, Reply};
use crate::config::InjectConfig;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

/// A pod object is at most ~1.5 MiB in etcd; a review of one is well below this.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS configuration new connections use; swapped on certificate renewal.
#[derive(Clone)]
pub struct TlsHandle(Arc<RwLock<Arc<ServerConfig>>>);

impl TlsHandle {
    pub fn new(config: Arc<ServerConfig>) -> Self {
        TlsHandle(Arc::new(RwLock::new(config)))
    }

    pub fn set(&self, config: Arc<ServerConfig>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    cfg: Arc<InjectConfig>,
    tls: TlsHandle,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = TlsAcceptor::from(tls.current());
        let cfg = cfg.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let service = service_fn(move |req| handle(req, cfg.clone()));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

async fn handle(req: Request<Incoming>, cfg: Arc<InjectConfig>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/ready" | "/healthz") => text(StatusCode::OK, "ok\n".into()),
        (&Method::POST, "/inject") => match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(body) => match review::answer(&body.to_bytes(), &cfg) {
                Reply::Review(v) => json(serde_json::to_vec(&v).unwrap_or_default()),
                Reply::BadRequest(m) => {
                    tracing::warn!(message = %m, "bad admission request");
                    text(StatusCode::BAD_REQUEST, format!("{m}\n"))
                }
            },
            Err(e) => text(StatusCode::PAYLOAD_TOO_LARGE, format!("reading the body: {e}\n")),
        },
        (_, "/inject") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n".into()),
        _ => text(StatusCode::NOT_FOUND, "POST /inject, GET /ready\n".into()),
    })
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", body.into_bytes())
}

fn json(body: Vec<u8>) -> Response<Full<Bytes>> {
    response(StatusCode::OK, "application/json", body)
}

fn response(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    r
}
