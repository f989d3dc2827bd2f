#!/usr/bin/env bash
# Proves the local cluster's node agent (e2e/node-agent) does a kubelet's and kube-proxy's job:
#   1. a Deployment of 2 test servers and its Service become Ready;
#   2. the Service's Endpoints list both pod IPs;
#   3. a client pod calls the Service by name (short, .ns, .ns.svc.<domain>) and both replicas
#      answer; it also sees its service-account token, downward API and $(VAR) expansion;
#   4. a deleted pod is replaced and the Endpoints follow;
#   5. a pod whose readiness probe fails leaves the Endpoints;
#   6. the API server calls a mutating webhook behind a Service backed by a pod;
#   7. an unmapped image runs its command from the host (python3 -m http.server), and
#      runAsUser 1337 is a real uid without capabilities (checked by an exec probe).
#
# Needs a running local cluster (e2e/local-cluster up) and `cargo build -p mesh-node-agent`.
# Every wait is bounded; the test namespace and webhook configuration are removed on any exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

[[ -f e2e/cluster.env ]] && source e2e/cluster.env
export KUBECONFIG="${KUBECONFIG_PATH:-$KUBECONFIG}"
# shellcheck source=SCRIPTDIR/../lib.sh
source e2e/lib.sh
agent_dir="${NODE_AGENT_DIR:-/var/lib/mesh-e2e/cluster/node-agent}"
domain="${CLUSTER_DOMAIN:-cluster.local}"

id="$(date +%s)-$$"
ns="na-harness-${id##*-}"
hook_cfg="na-harness-${id##*-}"
tmp="$(mktemp -d)"
started=$SECONDS

log() { echo "[$((SECONDS - started))s] $*"; }
fail() { echo "FAIL: $*" >&2; kubectl -n "$ns" get pods,endpoints -o wide >&2 || true; exit 1; }
cleanup() {
    kubectl delete mutatingwebhookconfiguration "$hook_cfg" --ignore-not-found --timeout=30s >/dev/null 2>&1 || true
    kubectl delete namespace "$ns" --ignore-not-found --wait=true --timeout=90s >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

pod_ips() { kubectl -n "$ns" get pods -l app=web -o jsonpath='{.items[*].status.podIP}' | tr ' ' '\n' | sort | xargs; }
endpoint_ips() { kubectl -n "$ns" get endpoints web -o jsonpath='{.subsets[*].addresses[*].ip}' | tr ' ' '\n' | sort | xargs; }
endpoints_match_pods() { local p e; p=$(pod_ips); e=$(endpoint_ips); [[ -n "$p" && "$p" == "$e" && $(wc -w <<<"$e") -eq 2 ]]; }

kubectl create namespace "$ns" >/dev/null
kubectl label namespace "$ns" "na-harness=$ns" >/dev/null
# The ServiceAccount controller creates "default" asynchronously; pods need it.
until_ok 60 kubectl -n "$ns" get serviceaccount default || fail "no default ServiceAccount"

log "1. Deployment of 2 test servers + Service"
kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: web
        image: mesh/test-http:dev
        args: ["8080"]
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /ready, port: http}
          periodSeconds: 1
          failureThreshold: 1
        livenessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 5
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
EOF
kubectl -n "$ns" rollout status deployment/web --timeout=120s >/dev/null || fail "web did not become ready"

log "2. Endpoints list both pod IPs"
until_ok 30 endpoints_match_pods || fail "endpoints [$(endpoint_ips)] != pods [$(pod_ips)]"

log "3. a client pod calls the Service by name; both replicas answer"
kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {role: client}}
spec:
  restartPolicy: Never
  containers:
  - name: client
    image: curlimages/curl
    env:
    - {name: TARGET, value: web}
    - {name: URL, value: "http://\$(TARGET)/"}
    command: ["sh", "-c"]
    args:
    - |
      set -e
      test -s /var/run/secrets/kubernetes.io/serviceaccount/token
      test "\$(cat /etc/podinfo/name)" = client
      grep -q 'role="client"' /etc/podinfo/labels
      for host in web web.$ns web.$ns.svc.$domain; do curl -sf --max-time 3 "http://\$host/"; done
      for i in \$(seq 30); do curl -sf --max-time 3 "\$URL"; done
    volumeMounts: [{name: podinfo, mountPath: /etc/podinfo}]
  volumes:
  - name: podinfo
    downwardAPI:
      items:
      - {path: name, fieldRef: {fieldPath: metadata.name}}
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
EOF
client_done() { [[ "$(kubectl -n "$ns" get pod client -o jsonpath='{.status.phase}')" =~ ^(Succeeded|Failed)$ ]]; }
until_ok 90 client_done || fail "client pod did not finish"
client_log="$agent_dir/logs/${ns}_client/client.log"
[[ "$(kubectl -n "$ns" get pod client -o jsonpath='{.status.phase}')" == Succeeded ]] ||
    fail "client pod failed: $(cat "$client_log" 2>/dev/null)"
