//! `productpage`: the page users see, assembled from `details` and `reviews`.
//!
//! The signed-in user (`?u=jason`, the `user` cookie that `/login` sets, or an `end-user` header
//! from an upstream caller) is sent on as the `end-user` header: Istio's request-routing task
//! routes `jason` to reviews v2 by that header.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;

use crate::server::{Reply, json, text, with_type};
use crate::upstream::{self, CallError};

/// Bookinfo's productpage → details/reviews timeout and retries (3 s, one retry for reviews):
/// fixed on purpose, as in Istio's sample, for the timeout and fault-injection tasks.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
const REVIEWS_RETRIES: u32 = 1;

pub async fn handle(path: &str, query: Option<&str>, headers: &HeaderMap, details: &str, reviews: &str) -> Reply {
    match path {
        "/" => text(StatusCode::OK, "Bookinfo: see /productpage\n"),
        "/productpage" => {
            let headers = with_end_user(headers, query);
            let (details, reviews) = tokio::join!(
                upstream::get(details, "/details/0", &headers, CALL_TIMEOUT, 0),
                upstream::get(reviews, "/reviews/0", &headers, CALL_TIMEOUT, REVIEWS_RETRIES),
            );
            let page = render(user(&headers).as_deref(), parsed(details), parsed(reviews));
            with_type(StatusCode::OK, "text/html; charset=utf-8", page)
        }
        "/login" => signed_in(query_param(query, "user").unwrap_or("jason")),
        "/logout" => signed_in(""),
        "/api/v1/products/0/reviews" => {
            match parsed(upstream::get(reviews, "/reviews/0", headers, CALL_TIMEOUT, 0).await) {
                Ok(value) => json(StatusCode::OK, &value),
                Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("reviews: {reason}\n")),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "productpage: try /productpage\n"),
    }
}

/// The request's headers, with `end-user` set from the query or cookie when the user signed in.
fn with_end_user(headers: &HeaderMap, query: Option<&str>) -> HeaderMap {
    let mut headers = headers.clone();
    let from_cookie = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix("user=").map(str::to_string));
    let name = query_param(query, "u").map(str::to_string).or(from_cookie).filter(|n| !n.is_empty());
    if let Some(value) = name.and_then(|n| HeaderValue::from_str(&n).ok()) {
        headers.insert("end-user", value);
    }
    headers
}

fn user(headers: &HeaderMap) -> Option<String> {
    headers.get("end-user").and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// Sets (or, for an empty name, clears) the `user` cookie and sends the browser to the page.
fn signed_in(name: &str) -> Reply {
    let mut reply = with_type(StatusCode::FOUND, "text/plain; charset=utf-8", String::new());
    let cookie = if name.is_empty() { "user=; Max-Age=0".to_string() } else { format!("user={name}") };
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        reply.headers_mut().insert(http::header::SET_COOKIE, value);
    }
    reply.headers_mut().insert(http::header::LOCATION, HeaderValue::from_static("/productpage"));
    reply
}

fn parsed(answer: Result<(StatusCode, bytes::Bytes), CallError>) -> Result<Value, String> {
    let (status, body) = answer.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
}

/// The page. Its wording is Bookinfo's, so what Istio's tasks tell users to look for is here.
fn render(user: Option<&str>, details: Result<Value, String>, reviews: Result<Value, String>) -> String {
    let mut page = String::from("<html><head><title>Simple Bookstore App</title></head><body>\n");
    page += "<h2>The Comedy of Errors</h2>\n";
    if let Some(user) = user {
        page += &format!("<p id=\"user\">Signed in as {}</p>\n", escape(user));
    }
    match details {
        Ok(d) => {
            page += "<h4>Book Details</h4>\n<dl id=\"details\">\n";
            for key in ["type", "pages", "publisher", "language", "ISBN-10", "ISBN-13"] {
                page += &format!("<dt>{key}</dt><dd>{}</dd>\n", escape(&plain(&d[key])));
            }
            page += "</dl>\n";
        }
        Err(reason) => page += &format!("<h4>Error fetching product details!</h4>\n<!-- {} -->\n", escape(&reason)),
    }
    match reviews {
        Ok(r) => page += &render_reviews(&r),
        Err(reason) => page += &format!("<h4>Error fetching product reviews!</h4>\n<!-- {} -->\n", escape(&reason)),
    }
    page + "</body></html>\n"
}

fn render_reviews(reviews: &Value) -> String {
    let mut html = String::from("<h4>Book Reviews</h4>\n");
    for review in reviews["reviews"].as_array().into_iter().flatten() {
        html += &format!(
            "<blockquote><p>{}</p><small>{}</small>",
            escape(&plain(&review["text"])),
            escape(&plain(&review["reviewer"]))
        );
        let rating = &review["rating"];
        if let Some(stars) = rating["stars"].as_u64() {
            let color = escape(&plain(&rating["color"]));
            let full = "★".repeat(stars.min(5) as usize);
            let empty = "☆".repeat(5 - stars.min(5) as usize);
            html += &format!("<font color=\"{color}\" class=\"stars\">{full}{empty}</font>");
        } else if rating.get("error").is_some() {
            html += "<p class=\"ratings-error\">Ratings service is currently unavailable</p>";
        }
        html += "</blockquote>\n";
    }
    let version = plain(&reviews["version"]);
    let pod = plain(&reviews["podname"]);
    html + &format!(
        "<p id=\"reviews-version\">Reviews served by: {} (reviews-{})</p>\n",
        escape(&pod),
        escape(&version)
    )
}

/// A JSON value as text, without the quotes a string would get.
fn plain(value: &Value) -> String {
    value
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| if value.is_null() { String::new() } else { value.to_string() })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_comes_from_the_query_or_the_cookie() {
        let mut headers = HeaderMap::new();
        assert_eq!(user(&with_end_user(&headers, Some("u=jason"))).as_deref(), Some("jason"));
        headers.insert(http::header::COOKIE, HeaderValue::from_static("theme=dark; user=alice"));
        assert_eq!(user(&with_end_user(&headers, None)).as_deref(), Some("alice"));
        assert_eq!(user(&with_end_user(&HeaderMap::new(), Some("x=1"))), None);
    }

    #[test]
    fn a_failed_service_is_named_on_the_page_without_failing_it() {
        let page = render(None, Err("timed out".into()), Err("timed out".into()));
        assert!(page.contains("Error fetching product details!"));
        assert!(page.contains("Error fetching product reviews!"));
    }

    #[test]
    fn reviewer_text_is_escaped() {
        let page =
            render_reviews(&serde_json::json!({ "reviews": [{ "reviewer": "<b>", "text": "a&b" }], "version": "v1" }));
        assert!(page.contains("&lt;b&gt;") && page.contains("a&amp;b"), "{page}");
    }
}
