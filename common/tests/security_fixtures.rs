//! `security.istio.io` resources written as Istio's documentation writes them: the good fixtures
//! must parse and validate without errors; each bad fixture has one problem, and its first line
//! (`# expect: ...`) is the message, with object and field path, that it must produce.

use std::path::{Path, PathBuf};

use common::api::security::authorization_policy::Action;
use common::api::security::peer_authentication::MtlsMode;
use common::resource::{Kind, Resource};
use common::validate::{Diagnostics, Severity, ValidationContext};

const KINDS: &[(&str, Kind)] = &[
    ("peer_authentication", Kind::PeerAuthentication),
    ("authorization_policy", Kind::AuthorizationPolicy),
    ("request_authentication", Kind::RequestAuthentication),
];

fn fixtures(kind_dir: &str, which: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(kind_dir).join(which);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

fn parse_good(path: &Path) -> Vec<Resource> {
    let text = std::fs::read_to_string(path).unwrap();
    let (resources, errors) = Resource::parse_yaml_documents(&text);
    assert!(errors.is_empty(), "{}: {errors:?}", path.display());
    assert!(!resources.is_empty(), "{}: no resources", path.display());
    resources
}

fn parse_one(text: &str) -> Resource {
    let (mut resources, errors) = Resource::parse_yaml_documents(text);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(resources.len(), 1);
    resources.remove(0)
}

fn validate(resource: &Resource) -> Diagnostics {
    resource.validate(&ValidationContext::standalone())
}

fn fields_of(diagnostics: &Diagnostics, severity: Severity) -> Vec<String> {
    diagnostics.of(severity).map(|item| item.field.to_string()).collect()
}

#[test]
fn istio_documented_examples_parse_and_validate_without_errors() {
    let mut count = 0;
    for (dir, kind) in KINDS {
        for path in fixtures(dir, "good") {
            for resource in parse_good(&path) {
                assert_eq!(resource.kind(), *kind, "{}", path.display());
                let diagnostics = validate(&resource);
                assert!(!diagnostics.has_errors(), "{}:\n{diagnostics}", path.display());
                assert_eq!(diagnostics.of(Severity::Warning).count(), 0, "{}:\n{diagnostics}", path.display());
                count += 1;
            }
        }
    }
    assert!(count >= 19, "only {count} good resources");
}

#[test]
fn each_bad_fixture_reports_its_one_problem_with_object_and_path() {
    let mut count = 0;
    let mut failures = Vec::new();
    for (dir, _) in KINDS {
        for path in fixtures(dir, "bad") {
            let text = std::fs::read_to_string(&path).unwrap();
            let expected = text
                .lines()
                .next()
                .and_then(|line| line.strip_prefix("# expect: "))
                .unwrap_or_else(|| panic!("{}: first line must be `# expect: <message>`", path.display()));
            let (resources, parse_errors) = Resource::parse_yaml_documents(&text);
            let mut messages: Vec<String> = parse_errors.iter().map(ToString::to_string).collect();
            for resource in &resources {
                let diagnostics = validate(resource);
                messages.extend(diagnostics.of(Severity::Error).map(ToString::to_string));
            }
            if messages.len() != 1 || !messages[0].contains(expected) {
                failures.push(format!("{}:\n  expected: {expected}\n  got:      {messages:#?}", path.display()));
            }
            count += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(count >= 30, "only {count} bad fixtures");
}

#[test]
fn deny_all_is_valid_and_needs_no_report() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/authorization_policy/good/deny_all.yaml");
    let resource = &parse_good(&path)[0];
    assert!(validate(resource).is_empty(), "{}", validate(resource));
    let Resource::AuthorizationPolicy(policy) = resource else { panic!("not an AuthorizationPolicy") };
    assert!(policy.spec.rules.is_empty());
    assert_eq!(policy.spec.action(), Action::Allow);
}

#[test]
fn fields_not_enforced_yet_are_reported_never_ignored() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/authorization_policy/good/not_enforced_yet.yaml");
    let resources = parse_good(&path);
    let reported: Vec<Vec<String>> =
        resources.iter().map(|resource| fields_of(&validate(resource), Severity::Unsupported)).collect();
    assert_eq!(
        reported[0],
        [
            "spec.rules[0].from[0].source.requestPrincipals",
            "spec.rules[0].from[0].source.remoteIpBlocks",
            "spec.rules[0].to[0].operation.paths[0]",
            "spec.rules[0].when[0].key",
        ]
    );
    assert_eq!(reported[1], ["spec.provider", "spec.action"]);
    assert_eq!(reported[2], ["spec.targetRefs", "spec.action"]);
}

#[test]
fn supported_policies_report_nothing() {
    for file in ["productpage_get", "reviews_from_productpage", "deny_header", "tcp_ports", "ip_allow_list"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/authorization_policy/good")
            .join(format!("{file}.yaml"));
        for resource in parse_good(&path) {
            let diagnostics = validate(&resource);
            assert!(diagnostics.is_empty(), "{file}:\n{diagnostics}");
        }
    }
    for path in fixtures("peer_authentication", "good") {
        for resource in parse_good(&path) {
            assert!(validate(&resource).is_empty(), "{}:\n{}", path.display(), validate(&resource));
        }
    }
}

#[test]
fn jwt_rules_are_reported_unsupported_once() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/request_authentication/good/jwks_uri.yaml");
    let resources = parse_good(&path);
    assert_eq!(fields_of(&validate(&resources[0]), Severity::Unsupported), ["spec.jwtRules"]);
    let Resource::RequestAuthentication(legacy) = &resources[1] else { panic!("not a RequestAuthentication") };
    assert_eq!(legacy.spec.jwt_rules[0].jwks_location(), Some("https://accounts.example.com/keys"));
    let empty = parse_one(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: none, namespace: foo}\nspec: {}\n",
    );
    assert!(validate(&empty).is_empty());
}