for pod in $(kubectl -n "$ns" get pods -l app=web -o jsonpath='{.items[*].metadata.name}'); do
    grep -q "hello from $pod" "$client_log" || fail "replica $pod never answered: $(sort "$client_log" | uniq -c)"
done

log "4. a deleted pod is replaced"
victim=$(kubectl -n "$ns" get pods -l app=web -o jsonpath='{.items[0].metadata.name}')
kubectl -n "$ns" delete pod "$victim" --wait=true --timeout=60s >/dev/null || fail "pod $victim was not deleted"
replaced() { ! kubectl -n "$ns" get pods -l app=web -o name | grep -q "/$victim\$" && endpoints_match_pods; }
until_ok 90 replaced || fail "pod $victim was not replaced"

log "5. a pod whose readiness probe fails leaves the Endpoints"
sick=$(kubectl -n "$ns" get pods -l app=web -o jsonpath='{.items[0].status.podIP}')
curl -sf --max-time 3 "http://$sick:8080/fail-readiness" >/dev/null || fail "cannot reach $sick from the host"
gone() { ! grep -qw "$sick" <<<"$(endpoint_ips)"; }
until_ok 30 gone || fail "$sick is still in the Endpoints"
curl -sf --max-time 3 "http://$sick:8080/recover" >/dev/null
until_ok 30 endpoints_match_pods || fail "$sick did not come back"

log "6. the API server calls a webhook behind a Service"
"$root/target/debug/mesh-test-webhook" gen-cert --out "$tmp" --dns "hook.$ns.svc" --dns "hook.$ns.svc.$domain"
kubectl -n "$ns" create secret tls hook-tls --cert="$tmp/tls.crt" --key="$tmp/tls.key" >/dev/null
kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: hook, labels: {app: hook}}
spec:
  containers:
  - name: hook
    image: mesh/test-webhook:dev
    args: [serve, --cert, /tls/tls.crt, --key, /tls/tls.key, --port, "8443"]
    ports: [{containerPort: 8443}]
    readinessProbe: {tcpSocket: {port: 8443}, periodSeconds: 1}
    volumeMounts: [{name: tls, mountPath: /tls, readOnly: true}]
  volumes:
  - {name: tls, secret: {secretName: hook-tls}}
---
apiVersion: v1
kind: Service
metadata: {name: hook}
spec:
  selector: {app: hook}
  ports: [{port: 443, targetPort: 8443}]
EOF
kubectl -n "$ns" wait pod/hook --for=condition=Ready --timeout=60s >/dev/null || fail "webhook pod not ready"
kubectl apply -f - >/dev/null <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: $hook_cfg}
webhooks:
- name: label.mesh-test-webhook.local
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  timeoutSeconds: 10
  namespaceSelector: {matchLabels: {na-harness: $ns}}
  rules: [{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}]
  clientConfig:
    service: {namespace: $ns, name: hook, port: 443}
    caBundle: $(base64 -w0 <"$tmp/ca.crt")
EOF
labelled() {
    kubectl -n "$ns" delete configmap probe --ignore-not-found >/dev/null
    kubectl -n "$ns" create configmap probe --from-literal=a=b >/dev/null
    [[ "$(kubectl -n "$ns" get configmap probe -o jsonpath='{.metadata.labels.mesh-test-webhook}')" == called ]]
}
until_ok 30 labelled || fail "the webhook was not called: $(kubectl -n "$ns" create configmap probe2 --from-literal=a=b 2>&1)"

log "7. an unmapped image runs from the host; runAsUser 1337 is real and has no capabilities"
kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: py}
spec:
  containers:
  - name: web
    image: python:3
    command: [python3, -m, http.server, "8080"]
    readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
  - name: sidecar
    image: busybox
    command: [sleep, "3600"]
    securityContext: {runAsUser: 1337}
    readinessProbe:
      exec: {command: [sh, -c, 'test "\$(id -u)" = 1337 && grep -q "^CapEff:.0*\$" /proc/self/status']}
      periodSeconds: 1
EOF
kubectl -n "$ns" wait pod/py --for=condition=Ready --timeout=60s >/dev/null ||
    fail "pod py not ready: $(cat "$agent_dir/logs/${ns}_py/"*.log 2>/dev/null)"

log "PASS (all 7 checks)"
