#!/usr/bin/env bash
# The sidecar injector on the local cluster (e2e/local-cluster), installed from manifests/injector:
#   1. the injector runs as a pod behind its Service and sets its webhook configuration's caBundle;
#   2. in a namespace labelled istio-injection=enabled, a Deployment's pod as stored by the API
#      server has istio-init and istio-proxy (classic: Kubernetes 1.20), runs and becomes Ready
#      (its HTTP readiness probe crossing the capture), and its netns has the init step's rules;
#   3. a pod labelled sidecar.istio.io/inject=false there, a pod annotated so, and a pod of an
#      unlabelled namespace get nothing, while one labelled inject=true there gets the sidecar;
#      a pod asking for a native sidecar is refused, with the
#      reason, since 1.20 has none;
#   4. a Job in the injected namespace calls the Deployment through both sidecars, ends its
#      sidecar with /quitquitquit and completes;
#   5. with the injector down, a pod of the injected namespace is refused with the webhook's
#      message (failurePolicy Fail) while the unlabelled namespace is unaffected.
#
# Needs a running local cluster and `cargo build --workspace` (mesh-injector, mesh-proxy,
# mesh-test-http in target/debug). Every wait is bounded; what the test made is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

source e2e/cluster.env
export KUBECONFIG="$KUBECONFIG_PATH"
# shellcheck source=SCRIPTDIR/../lib.sh
source e2e/lib.sh
for b in mesh-injector mesh-proxy mesh-test-http; do
    [[ -x target/debug/$b ]] || { echo "target/debug/$b is missing; run cargo build --workspace" >&2; exit 1; }
done

id="$$"
mesh="inj-mesh-$id"
plain="inj-plain-$id"
cp=istio-system
started=$SECONDS
created_cp=false

log() { echo "[injector $((SECONDS - started))s] $*"; }
fail() {
    echo "[injector] FAIL: $*" >&2
    k -n "$mesh" get pods -o wide >&2 || true
    k -n "$cp" get pods -o wide >&2 || true
    e2e/local-cluster logs "$cp/$(k -n "$cp" get pods -l app=mesh-injector -o name 2>/dev/null | head -1 | cut -d/ -f2)" >&2 2>/dev/null | tail -20 || true
    exit 1
}
cleanup() {
    local rc=$?
    # The webhook configuration first: with the injector gone it would refuse pods.
    k delete mutatingwebhookconfiguration mesh-injector --ignore-not-found >/dev/null 2>&1 || true
    k delete namespace "$mesh" "$plain" --ignore-not-found --wait=true --timeout=90s >/dev/null 2>&1 || true
    k delete -f manifests/injector/deployment.yaml -f manifests/injector/service.yaml --ignore-not-found \
        --wait=true --timeout=60s >/dev/null 2>&1 || true
    k -n "$cp" delete serviceaccount mesh-injector --ignore-not-found >/dev/null 2>&1 || true
    k delete clusterrolebinding,clusterrole mesh-injector --ignore-not-found >/dev/null 2>&1 || true
    k -n "$cp" delete rolebinding,role mesh-injector --ignore-not-found >/dev/null 2>&1 || true
    # rbac.yaml declares the namespace too; one that existed before the test is left to its owner.
    if $created_cp; then k delete namespace "$cp" --ignore-not-found --wait=true --timeout=60s >/dev/null 2>&1 || true; fi
    exit "$rc"
}
k get mutatingwebhookconfiguration mesh-injector >/dev/null 2>&1 \
    && { echo "MutatingWebhookConfiguration mesh-injector exists already; is another run going on?" >&2; exit 1; }
k get namespace "$cp" >/dev/null 2>&1 || created_cp=true
trap cleanup EXIT

log "1. install the injector"
k apply -f manifests/injector/rbac.yaml -f manifests/injector/service.yaml \
    -f manifests/injector/deployment.yaml -f manifests/injector/webhook.yaml >/dev/null
until_ok 90 k -n "$cp" wait --for=condition=Available deployment/mesh-injector --timeout=5s \
    || fail "the injector Deployment did not become Available"
log "   injector Available"
bundle_set() {
    local b
    b="$(k get mutatingwebhookconfiguration mesh-injector -o jsonpath='{.webhooks[*].clientConfig.caBundle}')"
    [[ $(wc -w <<<"$b") -eq 2 ]]
}
until_ok 60 bundle_set || fail "the injector did not set the caBundle of both webhooks"

