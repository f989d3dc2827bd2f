#!/usr/bin/env bash
# Smoke test of the local cluster's control plane (e2e/local-cluster): brings it up, checks
# what the mesh relies on, takes it down and checks that nothing is left behind.
#
#   1. /readyz is ok and the server is v1.20.2;
#   2. a namespace, a ConfigMap and a Deployment can be created; kube-controller-manager makes
#      the Deployment's pod (it stays Pending without the node agent) and the namespace's
#      default ServiceAccount and kube-root-ca.crt ConfigMap;
#   3. the `kubernetes` Service has ClusterIP $KUBERNETES_SERVICE_IP and the bridge IP as endpoint;
#   4. TokenRequest works, through `kubectl create token` and the raw API, with our audience;
#   5. CRDs apply and become Established: a test CRD of our own, and manifests/crds.yaml when
#      it exists; a custom object of the test CRD can be created;
#   6. `down` leaves no process, bridge, netns, veth, iptables chain, route or state dir.
#
# Usage: e2e/tests/control-plane-smoke.sh [--isolated | --with-node-agent] [--force]
#   --isolated         run a second control plane beside the main one (other bridge, addresses,
#                      ports, state dir; no node agent), so a cluster in use is not disturbed
#   --with-node-agent  also start the node agent and wait for the pod to run
#   --force            take down a cluster that is already up (by default the test refuses,
#                      since on a shared machine someone may be using it)
# Needs root. Every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
lc="$repo/e2e/local-cluster"

with_agent=false
force=false
for arg in "$@"; do
    case $arg in
        --with-node-agent) with_agent=true ;;
        --force) force=true ;;
        --isolated)
            # Values cluster.env takes from the environment; nothing here overlaps the main cluster.
            export STATE_DIR=/var/lib/mesh-e2e/smoke BRIDGE=mesh-smoke0 BRIDGE_IP=10.251.0.1 \
                POD_CIDR=10.251.0.0/24 SERVICE_CIDR=10.97.0.0/16 KUBERNETES_SERVICE_IP=10.97.0.1 \
                APISERVER_PORT=6443 ETCD_CLIENT_PORT=22379 ETCD_PEER_PORT=22380 \
                CONTROLLER_MANAGER_PORT=20257 SCHEDULER_PORT=20259 IPTABLES_CHAIN=MESH-E2E-SMOKE \
                NODE_NAME=smoke-node
            ;;
        *) echo "unknown argument $arg" >&2; exit 2 ;;
    esac
done
[[ -n "${STATE_DIR:-}" && $with_agent == true ]] && [[ $STATE_DIR != /var/lib/mesh-e2e/cluster ]] \
    && { echo "--with-node-agent needs the main cluster's settings (the agent's chains are global)" >&2; exit 2; }
# shellcheck source=SCRIPTDIR/../cluster.env
source e2e/cluster.env
export KUBECONFIG="$KUBECONFIG_PATH"
# shellcheck source=SCRIPTDIR/../lib.sh
source e2e/lib.sh
KUBECTL_TIMEOUT=15s

started=$SECONDS
ns=smoke
log() { echo "[smoke $((SECONDS - started))s] $*"; }
fail() { echo "[smoke] FAIL: $*" >&2; exit 1; }

