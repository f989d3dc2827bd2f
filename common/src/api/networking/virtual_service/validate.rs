//! Istio's rules for a `VirtualService`. Every finding names its field path and what would be
//! valid; fields the mesh does not act on yet are reported as unsupported, never ignored.

use std::collections::BTreeMap;

use super::actions::{fault_rules, redirect_rules, retry_rules, rewrite_rules};
use super::http::HttpMatchRequest;
use super::{
    Destination, HttpRoute, L4MatchAttributes, MESH_GATEWAY, TcpRoute, TlsMatchAttributes, TlsRoute, VirtualServiceSpec,
};
use crate::api::{Duration, HeaderOperations, Headers, StringMatch};
use crate::hosts;
use crate::validate::{Diagnostics, FieldPath, Validate, ValidationContext, rules};

pub(super) const ONE_MILLISECOND: Duration = Duration::from_millis(1);

impl Validate for VirtualServiceSpec {
    fn validate(&self, path: &FieldPath, context: &ValidationContext, diagnostics: &mut Diagnostics) {
        let check = Checker { spec: self, context, diagnostics };
        check.run(path);
    }
}

/// The state shared by the checks of one VirtualService.
struct Checker<'a> {
    spec: &'a VirtualServiceSpec,
    context: &'a ValidationContext,
    diagnostics: &'a mut Diagnostics,
}

