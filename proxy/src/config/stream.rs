//! The controller's config stream (`ConfigDiscovery.StreamConfig`), from the proxy's end.
//!
//! The proxy says who it is (`Hello`, with the version it last applied), then applies each
//! update (put back together first when it comes in parts, as large ones do) to the resources
//! it holds, compiles them, and answers with an ACK, or a NACK naming
//! the resources at fault while the previous config keeps serving. When the stream breaks the
//! last good config stays in force and the proxy reconnects with exponential backoff and
//! jitter, resuming from the version it applied, so a controller restart or a network blip
//! costs no traffic and no full resend when the controller still knows that version.

use super::ConfigStore;
use super::controller::{Held, UpdateError};
use proto::config::config_discovery_client::ConfigDiscoveryClient;
use proto::config::{
    Ack, ConfigUpdate, Hello, Nack, ProxyIdentity, ProxyKind, ProxyMessage, ResourceError, ResourceKey, proxy_message,
};
use proto::parts::{Assembly, PartError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

/// How long connecting and opening the stream may take.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Where the stream goes and how it retries.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// `host:port` (plaintext), or a full `http://` or `https://` (TLS) URI.
    pub address: String,
    /// The cluster's DNS suffix, to rebuild the registry with.
    pub domain: String,
    /// First wait after a failure; doubled after each one up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl StreamSettings {
    pub fn new(address: &str, domain: &str) -> StreamSettings {
        StreamSettings {
            address: address.to_string(),
            domain: domain.to_string(),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
        }
    }

    fn uri(&self) -> String {
        match self.address.contains("://") {
            true => self.address.clone(),
            false => format!("http://{}", self.address),
        }
    }
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("connecting: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("connecting: {0}")]
    Dial(#[from] super::controller::DialError),
    #[error("stream: {0}")]
    Status(#[from] tonic::Status),
    #[error("no answer within {HANDSHAKE:?}")]
    Handshake,
    #[error("the controller closed the stream")]
    Closed,
    #[error("update {version} applies on {base:?} but this proxy runs {applied:?}; resyncing")]
    OutOfOrder { version: String, base: String, applied: String },
    #[error("{0}; resyncing")]
    Parts(#[from] PartError),
}

/// What survives a reconnect: the resources and the version they are at.
#[derive(Default)]
struct State {
    held: Held,
    /// The version of the last update applied; empty before the first.
    applied: String,
}

/// Runs until the process ends.
pub async fn run(store: Arc<ConfigStore>, settings: StreamSettings) {
    let mut state = State::default();
    let mut backoff = Backoff::new(settings.min_backoff, settings.max_backoff);
    loop {
        let before = state.applied.clone();
        let error = session(&store, &settings, &mut state).await;
        if state.applied != before {
            backoff.reset();
        }
        let wait = backoff.next();
        tracing::warn!(address = %settings.address, %error, ?wait, resume = %state.applied, "config stream down; keeping the last config");
        tokio::time::sleep(wait).await;
    }
}

/// Exponential backoff with jitter: each wait is the current step plus up to half of it (so
/// proxies restarted together do not reconnect together); the step doubles up to `max`.
struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max, step: min }
    }

    fn reset(&mut self) {
        self.step = self.min;
    }

    fn next(&mut self) -> Duration {
        let wait = self.step + self.step.mul_f64(fastrand::f64() / 2.0);
        self.step = (self.step * 2).min(self.max);
        wait
    }
}

/// One stream, from Hello until it breaks.
async fn session(store: &Arc<ConfigStore>, settings: &StreamSettings, state: &mut State) -> StreamError {
    match stream(store, settings, state).await {
        Ok(never) => match never {},
        Err(error) => error,
    }
}

async fn stream(
    store: &Arc<ConfigStore>,
    settings: &StreamSettings,
    state: &mut State,
) -> Result<std::convert::Infallible, StreamError> {
    // Bounded so a controller that accepts but never answers counts as down; keep-alive pings
    // find a connection that dies silently later.
    let channel = Endpoint::from_shared(settings.uri())?
        .connect_timeout(HANDSHAKE)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let (to_controller, outbound) = mpsc::channel(16);
    let hello = Hello { identity: Some(identity(store)), resume_version: state.applied.clone(), accepts_parts: true };
    let _ = to_controller.send(message(proto_message::Hello(hello))).await;
    let open = async {
        // `https://` dials with TLS trusting the mesh root, read again at every attempt.
        let channel = super::controller::connect(channel, &super::controller::root_cert_path()).await?;
        let mut client = ConfigDiscoveryClient::new(channel);
        Ok::<_, StreamError>(client.stream_config(ReceiverStream::new(outbound)).await?.into_inner())
    };
    let mut updates = tokio::time::timeout(HANDSHAKE, open).await.map_err(|_| StreamError::Handshake)??;
    tracing::info!(address = %settings.address, resume = %state.applied, "config stream connected");
    // Large updates come in parts; one is applied only once all of its parts are in.
    let mut assembly = Assembly::default();
    loop {
        let part = updates.message().await?.ok_or(StreamError::Closed)?;
        let Some(update) = assembly.add(part)? else { continue };
        if !update.full && update.base_version != state.applied {
            // After a NACK, say: reconnect, and resume from what this proxy runs.
            let (version, base, applied) = (update.version, update.base_version, state.applied.clone());
            return Err(StreamError::OutOfOrder { version, base, applied });
        }
        let reply = apply(store, settings, state, update).await;
        if to_controller.send(reply).await.is_err() {
            return Err(StreamError::Closed);
        }
    }
}

use proxy_message::Message as proto_message;

fn message(m: proto_message) -> ProxyMessage {
    ProxyMessage { message: Some(m) }
}

/// Applies one update and says how it went.
async fn apply(
    store: &Arc<ConfigStore>,
    settings: &StreamSettings,
    state: &mut State,
    update: ConfigUpdate,
) -> ProxyMessage {
    let version = update.version.clone();
    let next = match state.held.apply(&update) {
        Ok(next) => next,
        Err(error) => return nack(&version, &error.to_string(), &error),
    };
    let inputs = match next.inputs(&settings.domain) {
        Ok(inputs) => inputs,
        Err(error) => return nack(&version, &format!("rebuilding the registry: {error}"), &UpdateError::default()),
    };
    let origin = format!("controller {} version {version}", settings.address);
    // Compiling is CPU work: keep it off the workers that serve connections.
    let compiling = store.clone();
    let result = tokio::task::spawn_blocking(move || compiling.apply(inputs, &origin)).await;
    match result {
        Ok(Ok(_)) => {
            state.held = next;
            state.applied = version.clone();
            message(proto_message::Ack(Ack { version }))
        }
        Ok(Err(error)) => nack(&version, &error.to_string(), &UpdateError::default()),
        Err(join) => nack(&version, &format!("compiling panicked: {join}"), &UpdateError::default()),
    }
}

fn nack(version: &str, text: &str, error: &UpdateError) -> ProxyMessage {
    tracing::error!(version, error = text, "config update refused; NACK");
    let errors = error
        .errors
        .iter()
        .map(|e| ResourceError {
            key: Some(ResourceKey { r#type: e.key.0.clone(), namespace: e.key.1.clone(), name: e.key.2.clone() }),
            message: e.message.clone(),
        })
        .collect();
    message(proto_message::Nack(Nack { version: version.to_string(), message: text.to_string(), errors }))
}

/// The Hello's identity: who this proxy was configured as.
fn identity(store: &ConfigStore) -> ProxyIdentity {
    let snapshot = store.load();
    let id = &snapshot.identity;
    ProxyIdentity {
        pod_name: id.pod_name.clone(),
        namespace: id.namespace.clone(),
        service_account: id.service_account.clone(),
        labels: id.labels.clone().into_iter().collect(),
        ips: id.ips.iter().map(ToString::to_string).collect(),
        kind: ProxyKind::Sidecar.into(),
        proxy_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::identity::IdentitySettings;
    use controller::config::hub::Hub;
    use controller::config::server::{ConfigService, StreamSettings as ServerSettings};

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_resets() {
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(800));
        let mut backoff = Backoff::new(min, max);
        let waits: Vec<Duration> = (0..6).map(|_| backoff.next()).collect();
        for (wait, step) in waits.iter().zip([100u64, 200, 400, 800, 800, 800]) {
            let step = Duration::from_millis(step);
            assert!(*wait >= step && *wait <= step + step / 2, "{wait:?} for step {step:?}");
        }
        backoff.reset();
        assert!(backoff.next() <= min + min / 2);
    }

    /// The real controller's stream server, sending every resource in a part of its own.
    async fn controller_in_parts(world: controller::config::world::World) -> (Arc<Hub>, String, String) {
        let hub = Hub::new("cluster.local", "istio-system", Arc::new(controller::metrics::Metrics::new()));
        let generation = hub.publish(world, std::time::Instant::now()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let one_per_part = ServerSettings { part_bytes: 1, ..ServerSettings::default() };
        tokio::spawn(ConfigService::new(hub.clone(), one_per_part).serve(listener, std::future::pending()));
        let version = hub.version(generation.number);
        (hub, address, version)
    }

    fn two_services() -> controller::config::world::World {
        let mut builder = common::registry::Registry::builder("cluster.local");
        for (name, ip) in [("reviews", "10.0.0.1"), ("ratings", "10.0.0.2")] {
            let service = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "a"},
                "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 9080}]}
            }))
            .unwrap();
            builder = builder.service(service);
        }
        controller::config::world::World::build(&[], &builder.build())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_sent_in_parts_is_applied_whole_and_acked() {
        let (hub, address, version) = controller_in_parts(two_services()).await;
        let identity = IdentitySettings { pod_name: "web-0".into(), namespace: "a".into(), ..Default::default() };
        let store = Arc::new(ConfigStore::for_identity(identity).unwrap());
        let session = tokio::spawn(run(store.clone(), StreamSettings::new(&address, "cluster.local")));

        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !hub.proxies().iter().any(|status| status.acked == version) {
            assert!(std::time::Instant::now() < deadline, "no ACK of {version}: {:?}", hub.proxies());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Applied one part at a time as full snapshots, the last part would be all that is left.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let snapshot = store.load();
        for host in ["reviews.a.svc.cluster.local", "ratings.a.svc.cluster.local"] {
            assert!(snapshot.registry.service(host).is_some(), "{host} missing from the applied snapshot");
        }
        assert!(hub.proxies().iter().all(|status| status.nacked.is_none()), "{:?}", hub.proxies());
        assert_eq!(hub.metrics.pushes.with_label_values(&["full"]).get(), 1, "one snapshot, in parts");
        session.abort();
    }
}
