//! One container's life: start the process, run its probes and hooks, restart it by the pod's
//! restartPolicy with kubelet's backoff (10s doubling to 5min), and stop it on request with
//! preStop → SIGTERM → SIGKILL after the grace period.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Probe;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::cmd::kill_group;
use crate::probe::{Target, probe_once, run_hook};
use crate::status::{Runtime, now, running_state, terminated_state, waiting_state};

/// `Some(grace seconds)` once the pod is being stopped.
pub type StopRx = watch::Receiver<Option<i64>>;

/// Everything one container's supervisor needs.
pub struct ContainerRun {
    pub rt: Arc<Runtime>,
    pub idx: usize,
    pub init: bool,
    pub target: Target,
    pub log_path: PathBuf,
    pub restart_policy: String,
}

/// How an init container ended.
pub enum InitOutcome {
    Succeeded,
    Failed,
    Stopped,
}

enum ProbeEvent {
    Started,
    Ready(bool),
    Kill(&'static str),
}

impl ContainerRun {
    fn spawn(&self) -> Result<Child> {
        let mut cmd = self.target.launch.command(&self.target.pod);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        cmd.stdout(log.try_clone()?).stderr(log).stdin(Stdio::null());
        // Own process group: stopping the container signals everything it forked.
        cmd.process_group(0);
        cmd.spawn().with_context(|| format!("starting container {}", self.target.container.name))
    }

    fn name(&self) -> &str {
        &self.target.container.name
    }

    /// Marks the container running and returns its process (group) id.
    fn started(&self, child: &Child, restarts: i32) -> (u32, Option<String>) {
        let pid = child.id().unwrap_or(0);
        let id = Some(format!("mesh://{}/{}/{restarts}", self.target.pod.netns, self.name()));
        self.rt.update(self.init, self.idx, |cs| {
            cs.state = Some(running_state(now()));
            cs.container_id = id.clone();
            cs.ready = false;
            // `started` turns true once the startup probe passes (at once without one).
            cs.started = Some(false);
        });
        (pid, id)
    }

    fn record_exit(&self, code: i32, container_id: Option<String>) {
        let reason = if code == 0 { "Completed" } else { "Error" };
        self.rt.update(self.init, self.idx, |cs| {
            let started = cs.state.as_ref().and_then(|s| s.running.as_ref()).and_then(|r| r.started_at.clone());
            cs.state = Some(terminated_state(code, reason, started, container_id));
            cs.ready = false;
            cs.started = Some(false);
        });
    }

