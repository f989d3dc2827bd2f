//! VirtualService header operations (`headers.request`/`headers.response`: set, add, remove),
//! parsed into header names and values once per config so applying them never parses.

use common::api::HeaderOperations;
use http::{HeaderMap, HeaderName, HeaderValue};

/// Header changes in the order Istio applies them: remove, then set, then add.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HeaderOps {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

/// A header name or value in a resource that HTTP cannot carry.
#[derive(Debug, thiserror::Error)]
#[error("header {name:?}: {problem}")]
pub struct InvalidHeader {
    pub name: String,
    pub problem: &'static str,
}

impl HeaderOps {
    /// Adds `ops` after the operations already held (route first, then destination).
    pub fn extend(&mut self, ops: &HeaderOperations) -> Result<(), InvalidHeader> {
        let name = |n: &str| {
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| InvalidHeader { name: n.to_string(), problem: "not a valid header name" })
        };
        let pair = |(n, v): (&String, &String)| {
            let value = HeaderValue::from_str(v)
                .map_err(|_| InvalidHeader { name: n.clone(), problem: "value has characters HTTP forbids" })?;
            Ok((name(n)?, value))
        };
        for n in &ops.remove {
            self.remove.push(name(n)?);
        }
        for p in &ops.set {
            self.set.push(pair(p)?);
        }
        for p in &ops.add {
            self.add.push(pair(p)?);
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies the changes; values are reference-counted, so this copies no header text.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_then_set_then_add() {
        let ops: HeaderOperations =
            serde_yaml::from_str("{set: {x-a: one}, add: {x-b: two}, remove: [x-gone, x-b]}").unwrap();
        let mut compiled = HeaderOps::default();
        compiled.extend(&ops).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-gone", HeaderValue::from_static("1"));
        headers.insert("x-a", HeaderValue::from_static("old"));
        headers.insert("x-b", HeaderValue::from_static("old"));
        compiled.apply(&mut headers);
        assert!(headers.get("x-gone").is_none());
        assert_eq!(headers["x-a"], "one");
        assert_eq!(headers.get_all("x-b").iter().collect::<Vec<_>>(), ["two"]);
    }

    #[test]
    fn bad_names_are_reported() {
        let ops: HeaderOperations = serde_yaml::from_str("{set: {\"bad name\": x}}").unwrap();
        let error = HeaderOps::default().extend(&ops).unwrap_err();
        assert_eq!(error.name, "bad name");
    }
}
