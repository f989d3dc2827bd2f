#!/usr/bin/env bash
# Istio's own YAML against a real API server (issue 2's check on the local cluster):
#   1. manifests/crds.yaml applies with plain `kubectl apply` and every CRD becomes Established;
#   2. every accepted fixture (common/tests/fixtures/*/good/*.yaml, written from the examples in
#      Istio's documentation) applies unchanged, under each version it names;
#   3. what the API server stores equals what was applied: a field our schema lacked would be
#      pruned silently, so this catches a schema that is narrower than the Rust types;
#   4. the same objects read back under every other served version (v1, v1beta1, v1alpha3).
#
# Needs a running local cluster (e2e/local-cluster up). Every wait is bounded; the test
# namespace is removed on any exit. The CRDs stay installed (other suites use them).
set -euo pipefail
cd "$(dirname "$0")/../.."

[[ -f e2e/cluster.env ]] && source e2e/cluster.env
export KUBECONFIG="${KUBECONFIG_PATH:-$KUBECONFIG}"
ns="istio-yaml-$$"
tmp="$(mktemp -d)"
started=$SECONDS

log() { echo "[$((SECONDS - started))s] $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
cleanup() {
    kubectl delete namespace "$ns" --ignore-not-found --wait=true --timeout=90s >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

log "1. the CRDs apply and become Established"
kubectl apply -f manifests/crds.yaml >/dev/null
crds=$(kubectl get -f manifests/crds.yaml -o name)
# shellcheck disable=SC2086
kubectl wait --for=condition=Established --timeout=60s $crds >/dev/null || fail "CRDs not Established"
log "   $(wc -w <<<"$crds") CRDs Established"

kubectl create namespace "$ns" >/dev/null

log "2-4. every accepted fixture applies, is stored unchanged, and reads back under every version"
count=0
for file in common/tests/fixtures/*/good/*.yaml; do
    # The fixture as JSON objects, moved into the test namespace (their own namespaces, such as
    # istio-system, would leave objects behind in a shared cluster).
    kubectl create --dry-run=client -o json -f "$file" >"$tmp/objects.json" 2>"$tmp/err" \
        || fail "$file: kubectl cannot read it: $(cat "$tmp/err")"
    python3 - "$tmp/objects.json" "$ns" >"$tmp/apply.json" <<'PY'
import json, sys
# kubectl prints one JSON object per document, one after the other.
text, decoder, items, at = open(sys.argv[1]).read(), json.JSONDecoder(), [], 0
while text[at:].strip():
    obj, end = decoder.raw_decode(text[at:].lstrip())
    at = len(text) - len(text[at:].lstrip()) + end
    items.extend(obj["items"] if obj.get("kind") == "List" else [obj])
for item in items:
    item["metadata"]["namespace"] = sys.argv[2]
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
PY
    kubectl apply -f "$tmp/apply.json" >/dev/null 2>"$tmp/err" || fail "$file: refused by the API server: $(cat "$tmp/err")"
    python3 - "$tmp/apply.json" >"$tmp/refs" <<'PY'
import json, sys
for item in json.load(open(sys.argv[1]))["items"]:
    print(item["kind"], item["apiVersion"].split("/")[0], item["metadata"]["name"])
PY
    while read -r kind group name; do
        for served in v1 v1beta1 v1alpha3; do
            [[ $group == security.istio.io && $served == v1alpha3 ]] && continue
            kubectl -n "$ns" get "$kind.$served.$group/$name" -o json >"$tmp/stored.json" 2>"$tmp/err" \
                || fail "$file: $kind $name not readable as $served: $(cat "$tmp/err")"
            python3 - "$tmp/apply.json" "$tmp/stored.json" "$name" "$file (read as $served)" <<'PY' || exit 1
import json, sys
applied = next(i for i in json.load(open(sys.argv[1]))["items"] if i["metadata"]["name"] == sys.argv[3])
stored = json.load(open(sys.argv[2]))
if applied.get("spec") != stored.get("spec"):
    print(f"FAIL: {sys.argv[4]}: {sys.argv[3]} is stored differently from what was applied "
          f"(a field missing from the CRD schema is pruned):\n  applied: {json.dumps(applied.get('spec'), sort_keys=True)}\n"
          f"  stored:  {json.dumps(stored.get('spec'), sort_keys=True)}", file=sys.stderr)
    sys.exit(1)
PY
        done
        count=$((count + 1))
    done <"$tmp/refs"
    kubectl delete -f "$tmp/apply.json" --wait=false >/dev/null
done
((count > 0)) || fail "no fixtures found"
log "PASS ($count objects from Istio's documentation applied, stored unchanged, read under every version)"
