//! The app's own probes, run by the sidecar for the kubelet.
//!
//! The injector rewrites the app's httpGet and tcpSocket probes to
//! `GET :15021/app-health/<container>/<readyz|livez|startupz>` (the kubelet's plain-text probe
//! would be refused by the inbound capture under STRICT mTLS) and keeps the originals, by that
//! path, as JSON in the pod annotation `sidecar.istio.io/appProbers`. Here the proxy reads them
//! (from the downward-API annotations file at each probe, so it follows the pod's annotations,
//! or from a fixed JSON for tests) and runs the original against the app on localhost: an
//! httpGet answers the app's status, a tcpSocket 200 when it connects and 503 when it does not.
//! Every probe is bounded by the original's `timeoutSeconds`.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The annotation the injector keeps the original probes in.
pub const APP_PROBERS: &str = "sidecar.istio.io/appProbers";

/// The longest a forwarded probe may take, whatever its `timeoutSeconds` says.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// One original probe, as the injector wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppProbe {
    pub http_get: Option<HttpGet>,
    pub tcp_socket: Option<TcpSocket>,
    #[serde(default = "one")]
    pub timeout_seconds: u64,
}

fn one() -> u64 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGet {
    #[serde(default = "root")]
    pub path: String,
    pub port: u16,
    #[serde(default = "http_scheme")]
    pub scheme: String,
    #[serde(default)]
    pub http_headers: Vec<Header>,
}

fn root() -> String {
    "/".into()
}

fn http_scheme() -> String {
    "HTTP".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TcpSocket {
    pub port: u16,
}

/// The original probes by sidecar path (`/app-health/web/readyz`).
pub type AppProbers = BTreeMap<String, AppProbe>;

/// Why the original probes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProbersError {
    #[error("reading {path}: {message}")]
    File { path: String, message: String },
    #[error("annotation {APP_PROBERS}: {0} (expected a JSON object of probes by /app-health/... path)")]
    Json(#[from] serde_json::Error),
}

/// Where the original probes come from.
#[derive(Debug, Clone)]
pub enum ProbeSource {
    /// A downward-API annotations file (`key="value"` lines), read at each probe.
    AnnotationsFile(PathBuf),
    /// The annotation's JSON, given directly.
    Fixed(String),
}

impl ProbeSource {
    /// The probes as they stand now; no annotation means no probes.
    pub fn load(&self) -> Result<AppProbers, ProbersError> {
        let json = match self {
            ProbeSource::Fixed(json) => json.clone(),
            ProbeSource::AnnotationsFile(path) => {
                let err = |message: String| ProbersError::File { path: path.display().to_string(), message };
                let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
                let annotations = crate::init::annotations::parse(&text).map_err(|e| err(e.to_string()))?;
                match annotations.get(APP_PROBERS) {
                    Some(json) => json.clone(),
                    None => return Ok(AppProbers::new()),
                }
            }
        };
        Ok(serde_json::from_str(&json)?)
    }
}

/// What a forwarded probe answers the kubelet: a status and a short explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: StatusCode,
    pub message: String,
}

impl Outcome {
    fn new(status: StatusCode, message: impl Into<String>) -> Outcome {
        Outcome { status, message: message.into() }
    }
}

/// Answers the kubelet's request for `path` (`/app-health/<container>/<kind>`).
pub async fn answer(source: &ProbeSource, path: &str) -> Outcome {
    let probers = match source.load() {
        Ok(probers) => probers,
        Err(error) => {
            tracing::warn!(%error, path, "cannot read the app's probes");
            return Outcome::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string());
        }
    };
    let Some(probe) = probers.get(path) else {
        return Outcome::new(StatusCode::NOT_FOUND, format!("no app probe for {path} in {APP_PROBERS}"));
    };
    let outcome = run(probe).await;
    tracing::debug!(path, status = outcome.status.as_u16(), message = %outcome.message, "app probe");
    outcome
}

