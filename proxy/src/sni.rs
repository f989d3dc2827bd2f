//! Reading the server name (SNI) and ALPN protocols from a TLS ClientHello without
//! terminating TLS.
//!
//! TLS ports are routed by SNI (VirtualService `tls[].match.sniHosts`). The proxy reads the
//! client's first records, finds the `server_name` extension, and later replays the bytes it
//! read to the upstream, so the handshake continues end to end untouched. The inbound side
//! reads the ALPN list the same way: a peer sidecar's mutual TLS offers `istio` protocols, an
//! app's own TLS does not (`crate::tls::accept`).

use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest ClientHello read; one more than this and the connection is routed without SNI.
const MAX_HELLO: usize = 64 * 1024;

/// What was read from the client.
#[derive(Debug, Default)]
pub struct ClientHello {
    /// The name the client asked for, lowercase; `None` when absent or not TLS.
    pub server_name: Option<String>,
    /// The application protocols the client offered (ALPN), in its order; empty when it
    /// offered none or the bytes are not a ClientHello.
    pub alpn: Vec<Vec<u8>>,
    /// The bytes were a complete ClientHello.
    pub is_tls: bool,
    /// Every byte read, to be sent to the upstream first.
    pub buffered: Vec<u8>,
}

/// Reads until the ClientHello is complete (or is clearly not one, or `limit` passes).
pub async fn read_client_hello<R: AsyncRead + Unpin>(stream: &mut R, limit: Duration) -> ClientHello {
    let mut buffered = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match parse(&buffered) {
                Parse::Incomplete if buffered.len() < MAX_HELLO => {}
                Parse::Done(fields) => return Some(fields),
                _ => return None,
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buffered.extend_from_slice(&chunk[..n]),
            }
        }
    };
    match tokio::time::timeout(limit, read).await.ok().flatten() {
        Some(Fields { server_name, alpn }) => ClientHello { server_name, alpn, is_tls: true, buffered },
        None => ClientHello { buffered, ..ClientHello::default() },
    }
}

/// What the proxy reads out of a ClientHello.
#[derive(Debug, Default, PartialEq)]
struct Fields {
    server_name: Option<String>,
    alpn: Vec<Vec<u8>>,
}

#[derive(Debug, PartialEq)]
enum Parse {
    Incomplete,
    /// A complete ClientHello (fields it lacks or that are malformed are left empty).
    Done(Fields),
    NotTls,
}

/// Joins the handshake fragments of the records in `data` and parses the ClientHello.
fn parse(data: &[u8]) -> Parse {
    let mut handshake = Vec::new();
    let mut rest = data;
    loop {
        if rest.len() < 5 {
            return Parse::Incomplete;
        }
        if rest[0] != 22 || rest[1] != 3 {
            return Parse::NotTls;
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if rest.len() < 5 + len {
            return Parse::Incomplete;
        }
        handshake.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
        if handshake.len() >= 4 {
            if handshake[0] != 1 {
                return Parse::NotTls;
            }
            let body_len = usize::from(handshake[1]) << 16 | usize::from(handshake[2]) << 8 | usize::from(handshake[3]);
            if handshake.len() >= 4 + body_len {
                return Parse::Done(fields(&handshake[4..4 + body_len]).unwrap_or_default());
            }
        }
    }
}

/// A cursor over the ClientHello body; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
}

/// The extensions of a ClientHello body; `None` when it is malformed.
fn fields(body: &[u8]) -> Option<Fields> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy version, random
    let session = r.u8()?;
    r.take(session)?;
    let suites = r.u16()?;
    r.take(suites)?;
    let compression = r.u8()?;
    r.take(compression)?;
    let extensions = r.u16()?;
    let mut ext = Reader(r.take(extensions)?);
    let mut fields = Fields::default();
    while !ext.0.is_empty() {
        let kind = ext.u16()?;
        let len = ext.u16()?;
        let data = ext.take(len)?;
        match kind {
            SERVER_NAME => fields.server_name = server_name(data),
            ALPN => fields.alpn = protocols(data).unwrap_or_default(),
            _ => {}
        }
    }
    Some(fields)
}

