//! The inbound side: the workload's ports, PeerAuthentication precedence and the
//! AuthorizationPolicies that apply.

use super::*;
use crate::api::security::peer_authentication::MtlsMode;

fn names(policies: &[AppliedAuthorizationPolicy]) -> Vec<String> {
    policies.iter().map(|policy| policy.origin.as_ref().unwrap().to_string()).collect()
}

#[test]
fn inbound_ports_are_the_target_ports_of_the_workloads_services() {
    let compiled = compile_for("prod", "httpbin-v1", &[]);
    let ports = &compiled.tables.inbound.ports;
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port, 80, "httpbin's service port 8000 targets the container port named http");
    assert_eq!(ports[0].protocol, crate::registry::Protocol::Http, "from the service port name http-web");
    assert_eq!(ports[0].services, ["httpbin.prod.svc.cluster.local:8000"]);
}

#[test]
fn peer_authentication_workload_beats_namespace_beats_mesh() {
    let security = fixture!("security.yaml");
    let ratings = compile_for("default", "ratings-v1", &[security]);
    let inbound = &ratings.tables.inbound;
    assert_eq!(inbound.mtls, MtlsMode::Disable);
    assert_eq!(inbound.mtls_for(9090), MtlsMode::Strict, "port-level override");
    assert_eq!(inbound.mtls_for(9080), MtlsMode::Disable);
    let applied: Vec<String> = inbound.peer_authentications.iter().map(|p| p.name.clone()).collect();
    assert_eq!(applied, ["ratings", "default", "default"]);

    let reviews = compile_for("default", "reviews-v1", &[security]);
    assert_eq!(reviews.tables.inbound.mtls, MtlsMode::Permissive, "namespace policy");
    let httpbin = compile_for("prod", "httpbin-v1", &[security]);
    assert_eq!(httpbin.tables.inbound.mtls, MtlsMode::Strict, "mesh policy in the root namespace");
    let nothing = compile_for("prod", "httpbin-v1", &[]);
    assert_eq!(nothing.tables.inbound.mtls, MtlsMode::Permissive, "Istio's default");
}

#[test]
fn an_unset_mode_inherits_from_the_enclosing_policy() {
    let security = fixture!("security.yaml").replace("mtls: {mode: DISABLE}", "mtls: {mode: UNSET}");
    let ratings = compile_for("default", "ratings-v1", &[&security]);
    assert_eq!(ratings.tables.inbound.mtls, MtlsMode::Permissive, "the namespace's PERMISSIVE");
    let no_namespace_policy = security.replace("mtls: {mode: PERMISSIVE}", "mtls: {}");
    let ratings = compile_for("default", "ratings-v1", &[&no_namespace_policy]);
    assert_eq!(ratings.tables.inbound.mtls, MtlsMode::Strict, "up to the mesh's STRICT");
}

#[test]
fn authorization_policies_apply_by_namespace_root_and_selector_deny_before_allow() {
    let ratings = compile_for("default", "ratings-v1", &[fixture!("security.yaml")]);
    let authorization = &ratings.tables.inbound.authorization;
    assert_eq!(
        names(&authorization.deny),
        ["AuthorizationPolicy istio-system/deny-blocked", "AuthorizationPolicy default/ratings-only"],
        "no creation times: by name, then namespace, as Istio's store orders them"
    );
    assert_eq!(
        names(&authorization.allow),
        ["AuthorizationPolicy default/allow-get", "AuthorizationPolicy default/allow-bookinfo"],
        "oldest first"
    );
    assert!(authorization.custom.is_empty() && authorization.audit.is_empty());

    let reviews = compile_for("default", "reviews-v1", &[fixture!("security.yaml")]);
    assert_eq!(names(&reviews.tables.inbound.authorization.deny), ["AuthorizationPolicy istio-system/deny-blocked"]);
    let httpbin = compile_for("prod", "httpbin-v1", &[fixture!("security.yaml")]);
    let deny = names(&httpbin.tables.inbound.authorization.deny);
    assert_eq!(deny, ["AuthorizationPolicy istio-system/deny-blocked", "AuthorizationPolicy prod/prod-only"]);
    assert!(httpbin.tables.inbound.authorization.allow.is_empty());
}

#[test]
fn request_authentications_apply_like_authorization_policies() {
    let yaml = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt-ratings, namespace: default}\n\
                spec:\n  selector: {matchLabels: {app: ratings}}\n  jwtRules: [{issuer: \"https://example.com\", jwksUri: \"https://example.com/jwks.json\"}]\n---\n\
                apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt-mesh, namespace: istio-system}\n\
                spec:\n  jwtRules: [{issuer: \"https://mesh.example.com\", jwksUri: \"https://mesh.example.com/jwks.json\"}]";
    let names_of = |compiled: &Compiled| -> Vec<String> {
        compiled
            .tables
            .inbound
            .request_authentications
            .iter()
            .map(|r| r.origin.as_ref().unwrap().name.clone())
            .collect()
    };
    let ratings = compile_for("default", "ratings-v1", &[yaml]);
    assert_eq!(names_of(&ratings), ["jwt-mesh", "jwt-ratings"], "no creation times: by name, then namespace");
    assert_eq!(names_of(&compile_for("default", "reviews-v1", &[yaml])), ["jwt-mesh"]);
}
