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
source e2e/lib.sh
require_no_mesh
created_cp=false
k get namespace istio-system >/dev/null 2>&1 || created_cp=true
cleanup() {
    local rc=$?
    remove_mesh_webhooks
    k -n default delete -f samples/bookinfo/networking/virtual-service-all-v1.yaml \
        -f samples/bookinfo/networking/destination-rule-all.yaml --ignore-not-found >/dev/null 2>&1 || true
    k -n default delete -f samples/bookinfo/platform/kube/bookinfo.yaml --ignore-not-found --wait=true --timeout=90s >/dev/null 2>&1 || true
    k label namespace default istio-injection- >/dev/null 2>&1 || true
    uninstall_mesh
    if $created_cp; then k delete namespace istio-system --ignore-not-found --wait=true --timeout=60s >/dev/null 2>&1 || true; fi
    exit "$rc"
}
trap cleanup EXIT
e2e/run-sample --check
