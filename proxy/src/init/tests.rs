use super::rules::{RuleSet, build};
use super::*;

fn specs(rules: &RuleSet) -> Vec<String> {
    rules.rules.iter().map(|r| r.to_spec()).collect()
}

fn with(settings: TrafficSettings) -> Vec<String> {
    specs(&build(&Options::default().with_settings(&settings).unwrap()))
}

fn has(specs: &[String], rule: &str) -> bool {
    specs.iter().any(|s| s == rule)
}

fn position(specs: &[String], rule: &str) -> usize {
    specs.iter().position(|s| s == rule).unwrap_or_else(|| panic!("missing rule {rule}\n{specs:#?}"))
}

#[test]
fn defaults_capture_all_tcp_except_proxy_uid_and_localhost() {
    let s = with(TrafficSettings::default());
    assert!(has(&s, "-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001"));
    assert!(has(&s, "-A MESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006"));
    assert!(has(&s, "-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT"));
    let uid = position(&s, "-A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN");
    let lo = position(&s, "-A MESH_OUTPUT -d 127.0.0.1/32 -j RETURN");
    let catch_all = position(&s, "-A MESH_OUTPUT -j MESH_REDIRECT");
    assert!(uid < catch_all && lo < catch_all, "exemptions must come before the catch-all");
    assert_eq!(catch_all, s.len() - 1);
}

#[test]
fn loopback_is_handled_like_istio() {
    let s = with(TrafficSettings::default());
    let passthrough = position(&s, "-A MESH_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN");
    let own_ip = position(&s, "-A MESH_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --uid-owner 1337 -j MESH_IN_REDIRECT");
    let app_lo = position(&s, "-A MESH_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN");
    let uid = position(&s, "-A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN");
    assert!(passthrough < own_ip && own_ip < app_lo && app_lo < uid);
}

#[test]
fn proxy_status_ports_are_never_captured_inbound() {
    let s = with(TrafficSettings::default());
    for port in [15020, 15021, 15090] {
        let ret = position(&s, &format!("-A MESH_INBOUND -p tcp --dport {port} -j RETURN"));
        assert!(ret < position(&s, "-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT"));
    }
}

#[test]
fn include_outbound_ip_ranges_limits_capture_to_those_ranges() {
    let s = with(TrafficSettings {
        include_outbound_ip_ranges: Some("10.96.0.0/12, 192.168.1.7".into()),
        ..Default::default()
    });
    assert!(has(&s, "-A MESH_OUTPUT -d 10.96.0.0/12 -j MESH_REDIRECT"));
    assert!(has(&s, "-A MESH_OUTPUT -d 192.168.1.7/32 -j MESH_REDIRECT"));
    assert!(!has(&s, "-A MESH_OUTPUT -j MESH_REDIRECT"));
}

#[test]
fn empty_include_outbound_ip_ranges_turns_outbound_capture_off() {
    let s = with(TrafficSettings { include_outbound_ip_ranges: Some(String::new()), ..Default::default() });
    assert!(!s.iter().any(|r| r.starts_with("-A MESH_OUTPUT") && r.ends_with("-j MESH_REDIRECT")));
}

#[test]
fn star_include_outbound_ip_ranges_captures_everything() {
    let s = with(TrafficSettings { include_outbound_ip_ranges: Some("*".into()), ..Default::default() });
    assert!(has(&s, "-A MESH_OUTPUT -j MESH_REDIRECT"));
}

#[test]
fn exclude_outbound_ip_ranges_return_before_redirect() {
    let s = with(TrafficSettings {
        exclude_outbound_ip_ranges: Some("169.254.169.254/32,10.0.1.9/24".into()),
        ..Default::default()
    });
    let meta = position(&s, "-A MESH_OUTPUT -d 169.254.169.254/32 -j RETURN");
    // Host bits are dropped, as iptables itself would.
    let net = position(&s, "-A MESH_OUTPUT -d 10.0.1.0/24 -j RETURN");
    let catch_all = position(&s, "-A MESH_OUTPUT -j MESH_REDIRECT");
    assert!(meta < catch_all && net < catch_all);
}

