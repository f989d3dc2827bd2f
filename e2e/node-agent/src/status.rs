//! What the agent knows about a running pod, and the PodStatus it writes from that. Container
//! supervisors update their `ContainerStatus` in place and ring `changed`; the pod worker turns
//! the whole into one status patch, so kube-controller-manager sees the same readiness the
//! probes saw and keeps Endpoints true.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, Pod,
    PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::Notify;

pub fn now() -> Time {
    Time(Timestamp::now())
}

/// Shared, mutable view of one pod's containers.
pub struct Runtime {
    pub init: Mutex<Vec<ContainerStatus>>,
    pub main: Mutex<Vec<ContainerStatus>>,
    /// Per main container: its supervisor ended for good (no further restart).
    pub finished: Mutex<Vec<bool>>,
    pub initialized: AtomicBool,
    /// Set when the pod can never run (init container failed under `Never`, bad spec).
    pub failed: Mutex<Option<(String, String)>>,
    pub pod_ip: Mutex<Option<String>>,
    pub host_ip: String,
    pub start_time: Time,
    pub changed: Notify,
}

impl Runtime {
    pub fn new(pod: &Pod, host_ip: String) -> Self {
        let spec = pod.spec.clone().unwrap_or_default();
        let waiting = |c: &k8s_openapi::api::core::v1::Container| ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: c.image.clone().unwrap_or_default(),
            state: Some(waiting_state("ContainerCreating", "")),
            ..Default::default()
        };
        let init = spec.init_containers.iter().flatten().map(waiting).collect();
        let main: Vec<ContainerStatus> = spec.containers.iter().map(waiting).collect();
        let finished = vec![false; main.len()];
        Self {
            init: Mutex::new(init),
            main: Mutex::new(main),
            finished: Mutex::new(finished),
            initialized: AtomicBool::new(spec.init_containers.as_ref().is_none_or(Vec::is_empty)),
            failed: Mutex::new(None),
            pod_ip: Mutex::new(None),
            host_ip,
            start_time: now(),
            changed: Notify::new(),
        }
    }

    /// Changes one container's status and tells the status writer.
    pub fn update(&self, init: bool, idx: usize, f: impl FnOnce(&mut ContainerStatus)) {
        {
            let mut list = if init { self.init.lock() } else { self.main.lock() }.expect("status lock");
            if let Some(cs) = list.get_mut(idx) {
                f(cs);
            }
        }
        self.changed.notify_one();
    }

    /// The PodStatus for the API.
    pub fn pod_status(&self) -> PodStatus {
        let init = self.init.lock().expect("status lock").clone();
        let main = self.main.lock().expect("status lock").clone();
        let finished = self.finished.lock().expect("status lock").clone();
        let initialized = self.initialized.load(Ordering::SeqCst);
        let failed = self.failed.lock().expect("status lock").clone();
        let pod_ip = self.pod_ip.lock().expect("status lock").clone();
        let all_ready = !main.is_empty() && main.iter().all(|c| c.ready);
        let running = |c: &ContainerStatus| c.state.as_ref().is_some_and(|s| s.running.is_some());
        let exit = |c: &ContainerStatus| c.state.as_ref().and_then(|s| s.terminated.as_ref()).map(|t| t.exit_code);
        let (phase, reason, message) = if let Some((reason, message)) = failed {
            ("Failed", Some(reason), Some(message))
        } else if !main.is_empty() && finished.iter().all(|f| *f) {
            let ok = main.iter().all(|c| exit(c) == Some(0));
            (if ok { "Succeeded" } else { "Failed" }, None, None)
        } else if initialized && main.iter().any(|c| running(c) || c.restart_count > 0 || exit(c).is_some()) {
            ("Running", None, None)
        } else {
            ("Pending", None, None)
        };
        let cond = |kind: &str, ok: bool, reason: Option<&str>| PodCondition {
            type_: kind.to_string(),
            status: if ok { "True" } else { "False" }.to_string(),
            reason: if ok { None } else { reason.map(str::to_string) },
            last_transition_time: Some(self.start_time.clone()),
            ..Default::default()
        };
        let conditions = vec![
            cond("Initialized", initialized, Some("ContainersNotInitialized")),
            cond("Ready", all_ready, Some("ContainersNotReady")),
            cond("ContainersReady", all_ready, Some("ContainersNotReady")),
            cond("PodScheduled", true, None),
        ];
        PodStatus {
            phase: Some(phase.to_string()),
            reason,
            message,
            conditions: Some(conditions),
            host_ip: Some(self.host_ip.clone()),
            pod_ip: pod_ip.clone(),
            pod_ips: pod_ip.map(|ip| vec![PodIP { ip }]),
            start_time: Some(self.start_time.clone()),
            qos_class: Some("BestEffort".into()),
            init_container_statuses: Some(init),
            container_statuses: Some(main),
            ..Default::default()
        }
    }
}

pub fn waiting_state(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: (!message.is_empty()).then(|| message.to_string()),
        }),
        ..Default::default()
    }
}

pub fn running_state(started: Time) -> ContainerState {
    ContainerState { running: Some(ContainerStateRunning { started_at: Some(started) }), ..Default::default() }
}

pub fn terminated_state(
    code: i32,
    reason: &str,
    started: Option<Time>,
    container_id: Option<String>,
) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            reason: Some(reason.to_string()),
            started_at: started,
            finished_at: Some(now()),
            container_id,
            ..Default::default()
        }),
        ..Default::default()
    }
}
