//! Loopback: the proxy's own HTTP/1.1 client against an upstream that answers with exact
//! bytes, for the framings and connection lifetimes a hyper test server never produces.

mod support;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{bounded, h1_client, loopback, serve, start_proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the upstream does after answering a request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Then {
    /// Waits for the next request on the connection.
    KeepOpen,
    /// Closes the connection at once (the body of a response without a length ends so).
    Close,
    /// Closes the connection a moment later, as a server whose idle timeout is short.
    CloseWhenIdle,
}

/// An upstream answering each request with the bytes `answer` gives for its request line,
/// recording the request lines it read, one list per connection.
struct RawUpstream {
    addr: SocketAddr,
    connections: Arc<Mutex<Vec<Vec<String>>>>,
}

impl RawUpstream {
    fn connections(&self) -> Vec<Vec<String>> {
        self.connections.lock().unwrap().clone()
    }
}

async fn raw_upstream(answer: fn(&str) -> (&'static str, Then)) -> RawUpstream {
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(Mutex::new(Vec::new()));
    let seen = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let index = {
                let mut seen = seen.lock().unwrap();
                seen.push(Vec::new());
                seen.len() - 1
            };
            tokio::spawn(serve_raw(stream, answer, seen.clone(), index));
        }
    });
    RawUpstream { addr, connections }
}

async fn serve_raw(
    mut stream: TcpStream,
    answer: fn(&str) -> (&'static str, Then),
    seen: Arc<Mutex<Vec<Vec<String>>>>,
    index: usize,
) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end + 4);
        let line = head.lines().next().unwrap_or_default().to_string();
        seen.lock().unwrap()[index].push(line.clone());
        let (response, then) = answer(&line);
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
        match then {
            Then::KeepOpen => {}
            Then::Close => return,
            Then::CloseWhenIdle => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
        }
    }
}

async fn call(
    client: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    method: Method,
    path: &str,
) -> (StatusCode, Bytes) {
    let req = Request::builder().method(method).uri(path).header("host", "raw").body(Empty::new()).unwrap();
    let resp = bounded("response", client.send_request(req)).await.unwrap();
    let status = resp.status();
    let body = bounded("body", resp.into_body().collect()).await.unwrap().to_bytes();
    (status, body)
}

#[tokio::test]
async fn each_framing_of_a_response_body_is_read_to_its_end() {
    let upstream = raw_upstream(|line| match line {
        l if l.starts_with("GET /chunked") => {
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-t: 1\r\n\r\n", Then::KeepOpen)
        }
        l if l.starts_with("HEAD") => ("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", Then::KeepOpen),
        l if l.starts_with("GET /hints") => (
            "HTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal",
            Then::KeepOpen,
        ),
        l if l.starts_with("GET /empty") => ("HTTP/1.1 204 No Content\r\n\r\n", Then::KeepOpen),
        l if l.starts_with("GET /until-close") => ("HTTP/1.1 200 OK\r\n\r\nread until the end", Then::Close),
        _ => ("HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nlength", Then::KeepOpen),
    })
    .await;
    let proxy = start_proxy(upstream.addr, true, Duration::from_secs(5));
    let mut client = h1_client(proxy.addresses().outbound).await;
    assert_eq!(call(&mut client, Method::GET, "/chunked").await, (StatusCode::OK, Bytes::from("hello, world")));
    assert_eq!(call(&mut client, Method::HEAD, "/").await, (StatusCode::OK, Bytes::new()));
    assert_eq!(call(&mut client, Method::GET, "/hints").await, (StatusCode::OK, Bytes::from("final")));
    assert_eq!(call(&mut client, Method::GET, "/empty").await, (StatusCode::NO_CONTENT, Bytes::new()));
    assert_eq!(call(&mut client, Method::GET, "/length").await, (StatusCode::OK, Bytes::from("length")));
    // A body that ends with the connection: the connection cannot carry the next request.
    assert_eq!(
        call(&mut client, Method::GET, "/until-close").await,
        (StatusCode::OK, Bytes::from("read until the end"))
    );
    assert_eq!(call(&mut client, Method::GET, "/length").await, (StatusCode::OK, Bytes::from("length")));
    let connections = upstream.connections();
    assert_eq!(connections.len(), 2, "{connections:?}");
    assert_eq!(connections[0].len(), 6, "every body read to its end lets the connection serve the next request");
    assert_eq!(connections[1], ["GET /length HTTP/1.1"]);
}

