#!/usr/bin/env bash
# The whole mesh installed from manifests/ as pods in istio-system (crds.yaml, controller/,
# injector/), on the local cluster, and the trust between its parts:
#   1. the controller runs, creates its CA and publishes the root (ConfigMap istio-ca-root-cert);
#   2. the injector gets its serving certificate from that CA: its MutatingWebhookConfiguration's
#      caBundle is the root, and the controller's ValidatingWebhookConfiguration's too;
#   3. the API server trusts both by it: a bad VirtualService is refused by the controller's
#      webhook with its field path, and a pod of a labelled namespace is injected;
#   4. that pod's sidecar reaches the controller over TLS on 15012, trusting the root mounted
#      from the ConfigMap: the controller lists it among its connected proxies.
#
# Needs a running local cluster and `cargo build --workspace`. Every wait is bounded; what the
# test made is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

source e2e/cluster.env
export KUBECONFIG="$KUBECONFIG_PATH"
source e2e/lib.sh
for b in mesh-controller mesh-injector mesh-proxy mesh-test-http; do
    [[ -x target/debug/$b ]] || { echo "target/debug/$b is missing; run cargo build --workspace" >&2; exit 1; }
done

id="$$"
app="install-app-$id"
cp=istio-system
started=$SECONDS
created_cp=false

log() { echo "[mesh-install $((SECONDS - started))s] $*"; }
pod_of() { k -n "$cp" get pods -l "app=$1" -o jsonpath='{.items[0].metadata.name}' 2>/dev/null; }
fail() {
    echo "[mesh-install] FAIL: $*" >&2
    k -n "$cp" get pods -o wide >&2 || true
    k -n "$app" get pods -o wide >&2 || true
    for a in mesh-controller mesh-injector; do
        echo "--- $a" >&2
        e2e/local-cluster logs "$cp/$(pod_of "$a")" 2>&1 | tail -15 >&2 || true
    done
    exit 1
}
cleanup() {
    local rc=$?
    remove_mesh_webhooks
    k delete namespace "$app" --ignore-not-found --wait=true --timeout=90s >/dev/null 2>&1 || true
    uninstall_mesh
    if $created_cp; then k delete namespace "$cp" --ignore-not-found --wait=true --timeout=60s >/dev/null 2>&1 || true; fi
    exit "$rc"
}
require_no_mesh
k get namespace "$cp" >/dev/null 2>&1 || created_cp=true
trap cleanup EXIT

log "1. install the controller; it creates the CA and publishes the root"
install_controller || fail "the controller was not installed"
root_of() { k -n "$1" get configmap istio-ca-root-cert -o jsonpath='{.data.root-cert\.pem}'; }
until_ok 60 root_of "$cp" || fail "no ConfigMap istio-ca-root-cert in $cp"
root="$(root_of "$cp")"
grep -q 'BEGIN CERTIFICATE' <<<"$root" || fail "the published root is not a certificate"
log "   controller Available, root published"

log "2. install the injector; its certificate comes from the mesh CA"
install_injector || fail "the injector was not installed"
bundle_of() { k get "$1" -o jsonpath='{.webhooks[0].clientConfig.caBundle}' | base64 -d; }
bundle_is_root() { [[ "$(bundle_of "$1")" == "$root" ]]; }
until_ok 90 bundle_is_root mutatingwebhookconfiguration/mesh-injector \
    || fail "the injector's caBundle is not the mesh root (its certificate is not from the CA)"
until_ok 60 bundle_is_root validatingwebhookconfiguration/mesh-validation \
    || fail "the controller's ValidatingWebhookConfiguration does not trust the mesh root"
log "   both webhook configurations trust the mesh root"

log "3. the API server calls both webhooks over TLS it verifies by the root"
k create namespace "$app" >/dev/null
k label namespace "$app" istio-injection=enabled >/dev/null
until_ok 60 k -n "$app" get serviceaccount default || fail "no default ServiceAccount in $app"
if out="$(k -n "$app" apply -f - 2>&1 <<'YAML'
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad}
spec:
  hosts: [web]
  http:
  - route:
    - destination: {host: web}
      weight: -5
YAML
)"; then
    fail "a VirtualService with a negative weight was admitted"
fi
grep -q 'spec.http\[0\].route\[0\].weight' <<<"$out" || fail "the refusal does not name the field: $out"
k -n "$app" run web --image=mesh/test-http:dev --restart=Never -- 8080 >/dev/null \
    || fail "the injected pod was refused"
got="$(k -n "$app" get pod web -o jsonpath='{.spec.initContainers[*].name} {.spec.containers[*].name}')"
[[ $got == "istio-init istio-proxy web" ]] || fail "pod $app/web has '$got'"
until_ok 120 k -n "$app" wait --for=condition=Ready pod/web --timeout=5s || fail "pod $app/web did not become Ready"

log "4. the sidecar holds a TLS config stream to the controller (15012)"
controller_ip="$(k -n "$cp" get pod "$(pod_of mesh-controller)" -o jsonpath='{.status.podIP}')"
connected() { curl -fsS --max-time 5 "http://$controller_ip:15014/debug/proxies" | grep -q "\"$app/web\""; }
until_ok 60 connected || fail "the controller does not list $app/web among its proxies: $(curl -sS --max-time 5 "http://$controller_ip:15014/debug/proxies" 2>&1 | head -c 600)"
log "PASS"
