#!/usr/bin/env bash
# The controller against the local cluster (tier 4). Runs target/debug/mesh-controller on the
# host against the running cluster, with `mesh-controller probe` streams standing in for the
# proxies of two namespaces, and checks:
#
#   1. /ready on the monitoring port only once the caches synced; proxies get a full snapshot;
#   2. a new Service reaches the proxies of both namespaces;
#   3. `kubectl apply` of a VirtualService with exportTo "." reaches the proxy of its namespace
#      within 1 s (from kubectl's return) and never the other one; `kubectl delete` removes it;
#   4. the validating webhook refuses a bad VirtualService with its field path, and returns
#      warnings (a subset no DestinationRule defines) that kubectl prints;
#   5. status: a Reconciled condition with the warning's field, and False with the field for an
#      invalid VirtualService (in the namespace the webhook does not cover), written by the
#      Lease holder;
#   6. a controller restart: the proxies reconnect and resync, and later changes reach them;
#   7. /metrics counts the connected proxies and the push latency of ACKed updates.
#
# Needs the cluster up (e2e/local-cluster up) and the binaries built (cargo build --workspace).
# Uses its own namespaces and webhook configuration and removes them on exit; every wait is
# bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=SCRIPTDIR/../cluster.env
source e2e/cluster.env
export KUBECONFIG=$KUBECONFIG_PATH
# shellcheck source=SCRIPTDIR/../lib.sh
source e2e/lib.sh
KUBECTL_TIMEOUT=15s
POLL_SECONDS=0.1

bin=${MESH_CONTROLLER:-target/debug/mesh-controller}
[[ -x $bin ]] || { echo "[controller] $bin is missing; run cargo build --workspace" >&2; exit 1; }
started=$SECONDS
run_id=$$
ns_a=ctl-e2e-a-$run_id
ns_b=ctl-e2e-b-$run_id
webhook=mesh-validation-e2e-$run_id
config_port=${CONTROLLER_CONFIG_PORT:-25110}
monitoring_port=${CONTROLLER_MONITORING_PORT:-25114}
webhook_port=${CONTROLLER_WEBHOOK_PORT:-25117}
work=$(mktemp -d /tmp/controller-e2e.XXXXXX)
controller_pid=""
probe_pids=()

log() { echo "[controller $((SECONDS - started))s] $*"; }
fail() { echo "[controller] FAIL: $*" >&2; exit 1; }
now_ms() { date +%s%3N; }

on_exit() {
    local rc=$?
    if ((rc != 0)); then
        echo "[controller] failed; controller log and probe output follow" >&2
        tail -n 30 "$work/controller.log" >&2 2>/dev/null || true
        for f in "$work"/probe-*.jsonl; do [[ -f $f ]] && { echo "--- $f" >&2; tail -n 5 "$f" >&2; }; done
    fi
    for pid in "${probe_pids[@]}" $controller_pid; do kill "$pid" 2>/dev/null || true; done
    for pid in "${probe_pids[@]}" $controller_pid; do wait "$pid" 2>/dev/null || true; done
    k delete validatingwebhookconfiguration "$webhook" --ignore-not-found >/dev/null 2>&1 || true
    k delete namespace "$ns_a" "$ns_b" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    rm -rf "$work"
    exit $rc
}
trap on_exit EXIT

start_controller() {
    "$bin" run --config-address "127.0.0.1:$config_port" --monitoring-address "127.0.0.1:$monitoring_port" \
        --webhook-address "$BRIDGE_IP:$webhook_port" --webhook-cert "$work/cert.pem" --webhook-key "$work/key.pem" \
        --tls-address "127.0.0.1:${CONTROLLER_TLS_PORT:-25112}" --namespace "$ns_a" --lease-name "mesh-controller-e2e-$run_id" >>"$work/controller.log" 2>&1 &
    controller_pid=$!
    wait_for 30 "the controller's /ready" curl -fsS "http://127.0.0.1:$monitoring_port/ready"
}

