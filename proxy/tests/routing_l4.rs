//! Loopback: protocol by port name, and routing of TCP, TLS (by SNI), WebSocket, gRPC and
//! inbound connections, as if the app had dialled a ClusterIP.

mod support;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use mesh_proxy::config::identity::IdentitySettings;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use support::mesh::{pod, service, start_mesh, start_mesh_as};
use support::{bounded, h1_client, h2_client, serve_on};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP server that records the bytes it got until half-close, then answers `NAME:N`.
async fn tcp_server(name: &'static str, ip: &str) -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind(format!("{ip}:0")).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await.unwrap();
                let reply = format!("{name}:{}", buf.len());
                record.lock().unwrap().push(buf);
                s.write_all(reply.as_bytes()).await.unwrap();
                s.shutdown().await.unwrap();
            });
        }
    });
    (addr, seen)
}

async fn send_half_close(addr: SocketAddr, data: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(data).await.unwrap();
    s.shutdown().await.unwrap();
    let mut reply = String::new();
    bounded("reply after half-close", s.read_to_string(&mut reply)).await.unwrap();
    reply
}

#[tokio::test]
async fn tcp_routes_send_the_connection_to_their_destination_with_half_close() {
    let (primary, _) = tcp_server("primary", "127.0.0.121").await;
    let (replica, seen) = tcp_server("replica", "127.0.0.122").await;
    let config = service("db", "10.96.0.121", "tcp-postgres", 5432, &[pod("db-0", &[("app", "db")], primary)])
        + &service("db-replica", "10.96.0.122", "tcp", 5432, &[pod("db-1", &[("app", "db-replica")], replica)])
        + r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 5432}]
    route: [{destination: {host: db-replica, port: {number: 5432}}}]
"#;
    let mesh = start_mesh(&config, &[], Some("10.96.0.121:5432".parse().unwrap()));
    assert_eq!(send_half_close(mesh.outbound(), &[9u8; 70_000]).await, "replica:70000");
    assert_eq!(seen.lock().unwrap().len(), 1);
    // Without a VirtualService the service takes its own connections.
    let direct = start_mesh(&config, &[], Some("10.96.0.122:5432".parse().unwrap()));
    assert_eq!(send_half_close(direct.outbound(), b"ping").await, "replica:4");
}

