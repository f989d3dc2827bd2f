#!/usr/bin/env bash
# The controller's CA against the local cluster (tier 4). Runs target/debug/mesh-controller on
# the host against the running cluster and checks, with the real API server:
#
#   1. first start: the root is generated and stored in the Secret mesh-ca-secret of the
#      controller's namespace, and published as ConfigMap istio-ca-root-cert (root-cert.pem)
#      in existing namespaces;
#   2. a namespace created afterwards gets the ConfigMap; a deleted one is put back;
#   3. a real service-account token (TokenRequest, audience istio-ca) gets, over TLS on the
#      config/CA port, a certificate whose only SAN is its SPIFFE ID, signed by the root;
#   4. a token of another audience (the API server's default) is refused as unauthenticated;
#   5. DNS names: a service account of the controller's namespace gets those of its Service;
#      one of another namespace is refused, naming the name;
#   6. the webhook serves a certificate for mesh-controller.<ns>.svc signed by the root: the API
#      server, given the root as caBundle, calls it through that Service and it refuses a bad
#      VirtualService;
#   7. a restart loads the same root from the Secret;
#   8. two replicas starting together against an empty namespace end up with one root;
#   9. manifests/controller/rbac.yaml is enough: a controller running as that service account
#      (in a namespace of its own, names suffixed) stores its root, publishes it and signs, and
#      cannot read other Secrets.
#
# Needs the cluster up (e2e/local-cluster up) and the binaries built (cargo build --workspace).
# Uses its own namespaces and removes them on exit; every wait is bounded.
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
[[ -x $bin ]] || { echo "[ca] $bin is missing; run cargo build --workspace" >&2; exit 1; }
started=$SECONDS
run_id=$$
ns_ctl=ca-e2e-ctl-$run_id
ns_app=ca-e2e-app-$run_id
ns_new=ca-e2e-new-$run_id
ns_race=ca-e2e-race-$run_id
ns_rbac=ca-e2e-rbac-$run_id
rbac_name=mesh-controller-e2e-$run_id
webhook=ca-e2e-validation-$run_id
config_port=${CA_CONFIG_PORT:-25210}
tls_port=${CA_TLS_PORT:-25212}
monitoring_port=${CA_MONITORING_PORT:-25214}
webhook_port=${CA_WEBHOOK_PORT:-25217}
server_name=mesh-controller.$ns_ctl.svc
work=$(mktemp -d /tmp/ca-e2e.XXXXXX)
controller_pid=""
race_pids=()

log() { echo "[ca $((SECONDS - started))s] $*"; }
fail() { echo "[ca] FAIL: $*" >&2; exit 1; }