#[tokio::test]
async fn a_server_that_says_close_gets_a_new_connection_for_the_next_request() {
    let upstream = raw_upstream(|line| match line {
        l if l.starts_with("GET /last") => {
            ("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok", Then::Close)
        }
        _ => ("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", Then::Close),
    })
    .await;
    let proxy = start_proxy(upstream.addr, true, Duration::from_secs(5));
    let mut client = h1_client(proxy.addresses().outbound).await;
    for path in ["/last", "/last", "/http10", "/http10"] {
        assert_eq!(call(&mut client, Method::GET, path).await, (StatusCode::OK, Bytes::from("ok")), "{path}");
    }
    assert_eq!(upstream.connections().len(), 4);
}

#[tokio::test]
async fn a_pooled_connection_the_server_closed_while_idle_is_never_an_error() {
    let upstream = raw_upstream(|_| ("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", Then::CloseWhenIdle)).await;
    let proxy = start_proxy(upstream.addr, true, Duration::from_secs(5));
    let mut client = h1_client(proxy.addresses().outbound).await;
    // Each request finds the connection of the one before in the pool, closed by the server
    // since. A GET is sent on it and, unanswered, sent again on a new connection; a POST,
    // which could not be repeated, is only given a connection found still open.
    for method in [Method::GET, Method::GET, Method::POST, Method::DELETE, Method::POST] {
        assert_eq!(call(&mut client, method.clone(), "/").await, (StatusCode::OK, Bytes::from("ok")), "{method}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let connections = upstream.connections();
    assert!(connections.iter().all(|requests| requests.len() == 1), "{connections:?}");
}

#[tokio::test]
async fn an_invalid_response_head_is_a_503_that_names_the_upstream_reset() {
    let upstream = raw_upstream(|_| ("HTTP/1.1 2OO OK\r\n\r\n", Then::Close)).await;
    let proxy = start_proxy(upstream.addr, true, Duration::from_secs(5));
    let mut client = h1_client(proxy.addresses().outbound).await;
    let req = Request::get("/").header("host", "raw").body(Empty::<Bytes>::new()).unwrap();
    let resp = bounded("response", client.send_request(req)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let reason = resp.headers()["x-mesh-reason"].to_str().unwrap();
    assert!(reason.starts_with("upstream_reset"), "{reason}");
}

#[tokio::test]
async fn requests_with_and_without_bodies_share_the_pooled_connection() {
    let upstream = serve(|req: Request<Incoming>| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        http::Response::new(Full::new(Bytes::from(format!("{} bytes", body.len()))))
    })
    .await;
    let proxy = start_proxy(upstream.addr, true, Duration::from_secs(5));
    let mut client = h1_client::<Full<Bytes>>(proxy.addresses().outbound).await;
    for (method, body) in [(Method::POST, "abc"), (Method::GET, ""), (Method::PUT, "abcdef"), (Method::GET, "")] {
        let req = Request::builder().method(method).uri("/").header("host", "svc").body(Full::from(body)).unwrap();
        let resp = bounded("response", client.send_request(req)).await.unwrap();
        let answer = bounded("body", resp.into_body().collect()).await.unwrap().to_bytes();
        assert_eq!(answer, format!("{} bytes", body.len()));
    }
    assert_eq!(upstream.connections(), 1, "a connection hyper carried a body on goes back to the pool");
}