/// A ClientHello record naming `name`, enough for SNI routing.
fn client_hello(name: &str) -> Vec<u8> {
    let n = name.len() as u16;
    let mut ext = vec![0, 0];
    ext.extend_from_slice(&(n + 5).to_be_bytes());
    ext.extend_from_slice(&(n + 3).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&n.to_be_bytes());
    ext.extend_from_slice(name.as_bytes());
    let mut body = vec![3, 3];
    body.extend_from_slice(&[1; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut handshake = vec![1, 0];
    handshake.extend_from_slice(&(body.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&body);
    let mut record = vec![22, 3, 1];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn tls_routes_pick_the_destination_by_sni_and_pass_the_handshake_through() {
    let (own, own_seen) = tcp_server("own", "127.0.0.131").await;
    let (other, other_seen) = tcp_server("other", "127.0.0.132").await;
    let config = service("secure", "10.96.0.131", "tls", 443, &[pod("secure-0", &[("app", "secure")], own)])
        + &service("secure-b", "10.96.0.132", "https", 443, &[pod("secure-b-0", &[("app", "b")], other)])
        + r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure}
spec:
  hosts: [secure]
  tls:
  - match: [{sniHosts: [secure], destinationSubnets: [10.96.0.0/16]}]
    route: [{destination: {host: secure-b}}]
"#;
    let mesh = start_mesh(&config, &[], Some("10.96.0.131:443".parse().unwrap()));
    let hello = client_hello("secure.default.svc.cluster.local");
    let reply = send_half_close(mesh.outbound(), &hello).await;
    assert_eq!(reply, format!("other:{}", hello.len()));
    assert_eq!(other_seen.lock().unwrap()[0], hello, "the ClientHello reaches the upstream byte for byte");
    // An SNI no route names falls back to the service dialled.
    let hello = client_hello("unrelated.example");
    assert_eq!(send_half_close(mesh.outbound(), &hello).await, format!("own:{}", hello.len()));
    assert_eq!(own_seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn websocket_upgrade_is_routed_and_echoes() {
    let upstream = serve_on("127.0.0.141:0".parse().unwrap(), |mut req: Request<Incoming>| async move {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let mut io = hyper_util::rt::TokioIo::new(upgrade.await.unwrap());
            let mut buf = [0u8; 64];
            while let Ok(n @ 1..) = io.read(&mut buf).await {
                io.write_all(&buf[..n]).await.unwrap();
            }
        });
        let mut resp = Response::new(Empty::<Bytes>::new());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut().insert("connection", HeaderValue::from_static("upgrade"));
        resp.headers_mut().insert("upgrade", HeaderValue::from_static("websocket"));
        resp
    })
    .await;
    let config = service("chat", "10.96.0.141", "http", 80, &[pod("chat-0", &[("app", "chat")], upstream.addr)]);
    let mesh = start_mesh(&config, &[], None);
    let mut s = TcpStream::connect(mesh.outbound()).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: chat\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        bounded("101 head", s.read_exact(&mut byte)).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101") && head.contains("upgrade: websocket"), "{head}");
    for msg in [&b"\x81\x04ping"[..], b"\x81\x05hello"] {
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        bounded("echo", s.read_exact(&mut back)).await.unwrap();
        assert_eq!(back, msg);
    }
}

#[tokio::test]
async fn grpc_port_speaks_http2_upstream_and_streams_with_trailers() {
    let upstream = serve_on("127.0.0.151:0".parse().unwrap(), |req: Request<Incoming>| async move {
        assert_eq!(req.version(), http::Version::HTTP_2, "a grpc port is spoken to as HTTP/2");
        let (tx, body) = http_body_util::channel::Channel::<Bytes>::new(4);
        tokio::spawn(async move {
            let mut tx = tx;
            for i in 0..3 {
                tx.send_data(Bytes::from(format!("msg{i}"))).await.unwrap();
            }
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            tx.send_trailers(trailers).await.unwrap();
        });
        Response::new(body)
    })
    .await;
    let config =
        service("greeter", "10.96.0.151", "grpc", 50051, &[pod("greeter-0", &[("app", "greeter")], upstream.addr)]);
    let mesh = start_mesh(&config, &[], None);
    // HTTP/2 from the client...
    let mut client = h2_client(mesh.outbound()).await;
    let req = Request::post("http://greeter:50051/helloworld.Greeter/SayHellos")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"hi")))
        .unwrap();
    let resp = bounded("h2 response", client.send_request(req)).await.unwrap();
    let mut body = resp.into_body();
    let (mut messages, mut trailers) = (Vec::new(), None);
    while let Some(frame) = bounded("frame", body.frame()).await {
        match frame.unwrap().into_data() {
            Ok(data) => messages.push(data),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    assert_eq!(messages, ["msg0", "msg1", "msg2"]);
    assert_eq!(trailers.expect("trailers forwarded")["grpc-status"], "0");
    // ...and HTTP/1.1 from the client: still HTTP/2 upstream, chosen by the port name.
    let mut client = h1_client::<Empty<Bytes>>(mesh.outbound()).await;
    let req = Request::get("/").header("host", "greeter:50051").body(Empty::new()).unwrap();
    let resp = bounded("h1 to grpc port", client.send_request(req)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn inbound_keeps_the_protocol_of_the_workload_port() {
    let app = support::mesh::upstream("app", "127.0.0.161").await;
    let config = service("web", "10.96.0.161", "http", 80, &[pod("web-0", &[("app", "web")], app.addr())]);
    let identity = IdentitySettings { pod_name: "web-0".into(), namespace: "default".into(), ..Default::default() };
    // The connection arrives for the app's address, as the inbound capture would deliver it.
    let mesh = start_mesh_as(&config, identity, Some(app.addr()));
    for _ in 0..2 {
        let (status, _, body) = support::mesh::get(mesh.proxy.addresses().inbound, "web", "/", &[]).await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "app"));
    }
    // Parsed as HTTP: both requests counted, and they share one pooled connection to the app.
    let inbound = &mesh.proxy.stats().inbound;
    assert_eq!(inbound.rq_total.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(app.server.connections(), 1);
}
