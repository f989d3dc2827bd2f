//! The command line: one subcommand per job, so each can be run and tested alone.

use std::io::Read;
use std::process::ExitCode;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use common::resource::Resource;
use common::validate::ValidationContext;
use controller::config::server::StreamSettings;

/// The mesh's control plane. Without a subcommand it runs (`run`).
#[derive(Debug, Parser)]
#[command(name = "mesh-controller", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch the cluster and serve config to proxies, admission and metrics (the default).
    Run(Box<RunArgs>),
    /// Connect to a controller as proxies would and print every update as a JSON line.
    ///
    /// Each update is ACKed; a closed stream reconnects and resumes. With `--streams N` it
    /// opens N streams (pods `<pod>-0` ...), for load tests.
    Probe {
        /// The controller's config stream.
        #[arg(long, default_value = "http://127.0.0.1:15010")]
        address: String,
        /// The namespace the pods claim to be in.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// The pod name.
        #[arg(long, default_value = "probe")]
        pod: String,
        /// Claim to be a gateway rather than a sidecar.
        #[arg(long)]
        gateway: bool,
        /// How many streams to open.
        #[arg(long, default_value_t = 1)]
        streams: usize,
        /// List the keys of updates with at most this many changes.
        #[arg(long, default_value_t = 50)]
        list_up_to: usize,
        /// Open streams in batches of this many, each after the previous got its snapshots.
        #[arg(long, default_value_t = 100)]
        batch: usize,
    },
    /// Ask the controller's CA for a certificate, as a workload would, and print the chain (PEM).
    ///
    /// A fresh key is generated (written to --key-out when given); the token proves the
    /// service account, whose SPIFFE ID the certificate carries.
    Sign {
        /// The controller's TLS port.
        #[arg(long, default_value = "https://mesh-controller.istio-system.svc:15012")]
        address: String,
        /// The name the controller's certificate must carry, when not the address's host.
        #[arg(long)]
        server_name: Option<String>,
        /// The mesh root (root-cert.pem of the ConfigMap istio-ca-root-cert).
        #[arg(long, env = "MESH_CA_ROOT_CERT", default_value = "/var/run/secrets/istio/root-cert.pem")]
        root_cert: PathBuf,
        /// A file holding the service-account token (audience istio-ca).
        #[arg(long, env = "MESH_TOKEN_FILE", default_value = "/var/run/secrets/tokens/mesh-token")]
        token_file: PathBuf,
        /// A DNS name to ask for (repeatable).
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// Seconds of validity to ask for (0: the CA's default).
        #[arg(long, default_value_t = 0)]
        validity_seconds: i64,
        /// Where to write the private key (PEM, mode 0600).
        #[arg(long)]
        key_out: Option<PathBuf>,
    },
    /// Print the CustomResourceDefinitions of every Istio kind the mesh serves, as YAML.
    ///
    /// `manifests/crds.yaml` holds this output; a test fails when it is stale.
    Crds,
    /// Check resource files with Istio's rules, as admission will; exit 1 on any error.
    ///
    /// Warnings and fields the mesh does not act on yet are printed but do not fail.
    Validate {
        /// A YAML file with one or more documents; `-` reads standard input.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
    },
}

