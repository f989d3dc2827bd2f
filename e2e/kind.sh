#!/usr/bin/env bash
# Test tier 5: the mesh and the Bookinfo sample on a kind cluster, for anyone with Docker (no root,
# no Rust toolchain: the images are built inside Docker from the repository's Dockerfiles). It does
# what e2e/run-sample does on the local cluster, with real containers, a real kubelet and kube-proxy:
#   up      builds mesh/proxy:dev, mesh/controller:dev, mesh/injector:dev and mesh/bookinfo:dev,
#           creates the kind cluster (or reuses it), loads the images with `kind load docker-image`,
#           installs the mesh from manifests/ (e2e/lib.sh's install_controller, install_injector),
#           labels `default` with istio-injection=enabled, deploys Bookinfo with Istio's
#           destination-rule-all.yaml and virtual-service-all-v1.yaml, then applies
#           virtual-service-reviews-test-v2.yaml (jason → reviews v2). The cluster stays up.
#   check   the checks of `e2e/run-sample --check`, on the running cluster: fails unless 10 of 10
#           anonymous requests reach reviews v1 and 10 of 10 of jason's v2, and reviews v2's
#           sidecar holds spiffe://cluster.local/ns/default/sa/bookinfo-reviews and took
#           connections in mutual TLS.
#   down    deletes the cluster (the images stay in Docker).
#   (none)  up, then check.
#
# Usage: e2e/kind.sh [up|check|down]
# Needs docker (a running engine, with the buildx plugin: Dockerfile.proxy uses COPY --chmod),
# kind, kubectl, and python3 for `check` (it reads the sidecar's JSON).
# Environment: CLUSTER, the kind cluster's name (default mesh); KIND_NODE_IMAGE, the node image
# (kind's default when unset; with Kubernetes older than 1.29 the injector adds classic sidecars).
# `kind create cluster` adds the context kind-$CLUSTER to your kubeconfig and makes it current;
# this script itself reaches the cluster only through a kubeconfig of its own from
# `kind get kubeconfig`, so it never applies anything to another cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${CLUSTER:-mesh}"
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-}"
CONTEXT="kind-$CLUSTER"
# The images manifests/, bookinfo.yaml and the injector (MESH_PROXY_IMAGE) name. None sets
# imagePullPolicy to Always, and a tag other than `latest` defaults to IfNotPresent, so the
# kubelet runs the loaded images and never tries a registry.
IMAGES=(mesh/proxy:dev mesh/controller:dev mesh/injector:dev mesh/bookinfo:dev)

# shellcheck source=SCRIPTDIR/lib.sh
source e2e/lib.sh
log() { echo "== $*"; }
die() { echo "kind.sh: $*" >&2; exit 1; }
has() { command -v "$1" >/dev/null 2>&1; }

# preflight NEED...: stops before anything is built or created when a tool is missing or the
# Docker engine does not answer, naming every problem at once so one run tells all there is to
# install. `buildx` stands for Docker's BuildKit plugin.
preflight() {
    local problems="" need out
    for need in "$@"; do
        case $need in
        docker)
            if ! has docker; then
                problems+="  docker is not installed (https://docs.docker.com/engine/install/)"$'\n'
            elif ! out="$(docker info 2>&1 >/dev/null)"; then
                problems+="  the Docker engine is not running or not reachable: $(tail -n 1 <<<"$out")"$'\n'
            fi
            ;;
        buildx)
            # Without the plugin `docker build` falls back to the legacy builder, which refuses
            # Dockerfile.proxy's COPY --chmod.
            if has docker && ! docker buildx version >/dev/null 2>&1; then
                problems+="  docker buildx is not installed (Docker's BuildKit plugin, package docker-buildx-plugin)"$'\n'
            fi
            ;;
        kind) has kind || problems+="  kind is not installed (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"$'\n' ;;
        kubectl) has kubectl || problems+="  kubectl is not installed (https://kubernetes.io/docs/tasks/tools/)"$'\n' ;;
        python3) has python3 || problems+="  python3 is not installed (the checks read the sidecar's JSON with it)"$'\n' ;;
        esac
    done
    [[ -z $problems ]] || { printf 'kind.sh: cannot run:\n%s' "$problems" >&2; exit 1; }
}

cluster_exists() { kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; }

# use_cluster: points this script's kubectl (`k` of lib.sh) at the kind cluster, through a
# kubeconfig of its own: the user may switch the current context while `up` runs.
own_kubeconfig=""
use_cluster() {
    [[ -z $own_kubeconfig ]] || return 0
    cluster_exists || die "there is no kind cluster '$CLUSTER': run e2e/kind.sh up"
    own_kubeconfig="$(mktemp "${TMPDIR:-/tmp}/kind-$CLUSTER-kubeconfig.XXXXXX")"
    trap 'rm -f "$own_kubeconfig"' EXIT
    kind get kubeconfig --name "$CLUSTER" >"$own_kubeconfig" || die "kind get kubeconfig --name $CLUSTER failed"
    export KUBECONFIG="$own_kubeconfig"
}

