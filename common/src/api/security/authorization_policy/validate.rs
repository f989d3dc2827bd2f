//! Istio's rules for `AuthorizationPolicy`, plus reports of the fields the mesh does not
//! enforce yet (so a policy is never weaker than its author thinks without saying so).

use super::{Action, AuthorizationPolicySpec, Condition, Operation, Rule, Source};
use crate::api::security::{matching, validate_policy_scope};
use crate::validate::{Diagnostics, FieldPath, Validate, ValidationContext, rules};

/// Condition keys that are exactly one attribute, and whether the mesh enforces them yet.
const PLAIN_KEYS: &[(&str, bool)] = &[
    ("source.ip", true),
    ("source.namespace", true),
    ("source.principal", true),
    ("destination.port", true),
    ("connection.sni", true),
    ("remote.ip", false),
    ("destination.ip", false),
    ("request.auth.principal", false),
    ("request.auth.audiences", false),
    ("request.auth.presenter", false),
];

/// What every error about an unknown condition key lists.
const VALID_KEYS: &str = "source.ip, remote.ip, source.namespace, source.principal, request.headers[<name>], \
     request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[<claim>], \
     destination.ip, destination.port, connection.sni, experimental.envoy.filters.<filter>[<key>]";

/// Methods a request line may carry; anything else never matches a real request.
const HTTP_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

impl Validate for AuthorizationPolicySpec {
    fn validate(&self, path: &FieldPath, context: &ValidationContext, diagnostics: &mut Diagnostics) {
        validate_policy_scope(
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
            path,
            context,
            diagnostics,
        );
        let action = self.action();
        let provider_path = path.field("provider");
        match (action, &self.provider) {
            (Action::Custom, None) => diagnostics.error(
                &provider_path,
                "action CUSTOM needs a provider naming an extension provider of the mesh config",
            ),
            (Action::Custom, Some(provider)) => {
                if provider.name.is_empty() {
                    diagnostics.error(
                        &provider_path.field("name"),
                        "name the extension provider (from the mesh config) that decides CUSTOM requests",
                    );
                }
                diagnostics.unsupported(&provider_path);
            }
            (_, Some(_)) => diagnostics.error(
                &provider_path,
                format!("provider is only used with action CUSTOM, but the action is {}; remove it", action.as_str()),
            ),
            (_, None) => {}
        }
        if matches!(action, Action::Audit | Action::Custom) {
            diagnostics.unsupported(&path.field("action"));
        }
        for (index, rule) in self.rules.iter().enumerate() {
            validate_rule(rule, &path.field("rules").index(index), diagnostics);
        }
    }
}

fn validate_rule(rule: &Rule, path: &FieldPath, diagnostics: &mut Diagnostics) {
    for (index, from) in rule.sources.iter().enumerate() {
        let from_path = path.field("from").index(index);
        match &from.source {
            Some(source) => validate_source(source, &from_path.field("source"), diagnostics),
            None => {
                diagnostics.error(&from_path, "each from entry needs a source; remove the entry to match any source")
            }
        }
    }
    for (index, to) in rule.operations.iter().enumerate() {
        let to_path = path.field("to").index(index);
        match &to.operation {
            Some(operation) => validate_operation(operation, &to_path.field("operation"), diagnostics),
            None => {
                diagnostics.error(&to_path, "each to entry needs an operation; remove the entry to match any operation")
            }
        }
    }
    for (index, condition) in rule.conditions.iter().enumerate() {
        validate_condition(condition, &path.field("when").index(index), diagnostics);
    }
}

