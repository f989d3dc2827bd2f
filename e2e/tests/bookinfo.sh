#!/usr/bin/env bash
# The Bookinfo-like sample on the local cluster, without the mesh: it deploys, every pod becomes
# Ready, and productpage, called through its Service's ClusterIP, renders details and reviews
# from all three versions of reviews (the Service balances over them). This is the baseline the
# mesh's routing tasks change.
#
# Needs a running local cluster (e2e/local-cluster up) and `cargo build --workspace`
# (target/debug/mesh-bookinfo). Every wait is bounded; the namespace is removed on any exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

[[ -f e2e/cluster.env ]] && source e2e/cluster.env
export KUBECONFIG="${KUBECONFIG_PATH:-$KUBECONFIG}"
ns="bookinfo-$$"
tmp="$(mktemp -d)"
started=$SECONDS

log() { echo "[$((SECONDS - started))s] $*"; }
fail() { echo "FAIL: $*" >&2; kubectl -n "$ns" get pods,endpoints -o wide >&2 || true; exit 1; }
cleanup() {
    kubectl delete namespace "$ns" --ignore-not-found --wait=true --timeout=90s >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

kubectl create namespace "$ns" >/dev/null
for _ in $(seq 60); do kubectl -n "$ns" get serviceaccount default >/dev/null 2>&1 && break; sleep 1; done

log "1. apply samples/bookinfo/platform/kube/bookinfo.yaml"
kubectl -n "$ns" apply -f samples/bookinfo/platform/kube/bookinfo.yaml >/dev/null
kubectl -n "$ns" wait --for=condition=Available deployment --all --timeout=120s >/dev/null \
    || fail "the Deployments did not become Available"
log "   $(kubectl -n "$ns" get pods --no-headers | wc -l) pods Ready"

log "2. productpage renders details and reviews"
ip=$(kubectl -n "$ns" get service productpage -o jsonpath='{.spec.clusterIP}')
page() { curl -sS --max-time 10 "http://$ip:9080/productpage$1"; }
for _ in $(seq 30); do page "" >"$tmp/page" 2>/dev/null && grep -q "Reviews served by" "$tmp/page" && break; sleep 1; done
grep -q "PublisherA" "$tmp/page" || fail "no details on the page: $(cat "$tmp/page")"
grep -q "Reviews served by" "$tmp/page" || fail "no reviews on the page: $(cat "$tmp/page")"

log "3. over 30 requests, all three versions of reviews answer, each with its stars"
: >"$tmp/versions"
for _ in $(seq 30); do
    page "?u=jason" >"$tmp/page"
    version=$(grep -o '(reviews-v[0-9])' "$tmp/page" | tr -d '()')
    case $version in
        reviews-v1) grep -q 'class="stars"' "$tmp/page" && fail "reviews v1 showed stars" ;;
        reviews-v2) grep -q '<font color="black" class="stars">' "$tmp/page" || fail "reviews v2 without black stars" ;;
        reviews-v3) grep -q '<font color="red" class="stars">' "$tmp/page" || fail "reviews v3 without red stars" ;;
        *) fail "page without a reviews version: $(cat "$tmp/page")" ;;
    esac
    grep -q "Signed in as jason" "$tmp/page" || fail "the signed-in user is missing"
    echo "$version" >>"$tmp/versions"
done
seen=$(sort -u "$tmp/versions" | xargs)
[[ $seen == "reviews-v1 reviews-v2 reviews-v3" ]] || fail "versions seen: $seen (want all three)"
log "   seen: $(sort "$tmp/versions" | uniq -c | xargs)"
log "PASS"