k create namespace "$mesh" >/dev/null
k label namespace "$mesh" istio-injection=enabled >/dev/null
k create namespace "$plain" >/dev/null
until_ok 60 k -n "$mesh" get serviceaccount default || fail "no default ServiceAccount in $mesh"
until_ok 60 k -n "$plain" get serviceaccount default || fail "no default ServiceAccount in $plain"

log "2. a Deployment in the injected namespace"
k -n "$mesh" apply -f - >/dev/null <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, version: v1}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: web
        image: mesh/test-http:dev
        args: ["8080"]
        ports: [{name: http, containerPort: 8080}]
        # Rewritten by the injector to the sidecar's :15021/app-health/web/readyz, which the
        # proxy answers by probing the app on localhost (so the probe survives STRICT mTLS).
        readinessProbe:
          httpGet: {path: /ready, port: http}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 8080, targetPort: 8080}]
YAML
has_pod() { [[ -n "$(k -n "$mesh" get pods -l app=web -o name)" ]]; }
until_ok 60 has_pod || fail "no pod of Deployment $mesh/web"
pod="$(k -n "$mesh" get pods -l app=web -o jsonpath='{.items[0].metadata.name}')"
inits="$(k -n "$mesh" get pod "$pod" -o jsonpath='{.spec.initContainers[*].name}')"
containers="$(k -n "$mesh" get pod "$pod" -o jsonpath='{.spec.containers[*].name}')"
[[ $inits == istio-init ]] || fail "pod $mesh/$pod has init containers '$inits', want istio-init"
[[ $containers == "istio-proxy web" ]] || fail "pod $mesh/$pod has containers '$containers', want 'istio-proxy web'"
k -n "$mesh" get pod "$pod" -o jsonpath='{.metadata.annotations.sidecar\.istio\.io/status}' | grep -q '"native":false' \
    || fail "pod $mesh/$pod has no classic sidecar status annotation"
probe="$(k -n "$mesh" get pod "$pod" -o jsonpath='{.spec.containers[?(@.name=="web")].readinessProbe.httpGet.port}{.spec.containers[?(@.name=="web")].readinessProbe.httpGet.path}')"
[[ $probe == 15021/app-health/web/readyz ]] || fail "pod $mesh/$pod: readiness probe not rewritten to the sidecar: '$probe'"
until_ok 120 k -n "$mesh" wait --for=condition=Ready "pod/$pod" --timeout=5s \
    || fail "pod $mesh/$pod did not become Ready (through the sidecar's /app-health)"
