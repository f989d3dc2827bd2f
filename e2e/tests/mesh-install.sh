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
for b in mesh-controller mesh-injector mesh-proxy mesh-test-http; do
    [[ -x target/debug/$b ]] || { echo "target/debug/$b is missing; run cargo build --workspace" >&2; exit 1; }
done

id="$$"
app="install-app-$id"
cp=istio-system
started=$SECONDS
created_cp=false
manifests=(manifests/controller/rbac.yaml manifests/controller/service.yaml manifests/controller/deployment.yaml
    manifests/controller/webhook.yaml manifests/injector/rbac.yaml manifests/injector/service.yaml
    manifests/injector/deployment.yaml manifests/injector/webhook.yaml)

log() { echo "[mesh-install $((SECONDS - started))s] $*"; }
k() { kubectl --request-timeout=20s "$@"; }
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
    # Webhook configurations first: with their servers gone they would refuse requests.
    k delete mutatingwebhookconfiguration mesh-injector --ignore-not-found >/dev/null 2>&1 || true
    k delete validatingwebhookconfiguration mesh-validation --ignore-not-found >/dev/null 2>&1 || true
    k delete namespace "$app" --ignore-not-found --wait=true --timeout=90s >/dev/null 2>&1 || true
    k delete -f manifests/injector/deployment.yaml -f manifests/controller/deployment.yaml --ignore-not-found \
        --wait=true --timeout=60s >/dev/null 2>&1 || true
    k delete -f manifests/injector/service.yaml -f manifests/controller/service.yaml --ignore-not-found >/dev/null 2>&1 || true
    k -n "$cp" delete secret mesh-ca-secret --ignore-not-found >/dev/null 2>&1 || true
    k -n "$cp" delete serviceaccount mesh-injector mesh-controller --ignore-not-found >/dev/null 2>&1 || true
    k -n "$cp" delete rolebinding,role --all --ignore-not-found >/dev/null 2>&1 || true
    k delete clusterrolebinding,clusterrole mesh-injector mesh-controller --ignore-not-found >/dev/null 2>&1 || true
    # The root the controller published in every namespace.
    k get configmaps -A --field-selector metadata.name=istio-ca-root-cert \
        -o jsonpath='{range .items[*]}{.metadata.namespace}{"\n"}{end}' 2>/dev/null \
        | while read -r ns; do k -n "$ns" delete configmap istio-ca-root-cert --ignore-not-found >/dev/null 2>&1 || true; done
    if $created_cp; then k delete namespace "$cp" --ignore-not-found --wait=true --timeout=60s >/dev/null 2>&1 || true; fi
    exit "$rc"
}
# until_ok TIMEOUT CMD...: retry CMD every second until it succeeds or TIMEOUT seconds pass.
until_ok() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}

for w in mutatingwebhookconfiguration/mesh-injector validatingwebhookconfiguration/mesh-validation; do
    k get "$w" >/dev/null 2>&1 && { echo "$w exists already; is another run going on?" >&2; exit 1; }
done
k get namespace "$cp" >/dev/null 2>&1 || created_cp=true
trap cleanup EXIT

log "1. install the controller; it creates the CA and publishes the root"
k apply -f manifests/crds.yaml >/dev/null
k apply -f manifests/controller/rbac.yaml -f manifests/controller/service.yaml \
    -f manifests/controller/deployment.yaml -f manifests/controller/webhook.yaml >/dev/null
until_ok 120 k -n "$cp" wait --for=condition=Available deployment/mesh-controller --timeout=5s \
    || fail "the controller Deployment did not become Available"
root_of() { k -n "$1" get configmap istio-ca-root-cert -o jsonpath='{.data.root-cert\.pem}'; }
until_ok 60 root_of "$cp" || fail "no ConfigMap istio-ca-root-cert in $cp"
root="$(root_of "$cp")"
grep -q 'BEGIN CERTIFICATE' <<<"$root" || fail "the published root is not a certificate"
log "   controller Available, root published"

log "2. install the injector; its certificate comes from the mesh CA"
k apply -f manifests/injector/rbac.yaml -f manifests/injector/service.yaml \
    -f manifests/injector/deployment.yaml -f manifests/injector/webhook.yaml >/dev/null
until_ok 90 k -n "$cp" wait --for=condition=Available deployment/mesh-injector --timeout=5s \
    || fail "the injector Deployment did not become Available"
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
