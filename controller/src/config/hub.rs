//! The hub: the current world, the last few generations, and the proxies connected to them.
//!
//! One hub per controller process. The watch side publishes a new world per debounced batch of
//! changes; every stream follows the latest generation through a `watch` channel, which never
//! blocks the publisher: a stream that falls behind skips straight to the newest generation and
//! is sent the difference.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;

use super::world::{Change, KeyType, World};
use crate::metrics::Metrics;

/// How many past generations are kept for proxies that resume or lag.
const HISTORY: usize = 16;

/// One published world and how it differs from the one before.
#[derive(Debug)]
pub struct Generation {
    /// Counts up from 0 (the empty world before the first publish).
    pub number: u64,
    /// The world.
    pub world: Arc<World>,
    /// Entries that differ from the previous generation.
    pub changes: Vec<Change>,
    /// Whether a Sidecar resource changed, which may change any proxy's view.
    pub sidecars_changed: bool,
    /// When the controller saw the first change of this generation's batch.
    pub seen: Instant,
}

/// What the controller knows of one connected proxy, for `/debug/proxies` and logs.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    /// `namespace/pod`.
    pub proxy: String,
    /// The last version sent.
    pub sent: String,
    /// The last version the proxy ACKed.
    pub acked: String,
    /// The last version the proxy NACKed, with its message.
    pub nacked: Option<(String, String)>,
}

/// The shared state of every stream.
pub struct Hub {
    /// Distinguishes this process's versions from an earlier controller's.
    epoch: u64,
    /// The mesh's root namespace (mesh-wide Sidecar and policy).
    pub root_namespace: String,
    latest: watch::Sender<Arc<Generation>>,
    history: Mutex<VecDeque<Arc<Generation>>>,
    proxies: Mutex<BTreeMap<u64, ProxyStatus>>,
    next_stream: AtomicU64,
    /// The controller's metrics.
    pub metrics: Arc<Metrics>,
}

impl Hub {
    /// A hub with an empty world in DNS domain `domain`.
    pub fn new(domain: &str, root_namespace: &str, metrics: Arc<Metrics>) -> Arc<Self> {
        let epoch = SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as u64).unwrap_or(0);
        let empty = Arc::new(Generation {
            number: 0,
            world: Arc::new(World { domain: domain.to_string(), ..World::default() }),
            changes: Vec::new(),
            sidecars_changed: false,
            seen: Instant::now(),
        });
        Arc::new(Hub {
            epoch,
            root_namespace: root_namespace.to_string(),
            latest: watch::channel(empty.clone()).0,
            history: Mutex::new(VecDeque::from([empty])),
            proxies: Mutex::new(BTreeMap::new()),
            next_stream: AtomicU64::new(1),
            metrics,
        })
    }

    /// Publishes `world` if it differs from the current one; `seen` is when the first change
    /// behind it was observed. Returns the new generation, or `None` when nothing changed.
    pub fn publish(&self, mut world: World, seen: Instant) -> Option<Arc<Generation>> {
        let current = self.current();
        world.share_unchanged(&current.world);
        let changes = current.world.changes_to(&world);
        let sidecars_changed = current.world.sidecars != world.sidecars;
        if changes.is_empty() && !sidecars_changed {
            return None;
        }
        self.count_resources(&world);
        let generation = Arc::new(Generation {
            number: current.number + 1,
            world: Arc::new(world),
            changes,
            sidecars_changed,
            seen,
        });
        {
            let mut history = self.history.lock().expect("history lock");
            history.push_back(generation.clone());
            while history.len() > HISTORY {
                history.pop_front();
            }
        }
        self.metrics.generations.inc();
        tracing::debug!(version = %self.version(generation.number), changes = generation.changes.len(), "config published");
        self.latest.send_replace(generation.clone());
        Some(generation)
    }

    /// The newest generation.
    pub fn current(&self) -> Arc<Generation> {
        self.latest.borrow().clone()
    }

    /// Follows the newest generation.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Generation>> {
        self.latest.subscribe()
    }

    /// The version string of generation `number`: opaque to proxies, increasing in one process,
    /// and never equal to a version of an earlier controller process.
    pub fn version(&self, number: u64) -> String {
        format!("{}.{}", self.epoch, number)
    }

    /// The generation a version names, while it is still kept.
    pub fn generation_of(&self, version: &str) -> Option<Arc<Generation>> {
        let (epoch, number) = version.split_once('.')?;
        if epoch.parse::<u64>().ok()? != self.epoch {
            return None;
        }
        self.generation(number.parse().ok()?)
    }

    /// Generation `number`, while it is still kept.
    pub fn generation(&self, number: u64) -> Option<Arc<Generation>> {
        let history = self.history.lock().expect("history lock");
        history.iter().find(|generation| generation.number == number).cloned()
    }

    /// The number of a version of this process, if it is one.
    pub fn number_of(&self, version: &str) -> Option<u64> {
        let (epoch, number) = version.split_once('.')?;
        (epoch.parse::<u64>().ok()? == self.epoch).then(|| number.parse().ok()).flatten()
    }

    /// Registers a new stream; the returned id keys its status.
    pub fn connect(&self, proxy: String) -> u64 {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        self.proxies.lock().expect("proxies lock").insert(id, ProxyStatus { proxy, ..ProxyStatus::default() });
        self.metrics.connected_proxies.inc();
        id
    }

    /// Updates what is known of stream `id`.
    pub fn update_status(&self, id: u64, update: impl FnOnce(&mut ProxyStatus)) {
        if let Some(status) = self.proxies.lock().expect("proxies lock").get_mut(&id) {
            update(status);
        }
    }

    /// Forgets stream `id`.
    pub fn disconnect(&self, id: u64) {
        if self.proxies.lock().expect("proxies lock").remove(&id).is_some() {
            self.metrics.connected_proxies.dec();
        }
    }

    /// Every connected proxy's status.
    pub fn proxies(&self) -> Vec<ProxyStatus> {
        self.proxies.lock().expect("proxies lock").values().cloned().collect()
    }

    fn count_resources(&self, world: &World) {
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for kind in common::resource::Kind::ALL {
            counts.insert(kind.name(), 0);
        }
        for key in world.entries.keys() {
            let kind = match key.kind {
                KeyType::Istio(kind) => kind.name(),
                KeyType::Service => "Service",
                KeyType::Endpoints => "Endpoints",
            };
            *counts.entry(kind).or_default() += 1;
        }
        for (kind, count) in counts {
            self.metrics.resources.with_label_values(&[kind]).set(count);
        }
    }
}