fn validate_source(source: &Source, path: &FieldPath, diagnostics: &mut Diagnostics) {
    let wildcard_lists = [
        ("principals", &source.principals),
        ("notPrincipals", &source.not_principals),
        ("requestPrincipals", &source.request_principals),
        ("notRequestPrincipals", &source.not_request_principals),
        ("namespaces", &source.namespaces),
        ("notNamespaces", &source.not_namespaces),
    ];
    for (name, values) in wildcard_lists {
        wildcard_values(values, &path.field(name), diagnostics);
    }
    for (name, values) in [("principals", &source.principals), ("notPrincipals", &source.not_principals)] {
        for (index, value) in values.iter().enumerate() {
            principal_scheme(value, &path.field(name).index(index), diagnostics);
        }
    }
    let ip_lists = [
        ("ipBlocks", &source.ip_blocks),
        ("notIpBlocks", &source.not_ip_blocks),
        ("remoteIpBlocks", &source.remote_ip_blocks),
        ("notRemoteIpBlocks", &source.not_remote_ip_blocks),
    ];
    for (name, values) in ip_lists {
        for (index, value) in values.iter().enumerate() {
            ip_block(value, &path.field(name).index(index), diagnostics);
        }
    }
    for (name, values) in
        [("serviceAccounts", &source.service_accounts), ("notServiceAccounts", &source.not_service_accounts)]
    {
        for (index, value) in values.iter().enumerate() {
            service_account(value, &path.field(name).index(index), diagnostics);
        }
    }
    if !source.service_accounts.is_empty() && (!source.principals.is_empty() || !source.namespaces.is_empty()) {
        diagnostics.error(
            &path.field("serviceAccounts"),
            "serviceAccounts cannot be combined with principals or namespaces in one source; use separate from entries",
        );
    }
    let all_lists = wildcard_lists
        .iter()
        .chain(ip_lists.iter())
        .map(|(_, values)| *values)
        .chain([&source.service_accounts, &source.not_service_accounts]);
    if all_lists.into_iter().all(Vec::is_empty) {
        diagnostics.error(
            path,
            "a source must set at least one field (principals, namespaces, ipBlocks, ...); remove the from entry to match any source",
        );
    }
    let unsupported = [
        ("requestPrincipals", &source.request_principals),
        ("notRequestPrincipals", &source.not_request_principals),
        ("remoteIpBlocks", &source.remote_ip_blocks),
        ("notRemoteIpBlocks", &source.not_remote_ip_blocks),
    ];
    for (name, values) in unsupported {
        if !values.is_empty() {
            diagnostics.unsupported(&path.field(name));
        }
    }
}

fn validate_operation(operation: &Operation, path: &FieldPath, diagnostics: &mut Diagnostics) {
    wildcard_values(&operation.hosts, &path.field("hosts"), diagnostics);
    wildcard_values(&operation.not_hosts, &path.field("notHosts"), diagnostics);
    for (name, values) in [("ports", &operation.ports), ("notPorts", &operation.not_ports)] {
        for (index, value) in values.iter().enumerate() {
            port_string(value, &path.field(name).index(index), diagnostics);
        }
    }
    for (name, values) in [("methods", &operation.methods), ("notMethods", &operation.not_methods)] {
        for (index, value) in values.iter().enumerate() {
            method(value, &path.field(name).index(index), diagnostics);
        }
    }
    for (name, values) in [("paths", &operation.paths), ("notPaths", &operation.not_paths)] {
        for (index, value) in values.iter().enumerate() {
            request_path(value, &path.field(name).index(index), diagnostics);
        }
    }
    let lists = [
        &operation.hosts,
        &operation.not_hosts,
        &operation.ports,
        &operation.not_ports,
        &operation.methods,
        &operation.not_methods,
        &operation.paths,
        &operation.not_paths,
    ];
    if lists.into_iter().all(Vec::is_empty) {
        diagnostics.error(
            path,
            "an operation must set at least one field (hosts, ports, methods, paths, ...); remove the to entry to match any operation",
        );
    }
}

fn validate_condition(condition: &Condition, path: &FieldPath, diagnostics: &mut Diagnostics) {
    let key_path = path.field("key");
    if condition.values.is_empty() && condition.not_values.is_empty() {
        diagnostics.error(path, format!("condition {:?} needs values or notValues", condition.key));
    }
    let Some(supported) = condition_key(&condition.key) else {
        diagnostics.error(&key_path, format!("unknown condition key {:?}; use one of {VALID_KEYS}", condition.key));
        return;
    };
    if !supported {
        diagnostics.unsupported(&key_path);
    }
    let check = |value: &str, value_path: &FieldPath, diagnostics: &mut Diagnostics| match condition.key.as_str() {
        "source.ip" | "remote.ip" | "destination.ip" => ip_block(value, value_path, diagnostics),
        "destination.port" => port_string(value, value_path, diagnostics),
        "source.principal" => {
            wildcard_value(value, value_path, diagnostics);
            principal_scheme(value, value_path, diagnostics);
        }
        _ => wildcard_value(value, value_path, diagnostics),
    };
    for (index, value) in condition.values.iter().enumerate() {
        check(value, &path.field("values").index(index), diagnostics);
    }
    for (index, value) in condition.not_values.iter().enumerate() {
        check(value, &path.field("notValues").index(index), diagnostics);
    }
}

