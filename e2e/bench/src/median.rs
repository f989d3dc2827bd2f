//! Several rounds of one comparison folded into one figure per path: on a shared machine a
//! single run's figures swing with what the neighbours do (a tail spike, a slow second), and a
//! median of interleaved rounds is what a reader can compare.

use crate::compare::RouteResult;
use crate::load::LoadReport;

/// The middle of `values` (the upper middle for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn median_of<T>(items: &[T], field: impl Fn(&T) -> f64) -> f64 {
    median(items.iter().map(field).collect())
}

fn median_report(reports: &[&LoadReport]) -> LoadReport {
    LoadReport {
        ok: median_of(reports, |r| r.ok as f64) as u64,
        // Any failed request in any round is kept: a run with failures fails.
        errors: reports.iter().map(|r| r.errors).sum(),
        requests_per_second: median_of(reports, |r| r.requests_per_second),
        p50_ms: median_of(reports, |r| r.p50_ms),
        p90_ms: median_of(reports, |r| r.p90_ms),
        p99_ms: median_of(reports, |r| r.p99_ms),
        p999_ms: median_of(reports, |r| r.p999_ms),
        max_ms: median_of(reports, |r| r.max_ms),
    }
}

/// One path's rounds as one result: each figure the median of its rounds, except memory,
/// which is the largest seen (the target is a ceiling).
pub fn fold(rounds: Vec<RouteResult>) -> RouteResult {
    let saturation: Vec<&LoadReport> = rounds.iter().map(|r| &r.saturation).collect();
    let fixed_rate: Vec<&LoadReport> = rounds.iter().map(|r| &r.fixed_rate).collect();
    let max = |field: fn(&RouteResult) -> f64| rounds.iter().map(field).fold(0.0, f64::max);
    RouteResult {
        route: rounds.first().map(|r| r.route.clone()).unwrap_or_default(),
        saturation: median_report(&saturation),
        fixed_rate: median_report(&fixed_rate),
        proxy_cpu_ms_per_1000: median_of(&rounds, |r| r.proxy_cpu_ms_per_1000),
        proxy_user_cpu_ms_per_1000: median_of(&rounds, |r| r.proxy_user_cpu_ms_per_1000),
        proxy_cpu_ms_per_1000_saturated: median_of(&rounds, |r| r.proxy_cpu_ms_per_1000_saturated),
        proxy_peak_rss_mib: max(|r| r.proxy_peak_rss_mib),
        proxy_anon_rss_mib: max(|r| r.proxy_anon_rss_mib),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rps: f64, p99: f64, errors: u64) -> LoadReport {
        LoadReport {
            ok: rps as u64,
            errors,
            requests_per_second: rps,
            p50_ms: p99 / 2.0,
            p90_ms: p99,
            p99_ms: p99,
            p999_ms: p99,
            max_ms: p99,
        }
    }

    fn round(rps: f64, p99: f64, cpu: f64, rss: f64, errors: u64) -> RouteResult {
        RouteResult {
            route: "1 sidecar".into(),
            saturation: report(rps, p99, errors),
            fixed_rate: report(1000.0, p99, 0),
            proxy_cpu_ms_per_1000: cpu,
            proxy_user_cpu_ms_per_1000: cpu / 3.0,
            proxy_cpu_ms_per_1000_saturated: cpu / 3.0,
            proxy_peak_rss_mib: rss,
            proxy_anon_rss_mib: rss / 4.0,
        }
    }

    #[test]
    fn a_spike_in_one_round_does_not_move_the_median_but_memory_keeps_its_peak() {
        let folded = fold(vec![
            round(20_000.0, 0.6, 100.0, 7.0, 0),
            round(9_000.0, 9.5, 160.0, 7.4, 0),
            round(21_000.0, 0.7, 104.0, 6.8, 1),
        ]);
        assert_eq!(folded.saturation.requests_per_second, 20_000.0);
        assert_eq!(folded.fixed_rate.p99_ms, 0.7);
        assert_eq!(folded.proxy_cpu_ms_per_1000, 104.0);
        assert_eq!(folded.proxy_peak_rss_mib, 7.4);
        assert_eq!(folded.saturation.errors, 1);
        assert_eq!(fold(vec![round(5.0, 1.0, 1.0, 1.0, 0)]).saturation.requests_per_second, 5.0);
    }
}
