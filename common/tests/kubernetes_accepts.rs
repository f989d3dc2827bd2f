//! The generated CRDs and Istio's documented YAML, checked by a real API server: the CRDs must
//! be accepted as they are (they are installed, and stay: `e2e/run-tests` runs this on its own
//! cluster), and every good fixture (written from Istio's docs) must pass the
//! server's schema (`kubectl apply --dry-run=server`), so what users copy from Istio applies
//! unchanged. Needs `kubectl` and a cluster (`KUBECONFIG`), hence ignored by default; run it
//! with the local cluster up:
//!
//! ```text
//! KUBECONFIG=$(e2e/local-cluster kubeconfig) cargo test -p mesh-common --test kubernetes_accepts -- --ignored
//! ```
//!
//! Without a cluster the test fails rather than passing vacuously.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

/// Runs `kubectl` with `input` on stdin; the combined output on failure.
fn kubectl(args: &[&str], input: &str) -> Result<String, String> {
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run kubectl: {error}"))?;
    child.stdin.take().expect("piped").write_all(input.as_bytes()).map_err(|error| error.to_string())?;
    let output = child.wait_with_output().map_err(|error| error.to_string())?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if output.status.success() { Ok(text) } else { Err(text) }
}

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dirs = [
        "virtual_service/good",
        "destination_rule",
        "gateway/good",
        "service_entry",
        "sidecar/good",
        "workload_entry",
        "peer_authentication/good",
        "authorization_policy/good",
        "request_authentication/good",
        "not_supported_yet",
    ];
    let mut files: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|dir| std::fs::read_dir(root.join(dir)).unwrap())
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

/// The documents of `text` as JSON, moved to the `default` namespace (the fixtures use the
/// namespaces of Istio's tasks, which a fresh cluster lacks; the schema does not care).
fn in_default_namespace(text: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|document| serde_json::Value::deserialize(document).expect("fixtures are YAML"))
        .filter(|document| !document.is_null())
        .map(|mut document| {
            document["metadata"]["namespace"] = "default".into();
            document
        })
        .collect()
}

/// Installs the CRDs for real (a server dry run of the fixtures needs their kinds served) and
/// waits until every one is Established. Both tests call it; the first call does the work and
/// the other waits for it (two concurrent creates of one CRD would conflict).
fn install_crds() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(install_crds_once);
}

fn install_crds_once() {
    let yaml = common::crds::to_yaml();
    kubectl(&["apply", "-f", "-"], &yaml).unwrap_or_else(|error| panic!("the API server refuses the CRDs:\n{error}"));
    let names: Vec<String> = common::crds::all()
        .iter()
        .map(|crd| format!("crd/{}", crd.metadata.name.clone().unwrap_or_default()))
        .collect();
    let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    args.extend(names.iter().map(String::as_str));
    kubectl(&args, "").unwrap_or_else(|error| panic!("the CRDs did not become Established:\n{error}"));
}

#[test]
#[ignore = "needs kubectl and a Kubernetes API server (KUBECONFIG)"]
fn the_api_server_accepts_the_crds_and_istios_documented_yaml() {
    install_crds();
    let mut refused = Vec::new();
    let mut count = 0;
    for path in fixtures() {
        let text = std::fs::read_to_string(&path).unwrap();
        for document in in_default_namespace(&text) {
            count += 1;
            let json = serde_json::to_string(&document).unwrap();
            if let Err(error) = kubectl(&["apply", "--dry-run=server", "-f", "-"], &json) {
                refused.push(format!("{}: {error}", path.display()));
            }
        }
    }
    assert!(count >= 50, "only {count} documents found");
    assert!(refused.is_empty(), "refused by the API server:\n{}", refused.join("\n"));
}

#[test]
#[ignore = "needs kubectl and a Kubernetes API server (KUBECONFIG)"]
fn kubectl_refuses_an_unknown_field_with_its_path() {
    install_crds();
    let document = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\n\
                    spec:\n  hosts: [reviews]\n  http:\n  - tiemout: 1s\n    route: [{destination: {host: reviews}}]\n";
    // kubectl checks fields against the OpenAPI document, which publishes a new CRD's schema a
    // moment after it is Established: until then the field may pass unnoticed.
    let mut last = String::new();
    for _ in 0..30 {
        match kubectl(&["apply", "--dry-run=server", "-f", "-"], document) {
            Err(error) if error.contains("tiemout") => return,
            Err(error) => last = error,
            Ok(output) => last = format!("accepted: {output}"),
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    panic!("kubectl did not refuse the unknown field `tiemout` within 30 s; last answer: {last}");
}
