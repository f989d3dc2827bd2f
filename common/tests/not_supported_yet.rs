//! The list of fields the mesh does not act on yet (`common::validate::NOT_SUPPORTED_YET`) and
//! what validation reports must agree: `tests/fixtures/not_supported_yet/` sets every listed
//! field in valid resources, and each entry must be reported there, with its note, and nothing
//! else. Deleting an entry when a feature lands makes this test name the call site to drop.

use std::collections::BTreeSet;
use std::path::Path;

use common::resource::Resource;
use common::validate::not_supported_yet::pattern;
use common::validate::{NOT_SUPPORTED_YET, Severity, ValidationContext};

fn fixture_resources() -> Vec<Resource> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/not_supported_yet");
    let mut resources = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let (parsed, errors) = Resource::parse_yaml_documents(&text);
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        resources.extend(parsed);
    }
    resources
}

/// Whether a reported (kind, blanked path) is what `entry` describes.
fn covers(entry_kind: &str, entry_field: &str, kind: &str, field: &str) -> bool {
    entry_kind == kind
        && match entry_field.strip_prefix("**") {
            Some(suffix) => field.ends_with(suffix),
            None => entry_field == field,
        }
}

#[test]
fn every_listed_field_is_reported_and_nothing_else() {
    let mut reported = BTreeSet::new();
    for resource in fixture_resources() {
        let diagnostics = resource.validate(&ValidationContext::standalone());
        assert!(!diagnostics.has_errors(), "the fixtures must be valid:\n{diagnostics}");
        for item in diagnostics.of(Severity::Unsupported) {
            assert!(item.to_string().contains("not supported yet: "), "{item}");
            reported.insert((item.object.kind.clone(), pattern(&item.field)));
        }
    }
    let missing: Vec<String> = NOT_SUPPORTED_YET
        .iter()
        .filter(|entry| !reported.iter().any(|(kind, field)| covers(entry.kind, entry.field, kind, field)))
        .map(|entry| format!("{} {}", entry.kind, entry.field))
        .collect();
    assert!(missing.is_empty(), "listed but never reported (stale entry, or a fixture lacks it): {missing:#?}");
}

#[test]
fn the_report_names_object_field_and_what_is_missing() {
    let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\n\
                spec:\n  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews}}]\n  \
                - corsPolicy: {allowOrigins: [{exact: 'https://a.example'}]}\n    route: [{destination: {host: reviews}}]\n";
    let (resources, errors) = Resource::parse_yaml_documents(text);
    assert!(errors.is_empty(), "{errors:?}");
    let diagnostics = resources[0].validate(&ValidationContext::standalone());
    let messages: Vec<String> = diagnostics.of(Severity::Unsupported).map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "VirtualService default/reviews: not supported yet: spec.http[1].corsPolicy: accepted, but the mesh does not \
          act on it yet: CORS preflights and headers are not handled"
        ]
    );
}

#[test]
fn features_the_proxy_issues_implement_are_not_reported() {
    let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings, namespace: default}\n\
                spec:\n  hosts: [ratings]\n  http:\n  - timeout: 2s\n    retries: {attempts: 3, perTryTimeout: 1s, \
                retryOn: 5xx, retryRemoteLocalities: true, retryIgnorePreviousHosts: true, backoff: 50ms}\n    \
                fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 10}}}\n    \
                mirror: {host: ratings-shadow}\n    mirrorPercentage: {value: 50}\n    \
                route: [{destination: {host: ratings}}]\n";
    let (resources, errors) = Resource::parse_yaml_documents(text);
    assert!(errors.is_empty(), "{errors:?}");
    let diagnostics = resources[0].validate(&ValidationContext::standalone());
    assert!(diagnostics.is_empty(), "{diagnostics}");
}
