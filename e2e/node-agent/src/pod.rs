//! One pod's worker: network and volumes, init containers in order, then the containers, status
//! written as they change; on deletion the containers are stopped within the grace period,
//! everything the pod had is removed, and the pod object is deleted with grace 0.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::{oneshot, watch};

use crate::agent::Agent;
use crate::container::{ContainerRun, InitOutcome, StopRx, stopped};
use crate::env::{Lookup, PodFacts, container_env, expand};
use crate::launch::{Launch, PodContext, container_argv};
use crate::netns::{self, PodNet};
use crate::probe::Target;
use crate::status::{Runtime, waiting_state};
use crate::volumes;

/// Runs the pod whose latest version arrives on `updates` until it is deleted. The sender being
/// dropped means the object is gone from the API (forced deletion): stop at once.
pub async fn run(agent: Arc<Agent>, mut updates: watch::Receiver<Pod>) {
    let pod = updates.borrow().clone();
    let key = pod_key(&pod);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    if pod.metadata.deletion_timestamp.is_none() && phase != "Succeeded" && phase != "Failed" {
        tracing::info!(pod = %key, "starting pod");
        let rt = Arc::new(Runtime::new(&pod, agent.env.bridge_ip.to_string()));
        let writer = tokio::spawn(write_status(agent.clone(), pod.clone(), rt.clone()));
        let (stop_tx, stop_rx) = watch::channel(None);
        let net = tokio::select! {
            net = setup_network(&agent, &pod, &rt) => Some(net),
            _ = deleted(&mut updates) => None,
        };
        if let Some(net) = net {
            let runner = tokio::spawn(run_containers(
                agent.clone(),
                pod.clone(),
                updates.clone(),
                rt.clone(),
                net.clone(),
                stop_rx,
            ));
            let grace = deleted(&mut updates).await;
            tracing::info!(pod = %key, grace, "stopping pod");
            let _ = stop_tx.send(Some(grace));
            let abort = runner.abort_handle();
            let _ = tokio::time::timeout(Duration::from_secs(grace.max(0) as u64 + 15), runner).await;
            abort.abort();
            netns::destroy(&net).await;
            agent.ipam.free(net.ip);
            agent.hosts.unregister(&uid);
        }
        writer.abort();
        let _ = std::fs::remove_dir_all(agent.pod_dir(&pod));
    } else {
        // Finished or already terminating (e.g. after an agent restart): nothing to run.
        deleted(&mut updates).await;
    }
    let api: Api<Pod> = Api::namespaced(agent.client.clone(), pod.metadata.namespace.as_deref().unwrap_or_default());
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
        ..Default::default()
    };
    match api.delete(pod.metadata.name.as_deref().unwrap_or_default(), &dp).await {
        Ok(_) => tracing::info!(pod = %key, "pod removed"),
        Err(e) => tracing::debug!(pod = %key, error = %e, "final delete (already gone?)"),
    }
}

/// `namespace_name`, the form used for log directories and netns names.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}_{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Waits for a deletion request and returns its grace period in seconds.
async fn deleted(updates: &mut watch::Receiver<Pod>) -> i64 {
    loop {
        {
            let pod = updates.borrow_and_update();
            if pod.metadata.deletion_timestamp.is_some() {
                let spec_grace = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds);
                return pod.metadata.deletion_grace_period_seconds.or(spec_grace).unwrap_or(30);
            }
        }
        if updates.changed().await.is_err() {
            return 0;
        }
    }
}

