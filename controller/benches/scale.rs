//! The controller at scale, without Kubernetes: 1000 Services × 2 endpoints in a hub, 2000
//! real gRPC streams on loopback, the controller's resident memory and the time from a change
//! to every proxy's ACK.
//!
//! Run with `cargo bench -p mesh-controller --bench scale` (options after `--`, see [`Options`]).
//! The controller side (world, hub, tonic server) runs in this process, which reads its own
//! memory from `/proc/self/status`; the proxies run in a child process (this binary again, with
//! `clients`), so their memory is not counted.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::registry::Registry;
use common::resource::Resource;
use controller::config::hub::Hub;
use controller::config::server::{ConfigService, StreamSettings};
use controller::config::world::{RegistryEntries, World};
use controller::metrics::Metrics;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use proto::config::config_discovery_client::ConfigDiscoveryClient;
use proto::config::{Ack, Hello, ProxyIdentity, ProxyMessage, proxy_message};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

#[path = "scale/heap.rs"]
mod heap;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

/// What to measure; every option is `--name value`.
#[derive(Clone, Debug)]
struct Options {
    /// Services, spread over 10 namespaces; every proxy may see all of them.
    services: usize,
    /// Ready endpoints (pods) per Service.
    endpoints: usize,
    /// Connected proxy streams.
    streams: usize,
    /// Streams sharing one HTTP/2 connection (the probe's 100; 1 is one connection per proxy).
    per_connection: usize,
    /// Changes made once every stream is connected, one VirtualService edit each.
    changes: usize,
    /// Whether the clients ask for updates in parts (`Hello.accepts_parts`).
    parts: bool,
    /// The clients' HTTP/2 stream window in KB (0: hyper's default, 2 MB): how much the
    /// controller may have in flight per stream.
    window_kb: usize,
}

impl Options {
    fn parse(args: &[String]) -> Self {
        let mut options = Options {
            services: 1000,
            endpoints: 2,
            streams: 2000,
            per_connection: 100,
            changes: 20,
            parts: true,
            window_kb: 0,
        };
        let mut args = args.iter().filter(|arg| *arg != "--bench");
        while let Some(name) = args.next() {
            let value = args.next().unwrap_or_else(|| panic!("{name} needs a value"));
            let number = || value.parse::<usize>().unwrap_or_else(|_| panic!("{name} {value}: not a number"));
            match name.as_str() {
                "--services" => options.services = number(),
                "--endpoints" => options.endpoints = number(),
                "--streams" => options.streams = number(),
                "--per-connection" => options.per_connection = number().max(1),
                "--changes" => options.changes = number(),
                "--parts" => options.parts = value == "true",
                "--window-kb" => options.window_kb = number(),
                _ => panic!("unknown option {name}; see controller/benches/scale.rs"),
            }
        }
        options
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    if args.first().map(String::as_str) == Some("clients") {
        let address = args[1].clone();
        runtime.block_on(clients(address, Options::parse(&args[2..])));
    } else {
        runtime.block_on(controller(Options::parse(&args)));
    }
}

/// The registry's Kubernetes objects: Services `svc-<i>` in `ns-<i % 10>`, each with its pods.
fn registry(options: &Options) -> Registry {
    let mut builder = Registry::builder("cluster.local");
    for index in 0..options.services {
        let (namespace, name) = (format!("ns-{}", index % 10), format!("svc-{index}"));
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": format!("10.96.{}.{}", index / 250, index % 250 + 1),
                     "selector": {"app": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .expect("a Service");
        let mut addresses = Vec::new();
        for replica in 0..options.endpoints {
            let ip = format!("10.{}.{}.{}", 1 + replica, index / 250, index % 250 + 1);
            let pod_name = format!("{name}-{replica}");
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": pod_name, "namespace": namespace,
                             "labels": {"app": name, "version": "v1"}},
                "spec": {"serviceAccountName": name, "containers": [{"name": "app"}]},
                "status": {"podIP": ip, "podIPs": [{"ip": ip}],
                           "conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .expect("a Pod");
            builder = builder.pod(pod);
            addresses.push(json!({"ip": ip, "targetRef": {"kind": "Pod", "name": pod_name, "namespace": namespace}}));
        }
        let endpoints: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace},
            "subsets": [{"addresses": addresses, "ports": [{"name": "http", "port": 8080}]}]
        }))
        .expect("Endpoints");
        builder = builder.service(service).endpoints(endpoints);
    }
    builder.build()
}

