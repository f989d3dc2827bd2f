//! The VirtualService rules that are easy to get subtly wrong.

use std::collections::{BTreeMap, BTreeSet};

use super::super::actions::is_retry_condition;
use super::super::{
    Destination, HttpRoute, HttpRouteDestination, RouteDestination, TlsMatchAttributes, TlsRoute, VirtualServiceSpec,
};
use crate::api::StringMatch;
use crate::validate::{Diagnostics, FieldPath, ObjectRef, Severity, Validate, ValidationContext};

fn findings(spec: &VirtualServiceSpec, context: &ValidationContext) -> Diagnostics {
    let mut diagnostics = Diagnostics::new(ObjectRef::new("VirtualService", "default", "reviews"));
    spec.validate(&FieldPath::spec(), context, &mut diagnostics);
    diagnostics
}

fn errors(spec: &VirtualServiceSpec) -> Vec<String> {
    findings(spec, &ValidationContext::standalone()).of(Severity::Error).map(ToString::to_string).collect()
}

fn to(host: &str, subset: &str, weight: Option<i32>) -> HttpRouteDestination {
    HttpRouteDestination {
        destination: Destination { host: host.into(), subset: subset.into(), port: None },
        weight,
        headers: None,
    }
}

fn reviews(route: Vec<HttpRouteDestination>) -> VirtualServiceSpec {
    VirtualServiceSpec {
        hosts: vec!["reviews".into()],
        http: vec![HttpRoute { route, ..HttpRoute::default() }],
        ..VirtualServiceSpec::default()
    }
}

#[test]
fn a_single_destination_needs_no_weight() {
    assert!(errors(&reviews(vec![to("reviews", "v1", None)])).is_empty());
}

#[test]
fn split_weights_must_sum_to_100() {
    assert!(errors(&reviews(vec![to("reviews", "v1", Some(80)), to("reviews", "v2", Some(20))])).is_empty());
    let found = errors(&reviews(vec![to("reviews", "v1", Some(50)), to("reviews", "v2", None)]));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("spec.http[0].route: the weights of the 2 destinations sum to 50"), "{found:?}");
    let found = errors(&reviews(vec![to("reviews", "v1", Some(50)), to("reviews", "v2", Some(120))]));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("spec.http[0].route[1].weight: weight 120 is out of range; use 0 to 100"), "{found:?}");
}

#[test]
fn the_bare_wildcard_host_needs_gateways_without_mesh() {
    let mut spec = reviews(vec![to("reviews", "", None)]);
    spec.hosts = vec!["*".into()];
    assert!(errors(&spec)[0].contains("spec.hosts[0]: the host * is only allowed"));
    spec.gateways = vec!["bookinfo-gateway".into()];
    assert!(errors(&spec).is_empty(), "{:?}", errors(&spec));
    spec.gateways.push("mesh".into());
    assert_eq!(errors(&spec).len(), 1);
}

#[test]
fn a_missing_subset_is_a_warning_when_the_rules_are_known() {
    let spec = reviews(vec![to("reviews", "v9", None)]);
    let subsets: BTreeSet<String> = ["v1".to_string(), "v2".to_string()].into();
    let context = ValidationContext {
        subsets_by_host: Some(BTreeMap::from([("reviews.prod.svc.cluster.local".to_string(), subsets)])),
        namespace: "prod".into(),
        ..ValidationContext::standalone()
    };
    let found = findings(&spec, &context);
    assert!(!found.has_errors());
    let warning = found.of(Severity::Warning).next().expect("a warning").to_string();
    assert!(warning.contains("spec.http[0].route[0].destination.subset: no DestinationRule defines subset \"v9\" for reviews.prod.svc.cluster.local"), "{warning}");
    // Without knowledge of DestinationRules nothing is said.
    assert!(findings(&spec, &ValidationContext::standalone()).is_empty());
}

#[test]
fn header_matches_may_ask_for_presence_only() {
    let mut spec = reviews(vec![to("reviews", "", None)]);
    let condition = super::super::HttpMatchRequest {
        headers: BTreeMap::from([("end-user".to_string(), StringMatch::default())]),
        without_headers: BTreeMap::from([("bad header".to_string(), StringMatch::exact("x"))]),
        ..Default::default()
    };
    spec.http[0].r#match.push(condition);
    let found = errors(&spec);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0]
            .contains("spec.http[0].match[0].withoutHeaders[bad header]: \"bad header\" is not a valid header name")
    );
}

#[test]
fn retry_conditions_are_envoys_grpcs_or_status_codes() {
    for condition in ["5xx", "gateway-error", "connect-failure", "retriable-4xx", "unavailable", "503"] {
        assert!(is_retry_condition(condition), "{condition}");
    }
    for condition in ["", "5XX", "50", "5030", "999", "sometimes"] {
        assert!(!is_retry_condition(condition), "{condition}");
    }
}

