//! Config intake: objects in, compiled tables out, swapped atomically.
//!
//! A config is read (`file`), turned into a registry and resources, compiled by
//! `common::compile` for this proxy's identity (`identity`), given its runtime side
//! (`crate::routing::table`), and published as one immutable [`Snapshot`]. The data path loads
//! the current snapshot once per connection or request (an `ArcSwap` load: no lock); a request
//! keeps the snapshot it started with, so a reload never changes a request halfway. A config
//! that cannot be read or run is refused and the previous snapshot stays.
//!
//! Configs come from `--config-file` (`file`, reloaded by `watch`) or from the controller's
//! config stream (`stream` speaks the protocol, `controller` keeps the resources it sent); both
//! end in [`ConfigStore::apply`].

pub mod controller;
pub mod file;
pub mod identity;
pub mod stream;
pub mod watch;

use crate::routing::table::Routing;
use arc_swap::ArcSwap;
use common::compile::{Compiled, ProxyIdentity, compile};
use common::registry::Registry;
use common::resource::Resource;
use identity::IdentitySettings;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// One config, compiled and ready for the data path.
pub struct Snapshot {
    /// Counts accepted configs from 1; 0 is the empty config before any was loaded.
    pub version: u64,
    pub identity: ProxyIdentity,
    pub resources: Vec<Resource>,
    pub registry: Registry,
    pub compiled: Compiled,
    pub routing: Routing,
    /// Objects in the config the proxy does not read.
    pub skipped: Vec<String>,
}

impl Snapshot {
    /// No config at all: no listeners, every destination unknown (ALLOW_ANY passes through).
    pub fn empty(identity: ProxyIdentity) -> Snapshot {
        let registry = Registry::default();
        let compiled = compile(&[], &registry, &identity);
        Snapshot {
            version: 0,
            identity,
            resources: Vec::new(),
            registry,
            compiled,
            routing: Routing::default(),
            skipped: Vec::new(),
        }
    }

    /// Everything about this config, for `/config_dump`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "version": self.version,
            "identity": {
                "namespace": self.identity.namespace,
                "pod_name": self.identity.pod_name,
                "service_account": self.identity.service_account,
                "spiffe_id": self.identity.spiffe_id(),
                "labels": self.identity.labels,
                "ips": self.identity.ips,
            },
            "resources": self.resources.iter().map(Resource::to_json).collect::<Vec<_>>(),
            "registry": self.registry,
            "tables": self.compiled.tables,
            "diagnostics": self.compiled.diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            "skipped_objects": self.skipped,
        })
    }
}

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: String, source: file::ParseErrors },
    #[error("{0}")]
    Identity(#[from] identity::IdentityError),
    #[error("{path}: {source}")]
    Routing { path: String, source: crate::routing::table::BuildError },
}

/// What one config is made of, wherever it came from.
#[derive(Debug, Default, Clone)]
pub struct Inputs {
    pub resources: Vec<Resource>,
    pub registry: Registry,
    /// Objects the proxy does not read, for `/config_dump`.
    pub skipped: Vec<String>,
}

/// Where configs come from.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    pub identity: IdentitySettings,
    /// The cluster's DNS suffix.
    pub domain: String,
}

/// The current snapshot and how to make the next one.
pub struct ConfigStore {
    current: ArcSwap<Snapshot>,
    source: Option<ConfigSource>,
    identity: IdentitySettings,
    next_version: AtomicU64,
    /// The last refusal, for `/config_dump`; touched only by reloads and the admin server.
    last_error: Mutex<Option<String>>,
}

impl ConfigStore {
    /// A store with no config source: the empty snapshot forever.
    pub fn empty() -> ConfigStore {
        let snapshot = Snapshot::empty(ProxyIdentity::sidecar("default", ""));
        ConfigStore::with(snapshot, None, IdentitySettings { namespace: "default".into(), ..Default::default() })
    }

