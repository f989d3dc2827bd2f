//! `mesh-controller probe`: connects to a controller as one or many proxies would and prints
//! every update as a JSON line, ACKing each. For debugging ("what does this pod get?") and for
//! the end-to-end and scale tests, which need many streams without many proxies.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use proto::config::config_discovery_client::ConfigDiscoveryClient;
use proto::config::{Ack, ConfigUpdate, Hello, ProxyIdentity, ProxyKind, ProxyMessage, ResourceKey, proxy_message};
use proto::parts::Assembly;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

/// Who the probe pretends to be.
#[derive(Clone, Debug)]
pub struct ProbeSettings {
    /// `http://host:port` of the config stream.
    pub address: String,
    /// The pods' namespace.
    pub namespace: String,
    /// The pod name; with several streams, `-<n>` is appended.
    pub pod: String,
    /// Connect as a gateway rather than a sidecar.
    pub gateway: bool,
    /// How many streams to open (on shared HTTP/2 connections, 100 streams each).
    pub streams: usize,
    /// Print the keys of updates with at most this many changes; larger ones are counted.
    pub list_up_to: usize,
    /// Streams opened at once: each batch waits for its first updates before the next opens,
    /// as proxies of a rollout arrive over time rather than in one instant.
    pub batch: usize,
}

/// Runs the streams until the controller closes them or the process is stopped; a stream
/// that ends reconnects after a second, resuming from its last version.
pub async fn probe(settings: ProbeSettings) -> anyhow::Result<()> {
    let endpoint = Endpoint::from_shared(settings.address.clone()).context("the --address is not a URL")?;
    let (lines, mut printed) = mpsc::unbounded_channel::<String>();
    let mut channel = None;
    let mut batch = Vec::new();
    for index in 0..settings.streams {
        if index % 100 == 0 {
            channel =
                Some(endpoint.connect().await.with_context(|| format!("cannot connect to {}", settings.address))?);
        }
        let client = ConfigDiscoveryClient::new(channel.clone().expect("set on the first stream"));
        let pod = if settings.streams == 1 { settings.pod.clone() } else { format!("{}-{index}", settings.pod) };
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(follow(client, settings.clone(), pod, lines.clone(), first_tx));
        batch.push(first_rx);
        if batch.len() >= settings.batch.max(1) {
            for first in batch.drain(..) {
                let _ = first.await;
            }
        }
    }
    drop(lines);
    while let Some(line) = printed.recv().await {
        println!("{line}");
    }
    Ok(())
}

async fn follow(
    mut client: ConfigDiscoveryClient<tonic::transport::Channel>,
    settings: ProbeSettings,
    pod: String,
    lines: mpsc::UnboundedSender<String>,
    first: tokio::sync::oneshot::Sender<()>,
) {
    let mut version = String::new();
    let mut first = Some(first);
    loop {
        if let Err(error) = stream_once(&mut client, &settings, &pod, &mut version, &lines, &mut first).await {
            let _ = lines.send(json!({"pod": pod, "error": error.to_string()}).to_string());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn stream_once(
    client: &mut ConfigDiscoveryClient<tonic::transport::Channel>,
    settings: &ProbeSettings,
    pod: &str,
    version: &mut String,
    lines: &mpsc::UnboundedSender<String>,
    first: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    let (to_controller, outbound) = mpsc::channel(8);
    let identity = ProxyIdentity {
        pod_name: pod.to_string(),
        namespace: settings.namespace.clone(),
        kind: if settings.gateway { ProxyKind::Gateway } else { ProxyKind::Sidecar } as i32,
        proxy_version: "probe".to_string(),
        ..ProxyIdentity::default()
    };
    let hello = Hello { identity: Some(identity), resume_version: version.clone(), accepts_parts: true };
    to_controller.send(ProxyMessage { message: Some(proxy_message::Message::Hello(hello)) }).await?;
    let mut updates = client.stream_config(ReceiverStream::new(outbound)).await?.into_inner();
    let mut assembly = Assembly::default();
    while let Some(part) = updates.next().await {
        let Some(update) = assembly.add(part?)? else { continue };
        let _ = lines.send(describe(pod, &update, settings.list_up_to));
        version.clone_from(&update.version);
        let ack = Ack { version: update.version };
        to_controller.send(ProxyMessage { message: Some(proxy_message::Message::Ack(ack)) }).await?;
        if let Some(first) = first.take() {
            let _ = first.send(());
        }
    }
    anyhow::bail!("the controller closed the stream")
}

fn describe(pod: &str, update: &ConfigUpdate, list_up_to: usize) -> String {
    let name = |key: &ResourceKey| format!("{} {}/{}", key.r#type, key.namespace, key.name);
    let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis()).unwrap_or(0);
    let mut line = json!({
        "pod": pod,
        "at_ms": at_ms as u64,
        "version": update.version,
        "base": update.base_version,
        "full": update.full,
        "upserts": update.upserts.len(),
        "removals": update.removals.len(),
    });
    if update.upserts.len() + update.removals.len() <= list_up_to {
        line["upserted"] = update.upserts.iter().filter_map(|resource| resource.key.as_ref()).map(name).collect();
        line["removed"] = update.removals.iter().map(name).collect();
    }
    line.to_string()
}