build_images() {
    # BuildKit, also where the legacy builder would be the default (COPY --chmod needs it).
    export DOCKER_BUILDKIT=1
    log "docker build mesh/proxy:dev (Dockerfile.proxy)"
    docker build -f Dockerfile.proxy -t mesh/proxy:dev .
    log "docker build mesh/controller:dev (Dockerfile.controller)"
    docker build -f Dockerfile.controller -t mesh/controller:dev .
    # One image holds both control-plane binaries; the injector's Deployment names its command.
    docker tag mesh/controller:dev mesh/injector:dev
    log "docker build mesh/bookinfo:dev (samples/bookinfo/Dockerfile)"
    docker build -f samples/bookinfo/Dockerfile -t mesh/bookinfo:dev .
}

create_cluster() {
    if cluster_exists; then
        log "kind cluster $CLUSTER exists: reusing it"
        return 0
    fi
    local args=(--name "$CLUSTER" --wait 120s)
    [[ -z $KIND_NODE_IMAGE ]] || args+=(--image "$KIND_NODE_IMAGE")
    log "kind create cluster ${args[*]}"
    kind create cluster "${args[@]}"
}

load_images() {
    log "kind load docker-image ${IMAGES[*]}"
    kind load docker-image --name "$CLUSTER" "${IMAGES[@]}" \
        || die "kind load docker-image failed (with Docker's containerd image store, see kind's known issues: \`docker save\` the image and \`kind load image-archive\` it)"
}

# restart_deployments NAMESPACE DEPLOYMENT...: a Deployment that ran before this `up` keeps the
# containers of the images it started with (same tag, so its spec did not change); restarted, it
# runs the images just loaded. Waits until each has rolled out.
restart_deployments() {
    local ns=$1 d
    shift
    log "rollout restart in $ns onto the new images: $*"
    k -n "$ns" rollout restart "$@" >/dev/null
    for d in "$@"; do
        until_ok 180 k -n "$ns" rollout status "$d" --timeout=5s \
            || die "$ns/$d did not roll out (kubectl --context $CONTEXT -n $ns get pods)"
    done
}