/// Runs one original probe against the app on localhost.
pub async fn run(probe: &AppProbe) -> Outcome {
    let timeout = Duration::from_secs(probe.timeout_seconds.max(1)).min(MAX_TIMEOUT);
    let work = async {
        match (&probe.http_get, &probe.tcp_socket) {
            (Some(get), _) => http_get(get).await,
            (None, Some(tcp)) => tcp_socket(tcp).await,
            (None, None) => Outcome::new(StatusCode::INTERNAL_SERVER_ERROR, "probe has neither httpGet nor tcpSocket"),
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::new(StatusCode::SERVICE_UNAVAILABLE, format!("app probe timed out after {timeout:?}")),
    }
}

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)
}

async fn tcp_socket(tcp: &TcpSocket) -> Outcome {
    match tokio::net::TcpStream::connect(localhost(tcp.port)).await {
        Ok(_) => Outcome::new(StatusCode::OK, ""),
        Err(error) => {
            Outcome::new(StatusCode::SERVICE_UNAVAILABLE, format!("connecting to port {}: {error}", tcp.port))
        }
    }
}

async fn http_get(get: &HttpGet) -> Outcome {
    if !get.scheme.eq_ignore_ascii_case("http") {
        return Outcome::new(StatusCode::SERVICE_UNAVAILABLE, format!("probe scheme {} is not supported", get.scheme));
    }
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        Outcome::new(StatusCode::SERVICE_UNAVAILABLE, format!("{what} port {}: {e}", get.port))
    };
    let stream = match tokio::net::TcpStream::connect(localhost(get.port)).await {
        Ok(stream) => stream,
        Err(e) => return unavailable("connecting to", &e),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(e) => return unavailable("HTTP to", &e),
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = match build_request(get) {
        Ok(request) => request,
        Err(e) => return Outcome::new(StatusCode::INTERNAL_SERVER_ERROR, format!("probe request: {e}")),
    };
    match sender.send_request(request).await {
        Ok(response) => Outcome::new(response.status(), ""),
        Err(e) => unavailable("HTTP to", &e),
    }
}

/// The kubelet's request: its Host and User-Agent unless the probe sets its own headers.
fn build_request(get: &HttpGet) -> Result<Request<Empty<Bytes>>, http::Error> {
    let path = if get.path.starts_with('/') { get.path.clone() } else { format!("/{}", get.path) };
    let mut builder = Request::get(path);
    let has = |name: &str| get.http_headers.iter().any(|h| h.name.eq_ignore_ascii_case(name));
    if !has("host") {
        builder = builder.header(http::header::HOST, format!("localhost:{}", get.port));
    }
    if !has("user-agent") {
        builder = builder.header(http::header::USER_AGENT, "kube-probe/mesh-proxy");
    }
    for header in &get.http_headers {
        builder = builder.header(header.name.as_str(), header.value.as_str());
    }
    builder.body(Empty::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_injectors_json_from_the_downward_api_file() {
        let json = r#"{"/app-health/web/livez":{"tcpSocket":{"port":8080},"timeoutSeconds":1},"/app-health/web/readyz":{"httpGet":{"path":"/ready","port":8080,"scheme":"HTTP","httpHeaders":[{"name":"x-probe","value":"1"}]},"timeoutSeconds":2}}"#;
        let escaped = json.replace('"', "\\\"");
        let path = std::env::temp_dir().join(format!("mesh-probes-{}", std::process::id()));
        std::fs::write(&path, format!("app=\"web\"\n{APP_PROBERS}=\"{escaped}\"\n")).unwrap();
        let probers = ProbeSource::AnnotationsFile(path.clone()).load().unwrap();
        let _ = std::fs::remove_file(&path);
        let ready = &probers["/app-health/web/readyz"];
        let get = ready.http_get.as_ref().unwrap();
        assert_eq!((get.path.as_str(), get.port, ready.timeout_seconds), ("/ready", 8080, 2));
        assert_eq!(get.http_headers, [Header { name: "x-probe".into(), value: "1".into() }]);
        assert_eq!(probers["/app-health/web/livez"].tcp_socket, Some(TcpSocket { port: 8080 }));
    }

    #[test]
    fn bad_json_names_the_annotation() {
        let error = ProbeSource::Fixed("{\"x\": 1}".into()).load().unwrap_err().to_string();
        assert!(error.contains(APP_PROBERS), "{error}");
    }
}
