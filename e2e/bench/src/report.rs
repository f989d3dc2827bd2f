//! The comparison as people read it: a table per path, then the ratios the proxy is held to
//! (issue "Sidecar proxy I": two sidecars add at most 0.5 ms to p99 at 1000 req/s over the
//! direct path; one sidecar's saturation throughput at least 1.2× nginx's with the same
//! workers; at most 10 MB resident under load).

use crate::compare::RouteResult;
use std::fmt::Write;

/// The markdown report of `results`, measured with `rate` requests per second.
pub fn render(results: &[RouteResult], rate: f64, workers: usize, rounds: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| path | saturation req/s | p50 ms @{rate:.0}/s | p99 ms | p99.9 ms | proxy CPU ms / 1000 req | of it user | at saturation | proxy peak RSS MiB | of it anon MiB | errors |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            r.route,
            r.saturation.requests_per_second,
            r.fixed_rate.p50_ms,
            r.fixed_rate.p99_ms,
            r.fixed_rate.p999_ms,
            r.proxy_cpu_ms_per_1000,
            r.proxy_user_cpu_ms_per_1000,
            r.proxy_cpu_ms_per_1000_saturated,
            r.proxy_peak_rss_mib,
            r.proxy_anon_rss_mib,
            r.saturation.errors + r.fixed_rate.errors,
        );
    }
    let find = |name: &str| results.iter().find(|r| r.route == name);
    let _ = writeln!(out, "\nProxies ran with {workers} worker thread(s) each.");
    if rounds > 1 {
        let _ = writeln!(out, "Each figure is the median of {rounds} interleaved rounds; memory is the largest seen.");
    }
    let _ = writeln!(out, "Ratios:");
    if let (Some(ours), Some(nginx)) = (find("1 sidecar"), find("1 nginx")) {
        let throughput = ours.saturation.requests_per_second / nginx.saturation.requests_per_second;
        let cpu = ours.proxy_cpu_ms_per_1000 / nginx.proxy_cpu_ms_per_1000;
        let _ = writeln!(out, "- saturation throughput, 1 sidecar / 1 nginx: {throughput:.2}× (target ≥ 1.2×)");
        let saturated = ours.proxy_cpu_ms_per_1000_saturated / nginx.proxy_cpu_ms_per_1000_saturated;
        let _ = writeln!(out, "- CPU per request at {rate:.0}/s, 1 sidecar / 1 nginx: {cpu:.2}×");
        let _ = writeln!(out, "- CPU per request at saturation, 1 sidecar / 1 nginx: {saturated:.2}×");
    }
    if let Some(direct) = find("direct") {
        for name in ["1 sidecar", "2 sidecars", "2 sidecars mTLS", "1 nginx", "2 nginx"] {
            if let Some(r) = find(name) {
                let added = r.fixed_rate.p99_ms - direct.fixed_rate.p99_ms;
                let target = if name == "2 sidecars mTLS" { " (target ≤ 0.5 ms)" } else { "" };
                let _ = writeln!(out, "- p99 added over direct at {rate:.0}/s, {name}: {added:+.3} ms{target}");
            }
        }
    }
    if let Some(ours) = find("1 sidecar") {
        let _ = writeln!(
            out,
            "- peak resident memory, 1 sidecar: {:.1} MiB, {:.1} MiB of it private (target ≤ 10 MB)",
            ours.proxy_peak_rss_mib, ours.proxy_anon_rss_mib
        );
    }
    out
}
