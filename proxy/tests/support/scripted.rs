//! Upstreams that fail on command: each answers with the status (and optional `grpc-status`)
//! it is told, after the delay it is told, and records every request it saw, body included.

use super::TestServer;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

/// What the upstream answers; change it between requests.
#[derive(Default)]
pub struct Script {
    pub status: AtomicU16,
    /// 0: no `grpc-status`; else `grpc-status: n - 1`.
    pub grpc_status_plus_one: AtomicU32,
    pub delay_ms: AtomicU64,
}

pub struct Scripted {
    pub name: &'static str,
    pub server: TestServer,
    pub hits: Arc<Mutex<Vec<Hit>>>,
    pub script: Arc<Script>,
}

impl Scripted {
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }
    pub fn count(&self) -> usize {
        self.hits.lock().unwrap().len()
    }
    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
    pub fn answer(&self, status: u16) -> &Self {
        self.script.status.store(status, SeqCst);
        self
    }
    pub fn grpc_status(&self, code: u32) -> &Self {
        self.script.grpc_status_plus_one.store(code + 1, SeqCst);
        self
    }
    pub fn delay(&self, delay: Duration) -> &Self {
        self.script.delay_ms.store(u64::try_from(delay.as_millis()).unwrap(), SeqCst);
        self
    }
}

/// An upstream on `ip` answering `status` with its name as the body.
pub async fn scripted(name: &'static str, ip: &str, status: u16) -> Scripted {
    let hits = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(Script { status: AtomicU16::new(status), ..Default::default() });
    let (record, answer) = (hits.clone(), script.clone());
    let addr: SocketAddr = format!("{ip}:0").parse().unwrap();
    let server = super::serve_on(addr, move |req: Request<Incoming>| {
        let (record, answer) = (record.clone(), answer.clone());
        async move {
            let (head, body) = req.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let path = head.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
            let hit = Hit { method: head.method, path, headers: head.headers, body, version: head.version };
            record.lock().unwrap().push(hit);
            let delay = answer.delay_ms.load(SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let mut resp = Response::new(Full::new(Bytes::from(name)));
            *resp.status_mut() = StatusCode::from_u16(answer.status.load(SeqCst)).unwrap();
            resp.headers_mut().insert("x-upstream", name.parse().unwrap());
            let grpc = answer.grpc_status_plus_one.load(SeqCst);
            if grpc > 0 {
                resp.headers_mut().insert("grpc-status", (grpc - 1).into());
            }
            resp
        }
    })
    .await;
    Scripted { name, server, hits, script }
}

/// One HTTP/1.1 request with a body; returns status, headers and body.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> (StatusCode, HeaderMap, String) {
    let mut client = super::h1_client::<Full<Bytes>>(addr).await;
    let mut req = Request::builder().method(method).uri(path).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from_static(body.as_bytes()))).unwrap();
    let resp = super::bounded("response", client.send_request(req)).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&body).into_owned())
}
