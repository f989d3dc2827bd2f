//! `details`: the facts of a book.

use http::StatusCode;
use serde_json::json;

use crate::server::{Reply, book_id, json, text};

pub fn handle(path: &str) -> Reply {
    match book_id(path, "/details") {
        Some(id) => json(StatusCode::OK, &details(id)),
        None => text(StatusCode::NOT_FOUND, "details: try /details/<id>\n"),
    }
}

/// Bookinfo's one book, whatever the id.
fn details(id: u32) -> serde_json::Value {
    json!({
        "id": id,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    })
}