impl Checker<'_> {
    fn run(mut self, path: &FieldPath) {
        self.hosts(&path.field("hosts"));
        for (index, gateway) in self.spec.gateways.iter().enumerate() {
            gateway_reference(gateway, &path.field("gateways").index(index), self.diagnostics);
        }
        if self.spec.http.is_empty() && self.spec.tls.is_empty() && self.spec.tcp.is_empty() {
            self.diagnostics.error(path, "a VirtualService needs routes; set at least one of http, tls or tcp");
        }
        for (index, route) in self.spec.http.iter().enumerate() {
            self.http_route(route, &path.field("http").index(index));
        }
        for (index, route) in self.spec.tls.iter().enumerate() {
            self.tls_route(route, &path.field("tls").index(index));
        }
        for (index, route) in self.spec.tcp.iter().enumerate() {
            self.tcp_route(route, &path.field("tcp").index(index));
        }
        rules::export_to(&self.spec.export_to, &path.field("exportTo"), self.diagnostics);
    }

    fn namespace(&self) -> &str {
        if self.context.namespace.is_empty() { "default" } else { &self.context.namespace }
    }

    fn fully_qualify(&self, host: &str) -> String {
        let domain = if self.context.domain.is_empty() { hosts::DEFAULT_DOMAIN } else { &self.context.domain };
        hosts::fully_qualify(host, self.namespace(), domain)
    }

    fn hosts(&mut self, path: &FieldPath) {
        if self.spec.hosts.is_empty() {
            self.diagnostics.error(
                path,
                "set at least one host: a service name such as reviews, a domain such as *.example.com, or * at a gateway",
            );
        }
        let mesh_bound = self.spec.effective_gateways().contains(&MESH_GATEWAY);
        for (index, host) in self.spec.hosts.iter().enumerate() {
            let path = path.index(index);
            if host == "*" {
                if mesh_bound {
                    self.diagnostics.error(
                        &path,
                        "the host * is only allowed for routes bound to gateways alone; list the gateways \
                         (without mesh) or name the hosts",
                    );
                }
            } else if host.parse::<std::net::IpAddr>().is_err() {
                rules::hostname(host, true, &path, self.diagnostics);
            }
        }
    }

    fn http_route(&mut self, route: &HttpRoute, path: &FieldPath) {
        for (index, condition) in route.r#match.iter().enumerate() {
            self.http_match(condition, &path.field("match").index(index));
        }
        self.one_action(route, path);
        let destinations: Vec<_> = route.route.iter().map(|item| (&item.destination, item.weight)).collect();
        self.weighted_destinations(&destinations, &path.field("route"));
        for (index, item) in route.route.iter().enumerate() {
            if let Some(headers) = &item.headers {
                header_operations(headers, &path.field("route").index(index).field("headers"), self.diagnostics);
            }
        }
        if let Some(redirect) = &route.redirect {
            redirect_rules(redirect, &path.field("redirect"), self.diagnostics);
        }
        if let Some(rewrite) = &route.rewrite {
            rewrite_rules(rewrite, &path.field("rewrite"), self.diagnostics);
        }
        if let Some(timeout) = route.timeout {
            rules::duration_at_least(timeout, ONE_MILLISECOND, &path.field("timeout"), self.diagnostics);
        }
        if let Some(retries) = &route.retries {
            retry_rules(retries, &path.field("retries"), self.diagnostics);
        }
        if let Some(fault) = &route.fault {
            fault_rules(fault, &path.field("fault"), self.diagnostics);
        }
        self.mirrors(route, path);
        if let Some(cors) = &route.cors_policy {
            self.diagnostics.unsupported(&path.field("corsPolicy"));
            for (index, origin) in cors.allow_origins.iter().enumerate() {
                rules::string_match(
                    origin,
                    &path.field("corsPolicy").field("allowOrigins").index(index),
                    self.diagnostics,
                );
            }
        }
        if let Some(headers) = &route.headers {
            header_operations(headers, &path.field("headers"), self.diagnostics);
        }
    }

    /// A route forwards, redirects, answers directly or delegates: exactly one of them.
    fn one_action(&mut self, route: &HttpRoute, path: &FieldPath) {
        let forwards = !route.route.is_empty();
        let redirects = route.redirect.is_some();
        let responds = route.direct_response.is_some();
        if !forwards && !redirects && !responds && route.delegate.is_none() {
            self.diagnostics
                .error(path, "an HTTP route needs an action; set route, redirect, directResponse or delegate");
        }
        if forwards && redirects {
            self.diagnostics
                .error(&path.field("redirect"), "a route cannot both forward and redirect; remove route or redirect");
        }
        if responds && (forwards || redirects) {
            self.diagnostics.error(
                &path.field("directResponse"),
                "directResponse cannot be combined with route or redirect; keep only one of them",
            );
        }
        if route.delegate.is_some() && (forwards || redirects || responds) {
            self.diagnostics.error(
                &path.field("delegate"),
                "delegate cannot be combined with route, redirect or directResponse; keep only one of them",
            );
        }
        if redirects && route.rewrite.is_some() {
            self.diagnostics
                .error(&path.field("rewrite"), "rewrite cannot be combined with redirect; remove one of them");
        }
        if let Some(response) = &route.direct_response {
            let path = path.field("directResponse");
            self.diagnostics.unsupported(&path);
            if !(200..=599).contains(&response.status) {
                self.diagnostics.error(
                    &path.field("status"),
                    format!("status {} is not an HTTP status; use 200 to 599", response.status),
                );
            }
            if let Some(body) = &response.body
                && body.string.is_some() == body.bytes.is_some()
            {
                self.diagnostics.error(&path.field("body"), "set exactly one of string or bytes");
            }
        }
        if let Some(delegate) = &route.delegate {
            self.diagnostics.unsupported(&path.field("delegate"));
            if delegate.name.is_empty() {
                self.diagnostics.error(&path.field("delegate").field("name"), "name the delegate VirtualService");
            }
        }
    }

    fn http_match(&mut self, condition: &HttpMatchRequest, path: &FieldPath) {
        let string_fields = [
            ("uri", &condition.uri),
            ("scheme", &condition.scheme),
            ("method", &condition.method),
            ("authority", &condition.authority),
        ];
        for (field, value) in string_fields {
            if let Some(value) = value {
                rules::string_match(value, &path.field(field), self.diagnostics);
            }
        }
        header_matches(&condition.headers, &path.field("headers"), self.diagnostics);
        header_matches(&condition.without_headers, &path.field("withoutHeaders"), self.diagnostics);
        for (name, value) in &condition.query_params {
            let path = path.field("queryParams").key(name);
            if name.is_empty() {
                self.diagnostics.error(&path, "a query parameter name must not be empty");
            }
            if value.prefix.is_some() {
                self.diagnostics.error(&path, "query parameters match by exact or regex only; prefix is not allowed");
            } else if value.kinds_set() > 0 {
                rules::string_match(value, &path, self.diagnostics);
            }
        }
        self.common_match(
            condition.port,
            &condition.source_labels,
            &condition.gateways,
            &condition.source_namespace,
            path,
        );
        if !condition.stat_prefix.is_empty() {
            self.diagnostics.unsupported(&path.field("statPrefix"));
        }
    }

    /// The match fields HTTP, TLS and TCP routes share.
    fn common_match(
        &mut self,
        port: Option<u32>,
        source_labels: &BTreeMap<String, String>,
        gateways: &[String],
        source_namespace: &str,
        path: &FieldPath,
    ) {
        if let Some(port) = port {
            rules::port(port, &path.field("port"), self.diagnostics);
        }
        rules::labels(source_labels, &path.field("sourceLabels"), self.diagnostics);
        for (index, gateway) in gateways.iter().enumerate() {
            gateway_reference(gateway, &path.field("gateways").index(index), self.diagnostics);
        }
        if !source_namespace.is_empty() {
            rules::dns_label(source_namespace, "namespace", &path.field("sourceNamespace"), self.diagnostics);
        }
    }

    fn mirrors(&mut self, route: &HttpRoute, path: &FieldPath) {
        if route.mirror.is_some() && !route.mirrors.is_empty() {
            self.diagnostics.error(&path.field("mirrors"), "set mirror or mirrors, not both");
        }
        if let Some(mirror) = &route.mirror {
            self.destination(mirror, &path.field("mirror"));
        } else if route.mirror_percentage.is_some()
            || route.mirror_percent.is_some()
            || route.mirror_percent_legacy.is_some()
        {
            self.diagnostics.warning(
                &path.field(if route.mirror_percentage.is_some() { "mirrorPercentage" } else { "mirrorPercent" }),
                "has no effect without mirror; set mirror, or use mirrors[].percentage",
            );
        }
        if let Some(percentage) = &route.mirror_percentage {
            rules::percent(percentage, &path.field("mirrorPercentage"), self.diagnostics);
        }
        if route.mirror_percent.is_some() && route.mirror_percent_legacy.is_some() {
            self.diagnostics.error(
                &path.field("mirror_percent"),
                "mirror_percent is the old spelling of mirrorPercent; set only mirrorPercentage",
            );
        }
        for (field, value) in [("mirrorPercent", route.mirror_percent), ("mirror_percent", route.mirror_percent_legacy)]
        {
            if let Some(percent) = value
                && percent > 100
            {
                self.diagnostics
                    .error(&path.field(field), format!("{percent} is not a percentage; use a number from 0 to 100"));
            }
        }
        for (index, mirror) in route.mirrors.iter().enumerate() {
            let path = path.field("mirrors").index(index);
            self.destination(&mirror.destination, &path.field("destination"));
            if let Some(percentage) = &mirror.percentage {
                rules::percent(percentage, &path.field("percentage"), self.diagnostics);
            }
        }
    }

    fn tls_route(&mut self, route: &TlsRoute, path: &FieldPath) {
        if route.r#match.is_empty() {
            self.diagnostics.error(&path.field("match"), "a TLS route needs at least one match with sniHosts");
        }
        for (index, condition) in route.r#match.iter().enumerate() {
            self.tls_match(condition, &path.field("match").index(index));
        }
        self.l4_destinations(
            &route.route.iter().map(|item| (&item.destination, item.weight)).collect::<Vec<_>>(),
            path,
        );
    }

    fn tls_match(&mut self, condition: &TlsMatchAttributes, path: &FieldPath) {
        if condition.sni_hosts.is_empty() {
            self.diagnostics.error(&path.field("sniHosts"), "list at least one SNI host, such as www.example.com");
        }
        let hosts: Vec<String> = self.spec.hosts.iter().map(|host| self.fully_qualify(host)).collect();
        for (index, sni) in condition.sni_hosts.iter().enumerate() {
            let path = path.field("sniHosts").index(index);
            if sni != "*" {
                rules::hostname(sni, true, &path, self.diagnostics);
            }
            let sni_fqdn = self.fully_qualify(sni);
            if !hosts.iter().any(|host| host == "*" || hosts::wildcard_matches(host, &sni_fqdn)) {
                self.diagnostics.error(
                    &path,
                    format!(
                        "SNI host {sni:?} is not one of the VirtualService's hosts ({}); use one of them or a name they cover",
                        self.spec.hosts.join(", ")
                    ),
                );
            }
        }
        rules::subnets(&condition.destination_subnets, &path.field("destinationSubnets"), self.diagnostics);
        self.common_match(
            condition.port,
            &condition.source_labels,
            &condition.gateways,
            &condition.source_namespace,
            path,
        );
    }

    fn tcp_route(&mut self, route: &TcpRoute, path: &FieldPath) {
        for (index, condition) in route.r#match.iter().enumerate() {
            self.l4_match(condition, &path.field("match").index(index));
        }
        self.l4_destinations(
            &route.route.iter().map(|item| (&item.destination, item.weight)).collect::<Vec<_>>(),
            path,
        );
    }

    fn l4_match(&mut self, condition: &L4MatchAttributes, path: &FieldPath) {
        rules::subnets(&condition.destination_subnets, &path.field("destinationSubnets"), self.diagnostics);
        if !condition.source_subnet.is_empty() {
            let source_path = path.field("sourceSubnet");
            self.diagnostics.unsupported(&source_path);
            rules::subnet(&condition.source_subnet, &source_path, self.diagnostics);
        }
        self.common_match(
            condition.port,
            &condition.source_labels,
            &condition.gateways,
            &condition.source_namespace,
            path,
        );
    }

    fn l4_destinations(&mut self, destinations: &[(&Destination, Option<i32>)], path: &FieldPath) {
        if destinations.is_empty() {
            self.diagnostics.error(&path.field("route"), "list at least one destination to send connections to");
        }
        self.weighted_destinations(destinations, &path.field("route"));
    }

    /// Each destination is valid, each weight is 0-100, and several weights sum to 100.
    fn weighted_destinations(&mut self, destinations: &[(&Destination, Option<i32>)], path: &FieldPath) {
        let mut total: i64 = 0;
        let mut all_in_range = true;
        for (index, (destination, weight)) in destinations.iter().enumerate() {
            let path = path.index(index);
            self.destination(destination, &path.field("destination"));
            let weight = weight.unwrap_or(0);
            if !(0..=100).contains(&weight) {
                self.diagnostics.error(&path.field("weight"), format!("weight {weight} is out of range; use 0 to 100"));
                all_in_range = false;
            }
            total += i64::from(weight);
        }
        // A weight out of range is reported on its own; the sum would only repeat it.
        if destinations.len() > 1 && all_in_range && total != 100 {
            self.diagnostics.error(
                path,
                format!(
                    "the weights of the {} destinations sum to {total}; when a route splits traffic its weights must sum to 100",
                    destinations.len()
                ),
            );
        }
    }

    fn destination(&mut self, destination: &Destination, path: &FieldPath) {
        if destination.host.is_empty() {
            self.diagnostics.error(
                &path.field("host"),
                "set the host to send to, such as reviews or reviews.default.svc.cluster.local",
            );
        } else {
            rules::hostname(&destination.host, false, &path.field("host"), self.diagnostics);
        }
        if !destination.subset.is_empty() {
            rules::dns_label(&destination.subset, "subset name", &path.field("subset"), self.diagnostics);
            let host = self.fully_qualify(&destination.host);
            if self.context.subset_defined(&host, &destination.subset) == Some(false) {
                self.diagnostics.warning(
                    &path.field("subset"),
                    format!(
                        "no DestinationRule defines subset {:?} for {host}; requests routed here fail until one does",
                        destination.subset
                    ),
                );
            }
        }
        if let Some(port) = destination.port {
            rules::port(port.number, &path.field("port").field("number"), self.diagnostics);
        }
    }
}

