//! The load generator: keep-alive HTTP/1.1 connections, either as fast as the path answers
//! (closed loop, for saturation throughput) or at a fixed rate (open loop, for latency).
//!
//! At a fixed rate each request has an intended send time; when the path made it late (the
//! previous answer came after it), its latency is counted from that time, not from when it was
//! actually sent. A stall therefore shows up in every request it delayed, instead of hiding
//! behind a generator that politely waited ("coordinated omission"). A request that was on
//! time is counted from when the timer woke the generator: tokio's timer has millisecond
//! granularity, and its lateness is the generator's, not the path's.

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What load to apply.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Where to connect.
    pub target: SocketAddr,
    /// The `Host` header (the service name as an app would write it).
    pub host: String,
    /// Concurrent keep-alive connections, one request in flight on each.
    pub connections: usize,
    /// Requests per second over all connections; `None` is as fast as possible.
    pub rate: Option<f64>,
    /// Requests before this is over are sent but not counted (connections, pools, caches warm up).
    pub warmup: Duration,
    /// How long requests are counted.
    pub duration: Duration,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct LoadReport {
    /// Counted requests answered `2xx`.
    pub ok: u64,
    /// Counted requests answered otherwise, or failed (each failure reconnects).
    pub errors: u64,
    /// `ok` per second of the counted period.
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Latencies in microseconds, 1 µs to 60 s, three significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// When request `n` of connection `index` is meant to go out, for a fixed `rate` spread over
/// `connections`: each connection sends every `connections / rate` seconds, the connections
/// staggered evenly so the aggregate is smooth.
pub fn intended_send_time(start: Instant, rate: f64, connections: usize, index: usize, n: u64) -> Instant {
    let interval = connections as f64 / rate;
    let offset = interval * index as f64 / connections as f64;
    start + Duration::from_secs_f64(offset + interval * n as f64)
}

/// Applies `spec` and reports; returns an error only when no connection could be made at all.
pub async fn run(spec: &LoadSpec) -> anyhow::Result<LoadReport> {
    let start = Instant::now();
    let counted_from = start + spec.warmup;
    let end = counted_from + spec.duration;
    let tasks: Vec<_> = (0..spec.connections)
        .map(|index| tokio::spawn(connection(spec.clone(), index, start, counted_from, end)))
        .collect();
    let mut histogram = new_histogram();
    let mut errors = 0;
    for task in tasks {
        let outcome = task.await.context("load task panicked")??;
        histogram.add(&outcome.latencies).context("merging histograms")?;
        errors += outcome.errors;
    }
    let ok = histogram.len();
    let quantile = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(LoadReport {
        ok,
        errors,
        requests_per_second: ok as f64 / spec.duration.as_secs_f64(),
        p50_ms: quantile(0.5),
        p90_ms: quantile(0.9),
        p99_ms: quantile(0.99),
        p999_ms: quantile(0.999),
        max_ms: histogram.max() as f64 / 1000.0,
    })
}

struct ConnectionOutcome {
    latencies: Histogram<u64>,
    errors: u64,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(target: SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(target).await.with_context(|| format!("connecting to {target}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One connection's loop until `end`. Latency is measured from the intended send time at a
/// fixed rate, from the actual send time otherwise.
async fn connection(
    spec: LoadSpec,
    index: usize,
    start: Instant,
    counted_from: Instant,
    end: Instant,
) -> anyhow::Result<ConnectionOutcome> {
    let mut outcome = ConnectionOutcome { latencies: new_histogram(), errors: 0 };
    let mut sender = connect(spec.target).await?;
    let mut n = 0u64;
    loop {
        let due = match spec.rate {
            Some(rate) => intended_send_time(start, rate, spec.connections, index, n),
            None => Instant::now(),
        };
        if due >= end {
            return Ok(outcome);
        }
        let measured_from = if spec.rate.is_some() && due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
            Instant::now()
        } else {
            due
        };
        n += 1;
        let answered = request(&mut sender, &spec.host).await;
        let counted = due >= counted_from;
        match answered {
            Ok(true) if counted => {
                let micros = measured_from.elapsed().as_micros().max(1) as u64;
                outcome.latencies.saturating_record(micros);
            }
            Ok(true) => {}
            Ok(false) => outcome.errors += u64::from(counted),
            Err(_) => {
                outcome.errors += u64::from(counted);
                tokio::time::sleep(Duration::from_millis(10)).await;
                sender = connect(spec.target).await?;
            }
        }
    }
}

/// One GET; `Ok(true)` for a 2xx answer read to its end.
async fn request(sender: &mut Sender, host: &str) -> anyhow::Result<bool> {
    sender.ready().await?;
    let req = Request::get("/").header(http::header::HOST, host).body(Empty::new())?;
    let resp = sender.send_request(req).await?;
    let ok = resp.status().is_success();
    resp.into_body().collect().await?;
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn backend() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(crate::backend::serve(listener));
        addr
    }

    #[tokio::test]
    async fn fixed_rate_sends_exactly_the_scheduled_requests() {
        // 200 req/s over 2 connections for 0.5 s: 50 intended send times each. Late requests
        // are still sent (and their lateness counted), so the count does not depend on speed.
        let spec = LoadSpec {
            target: backend().await,
            host: "backend".into(),
            connections: 2,
            rate: Some(200.0),
            warmup: Duration::ZERO,
            duration: Duration::from_millis(500),
        };
        let report = run(&spec).await.unwrap();
        assert_eq!((report.ok, report.errors), (100, 0), "{report:?}");
        assert!(report.p50_ms > 0.0 && report.p99_ms >= report.p50_ms, "{report:?}");
    }

    #[tokio::test]
    async fn closed_loop_counts_only_after_the_warmup() {
        let spec = LoadSpec {
            target: backend().await,
            host: "backend".into(),
            connections: 4,
            rate: None,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(200),
        };
        let report = run(&spec).await.unwrap();
        assert!(report.ok > 0 && report.errors == 0, "{report:?}");
        assert_eq!(report.requests_per_second, report.ok as f64 / 0.2);
    }

    #[test]
    fn fixed_rate_schedule_is_evenly_staggered() {
        let start = Instant::now();
        // 1000 req/s over 4 connections: each sends every 4 ms, staggered by 1 ms.
        let micros = |index, n| {
            let at = intended_send_time(start, 1000.0, 4, index, n).duration_since(start);
            (at.as_secs_f64() * 1e6).round() as u64
        };
        assert_eq!(micros(0, 0), 0);
        assert_eq!(micros(1, 0), 1000);
        assert_eq!(micros(3, 0), 3000);
        assert_eq!(micros(0, 1), 4000);
        assert_eq!(micros(2, 250), 1_002_000);
    }
}
