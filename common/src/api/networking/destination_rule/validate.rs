//! Istio's rules for `DestinationRule`, and the report of fields the mesh does not act on yet.

use std::collections::BTreeMap;

use super::{
    ClientTLSSettings, ConnectionPoolSettings, ConsistentHashLb, DestinationRuleSpec, H2UpgradePolicy,
    LoadBalancerSettings, LocalityLbSetting, OutlierDetection, TrafficPolicy,
};
use crate::api::Duration;
use crate::validate::{Diagnostics, FieldPath, Validate, ValidationContext, rules};

/// Envoy's largest ring: a `minimumRingSize` above it is refused.
const MAX_RING_SIZE: u64 = 8_388_608;

impl Validate for DestinationRuleSpec {
    fn validate(&self, path: &FieldPath, _context: &ValidationContext, diagnostics: &mut Diagnostics) {
        rules::hostname(&self.host, true, &path.field("host"), diagnostics);
        if let Some(policy) = &self.traffic_policy {
            traffic_policy(policy, &path.field("trafficPolicy"), diagnostics);
        }
        let mut first_use: BTreeMap<&str, usize> = BTreeMap::new();
        for (index, subset) in self.subsets.iter().enumerate() {
            let subset_path = path.field("subsets").index(index);
            if subset.name.is_empty() {
                diagnostics.error(&subset_path.field("name"), "every subset needs a name, such as v1");
            } else {
                rules::dns_label(&subset.name, "subset name", &subset_path.field("name"), diagnostics);
                if let Some(first) = first_use.get(subset.name.as_str()).copied() {
                    diagnostics.error(
                        &subset_path.field("name"),
                        format!(
                            "subset name {:?} is already used by {}; give each subset a unique name",
                            subset.name,
                            path.field("subsets").index(first)
                        ),
                    );
                } else {
                    first_use.insert(&subset.name, index);
                }
            }
            rules::labels(&subset.labels, &subset_path.field("labels"), diagnostics);
            if let Some(policy) = &subset.traffic_policy {
                traffic_policy(policy, &subset_path.field("trafficPolicy"), diagnostics);
            }
        }
        rules::export_to(&self.export_to, &path.field("exportTo"), diagnostics);
        if let Some(selector) = &self.workload_selector {
            let selector_path = path.field("workloadSelector");
            rules::labels(&selector.match_labels, &selector_path.field("matchLabels"), diagnostics);
            diagnostics.unsupported(&selector_path);
        }
    }
}

impl Validate for TrafficPolicy {
    /// Checks a policy at any level (a rule's top level, a subset); `path` names the policy.
    fn validate(&self, path: &FieldPath, _context: &ValidationContext, diagnostics: &mut Diagnostics) {
        traffic_policy(self, path, diagnostics);
    }
}

impl Validate for ConnectionPoolSettings {
    /// Checks limits wherever they appear (a DestinationRule, a Sidecar's inbound pool);
    /// `path` names the `connectionPool` field. Fields the mesh does not act on yet are
    /// reported as unsupported.
    fn validate(&self, path: &FieldPath, _context: &ValidationContext, diagnostics: &mut Diagnostics) {
        connection_pool_settings(self, path, diagnostics);
    }
}

/// A duration Istio accepts for a timeout or interval: at least 1ms, in whole milliseconds.
pub(crate) fn duration(value: Duration, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if value < Duration::from_millis(1) {
        rules::duration_at_least(value, Duration::from_millis(1), path, diagnostics);
    } else if !value.get().subsec_nanos().is_multiple_of(1_000_000) {
        diagnostics.error(path, format!("duration {value} is finer than a millisecond; use whole milliseconds"));
    }
}

fn percent(value: i32, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if !(0..=100).contains(&value) {
        diagnostics.error(path, format!("{value} is not a percentage; use a whole number from 0 to 100"));
    }
}

fn non_negative(value: Option<i32>, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if let Some(value) = value
        && value < 0
    {
        diagnostics.error(path, format!("{value} is negative; use 0 or more"));
    }
}