on_exit() {
    local rc=$?
    if ((rc != 0)); then
        echo "[ca] failed; controller log follows" >&2
        tail -n 30 "$work/controller.log" >&2 2>/dev/null || true
    fi
    for pid in $controller_pid "${race_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in $controller_pid "${race_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    k delete namespace "$ns_ctl" "$ns_app" "$ns_new" "$ns_race" "$ns_rbac" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    k delete clusterrole,clusterrolebinding "$rbac_name" --ignore-not-found >/dev/null 2>&1 || true
    k delete validatingwebhookconfiguration "$webhook" --ignore-not-found >/dev/null 2>&1 || true
    rm -rf "$work"
    exit $rc
}
trap on_exit EXIT

# run_controller NAMESPACE PORT_OFFSET LOG: a controller of NAMESPACE on the ports plus the offset.
run_controller() {
    local offset=$2
    "$bin" run --config-address "127.0.0.1:$((config_port + offset))" \
        --monitoring-address "127.0.0.1:$((monitoring_port + offset))" \
        --tls-address "127.0.0.1:$((tls_port + offset))" --webhook-address "$BRIDGE_IP:$((webhook_port + offset))" \
        --namespace "$1" --no-status >>"$3" 2>&1 &
}

start_controller() {
    run_controller "$ns_ctl" 0 "$work/controller.log"
    controller_pid=$!
    wait_for 30 "the controller's /ready" curl -fsS "http://127.0.0.1:$monitoring_port/ready"
}

stop_controller() {
    kill "$controller_pid"
    wait "$controller_pid" 2>/dev/null || true
    controller_pid=""
}

# root_in NAMESPACE: the root-cert.pem of the ConfigMap istio-ca-root-cert of NAMESPACE.
root_in() { k -n "$1" get configmap istio-ca-root-cert -o jsonpath='{.data.root-cert\.pem}'; }
# published NAMESPACE: whether NAMESPACE's ConfigMap holds the root.
published() { [[ "$(root_in "$1" 2>/dev/null)" == "$(cat "$work/root.pem")" ]]; }
# sign NAME TOKEN_FILE [ARGS...]: asks the CA for a certificate into $work/NAME.pem.
sign() {
    local name=$1 token=$2
    shift 2
    "$bin" sign --address "https://127.0.0.1:$tls_port" --server-name "$server_name" \
        --root-cert "$work/root.pem" --token-file "$token" --key-out "$work/$name.key" "$@" >"$work/$name.pem" 2>"$work/$name.err"
}
# sans FILE: the certificate's subjectAltName, one line.
sans() { openssl x509 -in "$1" -noout -ext subjectAltName | tail -n +2 | tr -d ' '; }

log "CRDs; namespaces $ns_ctl (the controller's) and $ns_app, service accounts"
if ! k get crd virtualservices.networking.istio.io >/dev/null 2>&1; then
    k apply -f manifests/crds.yaml >/dev/null
fi
k wait --for=condition=Established --timeout=30s crd --all >/dev/null
k create namespace "$ns_ctl" >/dev/null
k create namespace "$ns_app" >/dev/null
k -n "$ns_app" create serviceaccount reviews >/dev/null
k -n "$ns_ctl" create serviceaccount mesh-injector >/dev/null
k -n "$ns_ctl" create service clusterip mesh-injector --tcp=443:15017 >/dev/null

log "1. first start: root generated into the Secret and published"
start_controller
k -n "$ns_ctl" get secret mesh-ca-secret -o jsonpath='{.data.ca-cert\.pem}' | base64 -d >"$work/root.pem"
k -n "$ns_ctl" get secret mesh-ca-secret -o jsonpath='{.data.ca-key\.pem}' | base64 -d | grep -q "PRIVATE KEY" \
    || fail "the Secret lacks ca-key.pem"
openssl x509 -in "$work/root.pem" -noout -text | grep -q "CA:TRUE" || fail "the stored root is not a CA certificate"
wait_for 10 "the root in $ns_app" published "$ns_app"
wait_for 10 "the root in default" published default
if grep -q "PRIVATE KEY" "$work/controller.log"; then fail "the controller logged key material"; fi

log "2. a new namespace gets the root; a deleted ConfigMap comes back"
k create namespace "$ns_new" >/dev/null
wait_for 10 "the root in the new namespace $ns_new" published "$ns_new"
k -n "$ns_new" delete configmap istio-ca-root-cert >/dev/null
wait_for 10 "the root put back in $ns_new" published "$ns_new"

log "3. a real token of audience istio-ca gets its SPIFFE certificate"
k -n "$ns_app" create token reviews --audience istio-ca --duration 10m >"$work/app.token"
sign app "$work/app.token" || fail "signing refused: $(cat "$work/app.err")"
[[ "$(sans "$work/app.pem")" == "URI:spiffe://cluster.local/ns/$ns_app/sa/reviews" ]] \
    || fail "the certificate's SANs are $(sans "$work/app.pem"), not exactly the SPIFFE ID"
openssl verify -CAfile "$work/root.pem" "$work/app.pem" >/dev/null || fail "the certificate does not chain to the root"
[[ "$(openssl x509 -in "$work/app.pem" -noout -pubkey)" == "$(openssl pkey -in "$work/app.key" -pubout)" ]] \
    || fail "the certificate is not for the key that asked"
expires=$(date -d "$(openssl x509 -in "$work/app.pem" -noout -enddate | cut -d= -f2)" +%s)
((expires - $(date +%s) <= 24 * 3600)) || fail "the certificate is valid for more than 24 h"

log "4. a token of another audience is refused"
k -n "$ns_app" create token reviews --duration 10m >"$work/other.token"
if sign other "$work/other.token"; then fail "a token of the API server's audience got a certificate"; fi
grep -q "Unauthenticated\|unauthenticated" "$work/other.err" || fail "not refused as unauthenticated: $(cat "$work/other.err")"
grep -q "istio-ca" "$work/other.err" || fail "the refusal does not name the audience: $(cat "$work/other.err")"

log "5. DNS names: only for the controller's namespace, only of its Services"
k -n "$ns_ctl" create token mesh-injector --audience istio-ca --duration 10m >"$work/injector.token"
sign injector "$work/injector.token" --dns "mesh-injector.$ns_ctl.svc" --dns "mesh-injector.$ns_ctl.svc.cluster.local" \
    || fail "the injector's DNS names were refused: $(cat "$work/injector.err")"
expected="URI:spiffe://cluster.local/ns/$ns_ctl/sa/mesh-injector,DNS:mesh-injector.$ns_ctl.svc,DNS:mesh-injector.$ns_ctl.svc.cluster.local"
[[ "$(sans "$work/injector.pem")" == "$expected" ]] || fail "the injector's SANs are $(sans "$work/injector.pem")"
if sign app-dns "$work/app.token" --dns "reviews.$ns_app.svc"; then fail "a workload outside $ns_ctl got a DNS name"; fi
grep -q "PermissionDenied\|permission" "$work/app-dns.err" && grep -q "reviews.$ns_app.svc" "$work/app-dns.err" \
    || fail "the DNS refusal is not a permission denial naming the name: $(cat "$work/app-dns.err")"

log "6. the webhook serves a CA-issued certificate for $server_name"
openssl s_client -connect "$BRIDGE_IP:$webhook_port" -servername "$server_name" -verify_hostname "$server_name" \
    -CAfile "$work/root.pem" -verify_return_error </dev/null >"$work/s_client.out" 2>&1 \
    || fail "the webhook's certificate does not verify for $server_name: $(tail -n 5 "$work/s_client.out")"
# The Service the API server dials: mesh-controller of $ns_ctl, whose endpoint is this host.
k -n "$ns_ctl" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: mesh-controller}
spec: {ports: [{name: https-webhook, port: 443, targetPort: $webhook_port}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: mesh-controller}
subsets: [{addresses: [{ip: "$BRIDGE_IP"}], ports: [{name: https-webhook, port: $webhook_port}]}]
EOF
k label namespace "$ns_ctl" "ca-e2e=$run_id" >/dev/null
k apply -f - >/dev/null <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: $webhook}
webhooks:
- name: validation.mesh.istio.io
  clientConfig:
    service: {name: mesh-controller, namespace: $ns_ctl, path: /validate, port: 443}
    caBundle: $(base64 -w0 "$work/root.pem")
  rules: [{apiGroups: ["networking.istio.io"], apiVersions: ["*"], operations: ["CREATE", "UPDATE"], resources: ["*"], scope: Namespaced}]
  namespaceSelector: {matchLabels: {ca-e2e: "$run_id"}}
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: ["v1"]
  timeoutSeconds: 10
