//! The four services as real processes on loopback, wired to each other by address: the page
//! shows what each version of reviews is known for, and `end-user` travels the whole call graph.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_mesh-bookinfo");

/// A running service, killed on drop.
struct Service {
    child: Child,
    address: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `mesh-bookinfo ARGS --port 0` and reads the address it bound from its first line.
fn start(args: &[&str]) -> Service {
    let mut child =
        Command::new(BIN).args(args).args(["--port", "0"]).stderr(Stdio::piped()).spawn().expect("start mesh-bookinfo");
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap()).read_line(&mut line).unwrap();
    let address = line.trim().rsplit(' ').next().unwrap().replace("0.0.0.0", "127.0.0.1");
    Service { child, address }
}

fn get(address: &str, path_and_query: &str, headers: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(stream, "GET {path_and_query} HTTP/1.1\r\nHost: {address}\r\n{headers}Connection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn page_with(version: &str, ratings: &str) -> (Vec<Service>, String) {
    let details = start(&["details"]);
    let reviews = start(&["reviews", "--version", version, "--ratings", ratings]);
    let page = start(&["productpage", "--details", &details.address, "--reviews", &reviews.address]);
    let html = get(&page.address, "/productpage?u=jason", "");
    (vec![details, reviews, page], html)
}

#[test]
fn each_reviews_version_renders_its_stars() {
    let ratings = start(&["ratings"]);
    let (_v1, html) = page_with("v1", &ratings.address);
    assert!(html.contains("(reviews-v1)") && !html.contains("class=\"stars\""), "{html}");
    assert!(html.contains("PublisherA"), "details missing: {html}");
    let (_v2, html) = page_with("v2", &ratings.address);
    assert!(html.contains("<font color=\"black\" class=\"stars\">★★★★★</font>"), "{html}");
    let (_v3, html) = page_with("v3", &ratings.address);
    assert!(html.contains("<font color=\"red\" class=\"stars\">★★★★☆</font>"), "{html}");
}

#[test]
fn ratings_down_leaves_the_page_up_and_says_why() {
    // Nothing listens on port 9 of loopback: the connection is refused at once.
    let (_services, html) = page_with("v2", "127.0.0.1:9");
    assert!(html.starts_with("HTTP/1.1 200"), "{html}");
    assert!(html.contains("Ratings service is currently unavailable"), "{html}");
}

#[test]
fn end_user_and_trace_headers_reach_the_services_productpage_calls() {
    // An echo of what reviews received: a one-shot listener standing in for reviews.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let reviews = listener.local_addr().unwrap().to_string();
    let details = start(&["details"]);
    let page = start(&["productpage", "--details", &details.address, "--reviews", &reviews]);
    let seen = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = String::new();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        while reader.read_line(&mut head).unwrap() > 2 && !head.ends_with("\r\n\r\n") {}
        let body = r#"{"id":0,"version":"v1","reviews":[]}"#;
        write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        head.to_ascii_lowercase()
    });
    let html = get(&page.address, "/productpage?u=jason", "x-request-id: req-42\r\ntraceparent: 00-abc-def-01\r\n");
    let head = seen.join().unwrap();
    assert!(head.contains("end-user: jason"), "{head}");
    assert!(head.contains("x-request-id: req-42"), "{head}");
    assert!(head.contains("traceparent: 00-abc-def-01"), "{head}");
    assert!(html.contains("Signed in as jason"), "{html}");
}
