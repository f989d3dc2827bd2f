//! `AuthorizationPolicy`: which requests (or TCP connections) a workload's proxy lets through.
//!
//! The server-side proxy evaluates the policies that apply to its workload in Istio's order:
//! CUSTOM, then DENY (any match denies), then ALLOW (if any ALLOW policy applies, a request
//! must match one of them, else it is denied). With no ALLOW policy, what is not denied is
//! allowed. A policy without rules matches nothing, so an ALLOW policy with `spec: {}` denies
//! everything for the workloads it applies to: that is Istio's documented "deny all".
//!
//! String lists in sources and operations use Istio's wildcards (see
//! [`crate::api::security::matching`]): exact, `*`, `prefix*` or `*suffix`.

mod validate;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::security::PolicyTargetReference;
use crate::api::{MeshStatus, WorkloadSelector};

/// The spec of an `AuthorizationPolicy`, Istio's `security.istio.io` message of that name.
#[derive(CustomResource, Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "AuthorizationPolicy",
    namespaced,
    status = "MeshStatus",
    derive = "PartialEq",
    shortname = "ap",
    category = "istio-io",
    category = "security-istio-io",
    printcolumn = r#"{"name":"Action","type":"string","description":"What a match does: ALLOW, DENY, AUDIT or CUSTOM.","jsonPath":".spec.action"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// The workloads (in this namespace) the policy applies to. Without a selector or target the
    /// policy applies to every workload of the namespace, or of the mesh when it lives in the
    /// root namespace (`istio-system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Attaches the policy to one resource (a Service, ServiceEntry or Gateway) instead of
    /// selecting workloads; not together with `selector` or `targetRefs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Attaches the policy to several resources; not together with `selector` or `targetRef`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// The policy matches a request when any rule matches. No rules means nothing matches:
    /// with ALLOW that denies every request to the selected workloads (deny-all); with DENY it
    /// has no effect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// What happens to a request the policy matches; absent means ALLOW.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// The external authorizer a CUSTOM policy delegates to; only with `action: CUSTOM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
}

impl AuthorizationPolicySpec {
    /// The action, with Istio's default of ALLOW when none is written.
    pub fn action(&self) -> Action {
        self.action.unwrap_or_default()
    }
}

/// What a matching policy does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Lets the request through. Once any ALLOW policy applies to a workload, requests matching
    /// none of them are denied.
    #[default]
    Allow,
    /// Refuses the request (HTTP 403, or a closed TCP connection); DENY beats ALLOW.
    Deny,
    /// Marks the request for audit logging without changing the decision.
    Audit,
    /// Asks the external authorizer named in `provider`; evaluated before DENY and ALLOW.
    Custom,
}

impl Action {
    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "ALLOW",
            Self::Deny => "DENY",
            Self::Audit => "AUDIT",
            Self::Custom => "CUSTOM",
        }
    }
}

/// The external authorizer of a CUSTOM policy.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExtensionProvider {
    /// The name of an extension provider defined in the mesh config (`extensionProviders`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// One rule: a request matches when it matches every part that is set (`from`, `to`, `when`);
/// within a part, matching any one entry is enough. A rule with no parts matches every request.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    /// Who sends the request; any entry may match. Empty means any source.
    #[serde(rename = "from", default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<RuleFrom>,
    /// What the request asks for; any entry may match. Empty means any operation.
    #[serde(rename = "to", default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<RuleTo>,
    /// Extra conditions on request attributes; every condition must hold.
    #[serde(rename = "when", default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One entry of a rule's `from` list.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleFrom {
    /// The source to match; required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// One entry of a rule's `to` list.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleTo {
    /// The operation to match; required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// The sender of a request. Every field that is set must match (AND); within a field, any value
/// may match (OR); a `not*` field matches when none of its values does.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Source {
    /// Peer identities from the mTLS client certificate: SPIFFE IDs without `spiffe://`, like
    /// `cluster.local/ns/default/sa/sleep`; `*`, `prefix*` and `*suffix` allowed. Needs mTLS:
    /// a plain-text peer has no principal and matches nothing here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    /// Peer identities that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// End-user identities from a JWT validated by a RequestAuthentication, `<iss>/<sub>`
    /// (`issuer.example.com/alice`); `*` means any authenticated request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    /// End-user identities that must not match; `*` here means "requests without a JWT".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    /// The peer's namespace, taken from its mTLS identity (so it needs mTLS too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Peer namespaces that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// The peer's IP address (the TCP connection's source), as an address (`10.1.2.3`) or a
    /// CIDR block (`10.0.0.0/16`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    /// Peer addresses or blocks that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// The original client's address, as `X-Forwarded-For` or the PROXY protocol reports it
    /// (relevant at gateways); addresses or CIDR blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    /// Original client addresses or blocks that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
    /// Peer service accounts as `namespace/name` (`default/sleep`), a shorter way to write a
    /// principal in the mesh's own trust domain; not together with `principals` or `namespaces`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    /// Peer service accounts (`namespace/name`) that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
}

/// What a request asks for. Every field that is set must match (AND); within a field, any value
/// may match (OR). Hosts, methods and paths need HTTP; on a TCP port a rule using them never
/// matches (so an ALLOW rule with them allows nothing there).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Operation {
    /// The request's `Host`/`:authority`, compared case-insensitively; `*`, `prefix*` and
    /// `*suffix` allowed (`*.example.com`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Hosts that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// The destination port of the connection (the workload's port), as strings of 1-65535:
    /// `["8080"]`. Works for TCP too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// Destination ports that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    /// HTTP methods, upper case (`GET`, `POST`); gRPC calls are always `POST`. `*` matches any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Methods that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// Request paths without the query string (`/api/v1/books`); `*`, `prefix*` and `*suffix`
    /// allowed, or path templates of whole segments (`/books/{*}/reviews`, `/static/{**}`).
    /// For gRPC the path is `/package.Service/Method`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Paths that must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

/// A condition on one request attribute: it holds when the attribute matches one of `values`
/// (if set) and none of `notValues`.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Condition {
    /// The attribute: `source.ip`, `source.namespace`, `request.headers[User-Agent]`,
    /// `destination.port` and so on (Istio's list of authorization conditions).
    #[serde(default)]
    pub key: String,
    /// Values of which the attribute must match one; wildcards as elsewhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Values none of which the attribute may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}
