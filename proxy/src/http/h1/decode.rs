//! Reading a response head and a chunked body (RFC 9112).

use super::Error;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HeaderName, HeaderValue, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Response, StatusCode, Version};

/// The largest response head (or block of trailers) accepted: Envoy's default limit is 60 KiB.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header lines accepted in one head, as hyper does.
const MAX_HEADERS: usize = 100;
/// The longest chunk-size line accepted (the size in hex and any extensions).
const MAX_CHUNK_LINE: usize = 4096;

/// A response head parsed from the front of a buffer, and its length there.
pub fn head(buf: &[u8]) -> Result<Option<(Response<()>, usize)>, Error> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut lines);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(Error::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Error::Head(e.to_string())),
    };
    let code = parsed.code.unwrap_or_default();
    let status = StatusCode::from_u16(code).map_err(|_| Error::Head(format!("status {code}")))?;
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = if parsed.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
    *response.headers_mut() = header_map(parsed.headers)?;
    Ok(Some((response, len)))
}

fn header_map(lines: &[httparse::Header<'_>]) -> Result<HeaderMap, Error> {
    let mut map = HeaderMap::with_capacity(lines.len());
    for line in lines {
        let name = HeaderName::from_bytes(line.name.as_bytes())
            .map_err(|_| Error::Head(format!("header name {:?}", line.name)))?;
        let value = HeaderValue::from_bytes(line.value).map_err(|_| Error::Head(format!("value of {name}")))?;
        map.append(name, value);
    }
    Ok(map)
}

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// No length and not chunked: the body ends when the server closes the connection.
    UntilClose,
}

/// The framing of a response to a `method` request, as RFC 9112 §6.3 orders the rules.
pub fn framing(method: &Method, status: StatusCode, headers: &HeaderMap) -> Result<Framing, Error> {
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if let Some(last) = headers.get_all(TRANSFER_ENCODING).iter().next_back() {
        let chunked = last
            .as_bytes()
            .rsplit(|b| *b == b',')
            .next()
            .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        return Ok(if chunked { Framing::Chunked } else { Framing::UntilClose });
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let parsed: u64 = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| Error::Head(format!("content-length {value:?}")))?;
        if length.is_some_and(|l| l != parsed) {
            return Err(Error::Head("content-length given twice, with different values".into()));
        }
        length = Some(parsed);
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(len) => Framing::Length(len),
        None => Framing::UntilClose,
    })
}

/// Whether the server lets the connection carry another request after this response.
pub fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11 && !has_token(headers, "close")
}

/// Whether a `Connection` header of `headers` names `token`.
pub fn has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Where a chunked body's decoding stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunks {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk, with this many bytes of it still to come.
    Data(u64),
    /// After a chunk's data, before its line end.
    DataEnd,
    /// After the last (empty) chunk: trailers, then an empty line.
    Trailers,
    Done,
}

/// What one step of decoding gave.
#[derive(Debug)]
pub enum Step {
    /// `buf` holds no complete next piece: read more.
    NeedMore,
    Data(Bytes),
    Trailers(HeaderMap),
    End,
}

/// Decodes the next piece of a chunked body from the front of `buf`, consuming it.
pub fn step(state: &mut Chunks, buf: &mut BytesMut) -> Result<Step, Error> {
    loop {
        match *state {
            Chunks::Size => {
                let Some(end) = buf.iter().position(|b| *b == b'\n') else {
                    return if buf.len() > MAX_CHUNK_LINE { Err(Error::Chunked) } else { Ok(Step::NeedMore) };
                };
                let size = chunk_size(&buf[..end])?;
                buf.advance(end + 1);
                *state = if size == 0 { Chunks::Trailers } else { Chunks::Data(size) };
            }
            Chunks::Data(remaining) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let n = remaining.min(buf.len() as u64);
                let data = buf.split_to(n as usize).freeze();
                *state = if n == remaining { Chunks::DataEnd } else { Chunks::Data(remaining - n) };
                return Ok(Step::Data(data));
            }
            Chunks::DataEnd => match buf.first() {
                None => return Ok(Step::NeedMore),
                Some(b'\n') => {
                    buf.advance(1);
                    *state = Chunks::Size;
                }
                Some(b'\r') if buf.len() < 2 => return Ok(Step::NeedMore),
                Some(b'\r') if buf[1] == b'\n' => {
                    buf.advance(2);
                    *state = Chunks::Size;
                }
                Some(_) => return Err(Error::Chunked),
            },
            Chunks::Trailers => {
                if buf.starts_with(b"\r\n") || buf.starts_with(b"\n") {
                    buf.advance(if buf[0] == b'\r' { 2 } else { 1 });
                    *state = Chunks::Done;
                    return Ok(Step::End);
                }
                let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
                match httparse::parse_headers(buf, &mut lines) {
                    Ok(httparse::Status::Complete((len, lines))) => {
                        let trailers = header_map(lines)?;
                        buf.advance(len);
                        *state = Chunks::Done;
                        return Ok(Step::Trailers(trailers));
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(Error::HeadTooLarge),
                    Ok(httparse::Status::Partial) => return Ok(Step::NeedMore),
                    Err(_) => return Err(Error::Chunked),
                }
            }
            Chunks::Done => return Ok(Step::End),
        }
    }
}

