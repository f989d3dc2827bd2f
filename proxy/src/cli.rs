//! The command line: `mesh-proxy [run]` and `mesh-proxy init`.
//!
//! Every `run` flag also reads an environment variable, so the injector can set them either way.

use crate::config::ConfigSource;
use crate::config::identity::IdentitySettings;
use crate::init::{Options, Selection, TrafficSettings};
use crate::listener::OriginalDst;
use crate::logging::LogFormat;
use crate::probes::ProbeSource;
use crate::proxy::ProxyConfig;
use clap::{Args, Parser, Subcommand};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The mesh's sidecar and gateway proxy.
#[derive(Debug, Parser)]
#[command(name = "mesh-proxy", version, about)]
pub struct Cli {
    /// Log line format.
    #[arg(long, global = true, env = "MESH_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default when no subcommand is given).
    Run(Box<RunArgs>),
    /// Install the traffic capture rules in this network namespace (the pod's init step).
    Init(InitArgs),
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Port of the outbound capture listener.
    #[arg(long, env = "MESH_OUTBOUND_PORT", default_value_t = 15001)]
    pub outbound_port: u16,
    /// Port of the inbound capture listener.
    #[arg(long, env = "MESH_INBOUND_PORT", default_value_t = 15006)]
    pub inbound_port: u16,
    /// Port of the admin server (always on 127.0.0.1).
    #[arg(long, env = "MESH_ADMIN_PORT", default_value_t = 15000)]
    pub admin_port: u16,
    /// Port of the readiness endpoint (/healthz/ready, on all addresses).
    #[arg(long, env = "MESH_READINESS_PORT", default_value_t = 15021)]
    pub readiness_port: u16,
    /// Worker threads; 0 means one per CPU. Like Envoy's --concurrency, 2 suits most sidecars.
    #[arg(long, env = "MESH_CONCURRENCY", default_value_t = 2)]
    pub concurrency: usize,
    /// After SIGTERM or /quitquitquit, in-flight work gets this long (e.g. 5s, 500ms).
    #[arg(long, env = "MESH_DRAIN_PERIOD", default_value = "5s", value_parser = parse_duration)]
    pub drain_period: Duration,
    /// Treat every captured connection as if its original destination were this address
    /// (routed like one, passed through to it when unknown). For benchmarks and trying the
    /// proxy without capture rules.
    #[arg(long, env = "MESH_FIXED_UPSTREAM", value_name = "ADDR")]
    pub fixed_upstream: Option<SocketAddr>,
    /// Without --config-file: parse every connection as HTTP (HTTP/1.1 or HTTP/2) instead of
    /// passing TCP through, as there is no Service port name to take the protocol from.
    #[arg(long, env = "MESH_HTTP_ON_ALL_PORTS")]
    pub http_on_all_ports: bool,
    /// Route by a multi-document YAML of Kubernetes objects (Service, Endpoints or
    /// EndpointSlice, Pod) and Istio resources, compiled for this proxy. Reloaded on SIGHUP and
    /// when the file changes; a file that cannot be used is refused and the old config stays.
    #[arg(long, env = "MESH_CONFIG_FILE", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// How often the config file is checked for changes.
    #[arg(long, env = "MESH_CONFIG_POLL", default_value = "1s", value_parser = parse_duration)]
    pub config_poll: Duration,
    /// The app's original probes as JSON (the value of the `sidecar.istio.io/appProbers`
    /// annotation), answered on the readiness port under `/app-health/`. Without it they are
    /// read from `annotations` in --pod-info-dir at each probe.
    #[arg(long, env = "MESH_APP_PROBERS", value_name = "JSON")]
    pub app_probers: Option<String>,
    /// The controller's config stream: `https://host:15012` (TLS, trusting the root in
    /// $MESH_CA_ROOT_CERT) or `host:15010` (plaintext gRPC); used when there is
    /// no --config-file. The last good config keeps serving while it is unreachable.
    #[arg(long, env = "MESH_CONTROLLER_ADDRESS", value_name = "ADDR")]
    pub controller: Option<String>,
    /// A directory with the workload certificate for mutual TLS with peer sidecars, in the
    /// layout Istio mounts at /etc/certs: cert-chain.pem, key.pem, root-cert.pem. Re-read when
    /// the files change. Without it the proxy speaks plaintext to every peer.
    #[arg(long, env = "MESH_TLS_DIR", value_name = "DIR", conflicts_with = "ca_address")]
    pub tls_dir: Option<PathBuf>,
    /// Get the workload certificate from the mesh CA at this address
    /// (`https://mesh-controller.istio-system.svc:15012`, trusting the root in
    /// $MESH_CA_ROOT_CERT), proving the pod's identity with --ca-token-file; renewed before it
    /// expires. Until the first one arrives, a peer's mutual TLS is refused (its sidecar
    /// retries) and the proxy dials its peers in plaintext.
    #[arg(long, env = "MESH_CA_ADDRESS", value_name = "URL")]
    pub ca_address: Option<String>,
    /// The pod's projected service-account token for the CA (audience `istio-ca`), where the
    /// injector mounts it.
    #[arg(long, env = "MESH_TOKEN_FILE", default_value = "/var/run/secrets/tokens/mesh-token")]
    pub ca_token_file: PathBuf,
    #[command(flatten)]
    pub identity: IdentityArgs,
}