validation_bundle_set() {
    [[ -n "$(k get validatingwebhookconfiguration mesh-validation -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ]]
}

install_mesh() {
    local reinstall=false
    if k -n istio-system get deployment mesh-controller >/dev/null 2>&1; then reinstall=true; fi
    log "the mesh: CRDs, controller, injector (istio-system)"
    install_controller || die "the mesh did not install"
    install_injector || die "the mesh did not install"
    if $reinstall; then restart_deployments istio-system deployment/mesh-controller deployment/mesh-injector; fi
    # The API server refuses every Istio resource (failurePolicy Fail) until the injector has put
    # the mesh root into the controller's ValidatingWebhookConfiguration; applying
    # manifests/controller/webhook.yaml again (a second `up`) empties it until the injector's
    # next pass.
    until_ok 60 validation_bundle_set \
        || die "the injector did not set the caBundle of ValidatingWebhookConfiguration mesh-validation"
}

deploy_sample() {
    local existed
    existed="$(k -n default get -f samples/bookinfo/platform/kube/bookinfo.yaml -o name 2>/dev/null | grep '^deployment' || true)"
    log "Bookinfo in the default namespace, with sidecars"
    k label namespace default istio-injection=enabled --overwrite >/dev/null
    k -n default apply -f samples/bookinfo/platform/kube/bookinfo.yaml >/dev/null
    k -n default apply -f samples/bookinfo/networking/destination-rule-all.yaml \
        -f samples/bookinfo/networking/virtual-service-all-v1.yaml >/dev/null
    # shellcheck disable=SC2086 # one Deployment name a word
    [[ -z $existed ]] || restart_deployments default $existed
    until_ok 240 k -n default wait --for=condition=Available deployment --all --timeout=5s \
        || die "Bookinfo did not become Available (kubectl --context $CONTEXT -n default get pods)"
}

# page QUERY: productpage's HTML through the API server's proxy to the Service. kind gives the
# host no route to pod or Service addresses; the API server (on the node) dials a productpage
# pod's address, where the sidecar's inbound capture takes the connection, as it does the host's
# curl on the local cluster: a client from outside the mesh.
# (reviews_version, versions and jason_v2 of lib.sh read it.)
page() { k get --raw "/api/v1/namespaces/default/services/productpage:http/proxy/productpage$1"; }

# route_sample: Istio's request-routing task, measured as e2e/run-sample measures it: "all v1",
# then virtual-service-reviews-test-v2.yaml. Sets all_v1, jason and anonymous ("10 reviews-v1").
route_sample() {
    k -n default apply -f samples/bookinfo/networking/virtual-service-all-v1.yaml >/dev/null
    until_ok 90 reviews_version "" \
        || die "productpage does not render reviews (kubectl --context $CONTEXT -n default get pods)"
    all_v1="$(versions "")"
    echo "  routing \"all v1\", 10 requests: anonymous → $all_v1"
    k -n default apply -f samples/bookinfo/networking/virtual-service-reviews-test-v2.yaml >/dev/null
    until_ok 30 jason_v2 || true
    jason="$(versions jason)" anonymous="$(versions "")"
    echo "  after virtual-service-reviews-test-v2.yaml, 10 requests each: jason → $jason; anonymous → $anonymous"
}

# admin POD PATH: the answer (status line, headers, body) to GET PATH on the sidecar's admin port,
# 127.0.0.1:15000, which only the pod itself reaches. The proxy image (Debian, no curl) has bash,
# whose /dev/tcp speaks HTTP/1.0 well enough, as the injected postStart hook does.
admin() {
    # shellcheck disable=SC2016 # expanded by the pod's bash: $1 is PATH
    k -n default exec "$1" -c istio-proxy -- bash -c \
        'exec 3<>/dev/tcp/127.0.0.1/15000 && printf "GET %s HTTP/1.0\r\nConnection: close\r\n\r\n" "$1" >&3 && timeout 10 cat <&3' \
        admin "$2"
}

# json_field KEY...: of an HTTP answer on stdin, the JSON body's value at KEY.KEY... ("" when
# absent); fails unless the status is 200.
json_field() {
    python3 -c '
import json, sys
head, _, body = sys.stdin.read().partition("\r\n\r\n")
status = head.split("\r\n", 1)[0]
if status.split()[1:2] != ["200"]:
    sys.exit("the admin port answered %r" % status)
value = json.loads(body)
for key in sys.argv[1:]:
    value = value.get(key, "") if isinstance(value, dict) else ""
print(value)' "$@"
}

up() {
    build_images
    create_cluster
    use_cluster
    load_images
    install_mesh
    deploy_sample
    echo
    route_sample
    echo
    echo "The cluster stays up: kubectl --context $CONTEXT get pods -A"
    echo "productpage: kubectl --context $CONTEXT -n default port-forward svc/productpage 9080,"
    echo "  then http://localhost:9080/productpage (and ?u=jason)"
    echo "e2e/kind.sh check runs the checks; e2e/kind.sh down deletes the cluster"
}

check() {
    use_cluster
    k -n default get deployment productpage-v1 >/dev/null 2>&1 \
        || die "Bookinfo is not deployed on kind cluster $CLUSTER: run e2e/kind.sh up"
    log "checks: Istio's request-routing task through the sidecars, mutual TLS into reviews v2"
    route_sample
    [[ $all_v1 == "10 reviews-v1" && $anonymous == "10 reviews-v1" ]] || die "anonymous users did not all reach reviews v1"
    [[ $jason == "10 reviews-v2" ]] || die "jason did not always reach reviews v2"
    # productpage's sidecar reached reviews v2's in mutual TLS (auto mTLS, both certified by the
    # mesh CA): read from the sidecar's admin port. A pod of an earlier rollout may still be
    # terminating; the live one is the one that served.
    local pod got stats dump accepted identity
    pod="$(k -n default get pods -l app=reviews,version=v2 \
        -o go-template='{{range .items}}{{if not .metadata.deletionTimestamp}}{{.metadata.name}}{{"\n"}}{{end}}{{end}}' | head -n 1)" \
        || die "could not list the reviews v2 pods"
    [[ -n $pod ]] || die "no reviews v2 pod"
    got="$(k -n default get pod "$pod" -o jsonpath='{.spec.initContainers[*].name} {.spec.containers[*].name}')"
    [[ " $got " == *" istio-proxy "* ]] || die "pod default/$pod has no sidecar (containers: $got)"
    stats="$(admin "$pod" /stats)" || die "could not read /stats from the sidecar of default/$pod"
    dump="$(admin "$pod" /config_dump)" || die "could not read /config_dump from the sidecar of default/$pod"
    accepted="$(json_field inbound mtls_accepted <<<"$stats")" || die "unreadable /stats of default/$pod"
    identity="$(json_field tls identity <<<"$dump")" || die "unreadable /config_dump of default/$pod"
    [[ $identity == spiffe://cluster.local/ns/default/sa/bookinfo-reviews ]] \
        || die "reviews v2's sidecar has no certificate from the mesh CA (identity '$identity')"
    if [[ ! $accepted =~ ^[0-9]+$ ]] || ((accepted == 0)); then
        die "reviews v2's sidecar took no connection in mutual TLS (mtls_accepted '$accepted')"
    fi
    echo "  reviews v2's sidecar: $identity, $accepted connections in mutual TLS"
    echo "PASS"
}

down() {
    log "kind delete cluster --name $CLUSTER"
    kind delete cluster --name "$CLUSTER"
}

# One command a line: a function called on the left of && would run with errexit off.
case "${1:-}" in
up)
    preflight docker buildx kind kubectl
    up
    ;;
check)
    preflight docker kind kubectl python3
    check
    ;;
down)
    preflight docker kind
    down
    ;;
"")
    preflight docker buildx kind kubectl python3
    up
    echo
    check
    ;;
*)
    echo "usage: e2e/kind.sh [up|check|down]" >&2
    exit 2
    ;;
esac
