//! Hostnames as Istio reads them: short names resolved against the resource's namespace, and
//! wildcards (`*.example.com`, `*`).

/// The DNS suffix of the cluster's services; Istio's default.
pub const DEFAULT_DOMAIN: &str = "cluster.local";

/// Resolves `host` as written in a resource of `namespace` to a fully qualified name.
///
/// As in Istio, a name without a dot (`reviews`) is short for
/// `reviews.<namespace>.svc.<domain>`; a name with a dot, and any wildcard, is taken as written.
pub fn fully_qualify(host: &str, namespace: &str, domain: &str) -> String {
    if host.contains('.') || host.starts_with('*') {
        host.to_ascii_lowercase()
    } else {
        format!("{}.{namespace}.svc.{domain}", host.to_ascii_lowercase())
    }
}

/// Whether `pattern` (which may be `*` or start with `*.`/`*`) covers `host`.
///
/// `*.example.com` covers `a.example.com` and `a.b.example.com` but not `example.com`, as
/// Envoy's and Istio's suffix wildcards do; `*` covers everything.
pub fn wildcard_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// Whether two host patterns could both match some host (either covers the other).
pub fn overlaps(a: &str, b: &str) -> bool {
    a == b || wildcard_matches(a, b) || wildcard_matches(b, a)
}

/// Why a hostname is not acceptable, phrased as what would be valid.
pub fn check_hostname(host: &str, allow_wildcard: bool) -> Result<(), String> {
    if host.is_empty() {
        return Err(
            "must not be empty; give a service name such as reviews or reviews.default.svc.cluster.local".into()
        );
    }
    if host == "*" {
        return if allow_wildcard { Ok(()) } else { Err("a wildcard is not allowed here; give a service name".into()) };
    }
    let (wildcard, rest) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    if wildcard && !allow_wildcard {
        return Err(format!("wildcard host {host:?} is not allowed here; give a service name"));
    }
    if host.len() > 255 {
        return Err(format!("host {host:?} is longer than 255 characters"));
    }
    for label in rest.split('.') {
        if !is_dns1123_label(&label.to_ascii_lowercase()) {
            return Err(format!(
                "{host:?} is not a valid hostname: each dot-separated part must be 1-63 letters, \
                 digits or '-', starting and ending with a letter or digit{}",
                if allow_wildcard { "; a wildcard may only be the whole first part (*.example.com)" } else { "" }
            ));
        }
    }
    Ok(())
}

/// Whether `label` is a DNS-1123 label: 1-63 characters of `[a-z0-9-]`, starting and ending
/// alphanumerically. Subset names and port names must be such labels.
pub fn is_dns1123_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_in_the_resource_namespace() {
        assert_eq!(fully_qualify("reviews", "default", DEFAULT_DOMAIN), "reviews.default.svc.cluster.local");
        assert_eq!(
            fully_qualify("reviews.prod.svc.cluster.local", "default", DEFAULT_DOMAIN),
            "reviews.prod.svc.cluster.local"
        );
        assert_eq!(fully_qualify("*.example.com", "default", DEFAULT_DOMAIN), "*.example.com");
        assert_eq!(fully_qualify("*", "default", DEFAULT_DOMAIN), "*");
    }

    #[test]
    fn wildcards_match_suffixes_only() {
        assert!(wildcard_matches("*.example.com", "a.example.com"));
        assert!(wildcard_matches("*.example.com", "a.b.example.com"));
        assert!(!wildcard_matches("*.example.com", "example.com"));
        assert!(wildcard_matches("*", "anything.at.all"));
        assert!(wildcard_matches("reviews", "REVIEWS"));
        assert!(overlaps("*.com", "*.example.com"));
        assert!(!overlaps("*.org", "*.example.com"));
    }

    #[test]
    fn hostnames_are_checked() {
        assert!(check_hostname("reviews.default.svc.cluster.local", false).is_ok());
        assert!(check_hostname("*.example.com", true).is_ok());
        assert!(check_hostname("*.example.com", false).is_err());
        assert!(check_hostname("a.*.com", true).is_err());
        assert!(check_hostname("bad_name", true).is_err());
        assert!(check_hostname("a..b", true).is_err());
        assert!(check_hostname("", true).is_err());
    }
}
