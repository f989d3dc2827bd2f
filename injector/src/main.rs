//! `mesh-injector`: `serve` runs the mutating webhook, `kube-inject` injects YAML offline.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use injector::config::{InjectConfig, SidecarMode, controller_address, ports};
use injector::webhook::{certs, cluster, mesh_ca, renew, server};
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The mesh's sidecar injector.
#[derive(Debug, Parser)]
#[command(name = "mesh-injector", version, about)]
struct Cli {
    /// Log lines as JSON.
    #[arg(long, global = true, env = "MESH_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the mutating admission webhook (HTTPS).
    Serve(ServeArgs),
    /// Add the sidecar to the workloads of a YAML file and print the result.
    KubeInject(KubeInjectArgs),
}

/// What the injected sidecar looks like; shared by both commands.
#[derive(Debug, Args)]
struct InjectArgs {
    /// Image of the sidecar and of its init step.
    #[arg(long, env = "MESH_PROXY_IMAGE", default_value = "mesh/proxy:dev")]
    proxy_image: String,
    /// imagePullPolicy of the injected containers (the cluster's default when absent).
    #[arg(long)]
    image_pull_policy: Option<String>,
    /// Namespace of the control plane; its pods are never injected.
    #[arg(long, env = "POD_NAMESPACE", default_value = "istio-system")]
    control_plane_namespace: String,
    /// The controller's config stream and CA, over TLS (default
    /// https://mesh-controller.<namespace>.svc:15012).
    #[arg(long)]
    controller_address: Option<String>,
    /// Audience of the sidecar's projected token, which the controller's CA checks.
    #[arg(long, default_value = "istio-ca")]
    ca_audience: String,
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Rewrite app probes to go through the sidecar (a pod can opt out by annotation).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    rewrite_probes: bool,
}

