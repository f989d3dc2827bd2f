//! `PeerAuthentication`: what the server side of a connection accepts from its peers, mutual TLS
//! or plain text, for the whole mesh (in the root namespace, `istio-system`), one namespace, or
//! the workloads a selector picks, optionally per port.
//!
//! The most specific policy wins: a workload's own policy (by selector) over its namespace's over
//! the mesh's; a mode of `UNSET` inherits from the next level up, and the mesh default is
//! `PERMISSIVE`.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::{MeshStatus, WorkloadSelector};
use crate::validate::{Diagnostics, FieldPath, Validate, ValidationContext, rules};

/// The spec of a `PeerAuthentication`, Istio's `security.istio.io` message of that name.
#[derive(CustomResource, Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "PeerAuthentication",
    namespaced,
    status = "MeshStatus",
    derive = "PartialEq",
    shortname = "pa",
    category = "istio-io",
    category = "security-istio-io",
    printcolumn = r#"{"name":"Mode","type":"string","description":"The mTLS mode the server side accepts.","jsonPath":".spec.mtls.mode"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerAuthenticationSpec {
    /// The workloads (in this namespace) the policy applies to. Without a selector the policy is
    /// namespace-wide, or mesh-wide when it lives in the root namespace (`istio-system`). Any
    /// name works for a namespace-wide policy; Istio's examples call it `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// What the selected workloads accept on every port not listed in `portLevelMtls`.
    /// Absent means the same as `mode: UNSET`: inherit from the enclosing policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<PeerAuthenticationMutualTls>,
    /// Per-port overrides, keyed by the workload's (container) port number, not the service
    /// port: `8080: {mode: DISABLE}` lets plain text reach port 8080 while the rest stays STRICT.
    /// Only allowed together with a selector. YAML writes the keys as numbers, JSON (and so the
    /// Kubernetes API) as strings (`"8080"`); both are read.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(with = "BTreeMap<String, PeerAuthenticationMutualTls>")]
    pub port_level_mtls: BTreeMap<u32, PeerAuthenticationMutualTls>,
}

/// The mutual TLS setting of a workload or port.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerAuthenticationMutualTls {
    /// What connections the server side accepts; `UNSET` (or absent) inherits from the parent
    /// policy.
    #[serde(default, skip_serializing_if = "MtlsMode::is_unset")]
    pub mode: MtlsMode,
}

/// What the server side of a connection accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the enclosing policy (workload ← namespace ← mesh); the mesh default is
    /// `PERMISSIVE`.
    #[default]
    Unset,
    /// Plain text only: the proxy does not terminate mutual TLS, so peers are not identified
    /// and principal/namespace rules of authorization policies cannot match.
    Disable,
    /// Both mutual TLS and plain text are accepted (the proxy tells them apart by the first
    /// bytes), the usual state while a namespace migrates to mTLS.
    Permissive,
    /// Mutual TLS only: plain-text connections are refused.
    Strict,
}

impl MtlsMode {
    /// Whether the mode inherits from the enclosing policy.
    pub fn is_unset(&self) -> bool {
        *self == Self::Unset
    }
}

impl PeerAuthenticationSpec {
    /// Whether the policy applies to a whole namespace (or the whole mesh, in the root
    /// namespace) rather than to selected workloads.
    pub fn is_namespace_wide(&self) -> bool {
        self.selector.as_ref().is_none_or(|selector| selector.match_labels.is_empty())
    }
}

impl Validate for PeerAuthenticationSpec {
    fn validate(&self, path: &FieldPath, _context: &ValidationContext, diagnostics: &mut Diagnostics) {
        if let Some(selector) = &self.selector {
            rules::labels(&selector.match_labels, &path.field("selector").field("matchLabels"), diagnostics);
        }
        if self.port_level_mtls.is_empty() {
            return;
        }
        let ports_path = path.field("portLevelMtls");
        if self.is_namespace_wide() {
            diagnostics.error(
                &ports_path,
                "portLevelMtls needs a selector with matchLabels, because a port number only means \
                 something for particular workloads; add spec.selector or move the port setting to a \
                 workload-specific policy",
            );
        }
        for port in self.port_level_mtls.keys() {
            rules::port(*port, &ports_path.key(&port.to_string()), diagnostics);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_keys_read_from_yaml_numbers_and_json_strings() {
        let yaml = "selector: {matchLabels: {app: x}}\nportLevelMtls:\n  8080:\n    mode: DISABLE\n";
        let via_value: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
        let from_yaml: PeerAuthenticationSpec = serde_json::from_value(via_value).unwrap();
        let direct_yaml: PeerAuthenticationSpec = serde_yaml::from_str(yaml).unwrap();
        let json = r#"{"selector":{"matchLabels":{"app":"x"}},"portLevelMtls":{"8080":{"mode":"DISABLE"}}}"#;
        let from_json: PeerAuthenticationSpec = serde_json::from_str(json).unwrap();
        let from_json_value: PeerAuthenticationSpec =
            serde_json::from_value(serde_json::from_str(json).unwrap()).unwrap();
        assert_eq!(from_yaml.port_level_mtls[&8080].mode, MtlsMode::Disable);
        assert_eq!(from_yaml, direct_yaml);
        assert_eq!(from_yaml, from_json);
        assert_eq!(from_yaml, from_json_value);
        assert_eq!(serde_json::to_string(&from_json).unwrap(), json);
    }

    #[test]
    fn unset_mode_is_the_default_and_is_not_written() {
        let spec: PeerAuthenticationSpec = serde_json::from_str(r#"{"mtls":{}}"#).unwrap();
        assert_eq!(spec.mtls.as_ref().unwrap().mode, MtlsMode::Unset);
        assert_eq!(serde_json::to_string(&spec).unwrap(), r#"{"mtls":{}}"#);
        assert!(spec.is_namespace_wide());
    }
}
