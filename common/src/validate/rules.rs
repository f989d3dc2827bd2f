//! Checks that several kinds share. Each records its findings with the field path it is given,
//! so callers only say where a value lives.

use std::collections::BTreeMap;

use super::{Diagnostics, FieldPath};
use crate::api::{Duration, Percent, StringMatch};
use crate::hosts;

/// A port number must be 1-65535.
pub fn port(value: u32, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if !(1..=65535).contains(&value) {
        diagnostics.error(path, format!("port {value} is out of range; a port is a number from 1 to 65535"));
    }
}

/// A duration must be at least `min` (Istio requires, for example, timeouts of at least 1ms).
pub fn duration_at_least(value: Duration, min: Duration, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if value < min {
        diagnostics.error(path, format!("duration {value} is too short; it must be at least {min}"));
    }
}

/// A percentage must lie in 0.0-100.0.
pub fn percent(value: &Percent, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if !(0.0..=100.0).contains(&value.value) {
        diagnostics
            .error(&path.field("value"), format!("{} is not a percentage; use a number from 0 to 100", value.value));
    }
}

/// A string match sets exactly one of `exact`, `prefix`, `regex`, and a regex must compile.
pub fn string_match(value: &StringMatch, path: &FieldPath, diagnostics: &mut Diagnostics) {
    match value.kinds_set() {
        1 => {}
        0 => diagnostics.error(path, "set exactly one of exact, prefix or regex; none is set"),
        _ => diagnostics.error(path, "set exactly one of exact, prefix or regex; several are set"),
    }
    if let Some(pattern) = &value.regex {
        regex(pattern, &path.field("regex"), diagnostics);
    }
}

/// A regular expression must compile (RE2 syntax: no look-around, no back-references).
pub fn regex(pattern: &str, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if let Err(error) = regex::Regex::new(pattern) {
        let first_line = error.to_string().lines().last().unwrap_or_default().trim().to_string();
        diagnostics.error(
            path,
            format!("regex {pattern:?} does not compile ({first_line}); use RE2 syntax, without look-around or back-references"),
        );
    }
}

/// A subset or port name must be a DNS-1123 label.
pub fn dns_label(value: &str, what: &str, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if !hosts::is_dns1123_label(value) {
        diagnostics.error(
            path,
            format!(
                "{what} {value:?} is not a DNS label; use 1-63 lowercase letters, digits or '-', \
                 starting and ending with a letter or digit"
            ),
        );
    }
}

/// A hostname as Istio accepts it, with or without a leading wildcard.
pub fn hostname(value: &str, allow_wildcard: bool, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if let Err(message) = hosts::check_hostname(value, allow_wildcard) {
        diagnostics.error(path, message);
    }
}

/// Label keys and values follow Kubernetes' rules: keys are an optional DNS prefix and a name of
/// at most 63 characters; values are at most 63 characters of alphanumerics, `-`, `_`, `.`.
pub fn labels(labels: &BTreeMap<String, String>, path: &FieldPath, diagnostics: &mut Diagnostics) {
    for (key, value) in labels {
        let name = key.rsplit_once('/').map_or(key.as_str(), |(_, name)| name);
        if !is_label_token(name, false) {
            diagnostics.error(
                &path.key(key),
                format!("label key {key:?} is invalid; a key is an optional DNS prefix and '/', then 1-63 alphanumerics, '-', '_' or '.'"),
            );
        }
        if !is_label_token(value, true) {
            diagnostics.error(
                &path.key(key),
                format!("label value {value:?} is invalid; a value is at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumerically"),
            );
        }
    }
}

