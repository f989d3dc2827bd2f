//! `mesh-test-http`: a tiny HTTP/1.1 server for the local-cluster tests.
//!
//! - `GET /` answers `hello from <POD_NAME or hostname>`, so a test can tell replicas apart;
//! - `GET /healthz` is always 200;
//! - `GET /ready` is 200 until `GET /fail-readiness`, 503 afterwards (until `GET /recover`), so a
//!   test can make a readiness probe fail on purpose.
//!
//! Usage: `mesh-test-http [PORT]` (default 8080, or `$PORT`).
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 =
        std::env::args().nth(1).or_else(|| std::env::var("PORT").ok()).and_then(|p| p.parse().ok()).unwrap_or(8080);
    let name = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_default();
    let ready = Arc::new(AtomicBool::new(true));
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    eprintln!("mesh-test-http {name} listening on :{port}");
    loop {
        let (mut sock, _) = listener.accept().await?;
        let (name, ready) = (name.clone(), ready.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            // Headers only; the tests never send bodies.
            while len < buf.len() {
                match sock.read(&mut buf[len..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => len += n,
                }
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (code, body) = match path.as_str() {
                "/healthz" => (200, "ok\n".to_string()),
                "/ready" if ready.load(Ordering::SeqCst) => (200, "ready\n".to_string()),
                "/ready" => (503, "not ready\n".to_string()),
                "/fail-readiness" => {
                    ready.store(false, Ordering::SeqCst);
                    (200, "readiness will fail\n".to_string())
                }
                "/recover" => {
                    ready.store(true, Ordering::SeqCst);
                    (200, "ready again\n".to_string())
                }
                _ => (200, format!("hello from {name}\n")),
            };
            let reason = if code == 200 { "OK" } else { "Service Unavailable" };
            let resp = format!(
                "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}
