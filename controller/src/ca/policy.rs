//! Who gets which names: the pure part of `SignCertificate`, testable without Kubernetes.
//!
//! A caller's certificate carries exactly one URI SAN, the SPIFFE ID of the service account its
//! token proves, whatever the CSR asks. DNS SANs are granted only to service accounts of the
//! controller's own namespace, and only for Services of that namespace
//! (`<svc>.<ns>.svc`, `<svc>.<ns>.svc.<domain>`): that is how the injector gets the serving
//! certificate its webhook is dialled with, and no workload can pose as a Service.

use std::time::Duration;

use rcgen::SanType;

use super::authority::LeafNames;

/// A service account, as a token review proved it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub service_account: String,
}

impl Identity {
    /// The identity of a TokenReview user name, `system:serviceaccount:<ns>:<sa>`; `None` for
    /// any other user (a person, a node).
    pub fn from_username(username: &str) -> Option<Identity> {
        let rest = username.strip_prefix("system:serviceaccount:")?;
        let (namespace, service_account) = rest.split_once(':')?;
        let valid = |part: &str| !part.is_empty() && !part.contains(':');
        (valid(namespace) && valid(service_account))
            .then(|| Identity { namespace: namespace.into(), service_account: service_account.into() })
    }

    /// `spiffe://<trust_domain>/ns/<ns>/sa/<sa>`.
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!("spiffe://{trust_domain}/ns/{}/sa/{}", self.namespace, self.service_account)
    }
}

/// What the CA grants.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The SPIFFE trust domain (`cluster.local`).
    pub trust_domain: String,
    /// The cluster's DNS suffix (`cluster.local`), for `<svc>.<ns>.svc.<domain>`.
    pub domain: String,
    /// The controller's namespace: its service accounts may get DNS SANs of its Services.
    pub namespace: String,
    /// The validity of a certificate whose request asks for none.
    pub default_validity: Duration,
    /// The longest validity granted.
    pub max_validity: Duration,
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A SAN the caller may not have.
    #[error("{0}")]
    PermissionDenied(String),
    /// A malformed request.
    #[error("{0}")]
    Invalid(String),
}

impl Policy {
    /// The names and validity `identity` gets for a CSR asking for `requested` SANs and
    /// `requested_seconds` (0: the default); `service_exists(name)` says whether the Service
    /// `name` exists in the controller's namespace.
    pub fn grant(
        &self,
        identity: &Identity,
        requested: &[SanType],
        requested_seconds: i64,
        service_exists: &dyn Fn(&str) -> bool,
    ) -> Result<(LeafNames, Duration), Refusal> {
        let mut names = LeafNames { uris: vec![identity.spiffe_id(&self.trust_domain)], dns: Vec::new() };
        for san in requested {
            match san {
                // The identity is the token's; whatever URI the CSR names is replaced.
                SanType::URI(_) => {}
                SanType::DnsName(name) => {
                    let name = name.as_str().to_ascii_lowercase();
                    self.check_dns(identity, &name, service_exists)?;
                    if !names.dns.contains(&name) {
                        names.dns.push(name);
                    }
                }
                other => {
                    return Err(Refusal::PermissionDenied(format!(
                        "SAN {other:?} refused: only the caller's SPIFFE ID and, for the controller's namespace, DNS names of its Services are issued"
                    )));
                }
            }
        }
        Ok((names, self.validity(requested_seconds)?))
    }

    fn check_dns(&self, identity: &Identity, name: &str, service_exists: &dyn Fn(&str) -> bool) -> Result<(), Refusal> {
        let ns = &self.namespace;
        let refuse = |why: String| Err(Refusal::PermissionDenied(format!("DNS SAN {name:?} refused: {why}")));
        if identity.namespace != *ns {
            return refuse(format!(
                "only service accounts of the namespace {ns:?} may have DNS names, and {} is in {:?}",
                identity.spiffe_id(&self.trust_domain),
                identity.namespace
            ));
        }
        let long_suffix = format!(".{ns}.svc.{}", self.domain);
        let short_suffix = format!(".{ns}.svc");
        let service = name.strip_suffix(&long_suffix).or_else(|| name.strip_suffix(&short_suffix));
        match service {
            Some(service) if !service.is_empty() && !service.contains('.') => {
                if service_exists(service) {
                    Ok(())
                } else {
                    refuse(format!("there is no Service {ns}/{service}"))
                }
            }
            _ => refuse(format!("only <service>{short_suffix} and <service>{long_suffix} may be issued")),
        }
    }

