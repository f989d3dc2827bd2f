use super::*;
use crate::sidecar::{INIT_CONTAINER, PROXY_CONTAINER};

const WORKLOADS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "web:1", futureField: keep-me}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: job, image: "job:1"}]
---
apiVersion: v1
kind: Pod
metadata:
  name: opted-out
  annotations: {sidecar.istio.io/inject: "false"}
spec:
  containers: [{name: app, image: "app:1"}]
"#;

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml).map(|d| Value::deserialize(d).unwrap()).collect()
}

fn container_names(spec: &Value) -> Vec<String> {
    spec["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn workloads_get_sidecars_and_other_documents_pass_through() {
    let (out, notes) = run(WORKLOADS, "default", &InjectConfig::default()).unwrap();
    let d = docs(&out);
    assert_eq!(d.len(), 4);
    assert_eq!(d[0], docs(WORKLOADS)[0], "the Service is unchanged");

    let deploy = &d[1]["spec"]["template"];
    assert_eq!(container_names(&deploy["spec"]), [PROXY_CONTAINER, "web"]);
    assert_eq!(deploy["spec"]["initContainers"][0]["name"], INIT_CONTAINER);
    assert_eq!(deploy["spec"]["containers"][1]["futureField"], "keep-me");
    assert!(deploy["metadata"]["annotations"]["sidecar.istio.io/status"].is_string());
    assert!(deploy["metadata"].get("name").is_none(), "the template gets no name");

    let cron = &d[2]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(container_names(cron), [PROXY_CONTAINER, "job"]);

    assert_eq!(container_names(&d[3]["spec"]), ["app"]);
    assert_eq!(d[3], docs(WORKLOADS)[3], "the opted-out pod is unchanged");
    assert_eq!(
        notes,
        [
            Note { what: "Deployment shop/web".into(), injected: true, why: "namespace selected by the caller" },
            Note { what: "CronJob default/nightly".into(), injected: true, why: "namespace selected by the caller" },
            Note {
                what: "Pod default/opted-out".into(),
                injected: false,
                why: "pod annotation sidecar.istio.io/inject"
            },
        ]
    );
}

#[test]
fn every_workload_kind_is_found() {
    for kind in ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"] {
        let yaml = format!(
            "kind: {kind}\napiVersion: apps/v1\nmetadata: {{name: w}}\nspec:\n  template:\n    spec:\n      containers: [{{name: app}}]\n"
        );
        let (out, _) = run(&yaml, "default", &InjectConfig::default()).unwrap();
        assert_eq!(container_names(&docs(&out)[0]["spec"]["template"]["spec"]), [PROXY_CONTAINER, "app"], "{kind}");
    }
    let list = "kind: List\napiVersion: v1\nitems:\n- kind: Pod\n  apiVersion: v1\n  metadata: {name: p}\n  spec: {containers: [{name: app}]}\n";
    let (out, _) = run(list, "default", &InjectConfig::default()).unwrap();
    assert_eq!(container_names(&docs(&out)[0]["items"][0]["spec"]), [PROXY_CONTAINER, "app"]);
}

#[test]
fn injecting_the_output_again_changes_nothing() {
    let cfg = InjectConfig::default();
    let (once, _) = run(WORKLOADS, "default", &cfg).unwrap();
    let (twice, notes) = run(&once, "default", &cfg).unwrap();
    assert_eq!(once, twice);
    assert!(notes.iter().all(|n| !n.injected));
}

#[test]
fn bad_documents_are_all_reported_by_position_and_name() {
    let yaml = "kind: Deployment\nmetadata: {name: a}\nspec: {}\n---\nkind: Pod\nmetadata: {name: b, annotations: {sidecar.istio.io/proxyCPU: lots}}\nspec: {containers: [{name: x}]}\n---\n: : bad\n";
    let errors = run(yaml, "default", &InjectConfig::default()).unwrap_err();
    let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(messages[0], "document 1 (Deployment default/a): spec.template is missing");
    assert!(
        messages[1]
            .starts_with("document 2 (Pod default/b): Pod default/b: annotation sidecar.istio.io/proxyCPU: `lots`"),
        "{}",
        messages[1]
    );
    assert!(messages[2].starts_with("document 3 (YAML)"), "{}", messages[2]);
}