/// Whether `key` is a condition Istio knows, and if so whether the mesh enforces it yet.
fn condition_key(key: &str) -> Option<bool> {
    if let Some((_, supported)) = PLAIN_KEYS.iter().find(|(plain, _)| *plain == key) {
        return Some(*supported);
    }
    if let Some(name) = key.strip_prefix("request.headers[").and_then(|rest| rest.strip_suffix(']')) {
        return (!name.is_empty() && !name.contains(['[', ']'])).then_some(true);
    }
    if let Some(claims) = key.strip_prefix("request.auth.claims[").and_then(|rest| rest.strip_suffix(']')) {
        // Nested claims are written `request.auth.claims[outer][inner]`.
        return claims.split("][").all(|claim| !claim.is_empty() && !claim.contains(['[', ']'])).then_some(false);
    }
    if let Some(filter) = key.strip_prefix("experimental.envoy.filters.") {
        let valid = filter.split_once('[').is_some_and(|(name, rest)| !name.is_empty() && rest.ends_with(']'));
        return valid.then_some(false);
    }
    None
}

fn wildcard_values(values: &[String], path: &FieldPath, diagnostics: &mut Diagnostics) {
    for (index, value) in values.iter().enumerate() {
        wildcard_value(value, &path.index(index), diagnostics);
    }
}

fn wildcard_value(value: &str, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if value.is_empty() {
        diagnostics.error(path, "an empty value matches nothing; remove it, or use \"*\" to match any value");
    } else if !matching::is_valid_wildcard_pattern(value) {
        diagnostics.error(
            path,
            format!(
                "{value:?} has '*' in the middle or at both ends; a value is exact, \"*\", a prefix (\"abc*\") or a suffix (\"*abc\")"
            ),
        );
    }
}

/// Istio compares principals without the scheme, so one written with `spiffe://` never matches
/// there; the mesh tolerates it, but the policy would not carry over to Istio.
fn principal_scheme(value: &str, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if let Some(rest) = value.strip_prefix("spiffe://") {
        diagnostics.warning(
            path,
            format!("principals are written without the spiffe:// scheme, which Istio never matches; write {rest:?}"),
        );
    }
}

fn ip_block(value: &str, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if matching::parse_ip_block(value).is_none() {
        diagnostics.error(
            path,
            format!(
                "{value:?} is not an IP address or CIDR block; use an address like 10.1.2.3 or a block like 10.0.0.0/16"
            ),
        );
    }
}

fn port_string(value: &str, path: &FieldPath, diagnostics: &mut Diagnostics) {
    match value.parse::<u32>() {
        Ok(number) => rules::port(number, path, diagnostics),
        Err(_) => diagnostics.error(
            path,
            format!("{value:?} is not a port; write a port number from 1 to 65535 as a string, like \"8080\""),
        ),
    }
}

fn method(value: &str, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if value.is_empty() {
        diagnostics.error(path, "an empty method matches nothing; remove it, or use \"*\" to match any method");
    } else if !matching::is_valid_wildcard_pattern(value) {
        wildcard_value(value, path, diagnostics);
    } else if !value.contains('*') && !HTTP_METHODS.contains(&value) {
        diagnostics.warning(
            path,
            format!(
                "{value:?} is not an upper-case HTTP method and methods are compared exactly, so it may never match; use one of {}",
                HTTP_METHODS.join(", ")
            ),
        );
    }
}

fn service_account(value: &str, path: &FieldPath, diagnostics: &mut Diagnostics) {
    let valid = value.split_once('/').is_some_and(|(namespace, name)| {
        crate::hosts::is_dns1123_label(namespace) && !name.is_empty() && !name.contains(['/', '*'])
    });
    if !valid {
        diagnostics.error(
            path,
            format!("{value:?} is not a service account; write namespace/name, like default/sleep, without wildcards"),
        );
    }
}

