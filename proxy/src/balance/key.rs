//! What a consistent hash hashes: a header, a cookie (set by the proxy when absent), the
//! caller's IP, or a query parameter, read from the request.

use super::PickContext;
use super::hash::hash_bytes;
use common::api::networking::destination_rule::ConsistentHashLb;
use http::HeaderValue;
use http::header::{COOKIE, HeaderName};
use std::time::Duration;

/// The hash key of a `consistentHash` policy.
#[derive(Debug, Clone, PartialEq)]
pub enum HashKey {
    Header(HeaderName),
    Cookie(CookieKey),
    SourceIp,
    QueryParameter(String),
    /// No key set (validation reports it): every pick is random.
    Nothing,
}

/// The cookie a hash keys on, and what a cookie the proxy sets looks like.
#[derive(Debug, Clone, PartialEq)]
pub struct CookieKey {
    pub name: String,
    pub path: Option<String>,
    /// Without a ttl the proxy never sets the cookie (Envoy's rule); `0s` sets a session cookie.
    pub ttl: Option<Duration>,
}

/// The key's hash for one request, and the `Set-Cookie` to send back when the proxy made the
/// key up.
#[derive(Debug, Default)]
pub struct KeyHash {
    /// `None`: the request has no such key; the pick is random.
    pub hash: Option<u64>,
    pub set_cookie: Option<HeaderValue>,
}

impl HashKey {
    pub fn new(settings: &ConsistentHashLb) -> Self {
        if let Some(name) = settings.http_header_name.as_deref() {
            return HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_or(HashKey::Nothing, HashKey::Header);
        }
        if let Some(cookie) = &settings.http_cookie {
            return HashKey::Cookie(CookieKey {
                name: cookie.name.clone(),
                path: cookie.path.clone().filter(|p| !p.is_empty()),
                ttl: cookie.ttl.map(|ttl| ttl.get()),
            });
        }
        if settings.use_source_ip == Some(true) {
            return HashKey::SourceIp;
        }
        match &settings.http_query_parameter_name {
            Some(name) => HashKey::QueryParameter(name.clone()),
            None => HashKey::Nothing,
        }
    }

    /// How `/clusters` names the key (`header:x-user`).
    pub fn describe(&self) -> String {
        match self {
            HashKey::Header(name) => format!("header:{name}"),
            HashKey::Cookie(cookie) => format!("cookie:{}", cookie.name),
            HashKey::SourceIp => "source_ip".into(),
            HashKey::QueryParameter(name) => format!("query:{name}"),
            HashKey::Nothing => "none".into(),
        }
    }

    pub fn hash(&self, ctx: &PickContext<'_>) -> KeyHash {
        let found = |value: Option<&[u8]>| KeyHash { hash: value.map(|v| hash_bytes(v, 0)), set_cookie: None };
        match self {
            HashKey::Header(name) => found(ctx.request.and_then(|r| r.headers.get(name)).map(HeaderValue::as_bytes)),
            HashKey::SourceIp => found(ctx.source.map(|ip| ip.to_string()).as_deref().map(str::as_bytes)),
            HashKey::QueryParameter(name) => {
                found(ctx.request.and_then(|r| query_parameter(r.uri.query()?, name)).map(str::as_bytes))
            }
            HashKey::Cookie(cookie) => {
                let Some(request) = ctx.request else { return KeyHash::default() };
                if let Some(value) = cookie_value(&request.headers, &cookie.name) {
                    return found(Some(value.as_bytes()));
                }
                cookie.generate()
            }
            HashKey::Nothing => KeyHash::default(),
        }
    }
}

impl CookieKey {
    /// A new random value, hashed, with the `Set-Cookie` that carries it (Envoy's layout:
    /// `name="value"; Max-Age=60; Path=/; HttpOnly`); nothing without a ttl.
    fn generate(&self) -> KeyHash {
        let Some(ttl) = self.ttl else { return KeyHash::default() };
        let value = format!("{:016x}", fastrand::u64(..));
        let mut header = format!("{}=\"{value}\"", self.name);
        if !ttl.is_zero() {
            header.push_str(&format!("; Max-Age={}", ttl.as_secs().max(1)));
        }
        if let Some(path) = &self.path {
            header.push_str(&format!("; Path={path}"));
        }
        header.push_str("; HttpOnly");
        KeyHash { hash: Some(hash_bytes(value.as_bytes(), 0)), set_cookie: HeaderValue::from_str(&header).ok() }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers, quotes removed.
fn cookie_value<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// The value of query parameter `name` (as sent, not decoded).
fn query_parameter<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').map(|pair| pair.split_once('=').unwrap_or((pair, ""))).find(|(n, _)| *n == name).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::api::Duration as ApiDuration;
    use common::api::networking::destination_rule::HttpCookie;

    fn ctx_for(request: &http::request::Parts) -> PickContext<'_> {
        PickContext {
            original_dst: None,
            source: Some("10.0.0.9".parse().unwrap()),
            request: Some(request),
            tried: &[],
        }
    }

    fn head(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut req = http::Request::get(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn keys_are_read_from_headers_cookies_queries_and_the_source() {
        let header = HashKey::new(&ConsistentHashLb { http_header_name: Some("X-User".into()), ..Default::default() });
        let a = head("/", &[("x-user", "alice")]);
        assert_eq!(header.hash(&ctx_for(&a)).hash, Some(hash_bytes(b"alice", 0)));
        assert_eq!(header.hash(&ctx_for(&head("/", &[]))).hash, None);

        let query = HashKey::QueryParameter("u".into());
        assert_eq!(query.hash(&ctx_for(&head("/p?a=1&u=bob", &[]))).hash, Some(hash_bytes(b"bob", 0)));
        assert_eq!(HashKey::SourceIp.hash(&ctx_for(&a)).hash, Some(hash_bytes(b"10.0.0.9", 0)));

        let cookie = HashKey::Cookie(CookieKey { name: "sticky".into(), path: None, ttl: None });
        let with = head("/", &[("cookie", "a=1; sticky=\"abc\""), ("cookie", "b=2")]);
        assert_eq!(cookie.hash(&ctx_for(&with)).hash, Some(hash_bytes(b"abc", 0)));
        let without = cookie.hash(&ctx_for(&a));
        assert!(without.hash.is_none() && without.set_cookie.is_none(), "no ttl: no cookie is made up");
    }

    #[test]
    fn a_missing_cookie_is_made_up_and_set_and_then_hashes_the_same() {
        let settings = ConsistentHashLb {
            http_cookie: Some(HttpCookie {
                name: "user".into(),
                path: Some("/shop".into()),
                ttl: Some(ApiDuration::from_millis(60_000)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let key = HashKey::new(&settings);
        let first = key.hash(&ctx_for(&head("/", &[])));
        let set = first.set_cookie.unwrap();
        let set = set.to_str().unwrap();
        assert!(set.starts_with("user=\"") && set.ends_with("\"; Max-Age=60; Path=/shop; HttpOnly"), "{set}");
        let value = set.split(';').next().unwrap();
        let again = key.hash(&ctx_for(&head("/", &[("cookie", value)])));
        assert_eq!(again.hash, first.hash);
        assert!(again.set_cookie.is_none());
        let session = CookieKey { name: "s".into(), path: None, ttl: Some(Duration::ZERO) }.generate();
        assert!(!session.set_cookie.unwrap().to_str().unwrap().contains("Max-Age"), "0s: a session cookie");
    }
}
