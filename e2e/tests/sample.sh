#!/usr/bin/env bash
# The README's "run the mesh with the sample" on the local cluster: `e2e/run-sample --check`
# installs the mesh and Bookinfo in `default` with sidecars, and fails unless Istio's
# request-routing task routes as the task says (anonymous → reviews v1, jason → v2). Then
# everything it made is removed, so the other suites find the cluster as before.
#
# Needs a running local cluster and `cargo build --workspace`.
set -euo pipefail
cd "$(dirname "$0")/../.."

source e2e/cluster.env
export KUBECONFIG="$KUBECONFIG_PATH"
k() { kubectl --request-timeout=20s "$@"; }
for w in mutatingwebhookconfiguration/mesh-injector validatingwebhookconfiguration/mesh-validation; do
    k get "$w" >/dev/null 2>&1 && { echo "$w exists already; is another run going on?" >&2; exit 1; }
done
cleanup() {
    local rc=$?
    k delete mutatingwebhookconfiguration mesh-injector --ignore-not-found >/dev/null 2>&1 || true
    k delete validatingwebhookconfiguration mesh-validation --ignore-not-found >/dev/null 2>&1 || true
    k -n default delete -f samples/bookinfo/networking/virtual-service-all-v1.yaml \
        -f samples/bookinfo/networking/destination-rule-all.yaml --ignore-not-found >/dev/null 2>&1 || true
    k -n default delete -f samples/bookinfo/platform/kube/bookinfo.yaml --ignore-not-found --wait=true --timeout=90s >/dev/null 2>&1 || true
    k label namespace default istio-injection- >/dev/null 2>&1 || true
    k delete -f manifests/injector/ -f manifests/controller/ --ignore-not-found --wait=true --timeout=90s >/dev/null 2>&1 || true
    k get configmaps -A --field-selector metadata.name=istio-ca-root-cert \
        -o jsonpath='{range .items[*]}{.metadata.namespace}{"\n"}{end}' 2>/dev/null \
        | while read -r ns; do k -n "$ns" delete configmap istio-ca-root-cert --ignore-not-found >/dev/null 2>&1 || true; done
    exit "$rc"
}
trap cleanup EXIT
e2e/run-sample --check
