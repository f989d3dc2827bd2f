//! The admin server (127.0.0.1:15000) and the readiness endpoint (15021).
//!
//! Admin is bound to localhost only: `/quitquitquit` stops the proxy and `/config_dump` shows
//! its configuration, neither of which another pod should reach. Readiness listens on all
//! addresses because the kubelet probes it from outside the pod. Both run on the same runtime
//! as the data path but do no work on the request path: they only read atomics.

use crate::drain::{Drain, DrainHold};
use crate::probes::ProbeSource;
use crate::route::ConnectionRouter;
use crate::stats::Stats;
use crate::tls::MeshTls;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// What the admin and readiness endpoints report.
pub struct AdminState {
    pub drain: Drain,
    pub stats: Arc<Stats>,
    /// Set once every listener is bound and accepting.
    pub ready: AtomicBool,
    /// The static part of `/config_dump` (listeners, options), built at start.
    pub config: serde_json::Value,
    /// Asked for the routing part of `/config_dump` and for `/clusters` at each request.
    pub router: Arc<dyn ConnectionRouter>,
    /// The app's original probes, answered under `/app-health/` on the readiness port.
    pub app_probes: Option<ProbeSource>,
    /// The workload certificate in force, shown in `/config_dump`.
    pub tls: Arc<MeshTls>,
}

impl AdminState {
    fn is_ready(&self) -> bool {
        self.ready.load(Relaxed) && !self.drain.is_draining()
    }
}

type Body = Full<Bytes>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
    r
}

fn json(value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(serde_json::to_vec_pretty(value).unwrap_or_default())));
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    r
}

/// Holds the drain open until a `/quitquitquit` answer has been written: without it the
/// process could exit before replying when no other connection is open.
type QuitHold = Arc<Mutex<Option<DrainHold>>>;

fn admin(req: &Request<Incoming>, state: &AdminState, hold: &QuitHold) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/ready") => match state.is_ready() {
            true => text(StatusCode::OK, "LIVE\n"),
            false if state.drain.is_draining() => text(StatusCode::SERVICE_UNAVAILABLE, "DRAINING\n"),
            false => text(StatusCode::SERVICE_UNAVAILABLE, "PRE_INITIALIZING\n"),
        },
        (&Method::POST, "/quitquitquit") => {
            tracing::info!("drain requested via /quitquitquit");
            if let Ok(mut slot) = hold.lock() {
                *slot = Some(state.drain.hold());
            }
            state.drain.start();
            let mut r = text(StatusCode::OK, "OK\n");
            r.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            r
        }
        (_, "/quitquitquit") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
        (&Method::GET, "/config_dump") => {
            let mut dump = state.config.clone();
            dump["draining"] = state.drain.is_draining().into();
            dump["tls"] = state.tls.describe();
            dump["routing"] = state.router.describe();
            json(&dump)
        }
        (&Method::GET, "/clusters") => json(&state.stats.clusters_json(state.router.clusters())),
        (&Method::GET, "/stats") => json(&state.stats.to_json()),
        (&Method::GET, "/") => text(StatusCode::OK, "/ready /config_dump /clusters /stats /quitquitquit (POST)\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn readiness(req: &Request<Incoming>, state: &AdminState) -> Response<Body> {
    match (req.uri().path(), &state.app_probes) {
        ("/healthz/ready", _) if state.is_ready() => text(StatusCode::OK, ""),
        ("/healthz/ready", _) => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        (path, Some(source)) if path.starts_with("/app-health/") => {
            let outcome = crate::probes::answer(source, path).await;
            text(outcome.status, outcome.message)
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Which endpoints a server answers.
#[derive(Debug, Clone, Copy)]
pub enum Endpoints {
    Admin,
    Readiness,
}

/// Serves `listener` with HTTP/1.1 until the process ends. Not tracked by the drain: the admin
/// server must keep answering (`/ready` says DRAINING) while the data path drains.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, endpoints: Endpoints) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(?endpoints, %error, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let hold = QuitHold::default();
            let for_service = hold.clone();
            let service = service_fn(move |req: Request<Incoming>| {
                let (state, hold) = (state.clone(), for_service.clone());
                async move {
                    let resp = match endpoints {
                        Endpoints::Admin => admin(&req, &state, &hold),
                        Endpoints::Readiness => readiness(&req, &state).await,
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            if let Err(error) = conn.await {
                tracing::debug!(?endpoints, %error, "admin connection error");
            }
            // The answer is written (or the client left): the drain may finish now.
            drop(hold);
        });
    }
}
