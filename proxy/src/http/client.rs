//! Forwarding one request to a chosen upstream address over pooled connections.
//!
//! The request keeps the name the client used: `Host` for HTTP/1.1 upstreams, `:authority` for
//! HTTP/2 ones; the address it is sent to is chosen by routing and only selects the connection.

use super::h1;
use super::pool::{Pool, PoolError};
use super::replay::RequestBody;
use super::upstream_body::UpstreamBody;
use super::{ProxyBody, headers};
use crate::breaker::{Attached, Breaker, Overflow};
use crate::drain::Drain;
use crate::reason::Reason;
use crate::route::{Dial, UpstreamProtocol};
use crate::tls::MeshTls;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header::CONNECTION, header::HOST};
use http_body_util::Either;
use hyper::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Pooled upstream connections for one listener.
#[derive(Clone, Debug)]
pub struct HttpClient {
    pool: Arc<Pool>,
}

/// How upstream connections are made.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Source address for IPv4 upstream connections (127.0.0.6 on the inbound side, so the
    /// capture rules recognise the proxy's traffic to the app).
    pub source_v4: Option<IpAddr>,
    /// How long an idle pooled connection may be reused. Shorter than typical server keep-alive
    /// timeouts (60 s and up) so we rarely pick a connection the server is about to close.
    pub idle_timeout: Duration,
    /// Connection attempts that take longer fail with 503.
    pub connect_timeout: Duration,
    /// The proxy's credentials, for endpoints spoken to in mutual TLS.
    pub tls: Arc<MeshTls>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            source_v4: None,
            idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            tls: Arc::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("upstream {upstream}: {source}")]
    Connect { upstream: SocketAddr, source: PoolError },
    #[error("upstream {upstream}: {source}")]
    Request { upstream: SocketAddr, source: hyper::Error },
    /// An HTTP/1.1 exchange failed after the connection was made.
    #[error("upstream {upstream}: {source}")]
    H1 { upstream: SocketAddr, source: h1::Error },
    #[error("request has no host: neither a Host header nor an authority")]
    NoHost,
    /// A limit of the cluster's `connectionPool` was reached; nothing was sent.
    #[error("upstream {upstream}: {source}")]
    Overflow { upstream: SocketAddr, source: Overflow },
}

impl ForwardError {
    /// Why the request failed, as `x-mesh-reason` says it.
    pub fn reason(&self) -> Reason {
        match self {
            ForwardError::Connect { .. } => Reason::ConnectFailure,
            ForwardError::Request { .. } | ForwardError::H1 { .. } => Reason::UpstreamReset,
            ForwardError::NoHost => Reason::MissingHost,
            ForwardError::Overflow { .. } => Reason::Overflow,
        }
    }

    /// The upstream refused the HTTP/2 stream (`REFUSED_STREAM`): it did not process the
    /// request, so sending it again is safe whatever its method.
    pub fn is_refused_stream(&self) -> bool {
        let ForwardError::Request { source, .. } = self else { return false };
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
        while let Some(error) = cause {
            if let Some(h2) = error.downcast_ref::<h2::Error>() {
                return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
            }
            cause = error.source();
        }
        false
    }

