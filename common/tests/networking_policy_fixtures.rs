//! DestinationRule, ServiceEntry and WorkloadEntry fixtures: Istio's documented examples must
//! parse and validate cleanly; each invalid fixture holds one problem and must be reported with
//! the exact message, object and field path written in its `# expect:` first line.

use std::fs;
use std::path::{Path, PathBuf};

use common::api::networking::destination_rule::{DestinationRule, SimpleLb, TlsMode};
use common::api::networking::service_entry::{Location, Resolution};
use common::resource::Resource;
use common::validate::{Diagnostics, Severity, ValidationContext};

const KINDS: &[&str] = &["destination_rule", "service_entry", "workload_entry"];

fn fixture_dir(kind: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(kind)
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

fn parse_clean(text: &str, name: &str) -> Vec<Resource> {
    let (resources, errors) = Resource::parse_yaml_documents(text);
    assert!(errors.is_empty(), "{name}: {errors:?}");
    assert!(!resources.is_empty(), "{name}: no resources");
    resources
}

fn validate(resource: &Resource) -> Diagnostics {
    resource.validate(&ValidationContext::standalone())
}

fn load(kind: &str, file: &str) -> Vec<Resource> {
    let path = fixture_dir(kind).join(file);
    parse_clean(&fs::read_to_string(&path).unwrap(), file)
}

#[test]
fn documented_examples_parse_and_validate_without_errors() {
    let mut documents = 0;
    for kind in KINDS {
        for path in yaml_files(&fixture_dir(kind)) {
            let name = path.display().to_string();
            for resource in parse_clean(&fs::read_to_string(&path).unwrap(), &name) {
                // Documented examples use only what the mesh implements: no errors, no
                // warnings, nothing unsupported.
                let report = validate(&resource);
                assert!(report.is_empty(), "{name}:\n{report}");
                // What the mesh writes back reads the same.
                let again = Resource::from_document(resource.to_json()).unwrap().unwrap();
                assert_eq!(again, resource, "{name}: round trip");
                documents += 1;
            }
        }
    }
    assert!(documents >= 20, "only {documents} documents found");
}

#[test]
fn each_invalid_fixture_reports_its_one_problem_with_path() {
    let mut checked = 0;
    for kind in KINDS {
        for path in yaml_files(&fixture_dir(kind).join("invalid")) {
            let name = path.display().to_string();
            let text = fs::read_to_string(&path).unwrap();
            let expected = text
                .lines()
                .next()
                .and_then(|line| line.strip_prefix("# expect: "))
                .unwrap_or_else(|| panic!("{name}: first line must be `# expect: <message>`"));
            let (resources, errors) = Resource::parse_yaml_documents(&text);
            let mut problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
            for resource in &resources {
                let report = validate(resource);
                problems.extend(report.of(Severity::Error).map(ToString::to_string));
            }
            assert_eq!(problems.len(), 1, "{name}: expected exactly one problem, got {problems:#?}");
            assert!(problems[0].contains(expected), "{name}:\n  expected: {expected}\n  got:      {}", problems[0]);
            checked += 1;
        }
    }
    assert!(checked >= 50, "only {checked} invalid fixtures found");
}

#[test]
fn unknown_fields_are_refused_with_their_path() {
    let text = fs::read_to_string(fixture_dir("destination_rule").join("invalid/unknown-field.yaml")).unwrap();
    let (resources, errors) = Resource::parse_yaml_documents(&text);
    assert!(resources.is_empty());
    let message = errors[0].to_string();
    assert!(
        message.starts_with("DestinationRule default/reviews: spec.trafficPolicy.loadBalancer.simpel: "),
        "{message}"
    );
    assert!(message.contains("unknown field `simpel`"), "{message}");
    assert!(message.contains("expected one of"), "{message}");
}

#[test]
fn bookinfo_subsets_and_the_circuit_breaker_read_as_written() {
    let bookinfo = load("destination_rule", "bookinfo-all.yaml");
    let Resource::DestinationRule(reviews) = &bookinfo[1] else { panic!("reviews is a DestinationRule") };
    assert_eq!(reviews.spec.subset_names().collect::<Vec<_>>(), ["v1", "v2", "v3"]);
    assert_eq!(reviews.spec.subset("v2").unwrap().labels["version"], "v2");

    let breaker = load("destination_rule", "httpbin-circuit-breaker.yaml");
    let Resource::DestinationRule(httpbin) = &breaker[0] else { panic!("httpbin is a DestinationRule") };
    let policy = httpbin.spec.policy_for(None, Some(8000));
    let pool = policy.connection_pool.unwrap();
    assert_eq!(pool.tcp.unwrap().max_connections, Some(1));
    let http = pool.http.unwrap();
    assert_eq!((http.http1_max_pending_requests, http.max_requests_per_connection), (Some(1), Some(1)));
    let outlier = policy.outlier_detection.unwrap();
    assert_eq!(outlier.consecutive_5xx_threshold(), Some(1));
    assert_eq!(outlier.interval_or_default().get(), std::time::Duration::from_secs(1));
    assert_eq!(outlier.base_ejection_time_or_default().get(), std::time::Duration::from_secs(180));
    assert_eq!(outlier.max_ejection_percent_or_default(), 100);
}

#[test]
fn port_level_settings_and_subsets_merge_as_istio_documents() {
    let rules = load("destination_rule", "ratings-port-level.yaml");
    let Resource::DestinationRule(ratings) = &rules[0] else { panic!() };
    let simple = |rule: &DestinationRule, subset: Option<&str>, port| {
        rule.spec.policy_for(subset, port).load_balancer.and_then(|lb| lb.simple)
    };
    assert_eq!(simple(ratings, None, Some(9080)), Some(SimpleLb::RoundRobin));
    assert_eq!(simple(ratings, None, Some(80)), Some(SimpleLb::LeastRequest));
    assert_eq!(simple(ratings, None, None), Some(SimpleLb::LeastRequest));

    let rules = load("destination_rule", "ratings-subset-override.yaml");
    let Resource::DestinationRule(ratings) = &rules[0] else { panic!() };
    assert_eq!(simple(ratings, Some("testversion"), None), Some(SimpleLb::RoundRobin));
    let merged = ratings.spec.policy_for(Some("testversion"), None);
    assert_eq!(merged.connection_pool.unwrap().tcp.unwrap().max_connections, Some(100));

    let rules = load("destination_rule", "external-tls.yaml");
    let Resource::DestinationRule(cnn) = &rules[0] else { panic!() };
    assert_eq!(cnn.spec.policy_for(None, Some(80)).tls.unwrap().mode(), TlsMode::Simple);
    assert!(cnn.spec.policy_for(None, Some(443)).tls.is_none());
}

#[test]
fn fields_not_supported_yet_are_each_reported() {
    let text = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: everything, namespace: default}
spec:
  host: reviews
  workloadSelector: {matchLabels: {app: productpage}}
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting: {enabled: true, failoverPriority: [topology.kubernetes.io/zone]}
      warmupDurationSecs: 30s
      warmup: {duration: 60s, minimumPercent: 10, aggression: 1.5}
    connectionPool:
      tcp: {maxConnections: 10, maxConnectionDuration: 1h, idleTimeout: 30m}
      http: {h2UpgradePolicy: UPGRADE, useClientProtocol: false, maxConcurrentStreams: 100}
    tls:
      mode: SIMPLE
      subjectAltNames: [reviews.example.com]
      insecureSkipVerify: false
      caCrl: /etc/certs/crl.pem
    tunnel: {protocol: CONNECT, targetHost: 10.0.0.1, targetPort: 8080}
    proxyProtocol: {version: V2}
    retryBudget: {percent: 20, minRetryConcurrency: 3}
  subsets:
  - name: v1
    trafficPolicy:
      loadBalancer:
        consistentHash:
          httpCookie: {name: user, ttl: 60s, attributes: [{name: SameSite, value: Strict}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: everything, namespace: default}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
  subjectAltNames: [spiffe://example.com/api]
  endpoints: [{address: api-1.example.com, network: external}]
"#;
    let resources = parse_clean(text, "unsupported");
    let mut unsupported = Vec::new();
    for resource in &resources {
        let report = validate(resource);
        assert!(!report.has_errors(), "{report}");
        unsupported.extend(report.of(Severity::Unsupported).map(|item| item.field.to_string()));
    }
    let expected = [
        "spec.trafficPolicy.loadBalancer.localityLbSetting",
        "spec.trafficPolicy.loadBalancer.warmupDurationSecs",
        "spec.trafficPolicy.loadBalancer.warmup",
        "spec.trafficPolicy.connectionPool.tcp.maxConnectionDuration",
        "spec.trafficPolicy.connectionPool.tcp.idleTimeout",
        "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy",
        "spec.trafficPolicy.connectionPool.http.useClientProtocol",
        "spec.trafficPolicy.connectionPool.http.maxConcurrentStreams",
        "spec.trafficPolicy.tls.subjectAltNames",
        "spec.trafficPolicy.tls.insecureSkipVerify",
        "spec.trafficPolicy.tls.caCrl",
        "spec.trafficPolicy.tunnel",
        "spec.trafficPolicy.proxyProtocol",
        "spec.trafficPolicy.retryBudget",
        "spec.subsets[0].trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes",
        "spec.workloadSelector",
        "spec.endpoints[0].network",
        "spec.subjectAltNames",
    ];
    assert_eq!(unsupported, expected);
}

#[test]
fn the_deprecated_consecutive_errors_is_a_warning_naming_its_replacement() {
    let text = r#"
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection: {consecutiveErrors: 3, interval: 10s}
"#;
    let resources = parse_clean(text, "deprecated");
    let report = validate(&resources[0]);
    assert!(!report.has_errors(), "{report}");
    let warnings: Vec<String> = report.of(Severity::Warning).map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(
            "DestinationRule default/reviews: warning: spec.trafficPolicy.outlierDetection.consecutiveErrors: \
             consecutiveErrors is deprecated; as in Istio it is read as consecutiveGatewayErrors"
        ),
        "{}",
        warnings[0]
    );
    let Resource::DestinationRule(rule) = &resources[0] else { panic!() };
    let outlier = rule.spec.traffic_policy.as_ref().unwrap().outlier_detection.as_ref().unwrap();
    assert_eq!(outlier.consecutive_gateway_threshold(), Some(3));
}

#[test]
fn service_entries_read_location_and_resolution() {
    let entries = load("service_entry", "mesh-internal-workload-selector.yaml");
    let Resource::ServiceEntry(details) = &entries[0] else { panic!() };
    assert_eq!(details.spec.location(), Location::MeshInternal);
    assert_eq!(details.spec.resolution(), Resolution::Static);
    assert_eq!(details.spec.workload_selector.as_ref().unwrap().labels["app"], "details-legacy");
    assert_eq!(details.spec.port("http").and_then(|port| port.target_port), Some(8080));

    let entries = load("service_entry", "wildcard-none.yaml");
    let Resource::ServiceEntry(wikipedia) = &entries[0] else { panic!() };
    assert_eq!(wikipedia.spec.location(), Location::MeshExternal);
    assert_eq!(wikipedia.spec.resolution(), Resolution::None);
}
