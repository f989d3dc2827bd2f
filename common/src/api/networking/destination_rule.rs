//! `DestinationRule`: PLACEHOLDER, to be written in full by its owner.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::MeshStatus;
use crate::validate::{Diagnostics, FieldPath, Validate, ValidationContext};

/// The spec of a `DestinationRule`.
#[derive(CustomResource, Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "DestinationRule",
    namespaced,
    status = "MeshStatus",
    derive = "PartialEq",
    shortname = "dr",
    category = "istio-io"
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DestinationRuleSpec {}

impl Validate for DestinationRuleSpec {
    fn validate(&self, _path: &FieldPath, _context: &ValidationContext, _diagnostics: &mut Diagnostics) {}
}