impl InjectArgs {
    fn config(&self, default_mode: SidecarMode) -> InjectConfig {
        let ns = &self.control_plane_namespace;
        InjectConfig {
            proxy_image: self.proxy_image.clone(),
            image_pull_policy: self.image_pull_policy.clone(),
            control_plane_namespace: ns.clone(),
            controller_address: self.controller_address.clone().unwrap_or_else(|| controller_address(ns)),
            ca_audience: self.ca_audience.clone(),
            trust_domain: self.trust_domain.clone(),
            default_mode,
            rewrite_probes: self.rewrite_probes,
            ..InjectConfig::default()
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum NativeChoice {
    /// Native when the API server is 1.29 or newer.
    Auto,
    True,
    False,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    inject: InjectArgs,
    #[arg(long, default_value_t = ports::WEBHOOK)]
    port: u16,
    /// Directory with tls.crt, tls.key (and ca.crt); without it a CA and certificate are made.
    #[arg(long)]
    cert_dir: Option<PathBuf>,
    /// Name of the injector's Service (the certificate's DNS names).
    #[arg(long, default_value = "mesh-injector")]
    service: String,
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Lifetime of a generated certificate (renewed at two thirds), in days.
    #[arg(long, default_value_t = 90)]
    cert_days: u64,
    /// MutatingWebhookConfiguration whose caBundle is set to our CA.
    #[arg(long)]
    webhook_config: Option<String>,
    /// The controller's ValidatingWebhookConfiguration, whose caBundle is kept equal to the
    /// mesh root (ConfigMap istio-ca-root-cert), which signs the controller's webhook
    /// certificate. Leave it out when the controller serves a certificate of your own.
    #[arg(long)]
    validating_webhook_config: Option<String>,
    /// Ask the mesh CA (the controller, on 15012) for the serving certificate; until it
    /// answers, a self-signed one is served. Off, or with --cert-dir, it is never asked.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    mesh_ca: bool,
    /// The injector's projected service-account token for the CA's audience.
    #[arg(long, default_value = "/var/run/secrets/tokens/istio-ca-token")]
    ca_token_file: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    native_sidecars: NativeChoice,
}

#[derive(Debug, Args)]
struct KubeInjectArgs {
    #[command(flatten)]
    inject: InjectArgs,
    /// The YAML file, or `-` for stdin.
    #[arg(short = 'f', long = "filename")]
    file: String,
    /// Namespace for objects that name none.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Native sidecars (for clusters of Kubernetes 1.29 and newer).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    native_sidecars: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if cli.log_json {
        logs.json().init()
    } else {
        logs.init()
    }
    let result = match cli.command {
        Command::KubeInject(args) => kube_inject(&args),
        Command::Serve(args) => {
            tokio::runtime::Runtime::new().context("starting the runtime").and_then(|rt| rt.block_on(serve(args)))
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-injector: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn kube_inject(args: &KubeInjectArgs) -> anyhow::Result<()> {
    let mode = if args.native_sidecars { SidecarMode::Native } else { SidecarMode::Classic };
    let cfg = args.inject.config(mode);
    let mut input = String::new();
    if args.file == "-" {
        std::io::stdin().read_to_string(&mut input).context("reading stdin")?;
    } else {
        input = std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file))?;
    }
    match injector::kube_inject::run(&input, &args.namespace, &cfg) {
        Ok((yaml, notes)) => {
            for n in notes {
                let verb = if n.injected { "injected" } else { "not injected" };
                eprintln!("{}: {verb} ({})", n.what, n.why);
            }
            print!("{yaml}");
            Ok(())
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{}: {e}", args.file);
            }
            bail!("{} document(s) could not be injected; nothing was written", errors.len())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let client = connect_api(&args).await?;
    let (mode, native_supported) = sidecar_mode(args.native_sidecars, &client).await?;
    let cfg = Arc::new(InjectConfig { native_supported, ..args.inject.config(mode) });
    let namespace = &cfg.control_plane_namespace;
    let dns = certs::service_dns_names(&args.service, namespace, &args.cluster_domain);
    let validity = Duration::from_secs(args.cert_days.max(1) * 86_400);
    let mesh_ca = mesh_ca(&args, &client, &cfg);
    let ca_names = mesh_ca::requested_names(&args.service, namespace, &args.cluster_domain);
    let cert = first_certificate(&args, mesh_ca.as_ref(), &ca_names, &dns, validity).await?;
    tracing::info!(source = ?cert.source, "serving certificate");
    let tls = server::TlsHandle::new(certs::server_config(&cert)?);
    if let (Some(c), Some(name)) = (&client, &args.webhook_config) {
        tokio::spawn(keep_ca_bundle::<MutatingWebhookConfiguration>(c.clone(), name.clone(), cert.ca_pem.clone()));
    }
    if let (Some(ca), Some(name)) = (&mesh_ca, &args.validating_webhook_config) {
        tokio::spawn(keep_validating_bundle(ca.clone(), name.clone()));
    }
    if cert.renew_at.is_some() {
        let target = client.clone().zip(args.webhook_config.clone());
        let publish = move |bundle: String| {
            let target = target.clone();
            async move {
                if let Some((c, name)) = target {
                    keep_ca_bundle::<MutatingWebhookConfiguration>(c, name, bundle).await;
                }
            }
        };
        let renewal = renew::Renewal { dns: dns.clone(), validity, mesh_ca: mesh_ca.map(|ca| (ca, ca_names)) };
        tokio::spawn(renew::renew_forever(cert.clone(), renewal, tls.clone(), publish));
    }
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", args.port))
        .await
        .with_context(|| format!("binding :{}", args.port))?;
    tracing::info!(port = args.port, names = ?dns, "webhook serving");
    server::serve(listener, cfg, tls, shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

/// The Kubernetes client, or `None` when there is no API server and nothing needs one (a
/// webhook run by hand for tests, with the sidecar mode given).
async fn connect_api(args: &ServeArgs) -> anyhow::Result<Option<kube::Client>> {
    match kube::Client::try_default().await {
        Ok(c) => Ok(Some(c)),
        Err(e) if args.webhook_config.is_none() && !matches!(args.native_sidecars, NativeChoice::Auto) => {
            tracing::warn!(error = %e, "no Kubernetes API; serving without it");
            Ok(None)
        }
        Err(e) => {
            Err(e).context("connecting to the Kubernetes API (needed for --native-sidecars auto and --webhook-config)")
        }
    }
}

/// The default sidecar mode, and whether a pod may ask for native sidecars: as given, or from
/// the API server's version for `auto`.
async fn sidecar_mode(choice: NativeChoice, client: &Option<kube::Client>) -> anyhow::Result<(SidecarMode, bool)> {
    Ok(match (choice, client) {
        (NativeChoice::True, _) => (SidecarMode::Native, true),
        (NativeChoice::False, _) => (SidecarMode::Classic, true),
        (NativeChoice::Auto, Some(c)) => {
            let (mode, version) = cluster::server_mode(c).await?;
            tracing::info!(%version, ?mode, "sidecar mode from the server version");
            (mode, mode == SidecarMode::Native)
        }
        (NativeChoice::Auto, None) => (SidecarMode::Classic, true),
    })
}

/// The certificate served first: the one in `--cert-dir` if given, else one from the mesh CA,
/// else (no CA configured, or no answer within 10 s) a self-signed one, which the renewal task
/// replaces by the CA's as soon as the CA answers. The webhook must serve at once: until it
/// does, the API server refuses every pod of an injected namespace.
async fn first_certificate(
    args: &ServeArgs,
    mesh_ca: Option<&mesh_ca::MeshCa>,
    ca_names: &[String],
    dns: &[String],
    validity: Duration,
) -> anyhow::Result<certs::ServingCert> {
    if let Some(dir) = &args.cert_dir {
        return Ok(certs::from_dir(dir)?);
    }
    let Some(ca) = mesh_ca else { return Ok(certs::self_signed(dns, validity)?) };
    match tokio::time::timeout(Duration::from_secs(10), ca.serving_cert(ca_names)).await {
        Ok(Ok(cert)) => Ok(cert),
        outcome => {
            let why = outcome
                .map_or("no answer within 10 s".to_string(), |r| r.err().map(|e| e.to_string()).unwrap_or_default());
            tracing::warn!(reason = %why, "no certificate from the mesh CA yet: serving a self-signed one meanwhile");
            Ok(certs::self_signed(dns, validity)?)
        }
    }
}

fn mesh_ca(args: &ServeArgs, client: &Option<kube::Client>, cfg: &InjectConfig) -> Option<mesh_ca::MeshCa> {
    let client = client.clone()?;
    if !args.mesh_ca || args.cert_dir.is_some() {
        return None;
    }
    if !args.ca_token_file.exists() {
        tracing::info!(token = %args.ca_token_file.display(), "no CA token mounted: the mesh CA is not asked");
        return None;
    }
    Some(mesh_ca::MeshCa {
        address: cfg.controller_address.clone(),
        token_file: args.ca_token_file.clone(),
        client,
        namespace: cfg.control_plane_namespace.clone(),
    })
}

/// Keeps the controller's ValidatingWebhookConfiguration trusting the mesh root: set once the
/// controller publishes it, and again whenever it changes or someone re-applies the
/// configuration with an empty caBundle.
async fn keep_validating_bundle(ca: mesh_ca::MeshCa, name: String) {
    let mut set: Option<String> = None;
    loop {
        match ca.root().await {
            Ok(Some(root)) => {
                match cluster::patch_ca_bundle::<ValidatingWebhookConfiguration>(&ca.client, &name, &root).await {
                    Ok(n) if set.as_ref() != Some(&root) => {
                        tracing::info!(config = %name, webhooks = n, "caBundle set to the mesh root");
                        set = Some(root);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "setting the validating caBundle failed; retrying"),
                }
            }
            Ok(None) => tracing::debug!("the mesh root is not published yet"),
            Err(e) => tracing::warn!(error = %e, "reading the mesh root failed; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(if set.is_some() { 30 } else { 2 })).await;
    }
}

/// Sets the caBundle, retrying until the configuration exists (it may be applied after us).
async fn keep_ca_bundle<C: cluster::WebhookConfiguration>(client: kube::Client, name: String, bundle: String) {
    let mut wait = Duration::from_secs(1);
    loop {
        match cluster::patch_ca_bundle::<C>(&client, &name, &bundle).await {
            Ok(n) => return tracing::info!(config = %name, webhooks = n, "caBundle set"),
            Err(e) => tracing::warn!(error = %e, retry_in = ?wait, "setting the caBundle failed"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
