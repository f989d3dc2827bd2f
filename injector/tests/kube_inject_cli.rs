//! `mesh-injector kube-inject` as a user runs it: YAML on stdin or in a file, YAML on stdout,
//! what happened on stderr, and a failure that writes nothing.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn kube_inject(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh-injector"))
        .arg("kube-inject")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: 'web:1'}]\n";

#[test]
fn stdin_in_injected_yaml_out() {
    let out = kube_inject(&["-f", "-", "-n", "shop"], DEPLOYMENT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml: serde_json::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    let spec = &yaml["spec"]["template"]["spec"];
    assert_eq!(spec["containers"][0]["name"], "istio-proxy");
    assert_eq!(spec["initContainers"][0]["name"], "istio-init");
    assert_eq!(spec["containers"][0]["image"], "mesh/proxy:dev");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Deployment shop/web: injected"), "{stderr}");
}

#[test]
fn a_file_with_native_sidecars_and_another_image() {
    let dir = std::env::temp_dir().join(format!("kube-inject-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("web.yaml");
    std::fs::write(&file, DEPLOYMENT).unwrap();
    let out = kube_inject(
        &["-f", file.to_str().unwrap(), "--native-sidecars", "true", "--proxy-image", "registry.local/proxy:1"],
        "",
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml: serde_json::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    let inits = &yaml["spec"]["template"]["spec"]["initContainers"];
    assert_eq!(inits[1]["name"], "istio-proxy");
    assert_eq!(inits[1]["restartPolicy"], "Always");
    assert_eq!(inits[1]["image"], "registry.local/proxy:1");
}

#[test]
fn a_bad_document_fails_and_writes_nothing() {
    let bad = format!(
        "{DEPLOYMENT}---\nkind: Pod\napiVersion: v1\nmetadata: {{name: p, annotations: {{sidecar.istio.io/proxyMemory: lots}}}}\nspec: {{containers: [{{name: a}}]}}\n"
    );
    let out = kube_inject(&["-f", "-"], &bad);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing on stdout");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("-: document 2 (Pod default/p): Pod default/p: annotation sidecar.istio.io/proxyMemory"),
        "{stderr}"
    );
    assert!(stderr.contains("1 document(s) could not be injected; nothing was written"), "{stderr}");
}
