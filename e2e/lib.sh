# Shell helpers shared by e2e/run-sample, e2e/kind.sh and the tier-4 suites in e2e/tests/.
# Sourced, not run:
#   source e2e/lib.sh   (from the repository root, after e2e/cluster.env)
# A script that sources it defines its own `fail` (how it reports a failure, with what it wants
# printed) before calling `wait_for`.

# k ARGS...: kubectl with a bounded request time, so a stuck API server fails a step instead of
# hanging it. KUBECTL_TIMEOUT overrides the bound.
k() { kubectl --request-timeout="${KUBECTL_TIMEOUT:-20s}" "$@"; }

# until_ok TIMEOUT CMD...: runs CMD (output discarded) every POLL_SECONDS (default 1) until it
# succeeds; returns 1 once TIMEOUT seconds have passed. For steps whose caller says what failed.
until_ok() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep "${POLL_SECONDS:-1}"
    done
}

# wait_for TIMEOUT WHAT CMD...: as until_ok, but a timeout fails the script through `fail`,
# naming WHAT was waited for.
wait_for() {
    local timeout=$1 what=$2
    shift 2
    until_ok "$timeout" "$@" || fail "timed out after ${timeout}s waiting for $what"
}

# require_no_mesh: exits when the mesh's webhook configurations exist, that is when another run
# (or a user's install) holds the cluster: two installs would fight over them.
require_no_mesh() {
    local w
    for w in mutatingwebhookconfiguration/mesh-injector validatingwebhookconfiguration/mesh-validation; do
        if k get "$w" >/dev/null 2>&1; then
            echo "$w exists already; is another run going on?" >&2
            exit 1
        fi
    done
}

# install_controller: the CRDs and the controller from manifests/ into istio-system (its
# rbac.yaml first, because it declares the namespace), waiting until the Deployment is Available.
# Returns 1 with a message when it does not become so.
install_controller() {
    # Called as `install_controller || …`, where errexit is off: each step checks itself.
    k apply -f manifests/crds.yaml >/dev/null || return 1
    k apply -f manifests/controller/rbac.yaml >/dev/null || return 1
    k apply -f manifests/controller/ >/dev/null || return 1
    until_ok 120 k -n istio-system wait --for=condition=Available deployment/mesh-controller --timeout=5s || {
        echo "the controller did not become Available (kubectl -n istio-system logs deploy/mesh-controller)" >&2
        return 1
    }
}

# install_injector: the injector from manifests/, waiting until it is Available and has put its
# CA into its MutatingWebhookConfiguration. Returns 1 with a message naming the step that did
# not complete.
install_injector() {
    k apply -f manifests/injector/ >/dev/null || return 1
    until_ok 120 k -n istio-system wait --for=condition=Available deployment/mesh-injector --timeout=5s || {
        echo "the injector did not become Available (kubectl -n istio-system logs deploy/mesh-injector)" >&2
        return 1
    }
    until_ok 60 injector_bundle_set || {
        echo "the injector did not set the caBundle of MutatingWebhookConfiguration mesh-injector" >&2
        return 1
    }
}

injector_bundle_set() {
    [[ -n "$(k get mutatingwebhookconfiguration mesh-injector -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ]]
}

# remove_mesh_webhooks: the mesh's webhook configurations, which a cleanup removes before
# anything else: with their servers gone they would refuse pods and Istio resources.
remove_mesh_webhooks() {
    k delete mutatingwebhookconfiguration mesh-injector --ignore-not-found >/dev/null 2>&1 || true
    k delete validatingwebhookconfiguration mesh-validation --ignore-not-found >/dev/null 2>&1 || true
}

# uninstall_mesh: removes what install_controller, install_injector and the running mesh made:
# the webhook configurations first, then manifests/ and the root ConfigMap the controller
# published in every namespace. The CRDs and the istio-system namespace stay. Best effort:
# never fails.
uninstall_mesh() {
    remove_mesh_webhooks
    k delete -f manifests/injector/deployment.yaml -f manifests/controller/deployment.yaml --ignore-not-found \
        --wait=true --timeout=60s >/dev/null 2>&1 || true
    k delete -f manifests/injector/service.yaml -f manifests/controller/service.yaml --ignore-not-found >/dev/null 2>&1 || true
    k -n istio-system delete secret mesh-ca-secret --ignore-not-found >/dev/null 2>&1 || true
    k -n istio-system delete serviceaccount mesh-injector mesh-controller --ignore-not-found >/dev/null 2>&1 || true
    k -n istio-system delete rolebinding,role --all --ignore-not-found >/dev/null 2>&1 || true
    k delete clusterrolebinding,clusterrole mesh-injector mesh-controller --ignore-not-found >/dev/null 2>&1 || true
    local ns
    k get configmaps -A --field-selector metadata.name=istio-ca-root-cert \
        -o jsonpath='{range .items[*]}{.metadata.namespace}{"\n"}{end}' 2>/dev/null \
        | while read -r ns; do k -n "$ns" delete configmap istio-ca-root-cert --ignore-not-found >/dev/null 2>&1 || true; done
}

# The Bookinfo routing checks of run-sample and kind.sh. The caller defines `page QUERY`, which
# prints productpage's HTML for /productpage QUERY, however it reaches productpage.
# reviews_version QUERY: the reviews version that page shows ("reviews-v1"); fails without one.
reviews_version() { page "$1" | grep -o '(reviews-v[0-9])' | tr -d '()'; }
# versions USER: the reviews version of 10 pages for USER ("" for anonymous), counted; a page that
# did not come or showed no reviews counts as "failed".
versions() {
    for _ in $(seq 10); do reviews_version "${1:+?u=$1}" || echo failed; done | sort | uniq -c | xargs
}
jason_v2() { [[ "$(versions jason)" == "10 reviews-v2" ]]; }
