//! `RequestAuthentication`: which JSON Web Tokens a workload accepts. A request carrying a token
//! that fails validation is rejected (401); a request without a token is let through
//! unauthenticated, and an `AuthorizationPolicy` on `requestPrincipals` decides whether it may
//! proceed. The mesh parses and validates these resources but does not check JWTs yet, so every
//! `jwtRules` is reported as not supported.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::security::{PolicyTargetReference, is_header_name, validate_policy_scope};
use crate::api::{Duration, MeshStatus, WorkloadSelector};
use crate::validate::{Diagnostics, FieldPath, Validate, ValidationContext, rules};

/// The spec of a `RequestAuthentication`, Istio's `security.istio.io` message of that name.
#[derive(CustomResource, Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "RequestAuthentication",
    namespaced,
    status = "MeshStatus",
    derive = "PartialEq",
    shortname = "ra",
    category = "istio-io",
    category = "security-istio-io",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestAuthenticationSpec {
    /// The workloads (in this namespace) that check tokens. Without a selector or target, every
    /// workload of the namespace (or of the mesh, in the root namespace) does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Attaches the policy to one resource (a Service, ServiceEntry or Gateway) instead of
    /// selecting workloads; not together with `selector` or `targetRefs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Attaches the policy to several resources; not together with `selector` or `targetRef`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// The token issuers accepted. A token is checked against the rule of its `iss` claim; a
    /// token from an issuer not listed is rejected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_rules: Vec<JwtRule>,
}

/// How tokens of one issuer are found, verified and passed on.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtRule {
    /// The token's required `iss` claim, such as `https://accounts.example.com` or
    /// `testing@secure.istio.io`. May be left out when `jwksUri` is set: then any issuer
    /// whose token verifies against those keys is accepted.
    #[serde(default)]
    pub issuer: String,
    /// Accepted `aud` claims; a token must carry one of them. Empty accepts tokens whose audience
    /// is the destination service's name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Where the issuer's public keys (a JWKS document) are fetched, over HTTPS (or HTTP). When
    /// neither this nor `jwks` is set, the keys are found through OpenID Connect discovery on the
    /// issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// The older spelling of `jwksUri`, still in Istio's schema; it means the same and may not
    /// be set together with `jwksUri`. Read [`JwtRule::jwks_location`] rather than either field.
    #[serde(rename = "jwks_uri", default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri_legacy: Option<String>,
    /// The issuer's public keys inline, as a JSON Web Key Set document (`{"keys": [...]}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Headers the token is read from. Default: `Authorization` with prefix `Bearer `.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters the token is read from (`?access_token=...`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// Cookies the token is read from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// If set, the verified token's payload (base64url JSON) is added to the request under this
    /// header for the application to read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    /// Keeps the token in the forwarded request; by default it is removed once verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_original_token: Option<bool>,
    /// Claims copied into request headers after verification (`x-jwt-claim-group: groups`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// How long fetching `jwksUri` may take before it fails (default 5s); at least 1ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Claims whose string value is a space-separated list, split into a list so that
    /// authorization can match one element; `scope` and `permission` always are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
}

impl JwtRule {
    /// Where the key set is fetched from, whichever spelling the author used.
    pub fn jwks_location(&self) -> Option<&str> {
        self.jwks_uri.as_deref().or(self.jwks_uri_legacy.as_deref())
    }
}

/// A header that may carry the token.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtHeader {
    /// The header name, such as `x-goog-iap-jwt-assertion`.
    #[serde(default)]
    pub name: String,
    /// Text before the token in the header's value, stripped before decoding (`Bearer `).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// Copies one claim of a verified token into a request header.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimToHeader {
    /// The header to set (an existing header of that name is overwritten).
    #[serde(default)]
    pub header: String,
    /// The claim whose value is copied; nested claims use dots (`user.name`).
    #[serde(default)]
    pub claim: String,
}

impl Validate for RequestAuthenticationSpec {
    fn validate(&self, path: &FieldPath, context: &ValidationContext, diagnostics: &mut Diagnostics) {
        validate_policy_scope(
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
            path,
            context,
            diagnostics,
        );
        if self.jwt_rules.is_empty() {
            return;
        }
        let rules_path = path.field("jwtRules");
        for (index, rule) in self.jwt_rules.iter().enumerate() {
            validate_jwt_rule(rule, &rules_path.index(index), diagnostics);
        }
        diagnostics.unsupported(&rules_path);
    }
}

fn validate_jwt_rule(rule: &JwtRule, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if rule.issuer.is_empty() && rule.jwks_location().is_none() {
        diagnostics.error(
            &path.field("issuer"),
            "set issuer (the iss claim of accepted tokens), or jwksUri to accept any issuer whose tokens those keys verify",
        );
    }
    if rule.jwks_uri.is_some() && rule.jwks_uri_legacy.is_some() {
        diagnostics.error(&path.field("jwks_uri"), "jwks_uri is the old spelling of jwksUri; set only jwksUri");
    }
    if rule.jwks.is_some() && rule.jwks_location().is_some() {
        diagnostics.error(path, "set jwks (the keys inline) or jwksUri (where to fetch them), not both");
    }
    let uri_field = if rule.jwks_uri.is_some() { "jwksUri" } else { "jwks_uri" };
    if let Some(uri) = rule.jwks_location() {
        let host = uri.strip_prefix("https://").or_else(|| uri.strip_prefix("http://"));
        if !host.is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/')) {
            diagnostics.error(
                &path.field(uri_field),
                format!("{uri:?} is not an http(s) URL; use one like https://example.com/.well-known/jwks.json"),
            );
        }
    }
    if let Some(jwks) = &rule.jwks {
        let is_key_set = serde_json::from_str::<serde_json::Value>(jwks)
            .is_ok_and(|document| document.get("keys").is_some_and(serde_json::Value::is_array));
        if !is_key_set {
            diagnostics.error(
                &path.field("jwks"),
                "jwks must be a JSON Web Key Set document, a JSON object with a \"keys\" array",
            );
        }
    }
    for (index, header) in rule.from_headers.iter().enumerate() {
        header_name(&header.name, &path.field("fromHeaders").index(index).field("name"), diagnostics);
    }
    for (name, values) in [("fromParams", &rule.from_params), ("fromCookies", &rule.from_cookies)] {
        for (index, value) in values.iter().enumerate() {
            if value.is_empty() {
                diagnostics.error(&path.field(name).index(index), "an empty name finds no token; remove it");
            }
        }
    }
    if let Some(header) = &rule.output_payload_to_header {
        header_name(header, &path.field("outputPayloadToHeader"), diagnostics);
    }
    for (index, output) in rule.output_claim_to_headers.iter().enumerate() {
        let output_path = path.field("outputClaimToHeaders").index(index);
        header_name(&output.header, &output_path.field("header"), diagnostics);
        if output.claim.is_empty() {
            diagnostics.error(&output_path.field("claim"), "name the claim to copy into the header");
        }
    }
    if let Some(timeout) = rule.timeout {
        rules::duration_at_least(timeout, Duration::from_millis(1), &path.field("timeout"), diagnostics);
    }
}

fn header_name(name: &str, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if !is_header_name(name) {
        diagnostics.error(
            path,
            format!("{name:?} is not a valid HTTP header name; use letters, digits and '-' (like x-jwt-claim)"),
        );
    }
}