/// Who this proxy is, with the environment variables Istio's injector sets.
#[derive(Debug, Args, Clone)]
pub struct IdentityArgs {
    /// The pod's name.
    #[arg(long, env = "POD_NAME", default_value = "")]
    pub pod_name: String,
    /// The pod's namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub pod_namespace: String,
    /// The pod's service account (else the Pod object's, else `default`).
    #[arg(long, env = "SERVICE_ACCOUNT")]
    pub service_account: Option<String>,
    /// The pod's labels, `app=reviews,version=v1` (else the Pod object's in the config).
    #[arg(long, env = "POD_LABELS", default_value = "", value_parser = parse_labels)]
    pub pod_labels: BTreeMap<String, String>,
    /// A downward-API file of the pod's labels (`key="value"` lines).
    #[arg(long, env = "POD_LABELS_FILE", value_name = "FILE")]
    pub pod_labels_file: Option<PathBuf>,
    /// The pod's labels as a JSON object, as the injector passes them at creation; the labels
    /// file (live) and --pod-labels win over them.
    #[arg(long, env = "ISTIO_METAJSON_LABELS", value_name = "JSON", value_parser = parse_json_labels)]
    pub pod_labels_json: Option<BTreeMap<String, String>>,
    /// The pod's IPs, comma-separated (else the Pod object's in the config).
    #[arg(long, env = "INSTANCE_IPS", default_value = "", value_parser = parse_ips)]
    pub instance_ips: IpList,
    /// The pod's IP (`status.podIP` from the downward API); used when --instance-ips is empty.
    #[arg(long, env = "INSTANCE_IP", value_name = "IP")]
    pub instance_ip: Option<IpAddr>,
    /// The cluster's DNS suffix.
    #[arg(long, env = "MESH_DNS_DOMAIN", default_value = "cluster.local")]
    pub dns_domain: String,
    /// The injector's downward-API directory: `labels` and `annotations` of the pod.
    #[arg(long, env = "MESH_POD_INFO_DIR", value_name = "DIR")]
    pub pod_info_dir: Option<PathBuf>,
}

/// IP addresses from one flag (a newtype, so clap takes the whole list as one value).
#[derive(Debug, Clone, Default)]
pub struct IpList(pub Vec<IpAddr>);

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    crate::config::identity::parse_labels(s).map_err(|e| e.to_string())
}

fn parse_json_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    serde_json::from_str(s).map_err(|e| format!("expected a JSON object of label strings: {e}"))
}

fn parse_ips(s: &str) -> Result<IpList, String> {
    crate::config::identity::parse_ips(s).map(IpList).map_err(|e| e.to_string())
}

impl RunArgs {
    /// Where routing config comes from, if anywhere.
    pub fn config_source(&self) -> Option<ConfigSource> {
        let path = self.config_file.clone()?;
        Some(ConfigSource { path, domain: self.identity.dns_domain.clone(), identity: self.identity_settings() })
    }

    /// Who this proxy is: the flags, else what the injector sets (the downward-API env vars and
    /// the `labels` file in --pod-info-dir).
    pub fn identity_settings(&self) -> IdentitySettings {
        let id = &self.identity;
        let mut labels = id.pod_labels_json.clone().unwrap_or_default();
        labels.extend(id.pod_labels.clone());
        let from_dir = id.pod_info_dir.as_ref().map(|dir| dir.join("labels")).filter(|file| file.exists());
        let labels_file = id.pod_labels_file.clone().or(from_dir);
        let ips = match (&id.instance_ips.0[..], id.instance_ip) {
            ([], Some(ip)) => vec![ip],
            (ips, _) => ips.to_vec(),
        };
        IdentitySettings {
            pod_name: id.pod_name.clone(),
            namespace: id.pod_namespace.clone(),
            service_account: id.service_account.clone(),
            labels,
            labels_file,
            ips,
        }
    }