/// Checks a traffic policy at any level (top, subset).
pub(crate) fn traffic_policy(policy: &TrafficPolicy, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if policy.is_empty() {
        diagnostics.error(
            path,
            "an empty trafficPolicy does nothing; set at least one of loadBalancer, connectionPool, \
             outlierDetection, tls, portLevelSettings, tunnel, proxyProtocol or retryBudget",
        );
    }
    policy_parts(
        policy.load_balancer.as_ref(),
        policy.connection_pool.as_ref(),
        policy.outlier_detection.as_ref(),
        policy.tls.as_ref(),
        path,
        diagnostics,
    );
    let mut first_use: BTreeMap<u32, usize> = BTreeMap::new();
    for (index, entry) in policy.port_level_settings.iter().enumerate() {
        let entry_path = path.field("portLevelSettings").index(index);
        match entry.port {
            None => diagnostics
                .error(&entry_path.field("port"), "set port.number, the service port (1-65535) this entry applies to"),
            Some(port) => {
                rules::port(port.number, &entry_path.field("port").field("number"), diagnostics);
                if let Some(first) = first_use.get(&port.number) {
                    diagnostics.error(
                        &entry_path.field("port").field("number"),
                        format!(
                            "port {} already has an entry at {}; give each port one entry",
                            port.number,
                            path.field("portLevelSettings").index(*first)
                        ),
                    );
                } else {
                    first_use.insert(port.number, index);
                }
            }
        }
        if entry.load_balancer.is_none()
            && entry.connection_pool.is_none()
            && entry.outlier_detection.is_none()
            && entry.tls.is_none()
        {
            diagnostics.error(
                &entry_path,
                "a port entry without policies does nothing; set loadBalancer, connectionPool, outlierDetection or tls",
            );
        }
        policy_parts(
            entry.load_balancer.as_ref(),
            entry.connection_pool.as_ref(),
            entry.outlier_detection.as_ref(),
            entry.tls.as_ref(),
            &entry_path,
            diagnostics,
        );
    }
    if let Some(tunnel) = &policy.tunnel {
        let tunnel_path = path.field("tunnel");
        diagnostics.unsupported(&tunnel_path);
        if !matches!(tunnel.protocol.as_str(), "" | "CONNECT" | "POST") {
            diagnostics.error(
                &tunnel_path.field("protocol"),
                format!("tunnel protocol {:?} is unknown; use CONNECT or POST", tunnel.protocol),
            );
        }
        if tunnel.target_host.is_empty() {
            diagnostics.error(&tunnel_path.field("targetHost"), "a tunnel needs the host to connect on to");
        }
        rules::port(tunnel.target_port, &tunnel_path.field("targetPort"), diagnostics);
    }
    if policy.proxy_protocol.is_some() {
        diagnostics.unsupported(&path.field("proxyProtocol"));
    }
    if let Some(budget) = &policy.retry_budget {
        let budget_path = path.field("retryBudget");
        diagnostics.unsupported(&budget_path);
        if let Some(value) = budget.percent
            && !(0.0..=100.0).contains(&value)
        {
            diagnostics.error(&budget_path.field("percent"), format!("{value} is not a percentage; use 0 to 100"));
        }
    }
}

fn policy_parts(
    load_balancer: Option<&LoadBalancerSettings>,
    connection_pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierDetection>,
    tls: Option<&ClientTLSSettings>,
    path: &FieldPath,
    diagnostics: &mut Diagnostics,
) {
    if let Some(settings) = load_balancer {
        load_balancer_settings(settings, &path.field("loadBalancer"), diagnostics);
    }
    if let Some(settings) = connection_pool {
        connection_pool_settings(settings, &path.field("connectionPool"), diagnostics);
    }
    if let Some(settings) = outlier {
        outlier_detection(settings, &path.field("outlierDetection"), diagnostics);
    }
    if let Some(settings) = tls {
        super::tls::validate(settings, &path.field("tls"), diagnostics);
    }
}

fn load_balancer_settings(settings: &LoadBalancerSettings, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if settings.simple.is_some() && settings.consistent_hash.is_some() {
        diagnostics.error(path, "set either simple or consistentHash, not both");
    }
    if let Some(hash) = &settings.consistent_hash {
        consistent_hash(hash, &path.field("consistentHash"), diagnostics);
    }
    if let Some(locality) = &settings.locality_lb_setting {
        locality_lb_setting(locality, &path.field("localityLbSetting"), diagnostics);
    }
    if let Some(warmup) = settings.warmup_duration_secs {
        diagnostics.unsupported(&path.field("warmupDurationSecs"));
        duration(warmup, &path.field("warmupDurationSecs"), diagnostics);
    }
    if let Some(warmup) = &settings.warmup {
        let warmup_path = path.field("warmup");
        diagnostics.unsupported(&warmup_path);
        match warmup.duration {
            Some(value) => duration(value, &warmup_path.field("duration"), diagnostics),
            None => diagnostics.error(&warmup_path.field("duration"), "warmup needs a duration, such as 60s"),
        }
        if let Some(value) = warmup.minimum_percent
            && !(0.0..=100.0).contains(&value)
        {
            diagnostics
                .error(&warmup_path.field("minimumPercent"), format!("{value} is not a percentage; use 0 to 100"));
        }
        if let Some(value) = warmup.aggression
            && value < 1.0
        {
            diagnostics
                .error(&warmup_path.field("aggression"), format!("aggression {value} is below 1; use 1 or more"));
        }
    }
}

