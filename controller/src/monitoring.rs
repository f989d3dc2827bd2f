//! The monitoring port (15014): `/ready` for probes, `/metrics` for Prometheus, and
//! `/debug/proxies` listing every connected proxy with the versions it was sent and ACKed.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::config::hub::Hub;

/// What the monitoring endpoints report.
pub struct Monitoring {
    /// Set once every cache has synced and the first config is published.
    pub ready: AtomicBool,
    /// The config hub (metrics, proxies).
    pub hub: Arc<Hub>,
}

impl Monitoring {
    /// Not ready yet.
    pub fn new(hub: Arc<Hub>) -> Arc<Self> {
        Arc::new(Self { ready: AtomicBool::new(false), hub })
    }

    /// Serves HTTP/1.1 on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "monitoring port: accept failed");
                    continue;
                }
            };
            let monitoring = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let monitoring = monitoring.clone();
                    async move { Ok::<_, Infallible>(monitoring.respond(&request)) }
                });
                if let Err(error) =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
                {
                    tracing::debug!(%error, "monitoring connection ended");
                }
            });
        }
    }

    fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET {
            return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n".into());
        }
        match request.uri().path() {
            "/ready" if self.ready.load(Ordering::Acquire) => reply(StatusCode::OK, "text/plain", "ready\n".into()),
            "/ready" => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "caches not synced yet\n".into()),
            "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4", self.hub.metrics.render()),
            "/debug/proxies" => {
                let body = serde_json::to_string_pretty(&self.hub.proxies()).expect("statuses serialize");
                reply(StatusCode::OK, "application/json", body + "\n")
            }
            _ => reply(StatusCode::NOT_FOUND, "text/plain", "try /ready, /metrics or /debug/proxies\n".into()),
        }
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}
