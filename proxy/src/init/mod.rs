//! `mesh-proxy init`: the capture rules that send a pod's TCP traffic through the sidecar.
//!
//! This is the effect of Istio's `istio-iptables` step, written as three pieces that can be read
//! and tested alone: [`Options`] (what the pod asked for, from flags and its annotations),
//! [`rules::build`] (a pure function from options to the nat-table rules) and [`apply`] (which
//! backend, legacy or nf_tables, and how to install the rules idempotently).

pub mod annotations;
pub mod apply;
pub mod rules;

#[cfg(test)]
mod tests;

use ipnet::IpNet;
use std::collections::BTreeMap;

/// Which destinations a rule set applies to: everything, nothing, or a list.
///
/// Istio's annotations use `*` for "all" and an empty string for "none"; keeping the three cases
/// apart (rather than an empty list meaning "all") is what makes `includeOutboundIPRanges: ""`
/// turn outbound capture off, as in Istio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection<T> {
    All,
    Only(Vec<T>),
}

impl<T> Selection<T> {
    fn none() -> Self {
        Selection::Only(Vec::new())
    }
}

/// What the capture rules do, in the terms of Istio's `istio-iptables` flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The proxy's UID. Its traffic is never redirected, which is what stops the proxy's own
    /// upstream connections from looping back into itself.
    pub proxy_uid: u32,
    /// The proxy's GID, exempted like the UID (Istio does both, so a proxy started with a
    /// different UID but the same group is still exempt).
    pub proxy_gid: u32,
    /// Where outbound TCP is redirected (the proxy's outbound listener).
    pub outbound_port: u16,
    /// Where inbound TCP is redirected (the proxy's inbound listener).
    pub inbound_port: u16,
    /// Outbound destinations that are captured; `All` is Istio's default `*`.
    pub include_outbound_cidrs: Selection<IpNet>,
    /// Outbound destinations never captured, checked before the include list.
    pub exclude_outbound_cidrs: Vec<IpNet>,
    /// Outbound destination ports never captured (e.g. a database the app reaches directly).
    pub exclude_outbound_ports: Vec<u16>,
    /// Inbound ports captured; `All` (the default `*`) captures every port not excluded.
    pub include_inbound_ports: Selection<u16>,
    /// Inbound ports never captured. The proxy's own health and metrics ports are always added
    /// (see [`Options::ALWAYS_EXCLUDED_INBOUND`]) so the kubelet's probes reach them directly.
    pub exclude_inbound_ports: Vec<u16>,
}

/// Annotation names, as Istio spells them.
pub mod keys {
    pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
    pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
    pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
    pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
    pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
}

impl Default for Options {
    fn default() -> Self {
        Options {
            proxy_uid: 1337,
            proxy_gid: 1337,
            outbound_port: 15001,
            inbound_port: 15006,
            include_outbound_cidrs: Selection::All,
            exclude_outbound_cidrs: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            include_inbound_ports: Selection::All,
            exclude_inbound_ports: Vec::new(),
        }
    }
}

/// The raw, unparsed form of the five traffic settings, from flags or annotations.
///
/// `None` means "not given here": a flag that is absent falls back to the annotation, and an
/// annotation that is absent falls back to Istio's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrafficSettings {
    pub include_outbound_ip_ranges: Option<String>,
    pub exclude_outbound_ip_ranges: Option<String>,
    pub exclude_outbound_ports: Option<String>,
    pub include_inbound_ports: Option<String>,
    pub exclude_inbound_ports: Option<String>,
}

impl TrafficSettings {
    /// Reads the five settings from a pod's annotations.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Self {
        let get = |k: &str| annotations.get(k).cloned();
        TrafficSettings {
            include_outbound_ip_ranges: get(keys::INCLUDE_OUTBOUND_IP_RANGES),
            exclude_outbound_ip_ranges: get(keys::EXCLUDE_OUTBOUND_IP_RANGES),
            exclude_outbound_ports: get(keys::EXCLUDE_OUTBOUND_PORTS),
            include_inbound_ports: get(keys::INCLUDE_INBOUND_PORTS),
            exclude_inbound_ports: get(keys::EXCLUDE_INBOUND_PORTS),
        }
    }

    /// Settings given here win; the rest come from `fallback`.
    pub fn or(self, fallback: TrafficSettings) -> Self {
        TrafficSettings {
            include_outbound_ip_ranges: self.include_outbound_ip_ranges.or(fallback.include_outbound_ip_ranges),
            exclude_outbound_ip_ranges: self.exclude_outbound_ip_ranges.or(fallback.exclude_outbound_ip_ranges),
            exclude_outbound_ports: self.exclude_outbound_ports.or(fallback.exclude_outbound_ports),
            include_inbound_ports: self.include_inbound_ports.or(fallback.include_inbound_ports),
            exclude_inbound_ports: self.exclude_inbound_ports.or(fallback.exclude_inbound_ports),
        }
    }
}

