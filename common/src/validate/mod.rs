//! Validation with Istio's rules.
//!
//! Every problem is a [`Diagnostic`] that names the object (`VirtualService default/reviews`),
//! the field path (`spec.http[1].route[0].weight`) and what would be valid. Three severities:
//! errors make the resource invalid (admission refuses it, the controller skips it); warnings
//! are accepted but reported; `Unsupported` marks a field the mesh accepts but does not act on
//! yet, so nothing is ignored silently; [`NOT_SUPPORTED_YET`] lists them all in one place.

mod context;
mod diagnostics;
pub mod not_supported_yet;
mod path;
pub mod rules;

pub use context::ValidationContext;
pub use diagnostics::{Diagnostic, Diagnostics, ObjectRef, Severity};
pub use not_supported_yet::{NOT_SUPPORTED_YET, NotSupportedYet};
pub use path::FieldPath;

/// A resource spec that can check itself.
pub trait Validate {
    /// Appends every problem found to `diagnostics`, with paths below `path` (normally `spec`).
    fn validate(&self, path: &FieldPath, context: &ValidationContext, diagnostics: &mut Diagnostics);
}