# seen NAMESPACE PATTERN: whether the probe of NAMESPACE printed a line matching PATTERN.
seen() { grep -q -- "$2" "$work/probe-$1.jsonl"; }
# count NAMESPACE PATTERN: how many lines of the probe of NAMESPACE match PATTERN.
count() { grep -c -- "$2" "$work/probe-$1.jsonl" || true; }
# more_snapshots NAMESPACE BEFORE: whether the probe of NAMESPACE got more than BEFORE snapshots.
more_snapshots() { (($(count "$1" '"full":true') > $2)); }

log "CRDs"
if ! k get crd virtualservices.networking.istio.io >/dev/null 2>&1; then
    k apply -f manifests/crds.yaml >/dev/null
fi
k wait --for=condition=Established --timeout=30s crd --all >/dev/null

log "namespaces $ns_a and $ns_b, webhook certificate"
k create namespace "$ns_a" >/dev/null
k create namespace "$ns_b" >/dev/null
k label namespace "$ns_a" "mesh-controller-e2e=$run_id" >/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=mesh-controller-e2e -addext "subjectAltName=IP:$BRIDGE_IP" \
    -keyout "$work/key.pem" -out "$work/cert.pem" >/dev/null 2>&1

log "1. controller up, ready after sync; probes get snapshots"
start_controller
for ns in "$ns_a" "$ns_b"; do
    "$bin" probe --address "http://127.0.0.1:$config_port" --namespace "$ns" --pod web-0 --list-up-to 100000 >"$work/probe-$ns.jsonl" 2>&1 &
    probe_pids+=($!)
done
wait_for 10 "a snapshot in $ns_a" seen "$ns_a" '"full":true'
wait_for 10 "a snapshot in $ns_b" seen "$ns_b" '"full":true'
seen "$ns_a" 'mesh/Service /kubernetes.default.svc.cluster.local' || fail "the snapshot lacks the kubernetes Service"

log "2. a new Service reaches both namespaces"
k -n "$ns_a" create service clusterip reviews --tcp=9080:9080 >/dev/null
wait_for 10 "the Service in $ns_a" seen "$ns_a" "mesh/Service /reviews.$ns_a.svc"
wait_for 10 "the Service in $ns_b" seen "$ns_b" "mesh/Service /reviews.$ns_a.svc"

log "3. a VirtualService exported to its namespace only"
k apply -f - >/dev/null <<EOF
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews, namespace: $ns_a}
spec:
  hosts: [reviews]
  exportTo: ["."]
  http: [{route: [{destination: {host: reviews}}]}]
EOF
applied=$(now_ms)
vs_key="networking.istio.io/VirtualService $ns_a/reviews"
wait_for 5 "the VirtualService in $ns_a" seen "$ns_a" "\"upserted\":\[[^]]*$vs_key"
received=$(grep -- "\"upserted\":\[[^]]*$vs_key" "$work/probe-$ns_a.jsonl" | head -1 | sed 's/.*"at_ms":\([0-9]*\).*/\1/')
latency=$((received - applied))
log "   reached $ns_a ${latency} ms after kubectl returned"
((latency <= 1000)) || fail "the VirtualService took ${latency} ms to reach $ns_a (more than 1 s)"
sleep 1
seen "$ns_b" "$vs_key" && fail "the VirtualService reached $ns_b, which it is not exported to"
k -n "$ns_a" delete virtualservice reviews >/dev/null
wait_for 5 "the VirtualService's removal in $ns_a" seen "$ns_a" "\"removed\":\[[^]]*$vs_key"

log "4. validation at admission"
k apply -f - >/dev/null <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: $webhook}
webhooks:
- name: validation.mesh.istio.io
  clientConfig:
    url: https://$BRIDGE_IP:$webhook_port/validate
    caBundle: $(base64 -w0 "$work/cert.pem")
  rules:
  - {apiGroups: [networking.istio.io, security.istio.io], apiVersions: ["*"], operations: [CREATE, UPDATE], resources: ["*"]}
  namespaceSelector: {matchLabels: {mesh-controller-e2e: "$run_id"}}
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: [v1]
  timeoutSeconds: 5