/// A setting that could not be understood; names the setting and the bad item.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionsError {
    #[error("{setting}: `{item}` is not an IP range (expected CIDR like 10.0.0.0/8 or an address, or `*`)")]
    BadCidr { setting: &'static str, item: String },
    #[error("{setting}: `{item}` is not a port number (expected 1-65535, a comma-separated list, or `*`)")]
    BadPort { setting: &'static str, item: String },
}

impl Options {
    /// Ports of the proxy itself that are never captured inbound: merged metrics (15020),
    /// readiness (15021) and proxy metrics (15090). Istio's injector adds the same ones.
    pub const ALWAYS_EXCLUDED_INBOUND: [u16; 3] = [15020, 15021, 15090];

    /// Builds the options from the five traffic settings, with Istio's defaults for any
    /// setting not given.
    pub fn with_settings(mut self, s: &TrafficSettings) -> Result<Self, OptionsError> {
        if let Some(v) = &s.include_outbound_ip_ranges {
            self.include_outbound_cidrs = parse_selection(v, "includeOutboundIPRanges", parse_cidr)?;
        }
        if let Some(v) = &s.exclude_outbound_ip_ranges {
            self.exclude_outbound_cidrs = parse_list(v, "excludeOutboundIPRanges", parse_cidr)?;
        }
        if let Some(v) = &s.exclude_outbound_ports {
            self.exclude_outbound_ports = parse_list(v, "excludeOutboundPorts", parse_port)?;
        }
        if let Some(v) = &s.include_inbound_ports {
            self.include_inbound_ports = parse_selection(v, "includeInboundPorts", parse_port)?;
        }
        if let Some(v) = &s.exclude_inbound_ports {
            self.exclude_inbound_ports = parse_list(v, "excludeInboundPorts", parse_port)?;
        }
        Ok(self)
    }
}

fn parse_selection<T>(
    raw: &str,
    setting: &'static str,
    item: fn(&str, &'static str) -> Result<T, OptionsError>,
) -> Result<Selection<T>, OptionsError> {
    if raw.split(',').any(|s| s.trim() == "*") {
        return Ok(Selection::All);
    }
    let list = parse_list(raw, setting, item)?;
    Ok(if list.is_empty() { Selection::none() } else { Selection::Only(list) })
}

fn parse_list<T>(
    raw: &str,
    setting: &'static str,
    item: fn(&str, &'static str) -> Result<T, OptionsError>,
) -> Result<Vec<T>, OptionsError> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| item(s, setting)).collect()
}

fn parse_cidr(s: &str, setting: &'static str) -> Result<IpNet, OptionsError> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| OptionsError::BadCidr { setting, item: s.to_string() })
}

fn parse_port(s: &str, setting: &'static str) -> Result<u16, OptionsError> {
    match s.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(OptionsError::BadPort { setting, item: s.to_string() }),
    }
}

/// Anything that stops `mesh-proxy init`.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("reading annotations from {path}: {source}")]
    ReadAnnotations { path: String, source: std::io::Error },
    #[error("annotations file {path}: {source}")]
    Annotations { path: String, source: annotations::AnnotationsError },
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error(transparent)]
    Apply(#[from] apply::ApplyError),
}

/// Reads the traffic settings from a downward-API annotations file.
pub fn settings_from_file(path: &std::path::Path) -> Result<TrafficSettings, InitError> {
    let shown = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|source| InitError::ReadAnnotations { path: shown.clone(), source })?;
    let map = annotations::parse(&text).map_err(|source| InitError::Annotations { path: shown, source })?;
    Ok(TrafficSettings::from_annotations(&map))
}

/// Builds the rules for `opts` and either prints them (`dry_run`) or installs them.
pub fn run(opts: &Options, dry_run: bool, out: &mut dyn std::io::Write) -> Result<(), InitError> {
    let rules = rules::build(opts);
    if dry_run {
        for line in rules.to_commands() {
            // A closed stdout is not worth failing a dry run over.
            let _ = writeln!(out, "{line}");
        }
        return Ok(());
    }
    let backend = apply::detect()?;
    tracing::info!(backend = backend.kind, rules = rules.rules.len(), "installing capture rules");
    apply::install(&backend, &rules)?;
    tracing::info!(backend = backend.kind, "capture rules installed");
    Ok(())
}