#[test]
fn port_level_mtls_reads_yaml_number_keys_and_kubernetes_json_string_keys() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peer_authentication/good/port_level_disable.yaml");
    let from_yaml = parse_good(&path).remove(0);
    let json = serde_json::json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "finance", "namespace": "foo"},
        "spec": {
            "selector": {"matchLabels": {"app": "finance"}},
            "mtls": {"mode": "STRICT"},
            "portLevelMtls": {"8080": {"mode": "DISABLE"}}
        }
    });
    let from_json = Resource::from_document(json.clone()).unwrap().unwrap();
    assert_eq!(from_yaml, from_json);
    let Resource::PeerAuthentication(policy) = &from_json else { panic!("not a PeerAuthentication") };
    assert_eq!(policy.spec.port_level_mtls[&8080].mode, MtlsMode::Disable);
    assert_eq!(policy.spec.mtls.as_ref().unwrap().mode, MtlsMode::Strict);
    // What the controller stores and forwards reads back to the same resource.
    assert_eq!(from_json.to_json(), json);
    assert_eq!(Resource::from_document(from_json.to_json()).unwrap().unwrap(), from_json);
}

#[test]
fn lower_case_methods_are_accepted_with_a_warning() {
    let resource = parse_one(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  rules:
  - to:
    - operation:
        methods: ["get", "GET", "*"]
"#,
    );
    let diagnostics = validate(&resource);
    assert!(!diagnostics.has_errors(), "{diagnostics}");
    let warnings: Vec<String> = diagnostics.of(Severity::Warning).map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with(
        "AuthorizationPolicy foo/httpbin: warning: spec.rules[0].to[0].operation.methods[0]: \"get\" is not an upper-case HTTP method"
    ));
}

#[test]
fn all_good_fixtures_survive_a_json_round_trip() {
    for (dir, _) in KINDS {
        for path in fixtures(dir, "good") {
            for resource in parse_good(&path) {
                let again = Resource::from_document(resource.to_json()).unwrap().unwrap();
                assert_eq!(again, resource, "{}", path.display());
            }
        }
    }
}

#[test]
fn principals_with_the_spiffe_scheme_are_accepted_with_a_warning() {
    let resource = parse_one(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  rules:
  - from:
    - source:
        principals: ["spiffe://cluster.local/ns/default/sa/sleep"]
"#,
    );
    let diagnostics = validate(&resource);
    assert!(!diagnostics.has_errors(), "{diagnostics}");
    assert_eq!(fields_of(&diagnostics, Severity::Warning), ["spec.rules[0].from[0].source.principals[0]"]);
    assert!(diagnostics.to_string().contains("write \"cluster.local/ns/default/sa/sleep\""), "{diagnostics}");
}