fn is_label_token(token: &str, may_be_empty: bool) -> bool {
    if token.is_empty() {
        return may_be_empty;
    }
    let bytes = token.as_bytes();
    bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

/// `exportTo` entries are `.` (this namespace), `*` (every namespace), `~` (none) or a namespace.
pub fn export_to(values: &[String], path: &FieldPath, diagnostics: &mut Diagnostics) {
    for (index, value) in values.iter().enumerate() {
        let valid = matches!(value.as_str(), "." | "*" | "~") || hosts::is_dns1123_label(value);
        if !valid {
            diagnostics.error(
                &path.index(index),
                format!("{value:?} is not a valid exportTo entry; use '.', '*', '~' or a namespace name"),
            );
        }
    }
    if values.iter().any(|value| value == "~") && values.len() > 1 {
        diagnostics.error(path, "'~' (export to no namespace) cannot be combined with other entries");
    }
}

/// An IP address or CIDR block, as `destinationSubnets` and `sourceSubnet` take them.
pub fn subnet(value: &str, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if value.parse::<ipnet::IpNet>().is_err() && value.parse::<std::net::IpAddr>().is_err() {
        diagnostics.error(
            path,
            format!("{value:?} is not an IP address or CIDR block; use for example 10.1.0.0/16 or 10.1.2.3"),
        );
    }
}

/// A list of IP addresses or CIDR blocks.
pub fn subnets(values: &[String], path: &FieldPath, diagnostics: &mut Diagnostics) {
    for (index, value) in values.iter().enumerate() {
        subnet(value, &path.index(index), diagnostics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::ObjectRef;

    fn report() -> Diagnostics {
        Diagnostics::new(ObjectRef::new("VirtualService", "default", "reviews"))
    }

    #[test]
    fn string_match_needs_exactly_one_kind() {
        let path = FieldPath::spec().field("http").index(0).field("match").index(0).field("uri");
        let mut diagnostics = report();
        string_match(
            &StringMatch { exact: Some("/a".into()), prefix: Some("/b".into()), regex: None },
            &path,
            &mut diagnostics,
        );
        string_match(&StringMatch::default(), &path, &mut diagnostics);
        string_match(&StringMatch::regex("/a(b"), &path, &mut diagnostics);
        let messages: Vec<String> = diagnostics.all().iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[0].contains("spec.http[0].match[0].uri: set exactly one of exact, prefix or regex; several"));
        assert!(messages[2].contains("spec.http[0].match[0].uri.regex: regex \"/a(b\" does not compile"));
    }

    #[test]
    fn ports_durations_and_percentages_have_ranges() {
        let mut diagnostics = report();
        port(0, &FieldPath::spec().field("port"), &mut diagnostics);
        port(65536, &FieldPath::spec().field("port"), &mut diagnostics);
        port(8080, &FieldPath::spec().field("port"), &mut diagnostics);
        duration_at_least(
            Duration::default(),
            Duration::from_millis(1),
            &FieldPath::spec().field("timeout"),
            &mut diagnostics,
        );
        percent(&Percent { value: 101.0 }, &FieldPath::spec().field("p"), &mut diagnostics);
        assert_eq!(diagnostics.all().len(), 4);
        assert!(diagnostics.all()[3].to_string().contains("spec.p.value: 101 is not a percentage"));
    }

    #[test]
    fn labels_and_export_to_follow_kubernetes_rules() {
        let mut diagnostics = report();
        let good: BTreeMap<String, String> =
            [("app".into(), "reviews".into()), ("example.com/tier".into(), "".into())].into();
        labels(&good, &FieldPath::spec().field("labels"), &mut diagnostics);
        assert!(diagnostics.is_empty(), "{diagnostics}");
        let bad: BTreeMap<String, String> = [("-app".into(), "x".into())].into();
        labels(&bad, &FieldPath::spec().field("labels"), &mut diagnostics);
        export_to(&[".".into(), "Bad".into()], &FieldPath::spec().field("exportTo"), &mut diagnostics);
        assert_eq!(diagnostics.all().len(), 2);
        assert_eq!(diagnostics.all()[1].field.as_str(), "spec.exportTo[1]");
    }
}