#[test]
fn exclude_outbound_ports_return_before_redirect() {
    let s = with(TrafficSettings { exclude_outbound_ports: Some("5432, 6379".into()), ..Default::default() });
    let pg = position(&s, "-A MESH_OUTPUT -p tcp --dport 5432 -j RETURN");
    let redis = position(&s, "-A MESH_OUTPUT -p tcp --dport 6379 -j RETURN");
    let catch_all = position(&s, "-A MESH_OUTPUT -j MESH_REDIRECT");
    assert!(pg < catch_all && redis < catch_all);
}

#[test]
fn include_inbound_ports_captures_only_those_ports() {
    let s = with(TrafficSettings { include_inbound_ports: Some("8080,9080".into()), ..Default::default() });
    assert!(has(&s, "-A MESH_INBOUND -p tcp --dport 8080 -j MESH_IN_REDIRECT"));
    assert!(has(&s, "-A MESH_INBOUND -p tcp --dport 9080 -j MESH_IN_REDIRECT"));
    assert!(!has(&s, "-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT"));
}

#[test]
fn empty_include_inbound_ports_turns_inbound_capture_off() {
    let s = with(TrafficSettings { include_inbound_ports: Some(String::new()), ..Default::default() });
    assert!(!s.iter().any(|r| r.starts_with("-A MESH_INBOUND") && r.ends_with("MESH_IN_REDIRECT")));
}

#[test]
fn exclude_inbound_ports_return_before_capture() {
    let s = with(TrafficSettings { exclude_inbound_ports: Some("22,8443".into()), ..Default::default() });
    let ssh = position(&s, "-A MESH_INBOUND -p tcp --dport 22 -j RETURN");
    let tls = position(&s, "-A MESH_INBOUND -p tcp --dport 8443 -j RETURN");
    let capture = position(&s, "-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT");
    assert!(ssh < capture && tls < capture);
}

#[test]
fn excluded_inbound_port_wins_over_included() {
    let s = with(TrafficSettings {
        include_inbound_ports: Some("8080,9090".into()),
        exclude_inbound_ports: Some("9090".into()),
        ..Default::default()
    });
    assert!(has(&s, "-A MESH_INBOUND -p tcp --dport 8080 -j MESH_IN_REDIRECT"));
    assert!(!has(&s, "-A MESH_INBOUND -p tcp --dport 9090 -j MESH_IN_REDIRECT"));
}

#[test]
fn custom_uid_and_ports_are_used() {
    let opts =
        Options { proxy_uid: 2000, proxy_gid: 2001, outbound_port: 7001, inbound_port: 7006, ..Default::default() };
    let s = specs(&build(&opts));
    assert!(has(&s, "-A MESH_OUTPUT -m owner --uid-owner 2000 -j RETURN"));
    assert!(has(&s, "-A MESH_OUTPUT -m owner --gid-owner 2001 -j RETURN"));
    assert!(has(&s, "-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 7001"));
    assert!(has(&s, "-A MESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 7006"));
}

#[test]
fn ipv6_ranges_are_left_out_of_the_ipv4_rules() {
    let s =
        with(TrafficSettings { exclude_outbound_ip_ranges: Some("fd00::/8,10.0.0.0/8".into()), ..Default::default() });
    assert!(has(&s, "-A MESH_OUTPUT -d 10.0.0.0/8 -j RETURN"));
    assert!(!s.iter().any(|r| r.contains("fd00")));
}

#[test]
fn bad_values_name_the_setting() {
    let err = Options::default()
        .with_settings(&TrafficSettings { exclude_outbound_ports: Some("80,http".into()), ..Default::default() })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "excludeOutboundPorts: `http` is not a port number (expected 1-65535, a comma-separated list, or `*`)"
    );
    let err = Options::default()
        .with_settings(&TrafficSettings {
            include_outbound_ip_ranges: Some("10.0.0.0/33".into()),
            ..Default::default()
        })
        .unwrap_err();
    assert!(err.to_string().starts_with("includeOutboundIPRanges: `10.0.0.0/33`"));
}