    /// The status the downstream sees: 503 when the upstream is unreachable or resets (as
    /// Envoy answers), 400 for a request that cannot be forwarded at all.
    pub fn status(&self) -> StatusCode {
        match self {
            ForwardError::NoHost => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl HttpClient {
    pub fn new(cfg: &ClientConfig) -> Self {
        HttpClient { pool: Arc::new(Pool::new(cfg)) }
    }

    /// Sends `req` to `upstream` and returns its response. The body streams both ways, trailers
    /// included. Upgrade requests (WebSocket) are spliced: once the upstream answers 101, the
    /// two upgraded connections are joined by a task tracked by `drain`. A request carrying its
    /// cluster's breaker ([`Attached`]) is held to the cluster's limits: counted in flight
    /// until the response headers arrive, on connections the breaker allows.
    pub async fn forward(
        &self,
        mut req: Request<RequestBody>,
        dial: &Dial,
        protocol: UpstreamProtocol,
        drain: &Drain,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        let upstream = dial.address;
        let breaker = req.extensions_mut().remove::<Attached>().map(|a| a.0);
        let _in_flight = match &breaker {
            Some(b) => Some(b.request().map_err(|source| ForwardError::Overflow { upstream, source })?),
            None => None,
        };
        let downstream_h2 = req.version() == Version::HTTP_2;
        let use_h2 = match protocol {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Http2 => true,
            UpstreamProtocol::SameAsDownstream => downstream_h2,
        };
        let upgrade = !downstream_h2 && !use_h2 && headers::is_upgrade(req.headers());
        let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        headers::strip_hop_by_hop(req.headers_mut(), upgrade);
        let (mut resp, upgraded) = if use_h2 {
            (self.send_h2(req, dial, breaker.as_ref()).await?.map(UpstreamBody::from), None)
        } else {
            self.send_h1(req, dial, breaker.clone()).await?
        };
        match (upgraded, downstream_upgrade) {
            (Some(up), Some(down)) => drain.spawn(splice_upgrade(down, up, upstream)),
            _ => headers::strip_hop_by_hop(resp.headers_mut(), false),
        }
        Ok(resp.map(Either::Left))
    }

    async fn send_h1(
        &self,
        req: Request<RequestBody>,
        dial: &Dial,
        breaker: Option<Arc<Breaker>>,
    ) -> Result<(Response<UpstreamBody>, Option<h1::Upgraded>), ForwardError> {
        let upstream = dial.address;
        let (mut head, body) = req.into_parts();
        // HTTP/1.1 carries the name in Host and sends the path alone (origin form).
        if !head.headers.contains_key(HOST) {
            let host = head.uri.authority().ok_or(ForwardError::NoHost)?;
            let host = HeaderValue::from_str(host.as_str()).map_err(|_| ForwardError::NoHost)?;
            head.headers.insert(HOST, host);
        }
        if head.uri.authority().is_some() {
            let path = head.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
            head.uri = Uri::from(path);
        }
        head.version = Version::HTTP_11;
        let connect_err = |source| pool_error(upstream, source);
        let streaming = !body.is_end_stream() && !headers::is_upgrade(&head.headers);
        // A request that could not be sent again if a pooled connection turned out closed is
        // only given one the server has not closed meanwhile.
        let check = streaming || !h1::is_idempotent(&head.method);
        let conn = self.pool.h1(dial, breaker.as_ref(), check).await.map_err(connect_err)?;
        if conn.carries_its_last(breaker.as_ref()) {
            head.headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        let home = self.pool.home(dial, breaker.clone());
        let h1_error = |source| ForwardError::H1 { upstream, source };
        if streaming {
            let response = h1::send_streaming(conn.conn, head, body, home).await.map_err(h1_error)?;
            return Ok((response.map(UpstreamBody::from), None));
        }
        let error = match h1::send(conn.conn, &head, home).await {
            Ok((response, upgraded)) => return Ok((response.map(UpstreamBody::from), upgraded)),
            Err(error) => error,
        };
        if !(error.retry && conn.reused) {
            return Err(h1_error(error.error));
        }
        // A pooled connection the server closed while idle: the request was not sent (or not
        // answered, and may be repeated), so it goes once more on a new connection.
        tracing::debug!(%upstream, error = %error.error, "pooled connection was closed; sending on a new one");
        let conn = self.pool.new_h1(dial, breaker.as_ref()).await.map_err(connect_err)?;
        let home = self.pool.home(dial, breaker);
        let (response, upgraded) = h1::send(conn.conn, &head, home).await.map_err(|e| h1_error(e.error))?;
        Ok((response.map(UpstreamBody::from), upgraded))
    }

    async fn send_h2(
        &self,
        mut req: Request<RequestBody>,
        dial: &Dial,
        breaker: Option<&Arc<Breaker>>,
    ) -> Result<Response<Incoming>, ForwardError> {
        let upstream = dial.address;
        // HTTP/2 carries the name in :authority, taken from Host when the client spoke HTTP/1.1.
        let authority = match req.headers_mut().remove(HOST) {
            Some(host) => Authority::try_from(host.as_bytes()).map_err(|_| ForwardError::NoHost)?,
            None => req.uri().authority().cloned().ok_or(ForwardError::NoHost)?,
        };
        let path = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(authority);
        parts.path_and_query = Some(path);
        *req.uri_mut() = Uri::from_parts(parts).map_err(|_| ForwardError::NoHost)?;
        *req.version_mut() = Version::HTTP_2;
        let mut tx = self.pool.h2(dial, breaker).await.map_err(|source| pool_error(upstream, source))?;
        let request_err = |source| ForwardError::Request { upstream, source };
        tx.ready().await.map_err(request_err)?;
        tx.send_request(req).await.map_err(request_err)
    }
}

/// A pool failure as the request sees it: an overflow is not a connect failure (nothing was
/// tried, so it is neither retried nor held against the endpoint).
fn pool_error(upstream: SocketAddr, source: PoolError) -> ForwardError {
    match source {
        PoolError::Overflow(source) => ForwardError::Overflow { upstream, source },
        source => ForwardError::Connect { upstream, source },
    }
}

/// Joins the downstream half of an upgraded connection to the upstream one and copies bytes
/// until both sides finish.
async fn splice_upgrade(down: hyper::upgrade::OnUpgrade, mut up: h1::Upgraded, upstream: SocketAddr) {
    match down.await {
        Ok(down) => {
            let mut down = TokioIo::new(down);
            if let Err(error) = crate::tcp::copy_bidirectional(&mut down, &mut up).await {
                tracing::debug!(%upstream, %error, "upgraded connection ended with an error");
            }
        }
        Err(error) => tracing::debug!(%upstream, %error, "upgrade did not complete"),
    }
}
