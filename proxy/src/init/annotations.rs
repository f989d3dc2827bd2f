//! Reading a pod's annotations from a downward-API file.
//!
//! Kubernetes writes `metadata.annotations` as one `key="value"` line per annotation, the value
//! quoted and escaped the way Go's `%q` does. Reading that file (rather than asking the API
//! server) keeps the init container free of credentials and network access.

use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnnotationsError {
    #[error("line {line}: expected key=\"value\", found `{text}`")]
    Malformed { line: usize, text: String },
}

/// Parses the downward-API annotations format. Blank lines are skipped; a value that is not
/// quoted is taken as it stands, which is what a hand-written file usually contains.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, AnnotationsError> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let malformed = || AnnotationsError::Malformed { line: i + 1, text: raw.to_string() };
        let (key, value) = line.split_once('=').ok_or_else(malformed)?;
        let key = key.trim();
        if key.is_empty() {
            return Err(malformed());
        }
        let value = value.trim();
        let value = match value.strip_prefix('"') {
            Some(rest) => unquote(rest.strip_suffix('"').ok_or_else(malformed)?).ok_or_else(malformed)?,
            None => value.to_string(),
        };
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

/// Undoes Go's `%q` escaping for the escapes an annotation value can contain.
fn unquote(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '\\' => out.push('\\'),
            '"' => out.push('"'),
            '\'' => out.push('\''),
            _ => return None,
        }
    }
    Some(out)
}
