//! Value types that several Istio kinds share: durations, percentages, string matches, port
//! selectors, workload selectors and header operations.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as Istio writes it: a sequence of decimal numbers each with a unit, as Go's
/// `time.ParseDuration` reads them (`1.5s`, `100ms`, `1h30m`, `250us`).
///
/// The text is parsed when the resource is read, so a malformed duration is a deserialization
/// error that names the field; ranges (a timeout of at least 1ms, say) are checked by `validate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// Builds a duration from whole milliseconds (handy in tests and defaults).
    pub const fn from_millis(millis: u64) -> Self {
        Self(std::time::Duration::from_millis(millis))
    }

    /// The duration as the standard library's type.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }
}

/// Why a duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason} (valid examples: 1.5s, 100ms, 1h30m)")]
pub struct DurationError {
    text: String,
    reason: &'static str,
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason| DurationError { text: text.to_string(), reason };
        if text.is_empty() {
            return Err(fail("empty"));
        }
        if text == "0" {
            return Ok(Self::default());
        }
        let mut total_nanos: f64 = 0.0;
        let mut rest = text;
        while !rest.is_empty() {
            let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
            if number_len == 0 {
                return Err(fail("expected a number"));
            }
            let number: f64 = rest[..number_len].parse().map_err(|_| fail("malformed number"))?;
            rest = &rest[number_len..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
            let nanos_per_unit = match &rest[..unit_len] {
                "ns" => 1.0,
                "us" | "µs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                "" => return Err(fail("missing unit (one of ns, us, ms, s, m, h)")),
                _ => return Err(fail("unknown unit (use one of ns, us, ms, s, m, h)")),
            };
            total_nanos += number * nanos_per_unit;
            rest = &rest[unit_len..];
        }
        if !total_nanos.is_finite() || total_nanos > u64::MAX as f64 {
            return Err(fail("out of range"));
        }
        Ok(Self(std::time::Duration::from_nanos(total_nanos.round() as u64)))
    }
}

impl fmt::Display for Duration {
    /// Writes the shortest exact form: whole hours, minutes or seconds when they fit, else
    /// milliseconds, microseconds or nanoseconds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        let units: [(u128, &str); 6] = [
            (3_600_000_000_000, "h"),
            (60_000_000_000, "m"),
            (1_000_000_000, "s"),
            (1_000_000, "ms"),
            (1_000, "us"),
            (1, "ns"),
        ];
        if nanos == 0 {
            return f.write_str("0s");
        }
        for (size, unit) in units {
            if nanos.is_multiple_of(size) {
                return write!(f, "{}{unit}", nanos / size);
            }
        }
        unreachable!("every duration is a whole number of nanoseconds")
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration such as 1.5s, 100ms or 1h30m (units ns, us, ms, s, m, h)."
        })
    }
}

/// A percentage between 0.0 and 100.0, as Istio's `Percent` message (`{value: 12.5}`).
#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Percent {
    /// The percentage, 0.0 to 100.0; fractions are allowed (0.1 means one request in a thousand).
    #[serde(default)]
    pub value: f64,
}

/// Matches a string one way: exactly, by prefix, or by an RE2-style regular expression.
///
/// Istio's `StringMatch` is a protobuf `oneof`; it is a struct of three optional fields here so
/// that a resource setting two of them is reported by `validate` with its field path instead of
/// failing to parse as a whole.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StringMatch {
    /// The whole value must equal this string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The value must start with this string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The whole value must match this regular expression (RE2 syntax, anchored at both ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

impl StringMatch {
    /// An exact match, for tests and defaults.
    pub fn exact(value: impl Into<String>) -> Self {
        Self { exact: Some(value.into()), ..Self::default() }
    }

    /// A prefix match, for tests and defaults.
    pub fn prefix(value: impl Into<String>) -> Self {
        Self { prefix: Some(value.into()), ..Self::default() }
    }

    /// A regular-expression match, for tests and defaults.
    pub fn regex(value: impl Into<String>) -> Self {
        Self { regex: Some(value.into()), ..Self::default() }
    }

    /// How many of `exact`, `prefix` and `regex` are set; a valid match sets exactly one.
    pub fn kinds_set(&self) -> usize {
        [self.exact.is_some(), self.prefix.is_some(), self.regex.is_some()].into_iter().filter(|set| *set).count()
    }
}

/// Selects a port of a service by number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortSelector {
    /// A valid port number, 1 to 65535.
    #[serde(default)]
    pub number: u32,
}

/// Selects workloads (pods, WorkloadEntries) by their labels, in the resource's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Every label here must be present on the workload with the same value. Empty selects all.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    /// Whether a workload with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(key, value)| labels.get(key) == Some(value))
    }
}

/// Header manipulation applied to requests and responses.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Headers {
    /// Applied to the request before it is forwarded to the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    /// Applied to the response before it is returned to the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

/// Sets, appends and removes headers.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderOperations {
    /// Overwrites each header with the value given.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Appends the value to the header, keeping earlier values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Removes the headers named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_go_writes_them() {
        let cases = [("1.5s", 1500), ("100ms", 100), ("1h30m", 5_400_000), ("3m", 180_000), ("0", 0), ("0.5s", 500)];
        for (text, millis) in cases {
            assert_eq!(text.parse::<Duration>().unwrap(), Duration::from_millis(millis), "{text}");
        }
        assert_eq!("250us".parse::<Duration>().unwrap().get(), std::time::Duration::from_micros(250));
    }

    #[test]
    fn malformed_durations_say_what_is_valid() {
        for text in ["", "10", "1x", "s", "1.2.3s", "-1s"] {
            let error = text.parse::<Duration>().unwrap_err().to_string();
            assert!(error.contains("valid examples"), "{text}: {error}");
        }
    }

    #[test]
    fn durations_print_in_their_shortest_exact_form() {
        for (millis, text) in [(1500, "1500ms"), (2000, "2s"), (180_000, "3m"), (0, "0s")] {
            assert_eq!(Duration::from_millis(millis).to_string(), text);
        }
    }

    #[test]
    fn workload_selector_needs_every_label() {
        let selector = WorkloadSelector { match_labels: [("app".to_string(), "reviews".to_string())].into() };
        let mut labels = BTreeMap::new();
        assert!(!selector.matches(&labels));
        labels.insert("app".to_string(), "reviews".to_string());
        labels.insert("version".to_string(), "v1".to_string());
        assert!(selector.matches(&labels));
        assert!(WorkloadSelector::default().matches(&BTreeMap::new()));
    }
}
