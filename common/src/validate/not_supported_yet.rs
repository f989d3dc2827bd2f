//! The one list of Istio fields the mesh accepts but does not act on yet.
//!
//! Validation calls [`super::Diagnostics::unsupported`] where such a field is set; the report
//! carries the note of the matching entry here. The list holds only what no open issue plans:
//! routing (issue 4) and load balancing, timeouts, retries, fault injection, mirroring, circuit
//! breaking and outlier detection (issue 5) are *not* listed, because those issues implement
//! them. When a feature lands, delete its entry and its `unsupported` call together; the
//! fixture test `tests/not_supported_yet.rs` sets every listed field and fails until the list
//! and the reports agree again.

use super::FieldPath;

/// A field (or a value of a field) the mesh accepts but ignores for now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotSupportedYet {
    /// The resource kind, such as `VirtualService`.
    pub kind: &'static str,
    /// The field with list indices and map keys blanked: `spec.http[].mirror`. A leading `**`
    /// stands for any path, for policies that appear at several levels (a DestinationRule's
    /// top level, its subsets and their `portLevelSettings`).
    pub field: &'static str,
    /// What exactly is not done, shown to users after the field path.
    pub note: &'static str,
}

const fn entry(kind: &'static str, field: &'static str, note: &'static str) -> NotSupportedYet {
    NotSupportedYet { kind, field, note }
}

/// Every field reported as "not supported yet", by kind.
pub const NOT_SUPPORTED_YET: &[NotSupportedYet] = &[
    entry("VirtualService", "spec.http[].match[].statPrefix", "per-route statistics are not kept"),
    entry(
        "VirtualService",
        "spec.http[].match[].headers[]",
        "matching on JWT claims (@request.auth.claims) needs request authentication",
    ),
    entry(
        "VirtualService",
        "spec.http[].match[].withoutHeaders[]",
        "matching on JWT claims (@request.auth.claims) needs request authentication",
    ),
    entry("VirtualService", "spec.http[].directResponse", "the proxy does not answer routes directly"),
    entry("VirtualService", "spec.http[].delegate", "delegate VirtualServices are not merged"),
    entry("VirtualService", "spec.http[].rewrite.uriRegexRewrite", "only prefix rewrites (rewrite.uri) are applied"),
    entry("VirtualService", "spec.http[].fault.delay.exponentialDelay", "only fixedDelay is injected"),
    entry("VirtualService", "spec.http[].fault.abort.http2Error", "only httpStatus and grpcStatus aborts are injected"),
    entry("VirtualService", "spec.http[].corsPolicy", "CORS preflights and headers are not handled"),
    entry("VirtualService", "spec.tcp[].match[].sourceSubnet", "TCP routes do not match on the client's address"),
    entry(
        "DestinationRule",
        "spec.workloadSelector",
        "the rule applies to every client, not only the selected workloads",
    ),
    entry("DestinationRule", "**.trafficPolicy.tunnel", "traffic is not tunnelled"),
    entry("DestinationRule", "**.trafficPolicy.proxyProtocol", "no PROXY protocol header is sent"),
    entry("DestinationRule", "**.trafficPolicy.retryBudget", "retries are not capped by a budget"),
    entry("DestinationRule", "**.loadBalancer.localityLbSetting", "endpoints are not weighted by locality"),
    entry("DestinationRule", "**.loadBalancer.warmupDurationSecs", "new endpoints get full traffic at once"),
    entry("DestinationRule", "**.loadBalancer.warmup", "new endpoints get full traffic at once"),
    entry(
        "DestinationRule",
        "**.loadBalancer.consistentHash.httpCookie.attributes",
        "the cookie is set without extra attributes",
    ),
    entry("DestinationRule", "**.connectionPool.tcp.maxConnectionDuration", "connections are not closed by age"),
    entry("DestinationRule", "**.connectionPool.tcp.idleTimeout", "TCP connections are not closed when idle"),
    entry(
        "DestinationRule",
        "**.connectionPool.http.h2UpgradePolicy",
        "the upstream protocol follows the port's protocol",
    ),
    entry(
        "DestinationRule",
        "**.connectionPool.http.useClientProtocol",
        "the upstream protocol follows the port's protocol",
    ),
    entry(
        "DestinationRule",
        "**.connectionPool.http.maxConcurrentStreams",
        "HTTP/2 streams per connection are not capped",
    ),
    entry("DestinationRule", "**.tls.subjectAltNames", "the server certificate's names are not checked"),
    entry("DestinationRule", "**.tls.insecureSkipVerify", "the setting is ignored"),
    entry("DestinationRule", "**.tls.caCrl", "certificate revocation lists are not read"),
    entry("Gateway", "spec.servers[].port.targetPort", "the gateway listens on port.number"),
    entry("Gateway", "spec.servers[].bind", "the gateway listens on every address"),
    entry("Gateway", "spec.servers[].defaultEndpoint", "traffic goes to the routed destination"),
    entry("Gateway", "spec.servers[].tls.mode", "AUTO_PASSTHROUGH and OPTIONAL_MUTUAL are not implemented"),
    entry("Gateway", "spec.servers[].tls.caCrl", "certificate revocation lists are not read"),
    entry(
        "Gateway",
        "spec.servers[].tls.caCertCredentialName",
        "client certificates are checked against caCertificates or credentialName's ca.crt",
    ),
    entry("Gateway", "spec.servers[].tls.credentialNames", "only one certificate (credentialName or files) is served"),
    entry("Gateway", "spec.servers[].tls.tlsCertificates", "only one certificate (credentialName or files) is served"),
    entry("Gateway", "spec.servers[].tls.subjectAltNames", "client certificate names are not checked"),
    entry("Gateway", "spec.servers[].tls.verifyCertificateSpki", "client certificate pins are not checked"),
    entry("Gateway", "spec.servers[].tls.verifyCertificateHash", "client certificate pins are not checked"),
    entry("Gateway", "spec.servers[].tls.minProtocolVersion", "the TLS library's versions are used"),
    entry("Gateway", "spec.servers[].tls.maxProtocolVersion", "the TLS library's versions are used"),
    entry("Gateway", "spec.servers[].tls.cipherSuites", "the TLS library's cipher suites are used"),
    entry(
        "ServiceEntry",
        "spec.ports[].protocol",
        "protocols other than HTTP, HTTP2, GRPC, TCP, TLS and HTTPS are carried as TCP",
    ),
    entry(
        "ServiceEntry",
        "spec.resolution",
        "DYNAMIC_DNS is handled as NONE: connections go to the address the client resolved",
    ),
    entry("ServiceEntry", "spec.subjectAltNames", "the server certificate's names are not checked"),
    entry("ServiceEntry", "spec.endpoints[].network", "every endpoint is taken to be reachable directly"),
    entry("Sidecar", "spec.ingress[]", "inbound listeners are not configured by Sidecar"),
    entry("Sidecar", "spec.inboundConnectionPool", "inbound connections are not limited"),
    entry(
        "Sidecar",
        "spec.outboundTrafficPolicy.egressProxy",
        "unknown destinations are passed through, not sent to an egress proxy",
    ),
    entry("Sidecar", "spec.egress[].port", "an egress listener's hosts apply to every port"),
    entry("Sidecar", "spec.egress[].bind", "the proxy listens on its capture port"),
    entry("Sidecar", "spec.egress[].captureMode", "traffic is always captured by iptables"),
    entry("WorkloadEntry", "spec.network", "every endpoint is taken to be reachable directly"),
    entry("AuthorizationPolicy", "spec.action", "AUDIT and CUSTOM are not enforced"),
    entry("AuthorizationPolicy", "spec.provider", "no external authorizer is called"),
    entry("AuthorizationPolicy", "spec.targetRef", "policies attach by selector only"),
    entry("AuthorizationPolicy", "spec.targetRefs", "policies attach by selector only"),
    entry(
        "AuthorizationPolicy",
        "spec.rules[].from[].source.requestPrincipals",
        "JWT principals need request authentication",
    ),
    entry(
        "AuthorizationPolicy",
        "spec.rules[].from[].source.notRequestPrincipals",
        "JWT principals need request authentication",
    ),
    entry(
        "AuthorizationPolicy",
        "spec.rules[].from[].source.remoteIpBlocks",
        "the original client address (X-Forwarded-For) is not tracked",
    ),
    entry(
        "AuthorizationPolicy",
        "spec.rules[].from[].source.notRemoteIpBlocks",
        "the original client address (X-Forwarded-For) is not tracked",
    ),
    entry("AuthorizationPolicy", "spec.rules[].to[].operation.paths[]", "path templates ({*}, {**}) are not matched"),
    entry(
        "AuthorizationPolicy",
        "spec.rules[].to[].operation.notPaths[]",
        "path templates ({*}, {**}) are not matched",
    ),
    entry(
        "AuthorizationPolicy",
        "spec.rules[].when[].key",
        "this condition key (JWT claims, remote.ip, experimental keys) is not evaluated",
    ),
    entry("RequestAuthentication", "spec.jwtRules", "JWTs are not verified"),
    entry("RequestAuthentication", "spec.targetRef", "policies attach by selector only"),
    entry("RequestAuthentication", "spec.targetRefs", "policies attach by selector only"),
];