/// `mesh`, a Gateway name in this namespace, or `namespace/name`.
pub(crate) fn gateway_reference(value: &str, path: &FieldPath, diagnostics: &mut Diagnostics) {
    if value == MESH_GATEWAY {
        return;
    }
    let (namespace, name) = value.split_once('/').unwrap_or(("", value));
    let namespace_ok = !value.contains('/') || hosts::is_dns1123_label(namespace);
    if !namespace_ok || name.contains('/') || hosts::check_hostname(name, false).is_err() {
        diagnostics.error(
            path,
            format!("gateway {value:?} is not a valid reference; use mesh, a Gateway name such as bookinfo-gateway, or namespace/name"),
        );
    }
}

/// Whether `name` is a valid HTTP header name: letters, digits, `-` and `_`.
pub(crate) fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn header_name(name: &str, path: &FieldPath, diagnostics: &mut Diagnostics) -> bool {
    if name.starts_with(':') {
        diagnostics
            .error(path, format!("pseudo-header {name:?} cannot be used here; use the matching field or rewrite"));
        false
    } else if !is_header_name(name) {
        diagnostics.error(
            path,
            format!("{name:?} is not a valid header name; use letters, digits, '-' and '_' (for example x-request-id)"),
        );
        false
    } else {
        true
    }
}

fn header_matches(matches: &BTreeMap<String, StringMatch>, path: &FieldPath, diagnostics: &mut Diagnostics) {
    for (name, value) in matches {
        let path = path.key(name);
        if name.starts_with("@request.auth.claims") {
            // Routing on JWT claims needs request authentication at the gateway first.
            diagnostics.unsupported(&path);
            continue;
        }
        // An empty match only asks for the header to be present.
        if header_name(name, &path, diagnostics) && value.kinds_set() > 0 {
            rules::string_match(value, &path, diagnostics);
        }
    }
}

/// Header operations name real headers, never pseudo-headers.
pub(crate) fn header_operations(headers: &Headers, path: &FieldPath, diagnostics: &mut Diagnostics) {
    let sides = [("request", &headers.request), ("response", &headers.response)];
    for (side, operations) in sides {
        let Some(HeaderOperations { set, add, remove }) = operations else { continue };
        let path = path.field(side);
        for name in set.keys() {
            header_name(name, &path.field("set").key(name), diagnostics);
        }
        for name in add.keys() {
            header_name(name, &path.field("add").key(name), diagnostics);
        }
        for (index, name) in remove.iter().enumerate() {
            header_name(name, &path.field("remove").index(index), diagnostics);
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
