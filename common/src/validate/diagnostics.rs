//! The problems validation finds, each tied to an object and a field.

use std::fmt;

use super::FieldPath;

/// Names the object a problem is about, as users write it: `VirtualService default/reviews`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// The resource's kind, such as `VirtualService`.
    pub kind: String,
    /// The resource's namespace; empty for cluster-scoped objects.
    pub namespace: String,
    /// The resource's name.
    pub name: String,
}

impl ObjectRef {
    /// Names an object of `kind` in `namespace`.
    pub fn new(kind: impl Into<String>, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { kind: kind.into(), namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// How serious a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// The resource is invalid: admission refuses it and the controller does not use it.
    Error,
    /// The resource is accepted, but probably does not do what its author meant.
    Warning,
    /// The field is accepted but the mesh does not act on it yet.
    Unsupported,
}

impl Severity {
    /// The word used in logs and in `status.validationMessages[].level`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "Error",
            Self::Warning => "Warning",
            Self::Unsupported => "Unsupported",
        }
    }
}

/// One problem: where it is and what would be valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// How serious it is.
    pub severity: Severity,
    /// The object it is in.
    pub object: ObjectRef,
    /// The field it is about.
    pub field: FieldPath,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Unsupported => "not supported yet",
        };
        write!(f, "{}: {level}: {}: {}", self.object, self.field, self.message)
    }
}

/// Everything validation found in one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostics {
    object: ObjectRef,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// An empty report about `object`.
    pub fn new(object: ObjectRef) -> Self {
        Self { object, items: Vec::new() }
    }

    /// The object this report is about.
    pub fn object(&self) -> &ObjectRef {
        &self.object
    }

    /// Records an error at `field`.
    pub fn error(&mut self, field: &FieldPath, message: impl Into<String>) {
        self.push(Severity::Error, field, message.into());
    }

    /// Records a warning at `field`.
    pub fn warning(&mut self, field: &FieldPath, message: impl Into<String>) {
        self.push(Severity::Warning, field, message.into());
    }

    /// Records that `field` is set but the mesh does not act on it yet, with the note of its
    /// entry in [`super::NOT_SUPPORTED_YET`]. A field missing from that list is supported by
    /// now and is not reported: the list, not the call sites, says what the mesh lacks.
    pub fn unsupported(&mut self, field: &FieldPath) {
        if let Some(entry) = super::not_supported_yet::lookup(&self.object.kind, field) {
            let message = format!("accepted, but the mesh does not act on it yet: {}", entry.note);
            self.push(Severity::Unsupported, field, message);
        }
    }

    fn push(&mut self, severity: Severity, field: &FieldPath, message: String) {
        self.items.push(Diagnostic { severity, object: self.object.clone(), field: field.clone(), message });
    }

    /// Every problem found, in the order found.
    pub fn all(&self) -> &[Diagnostic] {
        &self.items
    }

    /// The problems of one severity.
    pub fn of(&self, severity: Severity) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(move |item| item.severity == severity)
    }

    /// Whether any problem makes the resource invalid.
    pub fn has_errors(&self) -> bool {
        self.of(Severity::Error).next().is_some()
    }

    /// Whether nothing at all was found.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl fmt::Display for Diagnostics {
    /// One problem per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, item) in self.items.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diagnostic_names_object_field_and_remedy() {
        let mut diagnostics = Diagnostics::new(ObjectRef::new("VirtualService", "default", "reviews"));
        let weight = FieldPath::spec().field("http").index(1).field("route").index(0).field("weight");
        diagnostics.error(&weight, "must be between 0 and 100, got 120");
        diagnostics.unsupported(&FieldPath::spec().field("http").index(0).field("corsPolicy"));
        assert!(diagnostics.has_errors());
        assert_eq!(
            diagnostics.to_string(),
            "VirtualService default/reviews: error: spec.http[1].route[0].weight: must be between 0 and 100, got 120\n\
             VirtualService default/reviews: not supported yet: spec.http[0].corsPolicy: accepted, but the mesh does not act on it yet: CORS preflights and headers are not handled"
        );
    }

    #[test]
    fn a_field_missing_from_the_list_is_supported_and_not_reported() {
        let mut diagnostics = Diagnostics::new(ObjectRef::new("VirtualService", "default", "reviews"));
        diagnostics.unsupported(&FieldPath::spec().field("http").index(0).field("mirror"));
        assert!(diagnostics.is_empty());
    }
}