    fn validity(&self, requested_seconds: i64) -> Result<Duration, Refusal> {
        match requested_seconds {
            0 => Ok(self.default_validity.min(self.max_validity)),
            seconds if seconds < 0 => Err(Refusal::Invalid(format!(
                "requested_validity_seconds is {seconds}; it must be positive, or 0 for the default"
            ))),
            seconds => Ok(Duration::from_secs(seconds as u64).min(self.max_validity)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            trust_domain: "cluster.local".into(),
            domain: "cluster.local".into(),
            namespace: "istio-system".into(),
            default_validity: Duration::from_secs(24 * 3600),
            max_validity: Duration::from_secs(48 * 3600),
        }
    }

    fn identity(namespace: &str, service_account: &str) -> Identity {
        Identity { namespace: namespace.into(), service_account: service_account.into() }
    }

    fn dns(name: &str) -> SanType {
        SanType::DnsName(name.try_into().unwrap())
    }

    fn uri(name: &str) -> SanType {
        SanType::URI(name.try_into().unwrap())
    }

    #[test]
    fn user_names_of_service_accounts_only() {
        assert_eq!(Identity::from_username("system:serviceaccount:a:reviews"), Some(identity("a", "reviews")));
        assert_eq!(Identity::from_username("system:serviceaccount:a"), None);
        assert_eq!(Identity::from_username("system:serviceaccount:a:b:c"), None);
        assert_eq!(Identity::from_username("system:node:mesh-node"), None);
        assert_eq!(Identity::from_username("admin"), None);
    }

    #[test]
    fn the_uri_is_always_the_tokens_spiffe_id() {
        let requested = [uri("spiffe://cluster.local/ns/istio-system/sa/mesh-controller"), uri("https://evil")];
        let (names, _) = policy().grant(&identity("a", "reviews"), &requested, 0, &|_| true).unwrap();
        assert_eq!(names.uris, vec!["spiffe://cluster.local/ns/a/sa/reviews".to_string()]);
        assert!(names.dns.is_empty());
    }

    #[test]
    fn dns_names_only_for_services_of_the_controllers_namespace() {
        let injector = identity("istio-system", "mesh-injector");
        let exists = |service: &str| service == "mesh-injector";
        let requested = [dns("mesh-injector.istio-system.svc"), dns("mesh-injector.istio-system.svc.cluster.local")];
        let (names, _) = policy().grant(&injector, &requested, 0, &exists).unwrap();
        assert_eq!(names.dns, vec!["mesh-injector.istio-system.svc", "mesh-injector.istio-system.svc.cluster.local"]);

        let refused = |who: &Identity, name: &str| match policy().grant(who, &[dns(name)], 0, &exists) {
            Err(Refusal::PermissionDenied(message)) => message,
            other => panic!("{name}: {other:?}"),
        };
        let message = refused(&identity("a", "reviews"), "reviews.a.svc");
        assert!(message.contains("\"reviews.a.svc\"") && message.contains("istio-system"), "{message}");
        let message = refused(&injector, "other.istio-system.svc");
        assert!(message.contains("no Service istio-system/other"), "{message}");
        for name in
            ["mesh-injector.default.svc", "example.com", "a.mesh-injector.istio-system.svc", ".istio-system.svc"]
        {
            assert!(refused(&injector, name).contains(name), "{name}");
        }
    }

    #[test]
    fn other_san_kinds_are_refused() {
        let ip = SanType::IpAddress("10.0.0.1".parse().unwrap());
        let refusal = policy().grant(&identity("istio-system", "x"), &[ip], 0, &|_| true).unwrap_err();
        assert!(matches!(refusal, Refusal::PermissionDenied(ref m) if m.contains("10.0.0.1")), "{refusal:?}");
    }

    #[test]
    fn validity_defaults_and_is_capped() {
        let grant =
            |seconds| policy().grant(&identity("a", "b"), &[], seconds, &|_| true).map(|(_, validity)| validity);
        assert_eq!(grant(0), Ok(Duration::from_secs(24 * 3600)));
        assert_eq!(grant(3600), Ok(Duration::from_secs(3600)));
        assert_eq!(grant(365 * 24 * 3600), Ok(Duration::from_secs(48 * 3600)));
        assert!(matches!(grant(-1), Err(Refusal::Invalid(_))));
    }
}
