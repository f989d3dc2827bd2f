//! One comparison run: every path measured back to back on the same machine, at saturation
//! and at a fixed rate, with the proxies' CPU and memory.

use crate::load::{self, LoadReport, LoadSpec};
use crate::paths::{Launch, Route};
use crate::procstat;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;

/// How each path is loaded.
#[derive(Clone, Debug)]
pub struct Plan {
    pub routes: Vec<Route>,
    pub connections: usize,
    pub rate: f64,
    pub warmup: Duration,
    pub duration: Duration,
    /// Times every path is measured, interleaved.
    pub rounds: usize,
}

/// One path's figures.
#[derive(Debug, Serialize)]
pub struct RouteResult {
    pub route: String,
    /// As fast as the path answers, `connections` keep-alive connections.
    pub saturation: LoadReport,
    /// At `rate` requests per second, latency corrected for coordinated omission.
    pub fixed_rate: LoadReport,
    /// CPU the proxies used per 1000 requests at the fixed rate, in milliseconds (0 direct).
    pub proxy_cpu_ms_per_1000: f64,
    /// The user-space part of `proxy_cpu_ms_per_1000` (the rest is kernel time).
    pub proxy_user_cpu_ms_per_1000: f64,
    /// CPU the proxies used per 1000 requests at saturation, in milliseconds.
    pub proxy_cpu_ms_per_1000_saturated: f64,
    /// The largest resident memory of the proxies, summed, in MiB (0 direct).
    pub proxy_peak_rss_mib: f64,
    /// The proxies' private (anonymous) resident memory at the end of the run, summed, in MiB.
    pub proxy_anon_rss_mib: f64,
}

/// CPU time the proxies used so far, in seconds: (user plus system, user).
#[derive(Clone, Copy, Debug, Default)]
struct CpuTime {
    total: f64,
    user: f64,
}

fn cpu_time(proxies: &[u32]) -> anyhow::Result<CpuTime> {
    let mut sum = CpuTime::default();
    for pid in proxies {
        let usage = procstat::usage(*pid)?;
        sum.total += usage.cpu_seconds;
        sum.user += usage.user_seconds;
    }
    Ok(sum)
}

/// `field` of the proxies' usage, summed, in MiB.
fn memory_mib(proxies: &[u32], field: fn(&procstat::Usage) -> u64) -> anyhow::Result<f64> {
    let kib: anyhow::Result<u64> = proxies.iter().map(|pid| procstat::usage(*pid).map(|u| field(&u))).sum();
    Ok(kib? as f64 / 1024.0)
}

fn per_1000(cpu_seconds: f64, report: &LoadReport) -> f64 {
    if report.ok == 0 { 0.0 } else { cpu_seconds * 1000.0 * 1000.0 / report.ok as f64 }
}

/// Runs `spec` and returns its report with the CPU the proxies used while requests were
/// counted (the warm-up excluded): sampled when counting starts and when the run ends.
async fn run_measured(spec: &LoadSpec, pids: &[u32]) -> anyhow::Result<(LoadReport, CpuTime)> {
    let counting_starts = tokio::time::Instant::now() + spec.warmup;
    let sampled = pids.to_vec();
    let sampler = tokio::spawn(async move {
        tokio::time::sleep_until(counting_starts).await;
        cpu_time(&sampled)
    });
    let report = load::run(spec).await?;
    let after = cpu_time(pids)?;
    let at_start = sampler.await??;
    Ok((report, CpuTime { total: after.total - at_start.total, user: after.user - at_start.user }))
}

/// Measures `route` in front of `backend`.
pub async fn measure(launch: &Launch, plan: &Plan, route: Route, backend: SocketAddr) -> anyhow::Result<RouteResult> {
    let running = launch.start(route, backend)?;
    let host = crate::mesh::SERVICE_HOST;
    crate::paths::wait_until_answering(running.entry, host, Duration::from_secs(15)).await?;
    let pids: Vec<u32> = running.proxies.iter().map(|p| p.0.id()).collect();
    let spec = LoadSpec {
        target: running.entry,
        host: host.to_string(),
        connections: plan.connections,
        rate: None,
        warmup: plan.warmup,
        duration: plan.duration,
    };
    let (saturation, saturated_cpu) = run_measured(&spec, &pids).await?;
    let (fixed_rate, fixed_cpu) = run_measured(&LoadSpec { rate: Some(plan.rate), ..spec }, &pids).await?;
    Ok(RouteResult {
        route: route.to_string(),
        proxy_cpu_ms_per_1000: per_1000(fixed_cpu.total, &fixed_rate),
        proxy_user_cpu_ms_per_1000: per_1000(fixed_cpu.user, &fixed_rate),
        proxy_cpu_ms_per_1000_saturated: per_1000(saturated_cpu.total, &saturation),
        proxy_peak_rss_mib: memory_mib(&pids, |u| u.peak_rss_kib)?,
        proxy_anon_rss_mib: memory_mib(&pids, |u| u.anon_rss_kib)?,
        saturation,
        fixed_rate,
    })
}