/// Paths are exact, `*`, `prefix*`, `*suffix`, or templates whose wildcard segments are whole
/// `{*}` (one segment) or `{**}` (the rest of the path, last).
fn request_path(value: &str, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if !value.contains(['{', '}']) {
        wildcard_value(value, path, diagnostics);
        return;
    }
    let segments: Vec<&str> = value.split('/').collect();
    let templated: Vec<usize> =
        segments.iter().enumerate().filter(|(_, segment)| segment.contains(['{', '}'])).map(|(i, _)| i).collect();
    let whole_segments = templated.iter().all(|&i| matches!(segments[i], "{*}" | "{**}"));
    let double_last = templated.iter().all(|&i| segments[i] != "{**}" || Some(&i) == templated.last());
    let no_star = segments.iter().all(|segment| segment.contains(['{', '}']) || !segment.contains('*'));
    if whole_segments && double_last && no_star {
        // Templates are valid Istio, but the proxy's matcher does not implement them yet.
        diagnostics.unsupported(path);
    } else {
        diagnostics.error(
            path,
            format!(
                "{value:?} is not a valid path template; wildcard segments are whole segments {{*}} (one segment) or \
                 {{**}} (any rest, only as the last operator), with no other '*'"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{ObjectRef, Severity};

    #[test]
    fn condition_keys_follow_istios_list() {
        assert_eq!(condition_key("source.ip"), Some(true));
        assert_eq!(condition_key("request.headers[User-Agent]"), Some(true));
        assert_eq!(condition_key("request.auth.claims[groups]"), Some(false));
        assert_eq!(condition_key("request.auth.claims[a][b]"), Some(false));
        assert_eq!(condition_key("experimental.envoy.filters.network.mysql_proxy[db.table]"), Some(false));
        assert_eq!(condition_key("remote.ip"), Some(false));
        for bad in ["request.headers", "request.headers[]", "source.user", "request.auth.claims[]", ""] {
            assert_eq!(condition_key(bad), None, "{bad}");
        }
    }

    fn report_for(check: impl FnOnce(&FieldPath, &mut Diagnostics)) -> Diagnostics {
        let mut diagnostics = Diagnostics::new(ObjectRef::new("AuthorizationPolicy", "foo", "httpbin"));
        let paths = FieldPath::spec().field("rules").index(0).field("to").index(0).field("operation").field("paths");
        check(&paths.index(0), &mut diagnostics);
        diagnostics
    }

    #[test]
    fn path_templates_are_whole_segments_and_not_enforced_yet() {
        for template in ["/books/{*}/reviews", "/static/{**}", "/a/{*}/b/{**}"] {
            let diagnostics = report_for(|path, diagnostics| request_path(template, path, diagnostics));
            assert!(!diagnostics.has_errors(), "{template}: {diagnostics}");
            assert_eq!(diagnostics.of(Severity::Unsupported).count(), 1, "{template}");
        }
        for bad in ["/books/{id}", "/a/{**}/{*}", "/a/x{*}", "/a/{*}/b*"] {
            let diagnostics = report_for(|path, diagnostics| request_path(bad, path, diagnostics));
            assert!(diagnostics.has_errors(), "{bad}");
        }
        for plain in ["/api/*", "*/health", "*", "/exact"] {
            assert!(report_for(|path, diagnostics| request_path(plain, path, diagnostics)).is_empty(), "{plain}");
        }
    }

    #[test]
    fn service_accounts_are_namespace_slash_name() {
        assert!(report_for(|path, diagnostics| service_account("default/sleep", path, diagnostics)).is_empty());
        for bad in ["sleep", "default/", "/sleep", "Default/sleep", "default/*", "a/b/c"] {
            assert!(report_for(|path, diagnostics| service_account(bad, path, diagnostics)).has_errors(), "{bad}");
        }
    }

    #[test]
    fn condition_ports_and_ips_are_checked_by_key() {
        let condition = |key: &str, value: &str| Condition {
            key: key.to_string(),
            values: vec![value.to_string()],
            not_values: Vec::new(),
        };
        let errors =
            |c: Condition| report_for(|path, diagnostics| validate_condition(&c, path, diagnostics)).has_errors();
        assert!(!errors(condition("destination.port", "8080")));
        assert!(errors(condition("destination.port", "http")));
        assert!(!errors(condition("source.ip", "10.0.0.0/8")));
        assert!(errors(condition("source.ip", "10.0.0.0/40")));
        assert!(!errors(condition("connection.sni", "*.example.com")));
        assert!(errors(condition("source.principal", "a*b")));
    }
}