#[test]
fn sni_hosts_must_fall_under_the_virtual_service_hosts() {
    let spec = VirtualServiceSpec {
        hosts: vec!["*.bookinfo.com".into()],
        gateways: vec!["mygateway".into()],
        tls: vec![TlsRoute {
            r#match: vec![TlsMatchAttributes {
                sni_hosts: vec!["login.bookinfo.com".into(), "login.example.com".into()],
                ..TlsMatchAttributes::default()
            }],
            route: vec![RouteDestination {
                destination: Destination { host: "login.prod.svc.cluster.local".into(), ..Destination::default() },
                weight: None,
            }],
        }],
        ..VirtualServiceSpec::default()
    };
    let found = errors(&spec);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("spec.tls[0].match[0].sniHosts[1]: SNI host \"login.example.com\" is not one of"));
}

#[test]
fn hosts_may_be_addresses_and_wildcard_domains() {
    let mut spec = reviews(vec![to("reviews", "", None)]);
    spec.hosts = vec!["10.0.0.12".into(), "*.bookinfo.com".into(), "2001:db8::1".into()];
    assert!(errors(&spec).is_empty(), "{:?}", errors(&spec));
}

#[test]
fn a_route_needs_exactly_one_action() {
    let mut spec = reviews(Vec::new());
    assert!(errors(&spec)[0].contains("spec.http[0]: an HTTP route needs an action"));
    spec.http[0].redirect = Some(super::super::HttpRedirect {
        port: Some(8443),
        derive_port: Some(super::super::RedirectPortSelection::FromRequestPort),
        ..Default::default()
    });
    let found = errors(&spec);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("spec.http[0].redirect.derivePort: set port or derivePort, not both"));
}

#[test]
fn an_abort_sets_one_kind_of_error() {
    let mut spec = reviews(vec![to("reviews", "", None)]);
    spec.http[0].fault = Some(super::super::HttpFaultInjection {
        delay: None,
        abort: Some(super::super::HttpAbort {
            http_status: Some(503),
            http2_error: Some("REFUSED_STREAM".into()),
            ..Default::default()
        }),
    });
    let found = findings(&spec, &ValidationContext::standalone());
    let errors: Vec<String> = found.of(Severity::Error).map(ToString::to_string).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("spec.http[0].fault.abort: set exactly one of httpStatus, grpcStatus or http2Error"));
    assert_eq!(
        found.of(Severity::Unsupported).next().map(|d| d.field.to_string()).as_deref(),
        Some("spec.http[0].fault.abort.http2Error")
    );
}

#[test]
fn an_abort_grpc_status_is_a_known_name_or_number() {
    let mut spec = reviews(vec![to("reviews", "", None)]);
    let abort = |status: &str| {
        Some(super::super::HttpFaultInjection {
            delay: None,
            abort: Some(super::super::HttpAbort { grpc_status: Some(status.into()), ..Default::default() }),
        })
    };
    for good in ["UNAVAILABLE", "deadline_exceeded", "14"] {
        spec.http[0].fault = abort(good);
        assert!(errors(&spec).is_empty(), "{good}: {:?}", errors(&spec));
    }
    spec.http[0].fault = abort("UNAVAILBLE");
    let found = errors(&spec);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("spec.http[0].fault.abort.grpcStatus: \"UNAVAILBLE\" is not a gRPC status"), "{found:?}");
}

#[test]
fn query_params_match_exactly_or_by_regex_and_jwt_claims_are_not_supported() {
    let mut spec = reviews(vec![to("reviews", "", None)]);
    spec.http[0].r#match.push(super::super::HttpMatchRequest {
        query_params: BTreeMap::from([("page".to_string(), StringMatch::prefix("1"))]),
        headers: BTreeMap::from([("@request.auth.claims.group".to_string(), StringMatch::exact("admin"))]),
        ..Default::default()
    });
    let found = findings(&spec, &ValidationContext::standalone());
    let messages: Vec<String> = found.all().iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages
            .iter()
            .any(|m| m.contains("not supported yet: spec.http[0].match[0].headers[@request.auth.claims.group]"))
    );
    assert!(messages.iter().any(|m| {
        m.contains("error: spec.http[0].match[0].queryParams[page]: query parameters match by exact or regex only")
    }));
}

#[test]
fn the_mirror_share_reads_every_spelling_istio_accepts() {
    let parse = |yaml: &str| serde_yaml::from_str::<HttpRoute>(yaml).unwrap().mirror_share();
    assert_eq!(parse("mirror: {host: a}"), 100.0);
    assert_eq!(parse("mirror: {host: a}\nmirrorPercentage: {value: 0.5}"), 0.5);
    assert_eq!(parse("mirror: {host: a}\nmirrorPercent: 20"), 20.0);
    assert_eq!(parse("mirror: {host: a}\nmirror_percent: 30"), 30.0);
}