/// Settings of `run`; each also reads an environment variable, for Deployments.
#[derive(Debug, Args)]
struct RunArgs {
    /// Address of the plaintext config stream (gRPC).
    #[arg(long, env = "MESH_CONFIG_ADDRESS", default_value = "0.0.0.0:15010")]
    config_address: SocketAddr,
    /// Address of `/ready`, `/metrics` and `/debug/proxies`.
    #[arg(long, env = "MESH_MONITORING_ADDRESS", default_value = "0.0.0.0:15014")]
    monitoring_address: SocketAddr,
    /// Address of the config stream and the CA over TLS (gRPC), with a certificate the CA issues
    /// the controller for its Service's names.
    #[arg(long, env = "MESH_TLS_ADDRESS", default_value = "0.0.0.0:15012")]
    tls_address: SocketAddr,
    /// Address of the validating webhook (HTTPS).
    #[arg(long, env = "MESH_WEBHOOK_ADDRESS", default_value = "0.0.0.0:15017")]
    webhook_address: SocketAddr,
    /// PEM certificate chain of the webhook (its SAN must be the name the API server dials);
    /// without it (and --webhook-key) the webhook serves the certificate the CA issues the
    /// controller for its Service's names.
    #[arg(long, env = "MESH_WEBHOOK_CERT", requires = "webhook_key")]
    webhook_cert: Option<PathBuf>,
    /// PEM private key of the webhook certificate.
    #[arg(long, env = "MESH_WEBHOOK_KEY", requires = "webhook_cert")]
    webhook_key: Option<PathBuf>,
    /// The cluster's DNS suffix.
    #[arg(long, env = "MESH_DOMAIN", default_value = common::hosts::DEFAULT_DOMAIN)]
    domain: String,
    /// The mesh's root namespace (mesh-wide Sidecar and policies).
    #[arg(long, env = "MESH_ROOT_NAMESPACE", default_value = common::compile::DEFAULT_ROOT_NAMESPACE)]
    root_namespace: String,
    /// Milliseconds the first change of a burst waits for the rest before it is pushed.
    #[arg(long, env = "MESH_DEBOUNCE_MS", default_value_t = 100)]
    debounce_ms: u64,
    /// Updates queued per proxy before a slow proxy is resynced instead.
    #[arg(long, env = "MESH_STREAM_QUEUE", default_value_t = 16)]
    stream_queue: usize,
    /// Do not write status conditions (and do not compete for the leader Lease).
    #[arg(long, env = "MESH_NO_STATUS")]
    no_status: bool,
    /// The controller's own namespace: of the CA's Secret and of the Service its serving
    /// certificate names; only its service accounts may get DNS names from the CA.
    #[arg(long, env = "POD_NAMESPACE", default_value = common::compile::DEFAULT_ROOT_NAMESPACE)]
    namespace: String,
    /// The namespace of the leader Lease (by default --namespace).
    #[arg(long)]
    lease_namespace: Option<String>,
    /// The name of the leader Lease.
    #[arg(long, env = "MESH_LEASE_NAME", default_value = "mesh-controller-status")]
    lease_name: String,
    /// This replica's name in the Lease (by default the pod's, else the host's name and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// The Secret (in --namespace) holding the CA's root certificate and key; created on first
    /// start when absent.
    #[arg(long, env = "MESH_CA_SECRET", default_value = "mesh-ca-secret")]
    ca_secret: String,
    /// The controller's Service, whose DNS names (`<svc>.<ns>.svc`, `<svc>.<ns>.svc.<domain>`)
    /// its serving certificate carries.
    #[arg(long, env = "MESH_SERVICE_NAME", default_value = "mesh-controller")]
    service_name: String,
    /// The SPIFFE trust domain of workload certificates (`spiffe://<domain>/ns/<ns>/sa/<sa>`).
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// The audience callers' service-account tokens must be issued for.
    #[arg(long, env = "MESH_CA_AUDIENCE", default_value = "istio-ca")]
    ca_audience: String,
    /// Hours a workload certificate is valid when its request asks for no validity.
    #[arg(long, env = "MESH_CA_DEFAULT_VALIDITY_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=8760))]
    ca_default_validity_hours: u64,
    /// The longest validity the CA grants, in hours.
    #[arg(long, env = "MESH_CA_MAX_VALIDITY_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=8760))]
    ca_max_validity_hours: u64,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "MESH_LOG_JSON")]
    log_json: bool,
}