EOF
bad_virtual_service() {
    k apply -f - <<EOF
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: bad, namespace: $ns_ctl}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}, weight: 50}, {destination: {host: reviews}, weight: 20}]}]
EOF
}
# Refused by our webhook with the field path (a TLS failure would be refused too, by
# failurePolicy Fail, but without it).
refused_by_webhook() { ! bad_virtual_service >"$work/apply.out" 2>&1 && grep -q 'spec.http\[0\].route' "$work/apply.out"; }
wait_for 10 "the API server to call the webhook over the CA's certificate" refused_by_webhook

log "7. a restart loads the same root"
stop_controller
start_controller
wait_for 10 "the root still in $ns_app" published "$ns_app"
sign app-again "$work/app.token" || fail "signing after the restart refused: $(cat "$work/app-again.err")"
openssl verify -CAfile "$work/root.pem" "$work/app-again.pem" >/dev/null || fail "after the restart the root changed"

log "8. two replicas starting together end up with one root"
stop_controller
k create namespace "$ns_race" >/dev/null
for offset in 1 2; do
    run_controller "$ns_race" "$offset" "$work/race-$offset.log"
    race_pids+=($!)
done
for offset in 1 2; do
    wait_for 30 "replica $offset's /ready" curl -fsS "http://127.0.0.1:$((monitoring_port + offset))/ready"
