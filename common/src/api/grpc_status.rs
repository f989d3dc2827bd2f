//! gRPC status codes by name, as Istio's `fault.abort.grpcStatus` and the `retryOn` gRPC
//! conditions spell them (`UNAVAILABLE`, `DEADLINE_EXCEEDED`), so validation and the proxy read
//! them the same way.

/// The canonical names, indexed by code (0 to 16).
const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The code of a gRPC status given by name (any case) or by number; `None` for anything else.
pub fn code(name: &str) -> Option<u32> {
    if let Ok(code) = name.parse::<u32>() {
        return (code < 17).then_some(code);
    }
    NAMES.iter().position(|c| c.eq_ignore_ascii_case(name)).and_then(|i| u32::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::code;

    #[test]
    fn statuses_are_read_by_name_in_any_case_or_by_number() {
        assert_eq!(code("UNAVAILABLE"), Some(14));
        assert_eq!(code("deadline_exceeded"), Some(4));
        assert_eq!(code("8"), Some(8));
        assert_eq!(code("17"), None);
        assert_eq!(code("BROKEN"), None);
    }
}
