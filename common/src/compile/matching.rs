//! Request matching, compiled once: string matches with their regexes built, header names
//! lowercased, so the proxy matches each request without allocating or compiling anything.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::api::StringMatch;

/// A regular expression compiled once, anchored at both ends as Istio's `regex` matches are.
/// Dumped as its source text.
#[derive(Clone)]
pub struct CompiledRegex {
    source: String,
    regex: regex::Regex,
}

impl CompiledRegex {
    /// Compiles `pattern` (RE2 syntax) to match whole values only.
    pub fn new(pattern: &str, case_insensitive: bool) -> Result<Self, regex::Error> {
        let flags = if case_insensitive { "(?i)" } else { "" };
        let regex = regex::Regex::new(&format!("^{flags}(?:{pattern})$"))?;
        Ok(Self { source: pattern.to_string(), regex })
    }

    /// Whether the whole of `value` matches.
    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }

    /// The pattern as written in the resource.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for CompiledRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/", self.source)
    }
}

impl PartialEq for CompiledRegex {
    fn eq(&self, other: &Self) -> bool {
        self.regex.as_str() == other.regex.as_str()
    }
}

impl Serialize for CompiledRegex {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

/// An Istio `StringMatch`, ready to test values against.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ValueMatch {
    /// The whole value equals this.
    Exact(String),
    /// The value starts with this.
    Prefix(String),
    /// The whole value matches this expression.
    Regex(CompiledRegex),
    /// As `Exact`, ignoring ASCII case (`ignoreUriCase`); stored lowercase.
    ExactIgnoreCase(String),
    /// As `Prefix`, ignoring ASCII case; stored lowercase.
    PrefixIgnoreCase(String),
}

impl ValueMatch {
    /// Compiles a `StringMatch`; `None` when it sets nothing (an empty match, which for
    /// headers and query parameters means "present"). A regex that does not compile is an
    /// error (validation reports it earlier, so this does not happen for valid resources).
    pub fn compile(value: &StringMatch, ignore_case: bool) -> Result<Option<Self>, regex::Error> {
        Ok(Some(match (&value.exact, &value.prefix, &value.regex) {
            (Some(exact), _, _) if ignore_case => ValueMatch::ExactIgnoreCase(exact.to_ascii_lowercase()),
            (Some(exact), _, _) => ValueMatch::Exact(exact.clone()),
            (None, Some(prefix), _) if ignore_case => ValueMatch::PrefixIgnoreCase(prefix.to_ascii_lowercase()),
            (None, Some(prefix), _) => ValueMatch::Prefix(prefix.clone()),
            (None, None, Some(pattern)) => ValueMatch::Regex(CompiledRegex::new(pattern, ignore_case)?),
            (None, None, None) => return Ok(None),
        }))
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Exact(exact) => value == exact,
            ValueMatch::Prefix(prefix) => value.starts_with(prefix.as_str()),
            ValueMatch::Regex(regex) => regex.is_match(value),
            ValueMatch::ExactIgnoreCase(exact) => value.eq_ignore_ascii_case(exact),
            ValueMatch::PrefixIgnoreCase(prefix) => {
                value.len() >= prefix.len() && value.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
            }
        }
    }
}

/// A condition on one header or query parameter.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NamedMatch {
    /// The header name (lowercase) or query parameter name.
    pub name: String,
    /// The value must match this; `None` means it only has to be present.
    pub value: Option<ValueMatch>,
}

impl NamedMatch {
    fn holds(&self, found: Option<&str>) -> bool {
        match (found, &self.value) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(found), Some(value)) => value.matches(found),
        }
    }
}

/// What a request offers to matching. The proxy implements it over its request type; every
/// method returns borrowed text so matching never allocates.
pub trait RequestAttributes {
    /// The method (`GET`).
    fn method(&self) -> &str;
    /// `http` or `https`.
    fn scheme(&self) -> &str;
    /// The `Host`/`:authority`, as sent.
    fn authority(&self) -> &str;
    /// The path without the query string.
    fn path(&self) -> &str;
    /// The query string without `?`, if any.
    fn query(&self) -> Option<&str>;
    /// The first value of a header, by lowercase name.
    fn header(&self, lowercase_name: &str) -> Option<&str>;
}

/// One `match` entry of an HTTP route with the parts that depend on the request. Parts that
/// depend only on the proxy (`port`, `sourceLabels`, `sourceNamespace`, `gateways`) were
/// decided at compile time: entries that cannot apply to this proxy are not in the tables.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HttpRequestMatch {
    /// The match's name, for logs and stats.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Condition on the path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<ValueMatch>,
    /// Condition on the scheme.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<ValueMatch>,
    /// Condition on the method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<ValueMatch>,
    /// Condition on the authority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<ValueMatch>,
    /// Headers that must be present and match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<NamedMatch>,
    /// Headers that must not match (or, with no value, must be absent).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub without_headers: Vec<NamedMatch>,
    /// Query parameters that must be present and match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<NamedMatch>,
}

