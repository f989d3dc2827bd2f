//! What `/clusters` shows of one cluster: its balancer, circuit breaker and outlier detection,
//! and per endpoint its weight, requests in flight, failures in a row and ejection.

use super::endpoint::Endpoint;
use super::upstream::Upstream;
use crate::outlier::{self, Millis, OutlierPolicy};
use serde_json::{Value, json};

pub fn cluster_json(upstream: &Upstream) -> Value {
    let now = outlier::now();
    let balancer = upstream.balancer();
    let endpoints: Vec<Value> =
        upstream.endpoints().iter().map(|e| endpoint_json(e, upstream.outlier(), now)).collect();
    json!({
        "name": upstream.key.to_string(),
        "direction": "outbound",
        "status": upstream.unavailable.as_ref().map(|(_, v)| v.to_str().unwrap_or_default().to_string()),
        "passthrough": upstream.passthrough,
        "lb_policy": balancer.algorithm().as_str(),
        "hash_key": balancer.hash_key().map(|k| k.describe()),
        "hash_table_size": balancer.table_size(),
        "outlier_detection": upstream.outlier().map(policy_json),
        "endpoints": endpoints,
        // The circuit breaker's limits and occupancy (connections, pending, active requests,
        // retries in flight) and its overflow counters; limits are per cluster, as Envoy's.
        "connection_pool": crate::breaker::cluster_json(&upstream.stats),
        "stats": upstream.stats.to_json(),
    })
}

fn endpoint_json(endpoint: &Endpoint, policy: Option<&OutlierPolicy>, now: Millis) -> Value {
    let health = endpoint.state.health.view(now);
    // An ejection counts only while outlier detection is configured; the state is kept
    // across configs, so one set before the policy was removed is shown but not in force.
    let ejected = health.ejected_until.filter(|_| policy.is_some());
    json!({
        "address": endpoint.address.to_string(),
        "weight": endpoint.weight,
        "health": if ejected.is_some() { "EJECTED" } else { "HEALTHY" },
        "active_requests": endpoint.active_requests(),
        "consecutive_5xx": health.consecutive_5xx,
        "consecutive_gateway_errors": health.consecutive_gateway,
        "consecutive_local_origin_failures": health.consecutive_local_origin,
        "ejected_until": ejected.map(outlier::rfc3339),
        "ejections": health.ejections,
    })
}

fn policy_json(policy: &OutlierPolicy) -> Value {
    json!({
        "consecutive_5xx": policy.consecutive_5xx,
        "consecutive_gateway_errors": policy.consecutive_gateway,
        "consecutive_local_origin_failures": policy.consecutive_local_origin,
        "split_external_local_origin_errors": policy.split_local_origin,
        "interval_ms": u64::try_from(policy.interval.as_millis()).unwrap_or(u64::MAX),
        "base_ejection_time_ms": u64::try_from(policy.base_ejection_time.as_millis()).unwrap_or(u64::MAX),
        "max_ejection_percent": policy.max_ejection_percent,
        "min_health_percent": policy.min_health_percent,
    })
}