    /// Waits out the restart backoff showing CrashLoopBackOff; false if stopped meanwhile.
    async fn back_off(&self, restarts: i32, stop: &mut StopRx) -> bool {
        let secs = if restarts <= 1 { 0 } else { (10u64 << (restarts - 2).min(5)).min(300) };
        self.rt.update(self.init, self.idx, |cs| {
            cs.last_state = cs.state.clone();
            cs.restart_count = restarts;
            if secs > 0 {
                cs.state =
                    Some(waiting_state("CrashLoopBackOff", &format!("back-off {secs}s restarting failed container")));
            }
        });
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(secs)) => true,
            _ = stopped(stop) => false,
        }
    }

    /// Runs an init container until it succeeds (retrying unless restartPolicy is Never).
    pub async fn run_init(self, mut stop: StopRx) -> InitOutcome {
        let mut restarts = 0;
        loop {
            let code = match self.spawn() {
                Ok(mut child) => {
                    let (pgid, id) = self.started(&child, restarts);
                    let code = tokio::select! {
                        st = child.wait() => exit_code(st),
                        grace = stopped(&mut stop) => self.terminate(&mut child, pgid, grace).await,
                    };
                    self.record_exit(code, id);
                    if stop.borrow().is_some() {
                        return InitOutcome::Stopped;
                    }
                    code
                }
                Err(e) => {
                    self.rt.update(true, self.idx, |cs| {
                        cs.state = Some(waiting_state("RunContainerError", &e.to_string()))
                    });
                    1
                }
            };
            if code == 0 {
                // A completed init container reports ready, as kubelet shows it.
                self.rt.update(true, self.idx, |cs| cs.ready = true);
                return InitOutcome::Succeeded;
            }
            tracing::warn!(pod = %self.target.pod.key, container = self.name(), code, "init container failed");
            if self.restart_policy == "Never" {
                return InitOutcome::Failed;
            }
            restarts += 1;
            if !self.back_off(restarts, &mut stop).await {
                return InitOutcome::Stopped;
            }
        }
    }

    /// Runs a regular container for the life of the pod. `launched` fires once the first start
    /// (and its postStart hook) is done, so the pod starts containers in order as kubelet does.
    pub async fn supervise(self, mut stop: StopRx, launched: oneshot::Sender<()>) {
        let mut launched = Some(launched);
        let mut restarts = 0;
        loop {
            if stop.borrow().is_some() {
                return;
            }
            let mut child = match self.spawn() {
                Ok(child) => child,
                Err(e) => {
                    tracing::warn!(pod = %self.target.pod.key, container = self.name(), error = %e, "container did not start");
                    self.rt.update(false, self.idx, |cs| {
                        cs.state = Some(waiting_state("RunContainerError", &e.to_string()))
                    });
                    launched.take().map(|tx| tx.send(()));
                    restarts += 1;
                    if !self.back_off(restarts, &mut stop).await {
                        return;
                    }
                    continue;
                }
            };
            let (pgid, id) = self.started(&child, restarts);
            tracing::info!(pod = %self.target.pod.key, container = self.name(), pid = pgid, restarts, "container started");
            let (code, stopping) = self.watch_running(&mut child, pgid, &mut stop, &mut launched).await;
            kill_group(pgid, "KILL").await;
            self.record_exit(code, id);
            tracing::info!(pod = %self.target.pod.key, container = self.name(), code, "container exited");
            if stopping {
                return;
            }
            let restart = match self.restart_policy.as_str() {
                "Never" => false,
                "OnFailure" => code != 0,
                _ => true,
            };
            if !restart {
                self.rt.finished.lock().expect("status lock")[self.idx] = true;
                self.rt.changed.notify_one();
                stopped(&mut stop).await;
                return;
            }
            restarts += 1;
            if !self.back_off(restarts, &mut stop).await {
                return;
            }
        }
    }

    /// Runs hooks and probes until the process ends; returns its exit code and whether the pod
    /// is being stopped.
    async fn watch_running(
        &self,
        child: &mut Child,
        pgid: u32,
        stop: &mut StopRx,
        launched: &mut Option<oneshot::Sender<()>>,
    ) -> (i32, bool) {
        let c = &self.target.container;
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref())
            && !run_hook(h, &self.target, Duration::from_secs(120)).await
        {
            tracing::warn!(pod = %self.target.pod.key, container = self.name(), "postStart hook failed; killing");
            launched.take().map(|tx| tx.send(()));
            return (self.terminate(child, pgid, 2).await, false);
        }
        launched.take().map(|tx| tx.send(()));
        let (tx, mut rx) = mpsc::channel(8);
        let probes = tokio::spawn(probe_loop(self.target.clone(), tx));
        let result = loop {
            tokio::select! {
                st = child.wait() => break (exit_code(st), false),
                grace = stopped(stop) => break (self.terminate(child, pgid, grace).await, true),
                Some(ev) = rx.recv() => match ev {
                    ProbeEvent::Started => self.rt.update(false, self.idx, |cs| cs.started = Some(true)),
                    ProbeEvent::Ready(r) => self.rt.update(false, self.idx, |cs| cs.ready = r),
                    ProbeEvent::Kill(why) => {
                        tracing::warn!(pod = %self.target.pod.key, container = self.name(), why, "restarting container");
                        break (self.terminate(child, pgid, self.default_grace()).await, false);
                    }
                },
            }
        };
        probes.abort();
        result
    }

    fn default_grace(&self) -> i64 {
        self.target.pod.grace
    }

    /// preStop, SIGTERM, and SIGKILL once `grace` seconds have passed since the stop began.
    async fn terminate(&self, child: &mut Child, pgid: u32, grace: i64) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(grace.max(0) as u64);
        if let Some(h) = self.target.container.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
            let limit = Duration::from_secs(grace.max(1) as u64);
            if !run_hook(h, &self.target, limit).await {
                tracing::warn!(pod = %self.target.pod.key, container = self.name(), "preStop hook failed");
            }
        }
        kill_group(pgid, "TERM").await;
        match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(st) => exit_code(st),
            Err(_) => {
                kill_group(pgid, "KILL").await;
                exit_code(child.wait().await)
            }
        }
    }
}

