//! The controller's Prometheus metrics, served on 15014 `/metrics`.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Every metric the controller keeps, registered in one registry.
pub struct Metrics {
    registry: Registry,
    /// Proxies with an open config stream.
    pub connected_proxies: IntGauge,
    /// Updates sent, by `type` (`full`, `resume`, `incremental`).
    pub pushes: IntCounterVec,
    /// Seconds from the controller seeing a change to a proxy ACKing the update carrying it.
    pub push_latency: Histogram,
    /// Updates proxies rejected.
    pub nacks: IntCounter,
    /// Streams whose queue overflowed and that were resynced with a full snapshot.
    pub resyncs: IntCounter,
    /// Resources the controller holds, by `kind` (Istio kinds, `Service`, `Endpoints`).
    pub resources: IntGaugeVec,
    /// Resources failing validation, by `kind`: not sent to any proxy.
    pub invalid_resources: IntGaugeVec,
    /// Admission requests refused because validation failed, by `kind`.
    pub admission_rejections: IntCounterVec,
    /// Config generations published (each one debounced batch of changes).
    pub generations: IntCounter,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let latency_buckets = vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let metrics = Metrics {
            connected_proxies: IntGauge::new("mesh_controller_connected_proxies", "Proxies with an open config stream")
                .expect("valid metric"),
            pushes: IntCounterVec::new(
                Opts::new("mesh_controller_pushes_total", "Config updates sent to proxies, by type"),
                &["type"],
            )
            .expect("valid metric"),
            push_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "mesh_controller_push_latency_seconds",
                    "Time from a change seen by the controller to the proxy's ACK of the update carrying it",
                )
                .buckets(latency_buckets),
            )
            .expect("valid metric"),
            nacks: IntCounter::new("mesh_controller_nacks_total", "Config updates rejected by proxies")
                .expect("valid metric"),
            resyncs: IntCounter::new(
                "mesh_controller_stream_resyncs_total",
                "Streams resynced with a full snapshot after their queue overflowed",
            )
            .expect("valid metric"),
            resources: IntGaugeVec::new(
                Opts::new("mesh_controller_resources", "Resources held by the controller, by kind"),
                &["kind"],
            )
            .expect("valid metric"),
            invalid_resources: IntGaugeVec::new(
                Opts::new("mesh_controller_invalid_resources", "Resources failing validation (not sent), by kind"),
                &["kind"],
            )
            .expect("valid metric"),
            admission_rejections: IntCounterVec::new(
                Opts::new(
                    "mesh_controller_validation_errors_total",
                    "Admission requests refused by validation, by kind",
                ),
                &["kind"],
            )
            .expect("valid metric"),
            generations: IntCounter::new("mesh_controller_config_generations_total", "Config generations published")
                .expect("valid metric"),
            registry,
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 9] = [
            Box::new(metrics.connected_proxies.clone()),
            Box::new(metrics.pushes.clone()),
            Box::new(metrics.push_latency.clone()),
            Box::new(metrics.nacks.clone()),
            Box::new(metrics.resyncs.clone()),
            Box::new(metrics.resources.clone()),
            Box::new(metrics.invalid_resources.clone()),
            Box::new(metrics.admission_rejections.clone()),
            Box::new(metrics.generations.clone()),
        ];
        for collector in collectors {
            metrics.registry.register(collector).expect("metric names are unique");
        }
        metrics
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buffer).expect("text encoding cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
