//! `ServiceEntry`: PLACEHOLDER, to be written in full by its owner.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::MeshStatus;
use crate::validate::{Diagnostics, FieldPath, Validate, ValidationContext};

/// The spec of a `ServiceEntry`.
#[derive(CustomResource, Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "ServiceEntry",
    namespaced,
    status = "MeshStatus",
    derive = "PartialEq",
    shortname = "se",
    category = "istio-io"
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceEntrySpec {}

impl Validate for ServiceEntrySpec {
    fn validate(&self, _path: &FieldPath, _context: &ValidationContext, _diagnostics: &mut Diagnostics) {}
}
