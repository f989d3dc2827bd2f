//! Istio's wildcard semantics for the string lists of an `AuthorizationPolicy` (principals,
//! namespaces, hosts, paths, header values): a pattern is an exact value, `*` (any non-empty
//! value), a prefix `abc*` or a suffix `*abc`. Nothing else is a wildcard: validation rejects a
//! `*` in the middle, so the proxy never has to guess.

/// The prefix of a SPIFFE ID, which principals in policies leave out.
const SPIFFE_PREFIX: &str = "spiffe://";

/// Whether `value` matches `pattern` with Istio's semantics.
///
/// `*` matches any non-empty value (a request without the attribute is not matched by `*`);
/// `abc*` matches values starting with `abc` (including `abc` itself); `*abc` matches values
/// ending with `abc`; anything else must be equal.
pub fn string_matches_istio(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        return !value.is_empty();
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return value.ends_with(suffix);
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return value.starts_with(prefix);
    }
    pattern == value
}

/// Whether a peer's identity matches a `principals` (or `source.principal`) pattern.
///
/// Policies write principals without the scheme (`cluster.local/ns/default/sa/sleep`); the
/// peer's certificate carries `spiffe://cluster.local/ns/default/sa/sleep`. Either form is
/// accepted on both sides. An empty principal (plain text, no client certificate) matches
/// nothing, not even `*`.
pub fn principal_matches(pattern: &str, principal: &str) -> bool {
    let pattern = pattern.strip_prefix(SPIFFE_PREFIX).unwrap_or(pattern);
    let principal = principal.strip_prefix(SPIFFE_PREFIX).unwrap_or(principal);
    !principal.is_empty() && string_matches_istio(pattern, principal)
}

/// Whether a request's host (`Host`/`:authority`) matches a `hosts` pattern. Hosts compare
/// case-insensitively; a port in the request's host must be matched by the pattern too
/// (`example.com*` matches `example.com:8080`).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    string_matches_istio(&pattern.to_ascii_lowercase(), &host.to_ascii_lowercase())
}

/// Reads an `ipBlocks` entry (or a `source.ip` value): a CIDR block, or a single address taken
/// as a block of one (`/32` or `/128`). `None` for anything else, which validation rejects.
pub fn parse_ip_block(value: &str) -> Option<ipnet::IpNet> {
    value.parse::<ipnet::IpNet>().ok().or_else(|| value.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// Whether `pattern` uses `*` only where Istio gives it meaning: alone, as the first character
/// or as the last character, once.
pub fn is_valid_wildcard_pattern(pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let inner = pattern.strip_prefix('*').or_else(|| pattern.strip_suffix('*')).unwrap_or(pattern);
    !inner.contains('*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_exact_any_prefix_or_suffix() {
        assert!(string_matches_istio("GET", "GET"));
        assert!(!string_matches_istio("GET", "get"));
        assert!(string_matches_istio("*", "anything"));
        assert!(!string_matches_istio("*", ""));
        assert!(string_matches_istio("/api/*", "/api/v1"));
        assert!(string_matches_istio("/api/*", "/api/"));
        assert!(!string_matches_istio("/api/*", "/other"));
        assert!(string_matches_istio("*.example.com", "www.example.com"));
        assert!(!string_matches_istio("*.example.com", "example.org"));
    }

    #[test]
    fn principals_match_with_or_without_the_spiffe_scheme() {
        let peer = "spiffe://cluster.local/ns/default/sa/sleep";
        assert!(principal_matches("cluster.local/ns/default/sa/sleep", peer));
        assert!(principal_matches("cluster.local/ns/default/*", peer));
        assert!(principal_matches("*/sa/sleep", peer));
        assert!(principal_matches("*", peer));
        assert!(principal_matches("spiffe://cluster.local/ns/default/sa/sleep", "cluster.local/ns/default/sa/sleep"));
        assert!(!principal_matches("cluster.local/ns/foo/sa/sleep", peer));
        assert!(!principal_matches("*", ""));
    }

    #[test]
    fn hosts_compare_case_insensitively() {
        assert!(host_matches("*.Example.com", "www.example.COM"));
        assert!(host_matches("example.com*", "example.com:8080"));
        assert!(!host_matches("example.com", "example.com:8080"));
    }

    #[test]
    fn ip_blocks_are_addresses_or_cidrs() {
        let block = parse_ip_block("10.0.0.0/16").unwrap();
        assert!(block.contains(&"10.0.3.4".parse::<std::net::IpAddr>().unwrap()));
        let single = parse_ip_block("1.2.3.4").unwrap();
        assert!(single.contains(&"1.2.3.4".parse::<std::net::IpAddr>().unwrap()));
        assert!(!single.contains(&"1.2.3.5".parse::<std::net::IpAddr>().unwrap()));
        assert!(parse_ip_block("2001:db8::/32").is_some());
        for bad in ["10.0.0.0/33", "localhost", "", "1.2.3"] {
            assert!(parse_ip_block(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn wildcards_belong_at_one_end_only() {
        for good in ["*", "abc*", "*abc", "abc", "cluster.local/ns/default/sa/*"] {
            assert!(is_valid_wildcard_pattern(good), "{good}");
        }
        for bad in ["a*c", "*abc*", "**", "a**", "ns/*/sa/x"] {
            assert!(!is_valid_wildcard_pattern(bad), "{bad}");
        }
    }
}