const SERVER_NAME: usize = 0;
const ALPN: usize = 16;

fn server_name(data: &[u8]) -> Option<String> {
    let mut names = Reader(data);
    let list = names.u16()?;
    let mut list = Reader(names.take(list)?);
    while !list.0.is_empty() {
        let name_type = list.u8()?;
        let len = list.u16()?;
        let name = list.take(len)?;
        if name_type == 0 {
            return std::str::from_utf8(name).ok().map(str::to_ascii_lowercase);
        }
    }
    None
}

fn protocols(data: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut outer = Reader(data);
    let list = outer.u16()?;
    let mut list = Reader(outer.take(list)?);
    let mut protocols = Vec::new();
    while !list.0.is_empty() {
        let len = list.u8()?;
        protocols.push(list.take(len)?.to_vec());
    }
    Some(protocols)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ClientHello record for `name` (or without SNI).
    pub(crate) fn client_hello(name: Option<&str>) -> Vec<u8> {
        client_hello_with_alpn(name, &[])
    }

    /// A minimal ClientHello record for `name`, offering `alpn`.
    pub(crate) fn client_hello_with_alpn(name: Option<&str>, alpn: &[&str]) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(name) = name {
            let n = name.len() as u16;
            ext.extend_from_slice(&[0, 0]);
            ext.extend_from_slice(&(n + 5).to_be_bytes());
            ext.extend_from_slice(&(n + 3).to_be_bytes());
            ext.push(0);
            ext.extend_from_slice(&n.to_be_bytes());
            ext.extend_from_slice(name.as_bytes());
        }
        ext.extend_from_slice(&[0, 43, 0, 3, 2, 3, 4]); // supported_versions, after SNI
        if !alpn.is_empty() {
            let mut list = Vec::new();
            for protocol in alpn {
                list.push(protocol.len() as u8);
                list.extend_from_slice(protocol.as_bytes());
            }
            ext.extend_from_slice(&[0, 16]);
            ext.extend_from_slice(&(list.len() as u16 + 2).to_be_bytes());
            ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
            ext.extend_from_slice(&list);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut handshake = vec![1, 0];
        handshake.extend_from_slice(&(body.len() as u16).to_be_bytes());
        handshake.extend_from_slice(&body);
        let mut record = vec![22, 3, 1];
        record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
        record.extend_from_slice(&handshake);
        record
    }

    fn named(name: Option<&str>) -> Parse {
        Parse::Done(Fields { server_name: name.map(String::from), alpn: Vec::new() })
    }

    #[test]
    fn finds_the_server_name() {
        assert_eq!(parse(&client_hello(Some("API.example.com"))), named(Some("api.example.com")));
        assert_eq!(parse(&client_hello(None)), named(None));
    }

    #[test]
    fn finds_the_offered_protocols() {
        let hello = client_hello_with_alpn(Some("a.b"), &["istio-http/1.1", "istio"]);
        let Parse::Done(fields) = parse(&hello) else { panic!("not parsed") };
        assert_eq!(fields.server_name.as_deref(), Some("a.b"));
        assert_eq!(fields.alpn, [b"istio-http/1.1".to_vec(), b"istio".to_vec()]);
    }

    #[test]
    fn waits_for_the_whole_record_and_refuses_non_tls() {
        let hello = client_hello(Some("a.b"));
        assert_eq!(parse(&hello[..hello.len() - 1]), Parse::Incomplete);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parse::NotTls);
    }

    #[test]
    fn hello_split_over_two_records_is_joined() {
        let hello = client_hello(Some("split.example"));
        let handshake = &hello[5..];
        let (a, b) = handshake.split_at(10);
        let mut data = Vec::new();
        for part in [a, b] {
            data.extend_from_slice(&[22, 3, 1]);
            data.extend_from_slice(&(part.len() as u16).to_be_bytes());
            data.extend_from_slice(part);
        }
        assert_eq!(parse(&data), named(Some("split.example")));
    }
}