done
generated=$(cat "$work"/race-*.log | grep -c "CA root generated and stored" || true)
((generated == 1)) || fail "$generated replicas stored a root of their own, not exactly one"
k -n "$ns_race" get secret mesh-ca-secret -o jsonpath='{.data.ca-cert\.pem}' | base64 -d >"$work/race-root.pem"
for offset in 1 2; do
    openssl s_client -connect "127.0.0.1:$((tls_port + offset))" -servername "mesh-controller.$ns_race.svc" \
        -CAfile "$work/race-root.pem" -verify_return_error </dev/null >"$work/race-$offset.out" 2>&1 \
        || fail "replica $offset does not serve a certificate of the stored root: $(tail -n 5 "$work/race-$offset.out")"
done

log "9. the RBAC of manifests/controller is enough"
for pid in "${race_pids[@]}"; do kill "$pid"; wait "$pid" 2>/dev/null || true; done
race_pids=()
sed -e "s/istio-system/$ns_rbac/g" -e "s/mesh-controller/$rbac_name/g" manifests/controller/rbac.yaml | k apply -f - >/dev/null
k -n "$ns_rbac" create token "$rbac_name" --duration 1h >"$work/rbac.token"
cp "$KUBECONFIG_PATH" "$work/rbac.kubeconfig"
KUBECONFIG=$work/rbac.kubeconfig kubectl config set-credentials rbac --token="$(cat "$work/rbac.token")" >/dev/null
KUBECONFIG=$work/rbac.kubeconfig kubectl config set-context --current --user=rbac >/dev/null
# The credentials are the service account's, and it reads no Secret but its root's.
if KUBECONFIG=$work/rbac.kubeconfig k -n "$ns_app" get secrets >/dev/null 2>&1; then
    fail "$rbac_name can list Secrets of $ns_app"
fi
KUBECONFIG=$work/rbac.kubeconfig run_controller "$ns_rbac" 3 "$work/rbac.log"
race_pids+=($!)
wait_for 30 "the controller's /ready as $ns_rbac/$rbac_name" curl -fsS "http://127.0.0.1:$((monitoring_port + 3))/ready"
k -n "$ns_rbac" get secret mesh-ca-secret -o jsonpath='{.data.ca-cert\.pem}' | base64 -d >"$work/rbac-root.pem"
rbac_published() { [[ "$(root_in "$1" 2>/dev/null)" == "$(cat "$work/rbac-root.pem")" ]]; }
wait_for 10 "the root of $ns_rbac's controller in $ns_app" rbac_published "$ns_app"
"$bin" sign --address "https://127.0.0.1:$((tls_port + 3))" --server-name "mesh-controller.$ns_rbac.svc" \
    --root-cert "$work/rbac-root.pem" --token-file "$work/app.token" >"$work/rbac-app.pem" 2>"$work/rbac-app.err" \
    || fail "signing as the RBAC'd controller refused: $(cat "$work/rbac-app.err")"
[[ "$(sans "$work/rbac-app.pem")" == "URI:spiffe://cluster.local/ns/$ns_app/sa/reviews" ]] || fail "wrong SANs"
if grep -q "forbidden\|Forbidden" "$work/rbac.log"; then fail "the controller was refused something: $(grep -m3 -i forbidden "$work/rbac.log")"; fi

log "PASS"
