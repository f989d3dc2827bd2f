//! The layering of policies (service, port, subset, subset port), checked against examples
//! shaped like those in Istio's DestinationRule reference.

use super::*;
use crate::api::Duration;

fn rule(yaml: &str) -> DestinationRuleSpec {
    serde_yaml::from_str(yaml).expect("test rule parses")
}

fn simple(policy: &TrafficPolicy) -> Option<SimpleLb> {
    policy.load_balancer.as_ref().and_then(|lb| lb.simple)
}

const SUBSET_OVERRIDE: &str = r#"
host: ratings.prod.svc.cluster.local
trafficPolicy:
  loadBalancer:
    simple: LEAST_REQUEST
  connectionPool:
    tcp:
      maxConnections: 100
  outlierDetection:
    consecutive5xxErrors: 7
subsets:
- name: testversion
  labels:
    version: v3
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
    connectionPool:
      http:
        http1MaxPendingRequests: 10
- name: plain
  labels:
    version: v1
"#;

#[test]
fn a_subset_policy_replaces_only_the_fields_it_sets() {
    let rule = rule(SUBSET_OVERRIDE);
    let merged = rule.policy_for(Some("testversion"), None);
    assert_eq!(simple(&merged), Some(SimpleLb::RoundRobin));
    // The outlier detection is inherited from the top level.
    assert_eq!(merged.outlier_detection.as_ref().and_then(|od| od.consecutive_5xx_errors), Some(7));
    // The connection pool is replaced whole: the top-level tcp limit is not merged in.
    let pool = merged.connection_pool.expect("subset pool");
    assert!(pool.tcp.is_none());
    assert_eq!(pool.http.and_then(|http| http.http1_max_pending_requests), Some(10));
}

#[test]
fn a_subset_without_policy_or_an_unknown_subset_gets_the_top_level_policy() {
    let rule = rule(SUBSET_OVERRIDE);
    let top = rule.traffic_policy.clone().unwrap();
    assert_eq!(rule.policy_for(Some("plain"), None), top);
    assert_eq!(rule.policy_for(Some("no-such-subset"), Some(9080)), top);
    assert_eq!(rule.policy_for(None, None), top);
    assert_eq!(rule.subset("plain").map(|s| s.labels["version"].as_str()), Some("v1"));
    assert!(rule.subset("v9").is_none());
}

const PORT_LEVEL: &str = r#"
host: ratings.prod.svc.cluster.local
trafficPolicy:
  loadBalancer:
    simple: LEAST_REQUEST
  outlierDetection:
    interval: 5s
  tls:
    mode: ISTIO_MUTUAL
  portLevelSettings:
  - port:
      number: 80
    loadBalancer:
      simple: RANDOM
  - port:
      number: 9080
    loadBalancer:
      simple: ROUND_ROBIN
subsets:
- name: v2
  labels:
    version: v2
  trafficPolicy:
    outlierDetection:
      interval: 1s
    portLevelSettings:
    - port:
        number: 9080
      connectionPool:
        tcp:
          maxConnections: 5
"#;

#[test]
fn a_port_entry_replaces_the_policies_of_its_level_as_a_group() {
    let rule = rule(PORT_LEVEL);
    let on_9080 = rule.policy_for(None, Some(9080));
    assert_eq!(simple(&on_9080), Some(SimpleLb::RoundRobin));
    // Port-level settings do not inherit: outlier detection and TLS fall back to defaults.
    assert!(on_9080.outlier_detection.is_none());
    assert!(on_9080.tls.is_none());
    assert!(on_9080.port_level_settings.is_empty());
    let on_other = rule.policy_for(None, Some(443));
    assert_eq!(simple(&on_other), Some(SimpleLb::LeastRequest));
    assert_eq!(on_other.tls.as_ref().map(ClientTLSSettings::mode), Some(TlsMode::IstioMutual));
    assert!(on_other.port_level_settings.is_empty());
}

#[test]
fn subset_fields_override_the_top_level_port_entry_and_subset_port_entries_override_both() {
    let rule = rule(PORT_LEVEL);
    // On port 80: the top-level port entry (RANDOM, no TLS) then the subset's outlier detection.
    let on_80 = rule.policy_for(Some("v2"), Some(80));
    assert_eq!(simple(&on_80), Some(SimpleLb::Random));
    assert!(on_80.tls.is_none());
    assert_eq!(on_80.outlier_detection.and_then(|od| od.interval), Some(Duration::from_millis(1000)));
    // On 9080 the subset's own port entry wins and, again, brings defaults for the rest.
    let on_9080 = rule.policy_for(Some("v2"), Some(9080));
    assert!(on_9080.load_balancer.is_none());
    assert!(on_9080.outlier_detection.is_none());
    assert_eq!(on_9080.connection_pool.and_then(|pool| pool.tcp).and_then(|tcp| tcp.max_connections), Some(5));
    // Without a port, only the subset's fields apply.
    let portless = rule.policy_for(Some("v2"), None);
    assert_eq!(simple(&portless), Some(SimpleLb::LeastRequest));
    assert_eq!(portless.tls.map(|tls| tls.mode()), Some(TlsMode::IstioMutual));
}

#[test]
fn outlier_thresholds_follow_istio_defaults_and_the_deprecated_field() {
    let defaults = OutlierDetection::default();
    assert_eq!(defaults.consecutive_5xx_threshold(), Some(5));
    assert_eq!(defaults.consecutive_gateway_threshold(), None);
    assert_eq!(defaults.interval_or_default(), Duration::from_millis(10_000));
    assert_eq!(defaults.base_ejection_time_or_default(), Duration::from_millis(30_000));
    assert_eq!(defaults.max_ejection_percent_or_default(), 10);
    let deprecated = OutlierDetection { consecutive_errors: Some(3), ..OutlierDetection::default() };
    assert_eq!(deprecated.consecutive_gateway_threshold(), Some(3));
    assert_eq!(deprecated.consecutive_5xx_threshold(), None);
    let both = OutlierDetection {
        consecutive_errors: Some(3),
        consecutive_gateway_errors: Some(4),
        consecutive_5xx_errors: Some(0),
        ..OutlierDetection::default()
    };
    assert_eq!(both.consecutive_gateway_threshold(), Some(4));
    assert_eq!(both.consecutive_5xx_threshold(), None);
}

#[test]
fn simple_algorithms_resolve_deprecated_and_default_names() {
    assert_eq!(SimpleLb::Unspecified.effective(), SimpleLb::LeastRequest);
    assert_eq!(SimpleLb::LeastConn.effective(), SimpleLb::LeastRequest);
    assert_eq!(SimpleLb::Random.effective(), SimpleLb::Random);
    let hash = ConsistentHashLb { minimum_ring_size: Some(2048), ..ConsistentHashLb::default() };
    assert_eq!(hash.ring_size(), 2048);
    assert_eq!(ConsistentHashLb::default().ring_size(), 1024);
}
