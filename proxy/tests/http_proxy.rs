//! Loopback: HTTP/1.1 and HTTP/2 through the proxy's HTTP path.

mod support;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::channel::{Channel, Sender};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use std::time::Duration;
use support::{bounded, h1_client, h2_client, serve, start_proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type ChunkTx = Sender<Bytes>;

fn stream_body() -> (ChunkTx, Channel<Bytes>) {
    Channel::new(4)
}

#[tokio::test]
async fn http1_keep_alive_reuses_one_upstream_connection() {
    let upstream = serve(|req: Request<Incoming>| async move {
        let host = req.headers().get("host").cloned().unwrap_or(HeaderValue::from_static("-"));
        Response::new(Full::new(Bytes::from(format!("hello {}", host.to_str().unwrap()))))
    })
    .await;
    let proxy = start_proxy(upstream.addr, true, Duration::from_secs(5));
    // Several downstream connections, several requests each, one after the other.
    for _ in 0..3 {
        let mut client = h1_client::<Empty<Bytes>>(proxy.addresses().outbound).await;
        for _ in 0..3 {
            let req = Request::get("/").header("host", "reviews.default").body(Empty::new()).unwrap();
            let resp = bounded("response", client.send_request(req)).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "hello reviews.default");
        }
    }
    assert_eq!(upstream.connections(), 1, "sequential requests should share one pooled upstream connection");
}

#[tokio::test]
async fn http1_chunked_bodies_stream_without_buffering() {
    // Echo the request body back as it arrives.
    let upstream = serve(|req: Request<Incoming>| async move { Response::new(req.into_body()) }).await;
    let proxy = start_proxy(upstream.addr, true, Duration::from_secs(5));
    let mut client = h1_client(proxy.addresses().outbound).await;
    let (mut tx, body) = stream_body();
    let req = Request::post("/echo").header("host", "echo").body(body).unwrap();
    tx.send_data(Bytes::from_static(b"first")).await.unwrap();
    let resp = bounded("response head", client.send_request(req)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut resp_body = resp.into_body();
    // The first chunk comes back before the second is sent: nothing waits for the whole body.
    let first = bounded("first chunk", resp_body.frame()).await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "first");
    tx.send_data(Bytes::from_static(b"second")).await.unwrap();
    let second = bounded("second chunk", resp_body.frame()).await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(second, "second");
    drop(tx);
    assert!(bounded("end of body", resp_body.frame()).await.is_none());
}

#[tokio::test]
async fn http1_upgrade_becomes_a_byte_stream() {
    // Answers `Upgrade: echo` with 101, then echoes bytes on the raw connection.
    let upstream = serve(|mut req: Request<Incoming>| async move {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let mut io = hyper_util::rt::TokioIo::new(upgrade.await.unwrap());
            let mut buf = [0u8; 64];
            loop {
                let n = io.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                io.write_all(&buf[..n]).await.unwrap();
            }
        });
        let mut resp = Response::new(Empty::<Bytes>::new());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut().insert("connection", HeaderValue::from_static("upgrade"));
        resp.headers_mut().insert("upgrade", HeaderValue::from_static("echo"));
        resp
    })
    .await;
    let proxy = start_proxy(upstream.addr, true, Duration::from_secs(5));
    let mut s = tokio::net::TcpStream::connect(proxy.addresses().outbound).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        bounded("101 head", s.read_exact(&mut byte)).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for msg in [&b"ping"[..], b"pong pong"] {
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        bounded("echo", s.read_exact(&mut back)).await.unwrap();
        assert_eq!(back, msg);
    }
}

#[tokio::test]
async fn h2c_grpc_style_server_streaming_keeps_trailers() {
    let upstream = serve(|req: Request<Incoming>| async move {
        // gRPC clients send `te: trailers`; a proxy that drops it breaks some servers.
        let te = req.headers().get("te").cloned();
        assert_eq!(req.version(), http::Version::HTTP_2);
        // The name the client used survives the hop (as :authority), not the upstream address.
        assert_eq!(req.uri().authority().map(|a| a.as_str()), Some("greeter.default:50051"));
        assert!(req.headers().get("host").is_none());
        let request_body = req.into_body().collect().await.unwrap().to_bytes();
        let (mut tx, body) = stream_body();
        tokio::spawn(async move {
            for i in 0..3 {
                let msg = format!("{}#{i}", String::from_utf8_lossy(&request_body));
                tx.send_data(Bytes::from(msg)).await.unwrap();
            }
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            trailers.insert("grpc-message", HeaderValue::from_static("done"));
            tx.send_trailers(trailers).await.unwrap();
        });
        let mut resp = Response::new(body);
        resp.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
        if let Some(te) = te {
            resp.headers_mut().insert("x-seen-te", te);
        }
        resp
    })
    .await;
    let proxy = start_proxy(upstream.addr, true, Duration::from_secs(5));
    let mut client = h2_client(proxy.addresses().outbound).await;
    let req = Request::post("http://greeter.default:50051/helloworld.Greeter/SayHellos")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"hi")))
        .unwrap();
    let resp = bounded("h2 response", client.send_request(req)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-seen-te"], "trailers");
    let mut body = resp.into_body();
    let mut messages = Vec::new();
    let mut trailers = None;
    while let Some(frame) = bounded("frame", body.frame()).await {
        let frame = frame.unwrap();
        match frame.into_data() {
            Ok(data) => messages.push(String::from_utf8(data.to_vec()).unwrap()),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    assert_eq!(messages, ["hi#0", "hi#1", "hi#2"]);
    let trailers = trailers.expect("trailers forwarded");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "done");
}

#[tokio::test]
async fn h2_requests_multiplex_on_one_upstream_connection() {
    let upstream =
        serve(|_req: Request<Incoming>| async move { Response::new(Full::new(Bytes::from_static(b"ok"))) }).await;
    let proxy = start_proxy(upstream.addr, true, Duration::from_secs(5));
    let client = h2_client::<Empty<Bytes>>(proxy.addresses().outbound).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let req = Request::get("http://svc/").body(Empty::new()).unwrap();
            client.send_request(req).await.unwrap().status()
        }));
    }
    for t in tasks {
        assert_eq!(bounded("h2 stream", t).await.unwrap(), StatusCode::OK);
    }
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn unreachable_upstream_answers_503() {
    let dead = tokio::net::TcpListener::bind(support::loopback()).await.unwrap().local_addr().unwrap();
    let proxy = start_proxy(dead, true, Duration::from_secs(5));
    let mut client = h1_client::<Empty<Bytes>>(proxy.addresses().outbound).await;
    let req = Request::get("/").header("host", "gone").body(Empty::new()).unwrap();
    let resp = bounded("503", client.send_request(req)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn inbound_http_reaches_the_app_from_127_0_0_6() {
    // A raw listener, to see the peer address of the proxy's upstream connection.
    let listener = tokio::net::TcpListener::bind(support::loopback()).await.unwrap();
    let proxy = start_proxy(listener.local_addr().unwrap(), true, Duration::from_secs(5));
    let mut client = h1_client::<Empty<Bytes>>(proxy.addresses().inbound).await;
    let req = Request::get("/").header("host", "app").body(Empty::new()).unwrap();
    let pending = tokio::spawn(async move { client.send_request(req).await });
    let (_, peer) = bounded("inbound upstream connection", listener.accept()).await.unwrap();
    assert_eq!(peer.ip().to_string(), "127.0.0.6");
    pending.abort();
}