/// Runs the command line and returns the process's exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crds) => print_all(&common::crds::to_yaml()),
        Some(Command::Sign { address, server_name, root_cert, token_file, dns, validity_seconds, key_out }) => {
            block_on(async move {
                let request = controller::ca::client::CertificateRequest {
                    address,
                    server_name,
                    root_pem: read_file(&root_cert, "the mesh root")?,
                    token: read_file(&token_file, "the token")?,
                    dns,
                    validity_seconds,
                };
                sign(&request, key_out.as_deref()).await
            })
        }
        Some(Command::Validate { files }) => validate_files(&files),
        Some(Command::Run(args)) => run_controller(*args),
        Some(Command::Probe { address, namespace, pod, gateway, streams, list_up_to, batch }) => {
            let settings =
                controller::probe::ProbeSettings { address, namespace, pod, gateway, streams, list_up_to, batch };
            block_on(controller::probe::probe(settings))
        }
        None => run_controller(cli.run),
    }
}

fn run_controller(args: RunArgs) -> ExitCode {
    init_logging(args.log_json);
    let settings = controller::run::Settings {
        config_address: args.config_address,
        monitoring_address: args.monitoring_address,
        webhook: (args.webhook_address, args.webhook_cert.zip(args.webhook_key)),
        ca: controller::run::CaSettings {
            tls_address: args.tls_address,
            namespace: args.namespace.clone(),
            secret: args.ca_secret,
            service: args.service_name,
            trust_domain: args.trust_domain,
            audience: args.ca_audience,
            default_validity: Duration::from_secs(args.ca_default_validity_hours * 3600),
            max_validity: Duration::from_secs(args.ca_max_validity_hours * 3600),
        },
        domain: args.domain,
        root_namespace: args.root_namespace,
        debounce: Duration::from_millis(args.debounce_ms),
        stream: StreamSettings { queue: args.stream_queue, ..StreamSettings::default() },
        leader: (!args.no_status).then(|| controller::leader::LeaderSettings {
            namespace: args.lease_namespace.unwrap_or(args.namespace),
            name: args.lease_name,
            identity: args.identity.unwrap_or_else(default_identity),
            lease_duration: Duration::from_secs(15),
            renew: Duration::from_secs(5),
        }),
    };
    block_on(controller::run::run(settings))
}

/// Runs `task` on a multi-threaded runtime; an error is logged and fails the process.
fn block_on(task: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "failed");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Obtains a certificate, writes its key to `key_out` and prints the chain.
async fn sign(request: &controller::ca::client::CertificateRequest, key_out: Option<&Path>) -> anyhow::Result<()> {
    use std::io::Write as _;
    let obtained = controller::ca::client::request_certificate(request).await?;
    if let Some(path) = key_out {
        use std::os::unix::fs::OpenOptionsExt as _;
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut file| file.write_all(obtained.key_pem.as_bytes()));
        written.with_context(|| format!("cannot write the key to {}", path.display()))?;
    }
    std::io::stdout().lock().write_all(obtained.chain_pem.concat().as_bytes()).context("cannot write the chain")?;
    Ok(())
}

fn read_file(path: &Path, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {what} from {}", path.display()))
}

/// The host name and process id: unique among replicas outside a pod.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn,tower=warn,h2=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json { builder.json().init() } else { builder.init() }
}

/// Writes `text` to standard output; a closed pipe (`| head`) is not an error worth a panic.
fn print_all(text: &str) -> ExitCode {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cannot write to standard output: {error}");
            ExitCode::FAILURE
        }
    }
}

fn validate_files(files: &[String]) -> ExitCode {
    let mut failed = false;
    let mut resources = Vec::new();
    for file in files {
        let text = match read_input(file) {
            Ok(text) => text,
            Err(error) => {
                eprintln!("{file}: cannot read: {error}");
                failed = true;
                continue;
            }
        };
        let (parsed, errors) = Resource::parse_yaml_documents(&text);
        for error in errors {
            eprintln!("{file}: {error}");
            failed = true;
        }
        resources.extend(parsed);
    }
    let context = ValidationContext::standalone();
    for resource in &resources {
        let diagnostics = resource.validate(&context);
        for diagnostic in diagnostics.all() {
            eprintln!("{diagnostic}");
        }
        failed |= diagnostics.has_errors();
        if !diagnostics.has_errors() {
            println!("{}: valid", resource.object_ref());
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn read_input(file: &str) -> std::io::Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
    }
}