# The payload of a JWT, decoded (base64url without padding).
jwt_payload() {
    local p
    p="$(cut -d. -f2 <<<"$1" | tr '_-' '/+')"
    while ((${#p} % 4)); do p+="="; done
    base64 -d <<<"$p"
}

cluster_down_on_exit=true
on_exit() {
    local rc=$?
    if ((rc != 0)); then
        echo "[smoke] failed; cluster status and log tails follow" >&2
        "$lc" status >&2 || true
        for f in "$STATE_DIR"/logs/*.log; do
            [[ -f $f ]] || continue
            echo "--- $f" >&2
            tail -n 15 "$f" >&2
        done
    fi
    if $cluster_down_on_exit; then "$lc" down >/dev/null 2>&1 || true; fi
    exit $rc
}

[[ $EUID -eq 0 ]] || fail "run as root"
if [[ -d "$STATE_DIR" ]] || ip link show "$BRIDGE" >/dev/null 2>&1; then
    $force || { cluster_down_on_exit=false; fail "a local cluster seems up ($STATE_DIR or $BRIDGE exists); pass --force to take it down"; }
    log "--force: taking down the running cluster"
    "$lc" down
fi
trap on_exit EXIT

log "up"
t=$SECONDS
if $with_agent; then "$lc" up; else SKIP_NODE_AGENT=1 "$lc" up; fi
log "up took $((SECONDS - t))s"

log "1. /readyz and version"
[[ "$(k get --raw /readyz)" == ok ]] || fail "/readyz is not ok"
version="$(k get --raw /version | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p')"
[[ "$version" == "v$K8S_VERSION" ]] || fail "server version is '$version', want v$K8S_VERSION"

log "2. namespace, ConfigMap, Deployment"
k create namespace "$ns" >/dev/null
wait_for 60 "ServiceAccount $ns/default" k -n "$ns" get serviceaccount default
wait_for 60 "ConfigMap $ns/kube-root-ca.crt" k -n "$ns" get configmap kube-root-ca.crt
k -n "$ns" create configmap settings --from-literal=greeting=hello >/dev/null
[[ "$(k -n "$ns" get configmap settings -o jsonpath='{.data.greeting}')" == hello ]] \
    || fail "ConfigMap $ns/settings does not read back"
k -n "$ns" create deployment web --image=mesh/test-http:dev >/dev/null
has_pod() { [[ -n "$(k -n "$ns" get pods -l app=web -o name)" ]]; }
wait_for 60 "a pod of Deployment $ns/web (made by kube-controller-manager)" has_pod
if $with_agent; then
    wait_for 120 "Deployment $ns/web available (node agent)" \
        k -n "$ns" wait --for=condition=Available deployment/web --timeout=5s
fi

log "3. the kubernetes Service"
cluster_ip="$(k -n default get service kubernetes -o jsonpath='{.spec.clusterIP}')"
[[ "$cluster_ip" == "$KUBERNETES_SERVICE_IP" ]] || fail "kubernetes ClusterIP is $cluster_ip, want $KUBERNETES_SERVICE_IP"
endpoints="$(k -n default get endpoints kubernetes -o jsonpath='{.subsets[*].addresses[*].ip}:{.subsets[*].ports[*].port}')"
[[ "$endpoints" == "$BRIDGE_IP:$APISERVER_PORT" ]] \
    || fail "kubernetes endpoints are '$endpoints', want $BRIDGE_IP:$APISERVER_PORT"

log "4. TokenRequest"
token="$(k -n "$ns" create token default --audience=mesh)"
claims="$(jwt_payload "$token")"
grep -q '"aud":\["mesh"\]' <<<"$claims" || fail "token audience is not [mesh]: $claims"
grep -q "\"iss\":\"https://kubernetes.default.svc.$CLUSTER_DOMAIN\"" <<<"$claims" || fail "token issuer: $claims"
response="$(k create --raw "/api/v1/namespaces/$ns/serviceaccounts/default/token" -f - <<EOF
{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
 "spec": {"audiences": ["mesh"], "expirationSeconds": 3600}}
EOF
)"
grep -q '"token":"ey' <<<"$response" || fail "raw TokenRequest returned no token: $response"
# The API server accepts its own token (TokenReview, as our webhook and controller will use it).
review="$(k create --raw /apis/authentication.k8s.io/v1/tokenreviews -f - <<EOF
{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
 "spec": {"token": "$token", "audiences": ["mesh"]}}
EOF
)"
grep -q '"authenticated":true' <<<"$review" || fail "TokenReview did not authenticate the token: $review"

log "5. CRDs"
k apply -f - >/dev/null <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: probes.smoke.mesh-e2e.test}
spec:
  group: smoke.mesh-e2e.test
  scope: Namespaced
  names: {plural: probes, singular: probe, kind: Probe}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {weight: {type: integer, minimum: 0}}}
EOF
k wait --for=condition=Established crd/probes.smoke.mesh-e2e.test --timeout=30s >/dev/null \
    || fail "test CRD not Established"
tmp="$(mktemp -d)"
cat >"$tmp/good.yaml" <<'EOF'
apiVersion: smoke.mesh-e2e.test/v1
kind: Probe
metadata: {name: one}
spec: {weight: 3}
EOF
sed -e 's/name: one/name: bad/' -e 's/weight: 3/weight: -1/' "$tmp/good.yaml" >"$tmp/bad.yaml"
# kubectl's discovery cache may lag the new group by a moment.
wait_for 30 "a custom object of the test CRD" k -n "$ns" apply -f "$tmp/good.yaml"
if k -n "$ns" apply -f "$tmp/bad.yaml" >/dev/null 2>&1; then
    fail "the CRD's schema did not reject spec.weight -1"
fi
rm -rf "$tmp"
if [[ -f manifests/crds.yaml ]]; then
    k apply -f manifests/crds.yaml >/dev/null || fail "kubectl apply -f manifests/crds.yaml failed"
    k wait --for=condition=Established crd --all --timeout=60s >/dev/null \
        || fail "the CRDs of manifests/crds.yaml did not become Established"
    log "   manifests/crds.yaml: $(k get crd -o name | grep -vc smoke.mesh-e2e.test) CRDs Established"
else
    log "   manifests/crds.yaml does not exist yet; skipped"
fi

log "6. down leaves nothing"
cluster_down_on_exit=false
t=$SECONDS
"$lc" down
log "down took $((SECONDS - t))s"
leftovers=()
for d in /proc/[0-9]*; do
    mapfile -d '' args 2>/dev/null <"$d/cmdline" || continue
    [[ "${args[*]}" == *"$STATE_DIR/"* ]] && leftovers+=("process ${d#/proc/}: ${args[*]}")
done
[[ -e "$STATE_DIR" ]] && leftovers+=("state dir $STATE_DIR")
ip link show "$BRIDGE" >/dev/null 2>&1 && leftovers+=("bridge $BRIDGE")
while read -r c; do leftovers+=("iptables chain $c"); done \
    < <(iptables-save 2>/dev/null | grep -oE "^:$IPTABLES_CHAIN-(POSTROUTING|FORWARD) " || true)
if $with_agent; then # the node agent's objects are global; only then are they ours to check
    while read -r n _; do
        [[ $n == "${NETNS_PREFIX}pod-"* ]] && leftovers+=("netns $n")
    done < <(ip netns list 2>/dev/null)
    while read -r l; do leftovers+=("veth $l"); done \
        < <(ip -o link show type veth 2>/dev/null | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | grep '^mna' || true)
    while read -r c; do leftovers+=("iptables chain $c"); done \
        < <(iptables-save 2>/dev/null | grep -oE '^:(MESH-SERVICES|MESH-POSTROUTING|MESH-FILTER|MESH-SVC-[A-Z0-9]+|MESH-SEP-[A-Z0-9]+) ' || true)
fi
ip route show "$SERVICE_CIDR" 2>/dev/null | grep -q . && leftovers+=("route $SERVICE_CIDR")
if ((${#leftovers[@]})); then
    printf '  left: %s\n' "${leftovers[@]}" >&2
    fail "down left ${#leftovers[@]} things behind"
fi
log "PASS (${SECONDS}s in all)"
