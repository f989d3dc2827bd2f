//! Field paths as users read them in `kubectl` output: `spec.http[1].route[0].weight`.

use std::fmt;

/// A path to a field of a resource. Cheap to extend: each step returns a new path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct FieldPath(String);

impl FieldPath {
    /// The root of a resource's spec.
    pub fn spec() -> Self {
        Self("spec".to_string())
    }

    /// A path starting at an arbitrary root (`metadata`, say).
    pub fn root(name: &str) -> Self {
        Self(name.to_string())
    }

    /// The named field below this one: `spec` + `http` is `spec.http`.
    pub fn field(&self, name: &str) -> Self {
        if self.0.is_empty() { Self(name.to_string()) } else { Self(format!("{}.{name}", self.0)) }
    }

    /// The element of a list: `spec.http` + 1 is `spec.http[1]`.
    pub fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }

    /// The entry of a map: `spec.selector.matchLabels` + `app` is `spec.selector.matchLabels[app]`.
    pub fn key(&self, key: &str) -> Self {
        Self(format!("{}[{key}]", self.0))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_like_kubectl_output() {
        let path = FieldPath::spec().field("http").index(1).field("route").index(0).field("weight");
        assert_eq!(path.to_string(), "spec.http[1].route[0].weight");
        assert_eq!(
            FieldPath::spec().field("selector").field("matchLabels").key("app").as_str(),
            "spec.selector.matchLabels[app]"
        );
    }
}