#[test]
fn restore_input_declares_chains_then_rules_then_missing_hooks() {
    let rules = build(&Options::default());
    let text = rules.to_restore(&rules.hooks);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "*nat");
    assert_eq!(
        &lines[1..5],
        [":MESH_INBOUND - [0:0]", ":MESH_REDIRECT - [0:0]", ":MESH_IN_REDIRECT - [0:0]", ":MESH_OUTPUT - [0:0]"]
    );
    assert!(lines.contains(&"-A PREROUTING -p tcp -j MESH_INBOUND"));
    assert!(lines.contains(&"-A OUTPUT -p tcp -j MESH_OUTPUT"));
    assert_eq!(*lines.last().unwrap(), "COMMIT");
    // Hooks already present are not repeated: that is what makes a re-run idempotent.
    assert!(!rules.to_restore(&[]).contains("PREROUTING"));
}

#[test]
fn dry_run_prints_iptables_commands() {
    let mut out = Vec::new();
    run(&Options::default(), true, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("iptables -t nat -N MESH_INBOUND\n"));
    assert!(text.contains("iptables -t nat -A OUTPUT -p tcp -j MESH_OUTPUT\n"));
}

#[test]
fn annotations_file_is_read_in_downward_api_format() {
    let text = "app=\"reviews\"\n\
                traffic.sidecar.istio.io/excludeOutboundPorts=\"5432,6379\"\n\
                traffic.sidecar.istio.io/includeInboundPorts=\"*\"\n\
                kubectl.kubernetes.io/last-applied-configuration=\"{\\\"a\\\":\\\"b\\\\n\\\"}\"\n\n";
    let map = annotations::parse(text).unwrap();
    assert_eq!(map["app"], "reviews");
    assert_eq!(map["kubectl.kubernetes.io/last-applied-configuration"], "{\"a\":\"b\\n\"}");
    let settings = TrafficSettings::from_annotations(&map);
    assert_eq!(settings.exclude_outbound_ports.as_deref(), Some("5432,6379"));
    assert_eq!(settings.include_inbound_ports.as_deref(), Some("*"));
    assert_eq!(settings.include_outbound_ip_ranges, None);
}

#[test]
fn malformed_annotation_line_names_the_line() {
    let err = annotations::parse("a=\"1\"\nnot an annotation\n").unwrap_err();
    assert_eq!(err.to_string(), "line 2: expected key=\"value\", found `not an annotation`");
}

#[test]
fn flags_win_over_annotations() {
    let flags = TrafficSettings { exclude_outbound_ports: Some("1".into()), ..Default::default() };
    let annotations = TrafficSettings {
        exclude_outbound_ports: Some("2".into()),
        exclude_inbound_ports: Some("3".into()),
        ..Default::default()
    };
    let merged = flags.or(annotations);
    assert_eq!(merged.exclude_outbound_ports.as_deref(), Some("1"));
    assert_eq!(merged.exclude_inbound_ports.as_deref(), Some("3"));
}

#[test]
fn permission_errors_are_recognised() {
    assert!(apply::is_permission_error(
        "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)"
    ));
    assert!(apply::is_permission_error("iptables-restore: line 2 failed: Operation not permitted"));
    assert!(!apply::is_permission_error("iptables: Bad rule (does a matching rule exist in that chain?)."));
}

#[test]
fn backend_follows_iptables_version() {
    assert_eq!(apply::backend_from_version("iptables v1.8.9 (nf_tables)", true, true).kind, "nft");
    assert_eq!(apply::backend_from_version("iptables v1.8.9 (legacy)", true, true).kind, "legacy");
    assert_eq!(apply::backend_from_version("iptables v1.6.1", false, false).kind, "default");
}