    /// Where the app's original probes are read from, if anywhere.
    pub fn app_probes(&self) -> Option<ProbeSource> {
        match (&self.app_probers, &self.identity.pod_info_dir) {
            (Some(json), _) => Some(ProbeSource::Fixed(json.clone())),
            (None, Some(dir)) => Some(ProbeSource::AnnotationsFile(dir.join("annotations"))),
            (None, None) => None,
        }
    }

    pub fn config(&self) -> ProxyConfig {
        let any = IpAddr::from([0, 0, 0, 0]);
        let concurrency = match self.concurrency {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        ProxyConfig {
            outbound: SocketAddr::new(any, self.outbound_port),
            inbound: SocketAddr::new(any, self.inbound_port),
            admin: SocketAddr::new(IpAddr::from([127, 0, 0, 1]), self.admin_port),
            readiness: SocketAddr::new(any, self.readiness_port),
            drain_period: self.drain_period,
            concurrency,
            original_dst: self.fixed_upstream.map_or(OriginalDst::Kernel, OriginalDst::Fixed),
            app_probes: self.app_probes(),
            ..ProxyConfig::default()
        }
    }
}

/// Flags named as in Istio's `istio-iptables`. The five traffic flags, when given, win over
/// the same settings read from `--from-annotations`.
#[derive(Debug, Args, Clone)]
pub struct InitArgs {
    /// UID whose traffic is never captured (the proxy's).
    #[arg(long, default_value_t = 1337)]
    pub proxy_uid: u32,
    /// GID whose traffic is never captured.
    #[arg(long, default_value_t = 1337)]
    pub proxy_gid: u32,
    /// Port outbound traffic is redirected to.
    #[arg(long, default_value_t = 15001)]
    pub outbound_port: u16,
    /// Port inbound traffic is redirected to.
    #[arg(long, default_value_t = 15006)]
    pub inbound_port: u16,
    /// Outbound CIDRs to capture, comma-separated; `*` (default) for all, empty for none.
    #[arg(long)]
    pub include_outbound_ip_ranges: Option<String>,
    /// Outbound CIDRs never captured.
    #[arg(long)]
    pub exclude_outbound_ip_ranges: Option<String>,
    /// Outbound destination ports never captured.
    #[arg(long)]
    pub exclude_outbound_ports: Option<String>,
    /// Inbound ports to capture; `*` (default) for all, empty for none.
    #[arg(long)]
    pub include_inbound_ports: Option<String>,
    /// Inbound ports never captured (15020, 15021 and 15090 always are).
    #[arg(long)]
    pub exclude_inbound_ports: Option<String>,
    /// A downward-API file of the pod's annotations (`key="value"` lines); the
    /// `traffic.sidecar.istio.io/*` annotations in it are honoured.
    #[arg(long, value_name = "FILE")]
    pub from_annotations: Option<PathBuf>,
    /// Print the iptables commands instead of installing them.
    #[arg(long)]
    pub dry_run: bool,
}

impl InitArgs {
    /// The five traffic settings given as flags.
    pub fn settings(&self) -> TrafficSettings {
        TrafficSettings {
            include_outbound_ip_ranges: self.include_outbound_ip_ranges.clone(),
            exclude_outbound_ip_ranges: self.exclude_outbound_ip_ranges.clone(),
            exclude_outbound_ports: self.exclude_outbound_ports.clone(),
            include_inbound_ports: self.include_inbound_ports.clone(),
            exclude_inbound_ports: self.exclude_inbound_ports.clone(),
        }
    }

