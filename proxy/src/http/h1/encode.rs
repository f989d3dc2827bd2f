//! Writing a request head the way HTTP/1.1 frames it (RFC 9112).

use bytes::{BufMut, BytesMut};
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, Method, request};

/// Methods whose requests usually carry a body: sent without one, they say so with
/// `Content-Length: 0`, as some servers refuse them otherwise (411 Length Required).
fn expects_body(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE | Method::CONNECT)
}

/// Appends the request line and headers of `head`, a request without a body, to `out`. The
/// URI is already in origin form (the path), or authority form for CONNECT.
pub fn head(out: &mut BytesMut, head: &request::Parts) {
    out.put_slice(head.method.as_str().as_bytes());
    out.put_u8(b' ');
    let target = match (&head.method, head.uri.authority()) {
        (&Method::CONNECT, Some(authority)) => authority.as_str(),
        _ => head.uri.path_and_query().map_or("/", |p| p.as_str()),
    };
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    headers(out, &head.headers);
    if expects_body(&head.method) && !head.headers.contains_key(CONTENT_LENGTH) {
        out.put_slice(b"content-length: 0\r\n");
    }
    out.put_slice(b"\r\n");
}

/// `name: value` lines, one per value.
fn headers(out: &mut BytesMut, headers: &HeaderMap) {
    for (name, value) in headers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(req: Request<()>) -> request::Parts {
        req.into_parts().0
    }

    fn written(req: Request<()>) -> String {
        let mut out = BytesMut::new();
        head(&mut out, &parts(req));
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn get_is_one_line_and_its_headers() {
        let req = Request::get("/a?b=1").header("host", "svc:80").header("x-multi", "1").header("x-multi", "2");
        assert_eq!(
            written(req.body(()).unwrap()),
            "GET /a?b=1 HTTP/1.1\r\nhost: svc:80\r\nx-multi: 1\r\nx-multi: 2\r\n\r\n"
        );
    }

    #[test]
    fn a_post_without_body_says_so() {
        assert!(written(Request::post("/").body(()).unwrap()).ends_with("content-length: 0\r\n\r\n"));
        let declared = Request::put("/").header("content-length", "0").body(()).unwrap();
        assert_eq!(written(declared).matches("content-length").count(), 1);
        assert!(!written(Request::delete("/").body(()).unwrap()).contains("content-length"));
    }
}
