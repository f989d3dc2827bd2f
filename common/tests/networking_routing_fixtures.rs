//! VirtualService, Gateway and Sidecar read as Istio's tasks write them.
//!
//! `fixtures/<kind>/good/*.yaml` hold YAML from Istio's documented examples (Bookinfo routing,
//! traffic shifting, fault injection, timeouts, retries, mirroring, ingress, egress limits) in
//! every served version; each must parse and validate without errors. `fixtures/<kind>/bad/`
//! hold one mistake each, and their first line `# expect: ...` is the message (object, field
//! path, remedy) that parsing or validation must produce.

use std::path::{Path, PathBuf};

use common::resource::{Kind, Resource};
use common::validate::{Severity, ValidationContext};

const KINDS: &[(&str, Kind)] =
    &[("virtual_service", Kind::VirtualService), ("gateway", Kind::Gateway), ("sidecar", Kind::Sidecar)];

fn fixtures(kind_dir: &str, set: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(kind_dir).join(set);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.expect("fixture directory is readable").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

/// Every message parsing and validating `text` produces, errors and otherwise.
fn messages(text: &str) -> (Vec<Resource>, Vec<String>) {
    let (resources, errors) = Resource::parse_yaml_documents(text);
    let mut messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    for resource in &resources {
        messages.extend(resource.validate(&ValidationContext::standalone()).all().iter().map(ToString::to_string));
    }
    (resources, messages)
}

#[test]
fn istio_task_examples_parse_and_validate_cleanly() {
    let mut checked = 0;
    for (dir, kind) in KINDS {
        for path in fixtures(dir, "good") {
            let text = std::fs::read_to_string(&path).expect("fixture is readable");
            let (resources, errors) = Resource::parse_yaml_documents(&text);
            assert!(errors.is_empty(), "{}: {errors:?}", path.display());
            assert!(!resources.is_empty(), "{}: no resources", path.display());
            for resource in &resources {
                assert_eq!(resource.kind(), *kind, "{}", path.display());
                let diagnostics = resource.validate(&ValidationContext::standalone());
                assert!(!diagnostics.has_errors(), "{}:\n{diagnostics}", path.display());
                // The examples use only what the mesh implements.
                assert_eq!(diagnostics.of(Severity::Unsupported).count(), 0, "{}:\n{diagnostics}", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} resources checked");
}

#[test]
fn each_bad_fixture_fails_with_its_expected_message() {
    for (dir, _) in KINDS {
        for path in fixtures(dir, "bad") {
            let text = std::fs::read_to_string(&path).expect("fixture is readable");
            let expected = text
                .lines()
                .next()
                .and_then(|line| line.strip_prefix("# expect: "))
                .unwrap_or_else(|| panic!("{}: first line must be `# expect: <message>`", path.display()));
            let (_, messages) = messages(&text);
            assert!(
                messages.iter().any(|message| message.contains(expected)),
                "{}: expected {expected:?} among {messages:#?}",
                path.display()
            );
            let problems = messages.iter().filter(|message| !message.contains(": not supported yet: ")).count();
            assert_eq!(problems, 1, "{}: one mistake should give one problem: {messages:#?}", path.display());
        }
    }
}

#[test]
fn parsed_routes_keep_istio_semantics() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/virtual_service/good/ratings-retries.yaml"),
    )
    .expect("fixture is readable");
    let (resources, _) = Resource::parse_yaml_documents(&text);
    let Resource::VirtualService(service) = &resources[0] else { panic!("not a VirtualService") };
    let retries = service.spec.http[0].retries.as_ref().expect("retries");
    assert_eq!(retries.attempts, 3);
    assert_eq!(retries.per_try_timeout.map(|timeout| timeout.get()), Some(std::time::Duration::from_secs(2)));
    // The stored form is the v1 schema whatever version the YAML was written in.
    let json = resources[0].to_json();
    assert_eq!(json["apiVersion"], "networking.istio.io/v1");
    assert_eq!(json["spec"]["http"][0]["retries"]["perTryTimeout"], "2s");
    assert_eq!(json["spec"]["http"][0]["route"][0]["destination"]["subset"], "v1");
}

#[test]
fn fields_not_implemented_yet_are_reported_not_ignored() {
    let text = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /}
      statPrefix: reviews-root
    corsPolicy:
      allowOrigins: [{exact: "https://example.com"}]
      unmatchedPreflights: IGNORE
    route:
    - destination: {host: reviews}
  - match:
    - uri: {prefix: /api}
    delegate: {name: reviews-api}
  - directResponse: {status: 503, body: {string: down}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    bind: 0.0.0.0
    defaultEndpoint: 127.0.0.1:8080
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: cert, cipherSuites: [ECDHE-RSA-AES256-GCM-SHA384], minProtocolVersion: TLSV1_2}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
    captureMode: NONE
  egress:
  - port: {number: 3306, protocol: TCP, name: mysql}
    captureMode: IPTABLES
    bind: 127.0.0.1
    hosts: ["*/mysql.example.com"]
  inboundConnectionPool:
    tcp: {maxConnections: 100}
  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy: {host: proxy.egress.svc.cluster.local, port: {number: 3128}}
"#;
    let (resources, messages) = messages(text);
    assert_eq!(resources.len(), 3, "{messages:#?}");
    let unsupported: Vec<&str> = messages
        .iter()
        .filter(|message| message.contains(": not supported yet: "))
        .map(|message| {
            message.split(": not supported yet: ").nth(1).and_then(|rest| rest.split(':').next()).unwrap_or_default()
        })
        .collect();
    let expected = [
        "spec.http[0].match[0].statPrefix",
        "spec.http[0].corsPolicy",
        "spec.http[1].delegate",
        "spec.http[2].directResponse",
        "spec.servers[0].tls.minProtocolVersion",
        "spec.servers[0].tls.cipherSuites",
        "spec.servers[0].bind",
        "spec.servers[0].defaultEndpoint",
        "spec.ingress[0]",
        "spec.egress[0].port",
        "spec.egress[0].bind",
        "spec.egress[0].captureMode",
        "spec.inboundConnectionPool",
        "spec.outboundTrafficPolicy.egressProxy",
    ];
    for field in expected {
        assert!(unsupported.contains(&field), "{field} not reported; got {unsupported:#?}");
    }
    assert_eq!(messages.len(), unsupported.len(), "only unsupported fields expected: {messages:#?}");
}
