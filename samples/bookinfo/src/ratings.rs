//! `ratings`: the stars the two reviewers gave.

use http::StatusCode;
use serde_json::json;

use crate::server::{Reply, book_id, json, text};

pub fn handle(path: &str) -> Reply {
    match book_id(path, "/ratings") {
        Some(id) => json(StatusCode::OK, &json!({ "id": id, "ratings": { "Reviewer1": 5, "Reviewer2": 4 } })),
        None => text(StatusCode::NOT_FOUND, "ratings: try /ratings/<id>\n"),
    }
}