EOF
bad_vs() {
    k apply -f - <<EOF
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad, namespace: $ns_a}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}, weight: 50}, {destination: {host: reviews}, weight: 20}]}]
EOF
}
# The API server picks up a new webhook configuration within a second or so.
deadline=$((SECONDS + 15))
until ! bad_vs >"$work/bad.out" 2>&1 && grep -q 'denied the request' "$work/bad.out"; do
    k -n "$ns_a" delete virtualservice bad --ignore-not-found >/dev/null 2>&1
    ((SECONDS < deadline)) || fail "the bad VirtualService was not refused: $(cat "$work/bad.out")"
    sleep 0.5
done
grep -q 'spec.http\[0\].route' "$work/bad.out" || fail "the refusal names no field path: $(cat "$work/bad.out")"
log "   refused: $(grep -o 'denied the request: .*' "$work/bad.out" | head -1)"
k apply -f - >"$work/warn.out" 2>&1 <<EOF
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: subset, namespace: $ns_a}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v9}}]}]
EOF
grep -q 'Warning: .*spec.http\[0\].route\[0\].destination.subset' "$work/warn.out" \
    || fail "no admission warning for the undefined subset: $(cat "$work/warn.out")"
wait_for 5 "the VirtualService with a warning in $ns_a" seen "$ns_a" "networking.istio.io/VirtualService $ns_a/subset"

log "5. status conditions"
status_of() { k -n "$1" get virtualservice "$2" -o jsonpath='{.status.conditions[0].status} {.status.conditions[0].reason} {.status.validationMessages[*].field} {.status.conditions[0].message}'; }
has_status() { [[ "$(status_of "$1" "$2")" == "$3"* ]]; }
wait_for 15 "the status of $ns_a/subset" has_status "$ns_a" subset "True Accepted spec.http[0].route[0].destination.subset"
k apply -f - >/dev/null <<EOF
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad, namespace: $ns_b}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}, weight: 50}, {destination: {host: reviews}, weight: 20}]}]
EOF
wait_for 15 "the status of $ns_b/bad" has_status "$ns_b" bad "False Invalid spec.http[0].route spec.http[0].route:"
log "   $ns_b/bad: $(status_of "$ns_b" bad)"
sleep 0.5
seen "$ns_b" "VirtualService $ns_b/bad" && fail "the invalid VirtualService was sent to a proxy"

log "6. controller restart: proxies resync"
before_a=$(count "$ns_a" '"full":true')
before_b=$(count "$ns_b" '"full":true')
kill "$controller_pid"
wait "$controller_pid" 2>/dev/null || true
start_controller
wait_for 15 "a resync in $ns_a" more_snapshots "$ns_a" "$before_a"
wait_for 15 "a resync in $ns_b" more_snapshots "$ns_b" "$before_b"
grep '"full":true' "$work/probe-$ns_a.jsonl" | tail -n 1 | grep -q "networking.istio.io/VirtualService $ns_a/subset" \
    || fail "the resync of $ns_a lacks its VirtualService"
k -n "$ns_a" delete virtualservice subset >/dev/null
wait_for 5 "a change after the restart in $ns_a" seen "$ns_a" "\"removed\":\[[^]]*VirtualService $ns_a/subset"

log "7. metrics"
metrics=$(curl -fsS "http://127.0.0.1:$monitoring_port/metrics")
grep -q '^mesh_controller_connected_proxies 2$' <<<"$metrics" || fail "connected proxies is not 2"
wait_for 5 "a measured push latency" \
    sh -c "curl -fsS http://127.0.0.1:$monitoring_port/metrics | grep -q '^mesh_controller_push_latency_seconds_count [1-9]'"
log "pass"
