//! The status every Istio resource of this mesh carries.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the controller last concluded about a resource, written with server-side apply.
///
/// Shaped like Istio's `IstioStatus` so that tooling reading `status.conditions` keeps working.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshStatus {
    /// Current conditions; the mesh writes one of type `Reconciled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Problems found in the resource: errors, warnings and fields not supported yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_messages: Vec<ValidationMessage>,
    /// The `metadata.generation` these conclusions are about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One condition, as Kubernetes conditions are written.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The aspect this condition is about, such as `Reconciled`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase word saying why, such as `Accepted` or `InvalidField`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What a person needs to know, naming the field at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When `status` last changed, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// One problem found by validation, kept in the status so `kubectl get -o yaml` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValidationMessage {
    /// `Error`, `Warning` or `Unsupported`.
    pub level: String,
    /// The field path, such as `spec.http[1].route[0].weight`.
    pub field: String,
    /// What is wrong and what would be valid.
    pub message: String,
}