fn consistent_hash(hash: &ConsistentHashLb, path: &FieldPath, diagnostics: &mut Diagnostics) {
    match hash.keys_set() {
        1 => {}
        0 => diagnostics.error(
            path,
            "set exactly one hash key (httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName); none is set",
        ),
        _ => diagnostics.error(
            path,
            "set exactly one hash key (httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName); several are set",
        ),
    }
    if let Some(header) = &hash.http_header_name
        && !is_header_name(header)
    {
        diagnostics.error(
            &path.field("httpHeaderName"),
            format!("{header:?} is not a header name; use letters, digits and '-', such as x-user"),
        );
    }
    if let Some(cookie) = &hash.http_cookie {
        let cookie_path = path.field("httpCookie");
        if cookie.name.is_empty() {
            diagnostics.error(&cookie_path.field("name"), "a cookie hash needs the cookie's name, such as user");
        }
        if cookie.ttl.is_none() {
            diagnostics.warning(
                &cookie_path.field("ttl"),
                "without a ttl the proxy never sets the cookie, so only clients that already send it stick to an \
                 endpoint; set a ttl (0s for a session cookie)",
            );
        }
        if !cookie.attributes.is_empty() {
            diagnostics.unsupported(&cookie_path.field("attributes"));
        }
    }
    if hash.use_source_ip == Some(false) {
        diagnostics.warning(
            &path.field("useSourceIp"),
            "useSourceIp: false selects no hash key; set it to true or choose another key",
        );
    }
    if let Some(parameter) = &hash.http_query_parameter_name
        && parameter.is_empty()
    {
        diagnostics.error(&path.field("httpQueryParameterName"), "name the query parameter to hash on");
    }
    if hash.ring_hash.is_some() && hash.maglev.is_some() {
        diagnostics.error(path, "set either ringHash or maglev, not both");
    }
    if let Some(size) = hash.minimum_ring_size {
        if hash.ring_hash.is_some() || hash.maglev.is_some() {
            diagnostics.error(
                &path.field("minimumRingSize"),
                "the deprecated minimumRingSize cannot be combined with ringHash or maglev; \
                 move it to ringHash.minimumRingSize",
            );
        } else {
            diagnostics.warning(
                &path.field("minimumRingSize"),
                "deprecated; read as ringHash.minimumRingSize, write it there instead",
            );
        }
        ring_size(size, &path.field("minimumRingSize"), diagnostics);
    }
    if let Some(size) = hash.ring_hash.as_ref().and_then(|ring| ring.minimum_ring_size) {
        ring_size(size, &path.field("ringHash").field("minimumRingSize"), diagnostics);
    }
    if let Some(size) = hash.maglev.as_ref().and_then(|maglev| maglev.table_size)
        && size != 0
        && !is_prime(size)
    {
        diagnostics.error(
            &path.field("maglev").field("tableSize"),
            format!("table size {size} is not a prime number; use a prime such as 65537"),
        );
    }
}