/// Resolves when a stop is requested (or the pod worker is gone), yielding the grace period.
pub async fn stopped(stop: &mut StopRx) -> i64 {
    loop {
        if let Some(grace) = *stop.borrow_and_update() {
            return grace;
        }
        if stop.changed().await.is_err() {
            return 0;
        }
    }
}

fn exit_code(st: std::io::Result<std::process::ExitStatus>) -> i32 {
    match st {
        Ok(st) => st.code().or_else(|| st.signal().map(|s| 128 + s)).unwrap_or(1),
        Err(_) => 1,
    }
}

/// Startup probe first; then liveness and readiness side by side, as kubelet does.
async fn probe_loop(target: Target, tx: mpsc::Sender<ProbeEvent>) {
    let c = target.container.clone();
    if let Some(p) = &c.startup_probe {
        let mut failures = 0;
        let mut first = true;
        loop {
            tick(p, &mut first).await;
            if probe_once(p, &target).await {
                break;
            }
            failures += 1;
            if failures >= p.failure_threshold.unwrap_or(3) {
                let _ = tx.send(ProbeEvent::Kill("startup probe failed")).await;
                return;
            }
        }
    }
    let _ = tx.send(ProbeEvent::Started).await;
    let live = async {
        let Some(p) = &c.liveness_probe else { return std::future::pending::<()>().await };
        let (mut failures, mut first) = (0, true);
        loop {
            tick(p, &mut first).await;
            if probe_once(p, &target).await {
                failures = 0;
            } else {
                failures += 1;
                if failures >= p.failure_threshold.unwrap_or(3) {
                    let _ = tx.send(ProbeEvent::Kill("liveness probe failed")).await;
                    return std::future::pending::<()>().await;
                }
            }
        }
    };
    let ready = async {
        let Some(p) = &c.readiness_probe else {
            let _ = tx.send(ProbeEvent::Ready(true)).await;
            return std::future::pending::<()>().await;
        };
        let (mut ok, mut bad, mut first, mut ready) = (0, 0, true, false);
        loop {
            tick(p, &mut first).await;
            if probe_once(p, &target).await {
                (ok, bad) = (ok + 1, 0);
                if !ready && ok >= p.success_threshold.unwrap_or(1) {
                    ready = true;
                    let _ = tx.send(ProbeEvent::Ready(true)).await;
                }
            } else {
                (ok, bad) = (0, bad + 1);
                if ready && bad >= p.failure_threshold.unwrap_or(3) {
                    ready = false;
                    let _ = tx.send(ProbeEvent::Ready(false)).await;
                }
            }
        }
    };
    tokio::join!(live, ready);
}

/// Sleeps initialDelaySeconds before the first attempt, periodSeconds before later ones.
async fn tick(p: &Probe, first: &mut bool) {
    let secs = if *first { p.initial_delay_seconds.unwrap_or(0) } else { p.period_seconds.unwrap_or(10) };
    *first = false;
    tokio::time::sleep(Duration::from_secs(secs.max(0) as u64)).await;
}
