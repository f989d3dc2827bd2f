use super::*;
use common::api::Duration as IstioDuration;
use common::api::networking::destination_rule::{ConnectionPoolSettings, HttpSettings, TcpSettings, TrafficPolicy};
use common::compile::{ClusterKey, ClusterStatus};
use common::registry::{MeshLocation, Protocol, Resolution};
use common::validate::ObjectRef;
use std::time::Duration;

fn pool(max_connections: Option<i32>, pending: Option<i32>) -> ConnectionPoolSettings {
    ConnectionPoolSettings {
        tcp: Some(TcpSettings { max_connections, ..Default::default() }),
        http: Some(HttpSettings { http1_max_pending_requests: pending, ..Default::default() }),
    }
}

fn breaker(max_connections: i32, pending: i32) -> Breaker {
    Breaker::new(ClusterLimits::from_settings(&pool(Some(max_connections), Some(pending)), "test".into()))
}

fn cluster(connection_pool: Option<ConnectionPoolSettings>) -> Cluster {
    Cluster {
        key: ClusterKey::new("httpbin.default.svc.cluster.local", "", 8000),
        status: ClusterStatus::Known,
        protocol: Protocol::Http,
        location: MeshLocation::MeshInternal,
        resolution: Resolution::Static,
        endpoints: Vec::new(),
        policy: TrafficPolicy { connection_pool, ..Default::default() },
        destination_rule: Some(ObjectRef {
            kind: "DestinationRule".into(),
            namespace: "default".into(),
            name: "httpbin".into(),
        }),
        service_name: "httpbin".into(),
    }
}

#[test]
fn unset_and_zero_limits_are_istios_unlimited() {
    let limits = ClusterLimits::from_settings(&pool(None, Some(0)), "x".into());
    assert_eq!((limits.max_connections, limits.max_pending), (UNLIMITED, UNLIMITED));
    assert_eq!((limits.max_requests, limits.max_retries), (UNLIMITED, UNLIMITED));
    assert_eq!(limits.max_requests_per_connection, None);
    assert!(!limits.retires_after(1_000_000));
}

#[test]
fn limits_read_every_field_and_name_the_destination_rule() {
    let settings = ConnectionPoolSettings {
        tcp: Some(TcpSettings {
            max_connections: Some(3),
            connect_timeout: Some(IstioDuration::from_millis(250)),
            ..Default::default()
        }),
        http: Some(HttpSettings {
            http1_max_pending_requests: Some(4),
            http2_max_requests: Some(5),
            max_retries: Some(6),
            max_requests_per_connection: Some(1),
            idle_timeout: Some(IstioDuration::from_millis(1500)),
            ..Default::default()
        }),
    };
    let limits = ClusterLimits::of(&cluster(Some(settings))).expect("has a connectionPool");
    assert_eq!((limits.max_connections, limits.max_pending, limits.max_requests, limits.max_retries), (3, 4, 5, 6));
    assert!(limits.retires_after(1));
    assert_eq!(limits.connect_timeout, Some(Duration::from_millis(250)));
    assert_eq!(limits.idle_timeout, Some(Duration::from_millis(1500)));
    assert_eq!(&*limits.origin, "DestinationRule default/httpbin");
    assert!(ClusterLimits::of(&cluster(None)).is_none(), "no connectionPool, no breaker");
}

#[test]
fn connection_slots_are_bounded_and_come_back_when_dropped() {
    let b = breaker(2, 1);
    let first = b.try_connection().unwrap();
    let _second = b.try_connection().unwrap();
    let refused = b.try_connection().err().expect("maxConnections 2 reached");
    assert_eq!(refused.limit, Limit::Connections);
    assert!(refused.to_string().contains("tcp.maxConnections 2 of test"), "{refused}");
    drop(first);
    assert!(b.try_connection().is_ok());
}

#[test]
fn pending_requests_are_bounded() {
    let b = breaker(1, 2);
    let one = b.pending().unwrap();
    let _two = b.pending().unwrap();
    assert!(b.has_waiters());
    assert_eq!(b.pending().err().expect("two wait already").limit, Limit::Pending);
    drop(one);
    assert!(b.pending().is_ok());
}

#[tokio::test]
async fn a_waiting_request_gets_the_slot_a_closed_connection_frees() {
    let b = Arc::new(breaker(1, 1));
    let held = b.try_connection().unwrap();
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.connection(|| ()).await.map(drop).is_ok() })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(b.has_waiters());
    let third = b.connection(|| ()).await.err().expect("one waits already");
    assert_eq!(third.limit, Limit::Pending);
    drop(held);
    assert!(waiter.await.unwrap());
    assert!(!b.has_waiters());
}

#[test]
fn requests_and_retries_in_flight_are_bounded() {
    let settings = ConnectionPoolSettings {
        tcp: None,
        http: Some(HttpSettings { http2_max_requests: Some(1), max_retries: Some(1), ..Default::default() }),
    };
    let b = Breaker::new(ClusterLimits::from_settings(&settings, "t".into()));
    let request = b.request().unwrap();
    assert_eq!(b.request().err().unwrap().limit, Limit::Requests);
    let retry = b.retry().unwrap();
    assert_eq!(b.retry().err().unwrap().limit, Limit::Retries);
    assert_eq!(b.to_json()["active_requests"], 1);
    drop((request, retry));
    assert!(b.request().is_ok() && b.retry().is_ok());
    assert_eq!(b.to_json()["limits"]["max_connections"], serde_json::Value::Null);
}

#[test]
fn configure_keeps_the_breaker_while_limits_stay_and_replaces_it_when_they_change() {
    let stats = ClusterStats::new("c".into());
    configure(&stats, &cluster(Some(pool(Some(1), Some(1)))));
    let first = stats.breaker.load_full().expect("a breaker");
    let _slot = first.try_connection().unwrap();
    configure(&stats, &cluster(Some(pool(Some(1), Some(1)))));
    assert!(Arc::ptr_eq(&first, &stats.breaker.load_full().unwrap()), "same limits: same counts");
    configure(&stats, &cluster(Some(pool(Some(2), Some(1)))));
    assert_eq!(stats.breaker.load_full().unwrap().limits.max_connections, 2);
    configure(&stats, &cluster(None));
    assert!(stats.breaker.load().is_none());
    assert_eq!(cluster_json(&stats)["breaker"], serde_json::Value::Null);
}