/// `field` with list indices and map keys blanked, as the list spells it:
/// `spec.http[2].match[0].headers[end-user]` becomes `spec.http[].match[].headers[]`.
pub fn pattern(field: &FieldPath) -> String {
    let mut out = String::with_capacity(field.as_str().len());
    let mut depth = 0usize;
    for c in field.as_str().chars() {
        match c {
            '[' => {
                if depth == 0 {
                    out.push_str("[]");
                }
                depth += 1;
            }
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The entry for `field` of a `kind` resource, if the list has one.
pub fn lookup(kind: &str, field: &FieldPath) -> Option<&'static NotSupportedYet> {
    let pattern = pattern(field);
    NOT_SUPPORTED_YET.iter().find(|entry| {
        entry.kind == kind
            && match entry.field.strip_prefix("**") {
                Some(suffix) => pattern.ends_with(suffix),
                None => entry.field == pattern,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_blank_indices_and_map_keys() {
        let path = FieldPath::spec().field("http").index(2).field("match").index(0).field("headers").key("a[b]");
        assert_eq!(pattern(&path), "spec.http[].match[].headers[]");
    }

    #[test]
    fn policy_entries_match_at_every_level() {
        let subset_level = FieldPath::spec()
            .field("subsets")
            .index(1)
            .field("trafficPolicy")
            .field("portLevelSettings")
            .index(0)
            .field("tls")
            .field("caCrl");
        assert!(lookup("DestinationRule", &subset_level).is_some());
        assert!(lookup("Gateway", &subset_level).is_none());
        assert!(lookup("DestinationRule", &FieldPath::spec().field("host")).is_none());
    }

    #[test]
    fn entries_are_unique() {
        for (index, entry) in NOT_SUPPORTED_YET.iter().enumerate() {
            let twin = NOT_SUPPORTED_YET[index + 1..]
                .iter()
                .find(|other| other.kind == entry.kind && other.field == entry.field);
            assert!(twin.is_none(), "{} {} is listed twice", entry.kind, entry.field);
        }
    }
}
