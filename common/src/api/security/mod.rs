//! `security.istio.io`: served as `v1` and `v1beta1` with one schema; `v1` is stored.
//!
//! The kinds here decide who may talk to a workload: `PeerAuthentication` (what the server side
//! of a connection accepts: mutual TLS or plain text), `AuthorizationPolicy` (which requests are
//! allowed or denied) and `RequestAuthentication` (which JWTs are accepted). The types shared by
//! several of them (the policy target reference, the selector/target checks) live in this file;
//! [`matching`] holds Istio's wildcard string semantics that the proxy's authorization uses.

pub mod authorization_policy;
pub mod matching;
pub mod peer_authentication;
pub mod request_authentication;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::WorkloadSelector;
use crate::validate::{Diagnostics, FieldPath, ValidationContext, rules};

/// The API group of every kind in this module.
pub const GROUP: &str = "security.istio.io";
/// Every version served, newest (the stored one) first.
pub const VERSIONS: &[&str] = &["v1", "v1beta1"];

/// Names the resource a policy attaches to instead of selecting workloads by label: a Kubernetes
/// `Service`, a `ServiceEntry`, or a Gateway API `Gateway`/`GatewayClass`. The policy then
/// applies to the traffic of that resource, on whichever proxies serve it.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyTargetReference {
    /// The API group of the target: empty for core `Service`, `gateway.networking.k8s.io` for
    /// `Gateway` and `GatewayClass`, `networking.istio.io` for `ServiceEntry`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The kind of the target (`Service`, `ServiceEntry`, `Gateway`, `GatewayClass`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// The name of the target object.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The namespace of the target. Empty means the policy's own namespace, which is also the
    /// only namespace allowed: a policy cannot attach to another namespace's resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The kinds a policy may target, as `(group, kind)`.
const TARGET_KINDS: &[(&str, &str)] = &[
    ("", "Service"),
    ("networking.istio.io", "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
];

/// Checks how a policy chooses its workloads: by `selector`, by `targetRef` or by `targetRefs`,
/// never two of them. Target references are validated and then reported unsupported, since the
/// mesh attaches policies by selector (or namespace-wide) only for now.
pub(crate) fn validate_policy_scope(
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
    path: &FieldPath,
    context: &ValidationContext,
    diagnostics: &mut Diagnostics,
) {
    if let Some(selector) = selector {
        rules::labels(&selector.match_labels, &path.field("selector").field("matchLabels"), diagnostics);
    }
    let has_targets = target_ref.is_some() || !target_refs.is_empty();
    if selector.is_some() && has_targets {
        diagnostics.error(
            &path.field("selector"),
            "selector and targetRef/targetRefs are mutually exclusive; choose workloads by labels or by target, not both",
        );
    }
    if target_ref.is_some() && !target_refs.is_empty() {
        diagnostics.error(
            &path.field("targetRef"),
            "targetRef and targetRefs are mutually exclusive; list every target in targetRefs",
        );
    }
    if let Some(target) = target_ref {
        let target_path = path.field("targetRef");
        validate_target(target, &target_path, context, diagnostics);
        diagnostics.unsupported(&target_path);
    }
    if !target_refs.is_empty() {
        for (index, target) in target_refs.iter().enumerate() {
            validate_target(target, &path.field("targetRefs").index(index), context, diagnostics);
        }
        diagnostics.unsupported(&path.field("targetRefs"));
    }
}

fn validate_target(
    target: &PolicyTargetReference,
    path: &FieldPath,
    context: &ValidationContext,
    diagnostics: &mut Diagnostics,
) {
    if target.name.is_empty() {
        diagnostics.error(&path.field("name"), "a target reference needs the name of the object it attaches to");
    }
    if !TARGET_KINDS.iter().any(|(group, kind)| *group == target.group && *kind == target.kind) {
        diagnostics.error(
            path,
            format!(
                "group {:?} kind {:?} cannot be targeted; use Service (group \"\"), ServiceEntry (group \
                 networking.istio.io), or Gateway/GatewayClass (group gateway.networking.k8s.io)",
                target.group, target.kind
            ),
        );
    }
    if let Some(namespace) = &target.namespace
        && !namespace.is_empty()
        && !context.namespace.is_empty()
        && *namespace != context.namespace
    {
        diagnostics.error(
            &path.field("namespace"),
            format!(
                "a policy can only target objects in its own namespace {:?}; remove the namespace or set it to {:?}",
                context.namespace, context.namespace
            ),
        );
    }
}

/// Whether `name` is a valid HTTP header name (an RFC 7230 token), as Istio requires for headers
/// that JWT rules read or write.
pub(crate) fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
