//! What validation may know beyond the resource itself.

use std::collections::{BTreeMap, BTreeSet};

/// Facts about other resources that turn some findings into warnings, such as a route naming a
/// subset that no DestinationRule defines (yet). Validation at admission fills it from the
/// controller's caches; with an empty context those cross-resource checks are skipped.
#[derive(Clone, Debug, Default)]
pub struct ValidationContext {
    /// Subsets defined by DestinationRules, by fully qualified host. `None` means unknown: the
    /// check whether a referenced subset exists is skipped.
    pub subsets_by_host: Option<BTreeMap<String, BTreeSet<String>>>,
    /// The DNS suffix of cluster services, `cluster.local` unless configured otherwise.
    pub domain: String,
    /// The namespace of the resource being validated, which short host names (`reviews`) are
    /// resolved against. Set by [`crate::resource::Resource::validate`]; empty when unknown.
    pub namespace: String,
}

impl ValidationContext {
    /// A context that knows nothing about other resources.
    pub fn standalone() -> Self {
        Self { subsets_by_host: None, domain: crate::hosts::DEFAULT_DOMAIN.to_string(), namespace: String::new() }
    }

    /// Whether a subset is known for `host` (fully qualified). `None` when nothing is known.
    pub fn subset_defined(&self, host: &str, subset: &str) -> Option<bool> {
        let subsets = self.subsets_by_host.as_ref()?;
        Some(
            subsets
                .iter()
                .any(|(pattern, names)| crate::hosts::wildcard_matches(pattern, host) && names.contains(subset)),
        )
    }
}
