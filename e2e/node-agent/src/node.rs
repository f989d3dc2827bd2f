//! The Node object: registered at start with the pod CIDR and no taints, and kept Ready by a
//! status heartbeat every 10 s (kube-controller-manager marks a node NotReady after 40 s without
//! one; the status heartbeat alone is enough for that, so no Lease is kept).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};

use crate::config::ClusterEnv;
use crate::status::now;

/// Creates the Node if it does not exist yet and writes its first Ready status.
pub async fn register(client: &Client, name: &str, env: &ClusterEnv) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), "amd64".to_string()),
    ]);
    let node = Node {
        metadata: ObjectMeta { name: Some(name.to_string()), labels: Some(labels), ..Default::default() },
        spec: Some(NodeSpec {
            pod_cidr: Some(env.pod_cidr.to_string()),
            pod_cidrs: Some(vec![env.pod_cidr.to_string()]),
            ..Default::default()
        }),
        status: None,
    };
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = name, "registered node"),
        Err(kube::Error::Api(e)) if e.code == 409 => tracing::info!(node = name, "node already registered"),
        Err(e) => return Err(e).context(format!("creating Node {name}")),
    }
    heartbeat_once(&api, name, env).await
}

/// Re-sends the Ready status forever; re-registers the Node if someone deleted it.
pub async fn heartbeat(client: Client, name: String, env: ClusterEnv) {
    let api: Api<Node> = Api::all(client.clone());
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        if let Err(e) = heartbeat_once(&api, &name, &env).await {
            tracing::warn!(node = %name, error = %format!("{e:#}"), "node heartbeat failed; registering again");
            if let Err(e) = register(&client, &name, &env).await {
                tracing::warn!(node = %name, error = %format!("{e:#}"), "node registration failed");
            }
        }
    }
}

async fn heartbeat_once(api: &Api<Node>, name: &str, env: &ClusterEnv) -> Result<()> {
    let t = now();
    let cond = |kind: &str, status: &str, reason: &str| NodeCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        last_heartbeat_time: Some(t.clone()),
        last_transition_time: Some(t.clone()),
        message: None,
    };
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity("8".into())),
        ("memory".to_string(), Quantity("16Gi".into())),
        ("pods".to_string(), Quantity("110".into())),
        ("ephemeral-storage".to_string(), Quantity("100Gi".into())),
    ]);
    let status = NodeStatus {
        conditions: Some(vec![
            cond("Ready", "True", "KubeletReady"),
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID"),
        ]),
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: env.bridge_ip.to_string() },
            NodeAddress { type_: "Hostname".into(), address: name.into() },
        ]),
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        daemon_endpoints: Some(NodeDaemonEndpoints { kubelet_endpoint: Some(DaemonEndpoint { port: 10250 }) }),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".into(),
            container_runtime_version: "mesh-node-agent://0.1".into(),
            kubelet_version: "v1.20.0-mesh".into(),
            kube_proxy_version: "v1.20.0-mesh".into(),
            operating_system: "linux".into(),
            os_image: "mesh-node-agent".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let patch = serde_json::json!({ "status": status });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await.context("patching Node status")?;
    Ok(())
}