/// The size of a chunk-size line (hex digits, then optional `;extensions`), without its `\n`.
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line.split(|b| *b == b';').next().unwrap_or_default().trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(Error::Chunked);
    }
    let text = std::str::from_utf8(digits).map_err(|_| Error::Chunked)?;
    u64::from_str_radix(text, 16).map_err(|_| Error::Chunked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_waits_for_its_end_then_gives_status_version_headers_and_length() {
        let wire = b"HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\nx-a: 1\r\nx-a: 2\r\n\r\nabc";
        assert!(head(&wire[..20]).unwrap().is_none());
        let (response, len) = head(wire).unwrap().unwrap();
        assert_eq!(len, wire.len() - 3);
        assert_eq!(response.status(), 404);
        assert_eq!(response.version(), Version::HTTP_11);
        assert_eq!(response.headers().get_all("x-a").iter().count(), 2);
        let old = head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap().0;
        assert!(!keeps_alive(old.version(), old.headers()));
    }

    #[test]
    fn bad_and_oversized_heads_are_errors() {
        assert!(matches!(head(b"HTTP/1.1 2x0 OK\r\n\r\n"), Err(Error::Head(_))));
        let mut huge = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
        huge.resize(MAX_HEAD + 10, b'a');
        assert!(matches!(head(&huge), Err(Error::HeadTooLarge)));
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let ok = StatusCode::OK;
        assert_eq!(framing(&Method::HEAD, ok, &headers(&[("content-length", "9")])).unwrap(), Framing::Empty);
        assert_eq!(framing(&Method::GET, StatusCode::NO_CONTENT, &HeaderMap::new()).unwrap(), Framing::Empty);
        assert_eq!(framing(&Method::GET, ok, &headers(&[("content-length", "9")])).unwrap(), Framing::Length(9));
        let both = headers(&[("transfer-encoding", "gzip, chunked"), ("content-length", "9")]);
        assert_eq!(framing(&Method::GET, ok, &both).unwrap(), Framing::Chunked);
        assert_eq!(framing(&Method::GET, ok, &headers(&[("transfer-encoding", "gzip")])).unwrap(), Framing::UntilClose);
        assert_eq!(framing(&Method::GET, ok, &HeaderMap::new()).unwrap(), Framing::UntilClose);
        let mut twice = headers(&[("content-length", "1")]);
        twice.append(CONTENT_LENGTH, HeaderValue::from_static("2"));
        assert!(framing(&Method::GET, ok, &twice).is_err());
    }

    #[test]
    fn chunked_body_in_pieces_with_trailers() {
        let wire = b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\ngrpc-status: 0\r\n\r\n";
        // Fed one byte at a time, the decoder gives the same data and trailers.
        let mut state = Chunks::Size;
        let mut buf = BytesMut::new();
        let (mut data, mut trailers) = (Vec::new(), None);
        for byte in wire {
            buf.extend_from_slice(&[*byte]);
            loop {
                match step(&mut state, &mut buf).unwrap() {
                    Step::NeedMore => break,
                    Step::Data(d) => data.extend_from_slice(&d),
                    Step::Trailers(t) => trailers = Some(t),
                    Step::End => break,
                }
            }
        }
        assert_eq!(data, b"hello!");
        assert_eq!(trailers.unwrap()["grpc-status"], "0");
        assert_eq!(state, Chunks::Done);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_chunked_body_without_trailers_ends_at_the_empty_line() {
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\n\r\nNEXT"[..]);
        let mut state = Chunks::Size;
        assert!(matches!(step(&mut state, &mut buf).unwrap(), Step::Data(d) if d == "abc"));
        assert!(matches!(step(&mut state, &mut buf).unwrap(), Step::End));
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn bad_chunk_sizes_are_errors() {
        for wire in [&b"zz\r\n"[..], b"\r\n", b"1234567890abcdef0\r\n", b"3\r\nabcX"] {
            let mut buf = BytesMut::from(wire);
            let mut state = Chunks::Size;
            let result = (|| loop {
                if let Step::NeedMore | Step::End = step(&mut state, &mut buf)? {
                    return Ok(());
                }
            })();
            assert!(matches!(result, Err(Error::Chunked)), "{wire:?}");
        }
    }
}