    /// Options before the traffic settings are applied.
    pub fn base_options(&self) -> Options {
        Options {
            proxy_uid: self.proxy_uid,
            proxy_gid: self.proxy_gid,
            outbound_port: self.outbound_port,
            inbound_port: self.inbound_port,
            include_outbound_cidrs: Selection::All,
            include_inbound_ports: Selection::All,
            ..Options::default()
        }
    }
}

/// Reads `5s`, `500ms`, `1m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("`{s}` is not a duration (expected e.g. 5s, 500ms, 1m)");
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map(|i| s.split_at(i)).unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_istio() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn no_subcommand_means_run_with_defaults() {
        let cli = Cli::try_parse_from(["mesh-proxy"]).unwrap();
        assert!(cli.command.is_none());
        let cfg = cli.run.config();
        assert_eq!(cfg.outbound.port(), 15001);
        assert_eq!(cfg.inbound.port(), 15006);
        assert_eq!(cfg.admin.to_string(), "127.0.0.1:15000");
        assert_eq!(cfg.readiness.port(), 15021);
        assert_eq!(cfg.drain_period, Duration::from_secs(5));
        assert!(cli.run.config_source().is_none());
    }

    #[test]
    fn identity_flags_make_the_config_source() {
        let cli = Cli::try_parse_from([
            "mesh-proxy",
            "run",
            "--config-file",
            "/etc/mesh/config.yaml",
            "--pod-name",
            "productpage-v1-abc",
            "--pod-namespace",
            "shop",
            "--pod-labels",
            "app=productpage,version=v1",
            "--instance-ips",
            "10.1.0.7",
        ])
        .unwrap();
        let Some(Command::Run(run)) = cli.command else { panic!("expected run") };
        let source = run.config_source().unwrap();
        assert_eq!(source.identity.namespace, "shop");
        assert_eq!(source.identity.labels["version"], "v1");
        assert_eq!(source.identity.ips, ["10.1.0.7".parse::<IpAddr>().unwrap()]);
        assert!(Cli::try_parse_from(["mesh-proxy", "--pod-labels", "novalue"]).is_err());
    }

    #[test]
    fn identity_comes_from_what_the_injector_sets() {
        // The environment variables the injector's sidecar template sets (injector/src/sidecar.rs).
        let command = <Cli as clap::CommandFactory>::command();
        let env_of = |id: &str| {
            let arg = command.get_arguments().find(|a| a.get_id() == id).unwrap();
            arg.get_env().unwrap().to_str().unwrap().to_string()
        };
        let names = ["pod_name", "pod_namespace", "service_account", "instance_ip", "pod_labels_json", "pod_info_dir"];
        let envs = names.map(env_of);
        assert_eq!(
            envs,
            [
                "POD_NAME",
                "POD_NAMESPACE",
                "SERVICE_ACCOUNT",
                "INSTANCE_IP",
                "ISTIO_METAJSON_LABELS",
                "MESH_POD_INFO_DIR"
            ]
        );
        assert_eq!(env_of("controller"), "MESH_CONTROLLER_ADDRESS");

        let dir = std::env::temp_dir().join(format!("mesh-cli-podinfo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("labels"), "app=\"reviews\"\nversion=\"v2\"\n").unwrap();
        let cli = Cli::try_parse_from([
            "mesh-proxy",
            "run",
            "--pod-name=reviews-v2-x",
            "--pod-namespace=shop",
            "--service-account=bookinfo-reviews",
            "--instance-ip=10.1.0.8",
            "--pod-labels-json={\"app\":\"reviews\",\"version\":\"v1\",\"team\":\"books\"}",
            &format!("--pod-info-dir={}", dir.display()),
        ])
        .unwrap();
        let Some(Command::Run(run)) = cli.command else { panic!("expected run") };
        let identity = run.identity_settings().resolve(&Default::default()).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!((identity.namespace.as_str(), identity.pod_name.as_str()), ("shop", "reviews-v2-x"));
        assert_eq!(identity.service_account, "bookinfo-reviews");
        assert_eq!(identity.ips, ["10.1.0.8".parse::<IpAddr>().unwrap()]);
        assert_eq!(identity.labels["version"], "v2", "the live labels file wins over the creation-time JSON");
        assert_eq!(identity.labels["team"], "books");
    }

    #[test]
    fn init_flags_mirror_istio_iptables() {
        let cli = Cli::try_parse_from([
            "mesh-proxy",
            "init",
            "--proxy-uid",
            "1337",
            "--exclude-outbound-ports",
            "5432",
            "--include-inbound-ports",
            "*",
            "--dry-run",
        ])
        .unwrap();
        let Some(Command::Init(args)) = cli.command else { panic!("expected init") };
        assert!(args.dry_run);
        assert_eq!(args.settings().exclude_outbound_ports.as_deref(), Some("5432"));
        assert_eq!(args.settings().include_inbound_ports.as_deref(), Some("*"));
    }
}
