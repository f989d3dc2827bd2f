//! `reviews`: two reviews of the book. v1 shows no stars; v2 (black) and v3 (red) ask `ratings`.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::server::{Reply, book_id, json, text};

/// Bookinfo's reviews → ratings timeout; fixed on purpose, as in Istio's sample, so that the
/// fault-injection task can show what a mismatch with productpage's shorter timeout does.
const RATINGS_TIMEOUT: Duration = Duration::from_secs(10);

const REVIEWS: [(&str, &str); 2] = [
    ("Reviewer1", "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"),
    (
        "Reviewer2",
        "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.",
    ),
];

pub async fn handle(path: &str, headers: &HeaderMap, version: &str, ratings: &str) -> Reply {
    let Some(id) = book_id(path, "/reviews") else {
        return text(StatusCode::NOT_FOUND, "reviews: try /reviews/<id>\n");
    };
    let color = match version {
        "v2" => Some("black"),
        "v3" => Some("red"),
        _ => None,
    };
    let stars = match color {
        Some(_) => Some(fetch_ratings(id, headers, ratings).await),
        None => None,
    };
    json(StatusCode::OK, &reviews(id, version, color, stars.as_ref()))
}

/// The ratings by reviewer, or why they are missing.
async fn fetch_ratings(id: u32, headers: &HeaderMap, ratings: &str) -> Result<Value, String> {
    let (_, body) = crate::upstream::get(ratings, &format!("/ratings/{id}"), headers, RATINGS_TIMEOUT, 0)
        .await
        .map_err(|e| e.to_string())?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| format!("ratings answered no JSON: {e}"))?;
    Ok(value["ratings"].clone())
}

fn reviews(id: u32, version: &str, color: Option<&str>, stars: Option<&Result<Value, String>>) -> Value {
    let entries: Vec<Value> = REVIEWS
        .iter()
        .map(|(reviewer, text)| {
            let mut entry = json!({ "reviewer": reviewer, "text": text });
            match (color, stars) {
                (Some(color), Some(Ok(ratings))) => {
                    entry["rating"] = json!({ "stars": ratings[*reviewer], "color": color });
                }
                (Some(_), Some(Err(reason))) => {
                    entry["rating"] = json!({ "error": "Ratings service is currently unavailable", "reason": reason });
                }
                _ => {}
            }
            entry
        })
        .collect();
    json!({
        "id": id,
        "version": version,
        "podname": std::env::var("POD_NAME").unwrap_or_default(),
        "reviews": entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_has_no_stars_and_v3_has_red_ones() {
        let v1 = reviews(0, "v1", None, None);
        assert!(v1["reviews"][0].get("rating").is_none());
        let ratings = Ok(json!({ "Reviewer1": 5, "Reviewer2": 4 }));
        let v3 = reviews(0, "v3", Some("red"), Some(&ratings));
        assert_eq!(v3["reviews"][1]["rating"], json!({ "stars": 4, "color": "red" }));
    }

    #[test]
    fn missing_ratings_say_so_instead_of_failing_the_reviews() {
        let down = Err("timed out".to_string());
        let v2 = reviews(0, "v2", Some("black"), Some(&down));
        assert_eq!(v2["reviews"][0]["rating"]["error"], "Ratings service is currently unavailable");
    }
}