impl HttpRequestMatch {
    /// Whether the request fits every condition set.
    pub fn matches(&self, request: &impl RequestAttributes) -> bool {
        let fits = |condition: &Option<ValueMatch>, value: &str| condition.as_ref().is_none_or(|m| m.matches(value));
        fits(&self.uri, request.path())
            && fits(&self.method, request.method())
            && fits(&self.scheme, request.scheme())
            && fits(&self.authority, request.authority())
            && self.headers.iter().all(|header| header.holds(request.header(&header.name)))
            && !self.without_headers.iter().any(|header| header.holds(request.header(&header.name)))
            && self.query_params.iter().all(|param| param.holds(query_value(request.query(), &param.name)))
    }

    /// Whether the match checks nothing on the request, so every request fits.
    pub fn is_unconditional(&self) -> bool {
        self.uri.is_none()
            && self.scheme.is_none()
            && self.method.is_none()
            && self.authority.is_none()
            && self.headers.is_empty()
            && self.without_headers.is_empty()
            && self.query_params.is_empty()
    }

    /// Compiles an Istio match (its request-dependent parts).
    pub fn compile(source: &crate::api::networking::virtual_service::HttpMatchRequest) -> Result<Self, regex::Error> {
        let ignore_uri_case = source.ignore_uri_case.unwrap_or(false);
        let one = |value: &Option<StringMatch>, ignore_case| match value {
            Some(value) => ValueMatch::compile(value, ignore_case),
            None => Ok(None),
        };
        let named = |values: &std::collections::BTreeMap<String, StringMatch>, lowercase: bool| {
            values
                .iter()
                .map(|(name, value)| {
                    let name = if lowercase { name.to_ascii_lowercase() } else { name.clone() };
                    Ok(NamedMatch { name, value: ValueMatch::compile(value, false)? })
                })
                .collect::<Result<Vec<_>, regex::Error>>()
        };
        Ok(Self {
            name: source.name.clone(),
            uri: one(&source.uri, ignore_uri_case)?,
            scheme: one(&source.scheme, false)?,
            method: one(&source.method, false)?,
            authority: one(&source.authority, false)?,
            headers: named(&source.headers, true)?,
            without_headers: named(&source.without_headers, true)?,
            query_params: named(&source.query_params, false)?,
        })
    }
}

/// The value of query parameter `name` in `query` (`a=1&b=2`), without decoding; a parameter
/// without `=` has the empty value.
fn query_value<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::networking::virtual_service::HttpMatchRequest;

    struct Request {
        path: &'static str,
        query: Option<&'static str>,
        headers: &'static [(&'static str, &'static str)],
    }

    impl RequestAttributes for Request {
        fn method(&self) -> &str {
            "GET"
        }
        fn scheme(&self) -> &str {
            "http"
        }
        fn authority(&self) -> &str {
            "reviews"
        }
        fn path(&self) -> &str {
            self.path
        }
        fn query(&self) -> Option<&str> {
            self.query
        }
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(key, _)| *key == name).map(|(_, value)| *value)
        }
    }

    fn compiled(yaml: &str) -> HttpRequestMatch {
        let source: HttpMatchRequest = serde_yaml::from_str(yaml).expect("match parses");
        HttpRequestMatch::compile(&source).expect("match compiles")
    }

    #[test]
    fn header_names_are_lowercased_and_an_empty_match_means_present() {
        let condition = compiled("headers: {End-User: {exact: jason}, x-canary: {}}");
        let with = |headers| Request { path: "/", query: None, headers };
        assert!(condition.matches(&with(&[("end-user", "jason"), ("x-canary", "")])));
        assert!(!condition.matches(&with(&[("end-user", "jason")])), "x-canary must be present");
        assert!(!condition.matches(&with(&[("end-user", "Jason"), ("x-canary", "1")])), "values are case-sensitive");
    }

    #[test]
    fn without_headers_excludes_matching_requests() {
        let condition = compiled("withoutHeaders: {x-debug: {}}");
        assert!(condition.matches(&Request { path: "/", query: None, headers: &[] }));
        assert!(!condition.matches(&Request { path: "/", query: None, headers: &[("x-debug", "1")] }));
    }

    #[test]
    fn query_parameters_match_exactly_or_by_regex() {
        let condition = compiled("queryParams: {version: {exact: v2}, id: {regex: \"[0-9]+\"}}");
        let with = |query| Request { path: "/", query, headers: &[] };
        assert!(condition.matches(&with(Some("id=42&version=v2"))));
        assert!(!condition.matches(&with(Some("id=42x&version=v2"))), "regexes are anchored");
        assert!(!condition.matches(&with(Some("version=v2"))));
        assert!(!condition.matches(&with(None)));
    }

    #[test]
    fn regexes_match_whole_values_and_dump_as_written() {
        let regex = CompiledRegex::new("/a|/b", false).unwrap();
        assert!(regex.is_match("/a") && regex.is_match("/b"));
        assert!(!regex.is_match("/ab") && !regex.is_match("x/b"), "alternation stays inside the anchors");
        assert_eq!(serde_json::to_value(&regex).unwrap(), "/a|/b");
        let prefix = ValueMatch::compile(&StringMatch::prefix("/Api"), true).unwrap().unwrap();
        assert!(prefix.matches("/API/v1") && !prefix.matches("/Ap"));
    }
}
