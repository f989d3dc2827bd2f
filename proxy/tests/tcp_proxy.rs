//! Loopback: opaque TCP passthrough.

mod support;

use std::time::Duration;
use support::{bounded, half_close_server, loopback, start_proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn tcp_half_close_is_carried_both_ways() {
    let upstream = half_close_server().await;
    let proxy = start_proxy(upstream, false, Duration::from_secs(5));
    for listener in [proxy.addresses().outbound, proxy.addresses().inbound] {
        let mut client = TcpStream::connect(listener).await.unwrap();
        client.write_all(&[7u8; 100_000]).await.unwrap();
        client.shutdown().await.unwrap();
        let mut reply = String::new();
        bounded("reply after half-close", client.read_to_string(&mut reply)).await.unwrap();
        assert_eq!(reply, "got 100000 bytes");
    }
    let clusters = &proxy.stats().outbound;
    assert_eq!(clusters.cx_total.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test]
async fn inbound_forwarding_comes_from_127_0_0_6() {
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let proxy = start_proxy(upstream, false, Duration::from_secs(5));
    let _client = TcpStream::connect(proxy.addresses().inbound).await.unwrap();
    let (_, peer) = bounded("inbound connection", listener.accept()).await.unwrap();
    // The capture rules recognise the proxy's traffic to the app by this source address.
    assert_eq!(peer.ip().to_string(), "127.0.0.6");
}

#[tokio::test]
async fn unreachable_upstream_closes_the_connection() {
    // Bind and drop to get a port nobody listens on.
    let dead = TcpListener::bind(loopback()).await.unwrap().local_addr().unwrap();
    let proxy = start_proxy(dead, false, Duration::from_secs(5));
    let mut client = TcpStream::connect(proxy.addresses().outbound).await.unwrap();
    let mut buf = Vec::new();
    let n = bounded("close", client.read_to_end(&mut buf)).await.unwrap_or(0);
    assert_eq!(n, 0);
    let fails = proxy.stats().outbound.upstream_fail.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(fails, 1);
}
