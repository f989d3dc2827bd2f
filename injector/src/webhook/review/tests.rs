use super::*;
use crate::keys;

fn review(version: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": version,
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "object": object,
        }
    }))
    .unwrap()
}

fn pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-"},
           "spec": {"containers": [{"name": "web", "image": "web:1"}]}})
}

fn response(reply: Reply) -> Value {
    match reply {
        Reply::Review(r) => r,
        other => panic!("expected a review, got {other:?}"),
    }
}

fn decoded_patch(resp: &Value) -> Vec<Value> {
    let b: ByteString = serde_json::from_value(resp["response"]["patch"].clone()).unwrap();
    serde_json::from_slice(&b.0).unwrap()
}

#[test]
fn both_versions_get_a_json_patch_in_their_own_version() {
    for version in VERSIONS {
        let r = response(answer(&review(version, pod()), &InjectConfig::default()));
        assert_eq!(r["apiVersion"], version);
        assert_eq!(r["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(r["response"]["allowed"], true);
        assert_eq!(r["response"]["patchType"], "JSONPatch");
        let ops = decoded_patch(&r);
        assert!(ops.iter().any(|op| op["path"] == "/spec/containers/0" && op["value"]["name"] == "istio-proxy"));
    }
}

#[test]
fn opted_out_pods_are_allowed_without_a_patch() {
    let mut p = pod();
    p["metadata"]["labels"] = json!({keys::INJECT: "false"});
    let r = response(answer(&review(VERSIONS[0], p), &InjectConfig::default()));
    assert_eq!(r["response"]["allowed"], true);
    assert!(r["response"].get("patch").is_none());
}

#[test]
fn a_pod_that_cannot_be_injected_is_denied_with_the_reason() {
    let mut p = pod();
    p["metadata"]["annotations"] = json!({keys::PROXY_CPU: "lots"});
    let r = response(answer(&review(VERSIONS[0], p), &InjectConfig::default()));
    assert_eq!(r["response"]["allowed"], false);
    let msg = r["response"]["status"]["message"].as_str().unwrap();
    assert!(msg.starts_with("Pod shop/web-*: annotation sidecar.istio.io/proxyCPU: `lots`"), "{msg}");

    let r = response(answer(&review(VERSIONS[1], json!({"spec": {"containers": "nope"}})), &InjectConfig::default()));
    assert_eq!(r["response"]["allowed"], false);
    assert!(r["response"]["status"]["message"].as_str().unwrap().starts_with("request.object is not a valid Pod"));
}

#[test]
fn malformed_bodies_are_bad_requests() {
    let cfg = InjectConfig::default();
    let bad = |body: &[u8]| match answer(body, &cfg) {
        Reply::BadRequest(m) => m,
        other => panic!("expected 400 for {:?}, got {other:?}", String::from_utf8_lossy(body)),
    };
    assert!(bad(b"").starts_with("the body is not an AdmissionReview"));
    assert!(bad(b"{not json").starts_with("the body is not an AdmissionReview"));
    assert!(bad(b"[1,2]").starts_with("the body is not an AdmissionReview"));
    assert!(
        bad(br#"{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview"}"#)
            .contains("apiVersion \"admission.k8s.io/v2\"")
    );
    assert_eq!(
        bad(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#),
        "AdmissionReview has no request"
    );
    assert_eq!(
        bad(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#),
        "AdmissionReview request.uid is missing"
    );
}

#[test]
fn other_kinds_and_operations_pass_untouched() {
    let mut body: Value = serde_json::from_slice(&review(VERSIONS[0], pod())).unwrap();
    body["request"]["operation"] = json!("UPDATE");
    let r = response(answer(&serde_json::to_vec(&body).unwrap(), &InjectConfig::default()));
    assert_eq!(r["response"], json!({"allowed": true, "uid": "705ab4f5-6393-11e8-b7cc-42010a800002"}));
}