fn ring_size(size: u64, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if size > MAX_RING_SIZE {
        diagnostics.error(path, format!("ring size {size} is too large; use at most {MAX_RING_SIZE}"));
    }
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_prime(value: u64) -> bool {
    if value < 2 {
        return false;
    }
    (2..).take_while(|d: &u64| d.saturating_mul(*d) <= value).all(|d| !value.is_multiple_of(d))
}

fn locality_lb_setting(locality: &LocalityLbSetting, path: &FieldPath, diagnostics: &mut Diagnostics) {
    diagnostics.unsupported(path);
    if !locality.distribute.is_empty() && !locality.failover.is_empty() {
        diagnostics.error(path, "set either distribute or failover, not both");
    }
    for (index, entry) in locality.distribute.iter().enumerate() {
        let total: u64 = entry.to.values().map(|weight| u64::from(*weight)).sum();
        if total != 100 {
            diagnostics.error(
                &path.field("distribute").index(index).field("to"),
                format!("the weights add up to {total}; they must add up to 100"),
            );
        }
    }
    for (index, entry) in locality.failover.iter().enumerate() {
        if entry.from == entry.to {
            diagnostics.error(
                &path.field("failover").index(index),
                format!("failover from {:?} to itself does nothing; name another region in to", entry.from),
            );
        }
    }
}

fn connection_pool_settings(settings: &ConnectionPoolSettings, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if settings.tcp.is_none() && settings.http.is_none() {
        diagnostics.error(path, "an empty connectionPool does nothing; set tcp or http limits");
    }
    if let Some(tcp) = &settings.tcp {
        let tcp_path = path.field("tcp");
        non_negative(tcp.max_connections, &tcp_path.field("maxConnections"), diagnostics);
        if let Some(value) = tcp.connect_timeout {
            duration(value, &tcp_path.field("connectTimeout"), diagnostics);
        }
        if let Some(keepalive) = &tcp.tcp_keepalive {
            let keepalive_path = tcp_path.field("tcpKeepalive");
            if let Some(value) = keepalive.time {
                duration(value, &keepalive_path.field("time"), diagnostics);
            }
            if let Some(value) = keepalive.interval {
                duration(value, &keepalive_path.field("interval"), diagnostics);
            }
        }
        if let Some(value) = tcp.max_connection_duration {
            diagnostics.unsupported(&tcp_path.field("maxConnectionDuration"));
            duration(value, &tcp_path.field("maxConnectionDuration"), diagnostics);
        }
        if let Some(value) = tcp.idle_timeout {
            diagnostics.unsupported(&tcp_path.field("idleTimeout"));
            duration(value, &tcp_path.field("idleTimeout"), diagnostics);
        }
    }
    if let Some(http) = &settings.http {
        let http_path = path.field("http");
        non_negative(http.http1_max_pending_requests, &http_path.field("http1MaxPendingRequests"), diagnostics);
        non_negative(http.http2_max_requests, &http_path.field("http2MaxRequests"), diagnostics);
        non_negative(http.max_requests_per_connection, &http_path.field("maxRequestsPerConnection"), diagnostics);
        non_negative(http.max_retries, &http_path.field("maxRetries"), diagnostics);
        if let Some(value) = http.idle_timeout {
            duration(value, &http_path.field("idleTimeout"), diagnostics);
        }
        if http.h2_upgrade_policy.is_some() {
            diagnostics.unsupported(&http_path.field("h2UpgradePolicy"));
        }
        if http.use_client_protocol.is_some() {
            diagnostics.unsupported(&http_path.field("useClientProtocol"));
        }
        if http.use_client_protocol == Some(true) && http.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) {
            diagnostics.error(
                &http_path.field("useClientProtocol"),
                "useClientProtocol cannot be true when h2UpgradePolicy is UPGRADE; choose one",
            );
        }
        if http.max_concurrent_streams.is_some() {
            diagnostics.unsupported(&http_path.field("maxConcurrentStreams"));
            non_negative(http.max_concurrent_streams, &http_path.field("maxConcurrentStreams"), diagnostics);
        }
    }
}

fn outlier_detection(outlier: &OutlierDetection, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if let Some(count) = outlier.consecutive_errors {
        let errors_path = path.field("consecutiveErrors");
        if count < 0 {
            diagnostics.error(&errors_path, format!("{count} is negative; use 0 or more"));
        }
        diagnostics.warning(
            &errors_path,
            "consecutiveErrors is deprecated; as in Istio it is read as consecutiveGatewayErrors (502, 503 and \
             504 only) and turns the 5xx check off unless consecutive5xxErrors is set; write \
             consecutiveGatewayErrors or consecutive5xxErrors instead",
        );
    }
    if outlier.consecutive_local_origin_failures.is_some() && outlier.split_external_local_origin_errors != Some(true) {
        diagnostics.warning(
            &path.field("consecutiveLocalOriginFailures"),
            "has no effect unless splitExternalLocalOriginErrors is true",
        );
    }
    if let Some(value) = outlier.interval {
        duration(value, &path.field("interval"), diagnostics);
    }
    if let Some(value) = outlier.base_ejection_time {
        duration(value, &path.field("baseEjectionTime"), diagnostics);
    }
    if let Some(value) = outlier.max_ejection_percent {
        percent(value, &path.field("maxEjectionPercent"), diagnostics);
    }
    if let Some(value) = outlier.min_health_percent {
        percent(value, &path.field("minHealthPercent"), diagnostics);
    }
}