/// Creates the pod's netns and hosts file, retrying until it works (shown as ContainerCreating).
async fn setup_network(agent: &Agent, pod: &Pod, rt: &Runtime) -> PodNet {
    loop {
        match try_setup_network(agent, pod).await {
            Ok(net) => {
                *rt.pod_ip.lock().expect("status lock") = Some(net.ip.to_string());
                rt.changed.notify_one();
                return net;
            }
            Err(e) => {
                tracing::warn!(pod = %pod_key(pod), error = %format!("{e:#}"), "pod network setup failed; retrying");
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
        }
    }
}

async fn try_setup_network(agent: &Agent, pod: &Pod) -> Result<PodNet> {
    let ip = agent.ipam.allocate()?;
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    match netns::create(&agent.env, uid, &pod_key(pod), ip).await {
        Ok(net) => {
            let dir = agent.pod_dir(pod);
            std::fs::create_dir_all(&dir)?;
            agent.hosts.register(pod, dir.join("hosts"), &ip.to_string(), &agent.services());
            Ok(net)
        }
        Err(e) => {
            agent.ipam.free(ip);
            Err(e)
        }
    }
}

/// Volumes, then init containers one by one, then every container (in order, each after the
/// previous one's postStart hook), until the pod is stopped.
async fn run_containers(
    agent: Arc<Agent>,
    pod: Pod,
    updates: watch::Receiver<Pod>,
    rt: Arc<Runtime>,
    net: PodNet,
    mut stop: StopRx,
) {
    let spec = pod.spec.clone().unwrap_or_default();
    let Some(ctx) = prepare_volumes(&agent, &pod, &rt, &net, &mut stop).await else { return };
    let _refresher = AbortOnDrop(tokio::spawn(refresh_volumes(agent.clone(), updates, net.ip.to_string(), ctx.1)));
    let ctx = ctx.0;
    let policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
    for (idx, c) in spec.init_containers.iter().flatten().enumerate() {
        let Some(run) = prepare(&agent, &pod, &rt, &ctx, &net, c, idx, true, &policy, &mut stop).await else { return };
        match run.run_init(stop.clone()).await {
            InitOutcome::Succeeded => {}
            InitOutcome::Stopped => return,
            InitOutcome::Failed => {
                *rt.failed.lock().expect("status lock") =
                    Some(("Init:Error".into(), format!("init container {} failed", c.name)));
                rt.changed.notify_one();
                return;
            }
        }
    }
    rt.initialized.store(true, Ordering::SeqCst);
    rt.changed.notify_one();
    let mut tasks = Vec::new();
    for (idx, c) in spec.containers.iter().enumerate() {
        let Some(run) = prepare(&agent, &pod, &rt, &ctx, &net, c, idx, false, &policy, &mut stop).await else { break };
        let (tx, rx) = oneshot::channel();
        tasks.push(tokio::spawn(run.supervise(stop.clone(), tx)));
        let _ = rx.await;
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Ends a helper task with the function that started it, on every return path.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renders the volumes, retrying (e.g. until a Secret exists); `None` if stopped meanwhile.
async fn prepare_volumes(
    agent: &Agent,
    pod: &Pod,
    rt: &Runtime,
    net: &PodNet,
    stop: &mut StopRx,
) -> Option<(PodContext, Option<i64>)> {
    let dir = agent.pod_dir(pod);
    let services = agent.service_list();
    let facts = PodFacts { pod, pod_ip: net.ip.to_string(), host_ip: rt.host_ip.clone(), services: &services };
    loop {
        match volumes::render(&agent.client, &facts, &dir.join("volumes"), agent.env.ca_file.as_deref(), true).await {
            Ok((volumes, ttl)) => {
                let spec = pod.spec.as_ref();
                let ctx = PodContext {
                    key: pod_key(pod),
                    netns: net.netns.clone(),
                    hostname: pod.metadata.name.clone().unwrap_or_default(),
                    hosts_file: dir.join("hosts"),
                    volumes,
                    grace: spec.and_then(|s| s.termination_grace_period_seconds).unwrap_or(30),
                };
                return Some((ctx, ttl));
            }
            Err(e) => {
                let msg = format!("{e:#}");
                tracing::warn!(pod = %pod_key(pod), error = %msg, "volume setup failed; retrying");
                for i in 0..rt.main.lock().expect("status lock").len() {
                    rt.update(false, i, |cs| cs.state = Some(waiting_state("ContainerCreating", &msg)));
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3)) => {}
            _ = stopped(stop) => return None,
        }
    }
}

/// Re-renders the volumes every minute from the latest pod object (Secret, ConfigMap and
/// downward API changes show up, as kubelet's periodic sync makes them), requesting new tokens
/// at 80% of the shortest token lifetime, as kubelet rotates them.
async fn refresh_volumes(agent: Arc<Agent>, updates: watch::Receiver<Pod>, pod_ip: String, ttl: Option<i64>) {
    let rotate = Duration::from_secs(ttl.map_or(u64::MAX / 2, |t| (t.max(60) * 8 / 10) as u64));
    let mut tokens_at = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let pod = updates.borrow().clone();
        let tokens = tokens_at.elapsed() >= rotate;
        let services = agent.service_list();
        let facts = PodFacts {
            pod: &pod,
            pod_ip: pod_ip.clone(),
            host_ip: agent.env.bridge_ip.to_string(),
            services: &services,
        };
        let dir = agent.pod_dir(&pod).join("volumes");
        match volumes::render(&agent.client, &facts, &dir, agent.env.ca_file.as_deref(), tokens).await {
            Ok(_) if tokens => tokens_at = tokio::time::Instant::now(),
            Ok(_) => {}
            Err(e) => tracing::warn!(pod = %pod_key(&pod), error = %format!("{e:#}"), "refreshing volumes failed"),
        }
    }
}

/// Resolves one container's argv, environment and mounts, retrying on errors such as a missing
/// Secret key (shown as CreateContainerConfigError); `None` if stopped meanwhile.
#[allow(clippy::too_many_arguments)]
async fn prepare(
    agent: &Arc<Agent>,
    pod: &Pod,
    rt: &Arc<Runtime>,
    ctx: &PodContext,
    net: &PodNet,
    c: &Container,
    idx: usize,
    init: bool,
    policy: &str,
    stop: &mut StopRx,
) -> Option<ContainerRun> {
    let log_dir = agent.env.state_dir.join("logs").join(pod_key(pod));
    loop {
        let attempt = async {
            let services = agent.service_list();
            let facts = PodFacts { pod, pod_ip: net.ip.to_string(), host_ip: rt.host_ip.clone(), services: &services };
            let lookup = Lookup::new(&agent.client, pod.metadata.namespace.as_deref().unwrap_or_default());
            let env = container_env(&facts, c, &lookup).await?;
            let command: Vec<String> = c.command.iter().flatten().map(|s| expand(s, &env)).collect();
            let args: Vec<String> = c.args.iter().flatten().map(|s| expand(s, &env)).collect();
            let image = c.image.clone().unwrap_or_default();
            let mut launch = Launch::for_container(pod.spec.as_ref().expect("pod has a spec"), c, &ctx.volumes)?;
            launch.argv = container_argv(&agent.images.reloaded(), &image, &command, &args)?;
            launch.env = env;
            std::fs::create_dir_all(&log_dir)?;
            anyhow::Ok(launch)
        };
        match attempt.await {
            Ok(launch) => {
                let target = Target { pod_ip: net.ip.to_string(), container: c.clone(), pod: ctx.clone(), launch };
                return Some(ContainerRun {
                    rt: rt.clone(),
                    idx,
                    init,
                    target,
                    log_path: log_dir.join(format!("{}.log", c.name)),
                    restart_policy: policy.to_string(),
                });
            }
            Err(e) => {
                let msg = format!("{e:#}");
                tracing::warn!(pod = %pod_key(pod), container = %c.name, error = %msg, "container config error");
                rt.update(init, idx, |cs| cs.state = Some(waiting_state("CreateContainerConfigError", &msg)));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3)) => {}
            _ = stopped(stop) => return None,
        }
    }
}

/// Writes the pod's status whenever the runtime rings, at most every 200 ms.
async fn write_status(agent: Arc<Agent>, pod: Pod, rt: Arc<Runtime>) {
    let api: Api<Pod> = Api::namespaced(agent.client.clone(), pod.metadata.namespace.as_deref().unwrap_or_default());
    let name = pod.metadata.name.clone().unwrap_or_default();
    loop {
        rt.changed.notified().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let patch = serde_json::json!({ "status": rt.pod_status() });
        if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            // Try again shortly: a lost update would leave Endpoints wrong until the next change.
            tracing::warn!(pod = %pod_key(&pod), error = %e, "status update failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            rt.changed.notify_one();
        }
    }
}

impl Agent {
    /// `<state>/pods/<ns>_<name>_<uid>`: volumes and the hosts file of one pod.
    pub fn pod_dir(&self, pod: &Pod) -> PathBuf {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        self.env.state_dir.join("pods").join(format!("{}_{uid}", pod_key(pod)))
    }
}