/// The VirtualService edited by each change: its weight split is `weight`/`100 - weight`.
fn virtual_service(weight: u32) -> Vec<Resource> {
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc-0, namespace: ns-0}}
spec:
  hosts: [svc-0]
  http: [{{route: [{{destination: {{host: svc-0, subset: a}}, weight: {weight}}},
                  {{destination: {{host: svc-0, subset: b}}, weight: {}}}]}}]
",
        100 - weight
    );
    let (resources, errors) = Resource::parse_yaml_documents(&yaml);
    assert!(errors.is_empty(), "{errors:?}");
    resources
}

/// `VmRSS` and `VmHWM` (peak) of this process, in MB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        let line = status.lines().find(|line| line.starts_with(name)).expect("field in /proc/self/status");
        let kb: f64 = line.split_whitespace().nth(1).and_then(|kb| kb.parse().ok()).expect("kB");
        kb / 1024.0
    };
    let (live, peak) = heap::heap();
    println!("  heap: {live:.1} MB live, peak {peak:.1} MB; by size {}; top {}", heap::by_size(), heap::top());
    (field("VmRSS:"), field("VmHWM:"))
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_nanos()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn controller(options: Options) {
    println!("{options:?}");
    let hub = Hub::new("cluster.local", "istio-system", Arc::new(Metrics::new()));
    let entries = RegistryEntries::new(&registry(&options));
    let world = World::from_parts(&virtual_service(50), &entries);
    let snapshot_bytes: usize = world.entries.values().map(|entry| entry.json.len()).sum();
    println!("world: {} entries, {:.0} KB of JSON per snapshot", world.entries.len(), snapshot_bytes as f64 / 1024.0);
    hub.publish(world, Instant::now()).expect("the first world");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let address = format!("http://{}", listener.local_addr().expect("bound"));
    tokio::spawn(ConfigService::new(hub.clone(), StreamSettings::default()).serve(listener, std::future::pending()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (idle, _) = memory();
    println!("idle: {idle:.1} MB resident");

    let exe = std::env::current_exe().expect("this binary");
    let mut child = Command::new(exe)
        .args(["clients", &address])
        .args(["--streams", &options.streams.to_string(), "--per-connection", &options.per_connection.to_string()])
        .args(["--parts", &options.parts.to_string(), "--window-kb", &options.window_kb.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the clients process");
    let (lines_tx, mut lines) = mpsc::unbounded_channel::<String>();
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    while let Some(line) = lines.recv().await {
        if line == "ready" {
            break;
        }
    }
    let (connected, peak) = memory();
    println!(
        "{} streams connected and ACKed in {:.1} s: {connected:.1} MB resident, peak {peak:.1} MB",
        hub.proxies().len(),
        started.elapsed().as_secs_f64()
    );

    let mut all = Vec::new();
    let mut last = Vec::new();
    for change in 0..options.changes {
        let seen = now_ns();
        let world = World::from_parts(&virtual_service(change as u32 % 50), &entries);
        let generation = hub.publish(world, Instant::now()).expect("a change");
        let version = hub.version(generation.number);
        let mut latencies = Vec::with_capacity(options.streams);
        while latencies.len() < options.streams {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.recv())
                .await
                .expect("every ACK within 30 s")
                .expect("the clients run");
            let mut fields = line.split(' ');
            if fields.next() == Some("ack") && fields.next() == Some(version.as_str()) {
                let at: u128 = fields.next().and_then(|at| at.parse().ok()).expect("a time");
                latencies.push(at.saturating_sub(seen) as f64 / 1e6);
            }
        }
        latencies.sort_by(f64::total_cmp);
        last.push(*latencies.last().expect("streams"));
        all.extend(latencies);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (after, peak) = memory();
    all.sort_by(f64::total_cmp);
    last.sort_by(f64::total_cmp);
    if !all.is_empty() {
        println!(
            "change -> ACK over {} changes x {} streams: p50 {:.1} ms, p99 {:.1} ms; last ACK per change: p50 {:.1} ms, p99 {:.1} ms",
            options.changes,
            options.streams,
            percentile(&all, 0.5),
            percentile(&all, 0.99),
            percentile(&last, 0.5),
            percentile(&last, 0.99),
        );
    }
    println!("after the changes: {after:.1} MB resident, peak {peak:.1} MB");
    let _ = child.kill();
    let _ = child.wait();
}

/// The proxies: `streams` streams on connections of `per_connection` streams, opened 100 at a
/// time; every update is ACKed, and every ACK printed as `ack <version> <unix ns>`.
async fn clients(address: String, options: Options) {
    let (out, mut printed) = mpsc::unbounded_channel::<String>();
    let writer = std::thread::spawn(move || {
        let mut stdout = std::io::stdout().lock();
        while let Some(line) = printed.blocking_recv() {
            writeln!(stdout, "{line}").expect("stdout");
            if printed.is_empty() {
                stdout.flush().expect("stdout");
            }
        }
    });
    let mut endpoint = tonic::transport::Endpoint::from_shared(address).expect("a URL");
    if options.window_kb > 0 {
        endpoint = endpoint.initial_stream_window_size((options.window_kb * 1024) as u32);
    }
    let mut channel = None;
    let mut firsts = Vec::new();
    for index in 0..options.streams {
        if index % options.per_connection == 0 {
            channel = Some(endpoint.connect().await.expect("the controller accepts"));
        }
        let client = ConfigDiscoveryClient::new(channel.clone().expect("set on the first stream"));
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(follow(client, format!("proxy-{index}"), options.parts, out.clone(), first_tx));
        firsts.push(first_rx);
        if firsts.len() == 100 {
            for first in firsts.drain(..) {
                first.await.expect("a first update");
            }
        }
    }
    for first in firsts.drain(..) {
        first.await.expect("a first update");
    }
    out.send("ready".to_string()).expect("the writer runs");
    drop(out);
    tokio::task::spawn_blocking(move || writer.join().expect("the writer")).await.expect("joined");
}

async fn follow(
    mut client: ConfigDiscoveryClient<tonic::transport::Channel>,
    pod: String,
    parts: bool,
    out: mpsc::UnboundedSender<String>,
    first: tokio::sync::oneshot::Sender<()>,
) {
    let (to_controller, outbound) = mpsc::channel(4);
    let identity = ProxyIdentity { pod_name: pod, namespace: "ns-0".into(), ..ProxyIdentity::default() };
    let hello = Hello { identity: Some(identity), accepts_parts: parts, ..Hello::default() };
    to_controller.send(ProxyMessage { message: Some(proxy_message::Message::Hello(hello)) }).await.expect("open");
    let mut updates = client.stream_config(ReceiverStream::new(outbound)).await.expect("a stream").into_inner();
    let mut first = Some(first);
    while let Some(update) = updates.next().await {
        let update = update.expect("an update");
        if update.more {
            continue;
        }
        let ack = Ack { version: update.version.clone() };
        if to_controller.send(ProxyMessage { message: Some(proxy_message::Message::Ack(ack)) }).await.is_err() {
            break;
        }
        let _ = out.send(format!("ack {} {}", update.version, now_ns()));
        if let Some(first) = first.take() {
            let _ = first.send(());
        }
    }
}