    fn with(snapshot: Snapshot, source: Option<ConfigSource>, identity: IdentitySettings) -> ConfigStore {
        ConfigStore {
            current: ArcSwap::from_pointee(snapshot),
            source,
            identity,
            next_version: AtomicU64::new(1),
            last_error: Mutex::new(None),
        }
    }

    /// Loads `source` once; the proxy does not start on a config it cannot use.
    pub fn from_source(source: ConfigSource) -> Result<ConfigStore, ConfigError> {
        let identity = source.identity.resolve(&Registry::default())?;
        let settings = source.identity.clone();
        let store = ConfigStore::with(Snapshot::empty(identity), Some(source), settings);
        store.reload()?;
        Ok(store)
    }

    /// A store fed by [`ConfigStore::apply`] (the controller's stream), empty until then.
    pub fn for_identity(identity: IdentitySettings) -> Result<ConfigStore, ConfigError> {
        let resolved = identity.resolve(&Registry::default())?;
        Ok(ConfigStore::with(Snapshot::empty(resolved), None, identity))
    }

    /// The snapshot in force now. Hold it for as long as one request or connection needs it.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    pub fn source(&self) -> Option<&ConfigSource> {
        self.source.as_ref()
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Reads, compiles and publishes the source's config; on failure the current snapshot
    /// stays and the error is kept for `/config_dump`. Returns the new version.
    pub fn reload(&self) -> Result<u64, ConfigError> {
        let Some(source) = &self.source else { return Ok(self.load().version) };
        let origin = source.path.display().to_string();
        let result = read(source).and_then(|objects| self.build(objects, &origin));
        self.publish(result, &origin)
    }

    /// Compiles and publishes `objects` (from `origin`, for logs and errors); on failure the
    /// current snapshot stays. Returns the new version.
    pub fn apply(&self, objects: Inputs, origin: &str) -> Result<u64, ConfigError> {
        let result = self.build(objects, origin);
        self.publish(result, origin)
    }

    fn publish(&self, result: Result<Snapshot, ConfigError>, origin: &str) -> Result<u64, ConfigError> {
        let outcome = match result {
            Ok(snapshot) => {
                let version = snapshot.version;
                let diagnostics = snapshot.compiled.diagnostics.len();
                self.current.store(Arc::new(snapshot));
                tracing::info!(version, origin, diagnostics, "config loaded");
                Ok(version)
            }
            Err(error) => {
                tracing::error!(origin, %error, "config refused; keeping the previous one");
                Err(error)
            }
        };
        if let Ok(mut last) = self.last_error.lock() {
            *last = outcome.as_ref().err().map(|e| e.to_string());
        }
        outcome
    }

    fn build(&self, objects: Inputs, origin: &str) -> Result<Snapshot, ConfigError> {
        let identity = self.identity.resolve(&objects.registry)?;
        let compiled = compile(&objects.resources, &objects.registry, &identity);
        for diagnostic in &compiled.diagnostics {
            tracing::warn!(%diagnostic, "config diagnostic");
        }
        let previous = self.load();
        let routing = Routing::build(&compiled.tables, Some(&previous.routing))
            .map_err(|e| ConfigError::Routing { path: origin.to_string(), source: e })?;
        Ok(Snapshot {
            version: self.next_version.fetch_add(1, Relaxed),
            identity,
            resources: objects.resources,
            registry: objects.registry,
            compiled,
            routing,
            skipped: objects.skipped,
        })
    }
}

/// Reads and parses the config file.
fn read(source: &ConfigSource) -> Result<Inputs, ConfigError> {
    let path = source.path.display().to_string();
    let text =
        std::fs::read_to_string(&source.path).map_err(|e| ConfigError::Read { path: path.clone(), source: e })?;
    let objects = file::parse(&text).map_err(|e| ConfigError::Parse { path, source: e })?;
    Ok(Inputs { registry: objects.registry(&source.domain), resources: objects.resources, skipped: objects.skipped })
}