# The answer is the app's: once the app fails its readiness, the pod leaves Ready, and returns.
pod_ip="$(k -n "$mesh" get pod "$pod" -o jsonpath='{.status.podIP}')"
curl -fsS --max-time 10 "http://$pod_ip:8080/fail-readiness" >/dev/null || fail "cannot reach the app at $pod_ip:8080"
not_ready() { [[ "$(k -n "$mesh" get pod "$pod" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == False ]]; }
until_ok 30 not_ready || fail "pod $mesh/$pod stayed Ready although its app fails readiness"
curl -fsS --max-time 10 "http://$pod_ip:8080/recover" >/dev/null || fail "cannot reach the app at $pod_ip:8080"
until_ok 30 k -n "$mesh" wait --for=condition=Ready "pod/$pod" --timeout=5s || fail "pod $mesh/$pod did not recover"
uid="$(k -n "$mesh" get pod "$pod" -o jsonpath='{.metadata.uid}')"
netns="${NETNS_PREFIX}pod-${mesh}_${pod}-${uid:0:8}"
rules="$(ip netns exec "$netns" iptables-save -t nat 2>/dev/null || true)"
grep -q -- '-j REDIRECT --to-ports 15001' <<<"$rules" || fail "no outbound capture rule in netns $netns"
grep -q -- '-j REDIRECT --to-ports 15006' <<<"$rules" || fail "no inbound capture rule in netns $netns"
grep -q -- '--uid-owner 1337 -j RETURN' <<<"$rules" || fail "the proxy's UID is not exempt in netns $netns"

log "3. opted-out and uninjected pods get nothing"
k -n "$mesh" run opt-label --image=mesh/test-http:dev --labels=sidecar.istio.io/inject=false --restart=Never -- 8080 >/dev/null
k -n "$mesh" apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: opt-annotation, annotations: {sidecar.istio.io/inject: "false"}}
spec:
  restartPolicy: Never
  containers: [{name: app, image: "mesh/test-http:dev", args: ["8080"]}]
YAML
k -n "$plain" run plain --image=mesh/test-http:dev --restart=Never -- 8080 >/dev/null
for p in "$mesh/opt-label" "$mesh/opt-annotation" "$plain/plain"; do
    got="$(k -n "${p%/*}" get pod "${p#*/}" -o jsonpath='{.spec.containers[*].name} {.spec.initContainers[*].name}')"
    [[ $got != *istio-* ]] || fail "pod $p was injected: $got"
done
# The pod label wins over the namespace: opted in where the namespace has no label.
k -n "$plain" run opt-in --image=mesh/test-http:dev --labels=sidecar.istio.io/inject=true --restart=Never -- 8080 >/dev/null
got="$(k -n "$plain" get pod opt-in -o jsonpath='{.spec.initContainers[*].name} {.spec.containers[*].name}')"
[[ $got == "istio-init istio-proxy opt-in" ]] || fail "pod $plain/opt-in labelled inject=true has '$got'"

log "3b. a pod asking for a native sidecar on Kubernetes 1.20 is refused with the reason"
if out="$(k -n "$mesh" run native --image=mesh/test-http:dev --restart=Never \
    --annotations=sidecar.istio.io/nativeSidecar=true -- 8080 2>&1)"; then
    fail "a native-sidecar pod was admitted on Kubernetes 1.20"
fi
grep -q 'sidecar.istio.io/nativeSidecar: "true" needs Kubernetes 1.29 or newer' <<<"$out" \
    || fail "the refusal does not say why: $out"

log "4. a Job through both sidecars completes"
k -n "$mesh" apply -f - >/dev/null <<'YAML'
apiVersion: batch/v1
kind: Job
metadata: {name: call-web}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: call
        image: "curlimages/curl:8.5.0"
        # The proxy may exit before it answers /quitquitquit; the Job's result is the first call's.
        command: ["sh", "-c", "curl -sf --max-time 10 http://web:8080/; rc=$?; curl -s -X POST http://127.0.0.1:15000/quitquitquit; exit $rc"]
YAML
job_done() { [[ -n "$(k -n "$mesh" get job call-web -o jsonpath='{.status.succeeded}{.status.failed}')" ]]; }
job_pod() { k -n "$mesh" get pods -l job-name=call-web -o jsonpath='{.items[0].metadata.name}'; }
job_logs() {
    for c in istio-proxy call; do
        echo "--- $c"
        e2e/local-cluster logs "$mesh/$(job_pod)" "$c" 2>&1 | tail -15
    done
}
until_ok 120 job_done || fail "Job $mesh/call-web did not finish; $(job_logs)"
[[ "$(k -n "$mesh" get job call-web -o jsonpath='{.status.succeeded}')" == 1 ]] || fail "Job $mesh/call-web failed; $(job_logs)"
job_pod="$(job_pod)"
[[ "$(k -n "$mesh" get pod "$job_pod" -o jsonpath='{.spec.containers[0].name}')" == istio-proxy ]] \
    || fail "the Job's pod was not injected"

log "5. with the injector down, injected namespaces refuse pods and others do not care"
k -n "$cp" scale deployment mesh-injector --replicas=0 >/dev/null
gone() { [[ -z "$(k -n "$cp" get pods -l app=mesh-injector -o name)" ]]; }
until_ok 60 gone || fail "the injector pod did not go away"
if out="$(k -n "$mesh" run refused --image=mesh/test-http:dev --restart=Never -- 8080 2>&1)"; then
    fail "a pod was created in $mesh with the injector down"
fi
grep -q 'failed calling webhook "namespace.sidecar-injector.istio.io"' <<<"$out" \
    || fail "the refusal does not name the webhook: $out"
k -n "$plain" run still-fine --image=mesh/test-http:dev --restart=Never -- 8080 >/dev/null \
    || fail "a pod of the unlabelled namespace was refused"

log "PASS (${SECONDS}s)"
